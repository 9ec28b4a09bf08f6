/**
 * `phoenix worker deployer|analyzer|all`: saga workers on their own, competing over NATS with any other
 * workers of their kind. The bus and the adapters come from the composition root (src/main.ts) through
 * `WorkerCommandDeps`; this module builds nothing.
 *
 * The local data plane lives in the process that deploys to it: the `local` deployer and analyzer share
 * one instance, so with PHOENIX_DEPLOYER=local the analyzer must run in the same process (the embedded
 * default, or a server with NATS that runs its workers in-process, or `worker all`).
 */
import { Argument, type Command, InvalidArgumentError } from 'commander';
import type { Logger } from 'pino';
import type { Analyzer } from '../application/ports/analyzer.js';
import type { Bus, Consumer } from '../application/ports/bus.js';
import type { Deployer, UsageSource } from '../application/ports/deployer.js';
import type { GitopsRepository } from '../application/ports/gitops.js';
import { type Config, deployerConcurrency } from '../config.js';
import { CliError } from './cli-error.js';
import { startPromoterWorker } from './promoter-worker.js';
import { startWorkerHealth, type WorkerHealth } from './worker-health.js';
import { startAnalyzerWorker, startDeployerWorker } from './workers.js';

export interface BusOptions {
  /** NATS subject and stream prefix; default `phoenix`. */
  readonly prefix?: string;
  /** How long a worker that died holds a message before it is redelivered; default 30 s. */
  readonly ackWaitMs?: number;
  /** Connection name, for the server's monitoring. */
  readonly name?: string;
}

/** Which workers' adapters to build. */
export interface WorkerKinds {
  readonly deployer: boolean;
  readonly analyzer: boolean;
}

/** The adapters of the kinds asked for; `close` closes what was opened for them (a local data plane). */
export interface WorkerAdapters {
  readonly deployer?: {
    readonly deployer: Deployer;
    /** Where tuned candidates read the baseline's usage; undefined when nothing can provide it. */
    readonly usage: UsageSource | undefined;
  };
  readonly analyzer?: Analyzer;
  close(): Promise<void>;
}

/** What the `worker` command is given by the entry (src/cli.ts), which takes them from src/main.ts. */
export interface WorkerCommandDeps {
  /** The configuration, read and validated once by the entry (a CliError with exit code 2 when invalid). */
  readonly config: () => Config;
  readonly createLogger: (config: Pick<Config, 'LOG_LEVEL'>, bindings: Record<string, unknown>) => Logger;
  readonly createBus: (config: Config, logger: Logger, options: BusOptions) => Promise<Bus>;
  readonly createWorkerAdapters: (
    config: Config,
    logger: Logger,
    kinds: WorkerKinds,
  ) => Promise<WorkerAdapters>;
  /** The GitOps repository of PHOENIX_GITOPS_REPO (the promoter's), undefined when unset. */
  readonly createGitops?: (config: Config) => GitopsRepository | undefined;
}

interface WorkerOptions {
  concurrency?: number;
  ackWaitSeconds?: number;
  subjectPrefix?: string;
  healthPort?: number;
}

const positiveInt = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer.');
  return n;
};

const port = (value: string): number => {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new InvalidArgumentError('expected a port, 0 to 65535.');
  return n;
};

const WORKER_KINDS = ['deployer', 'analyzer', 'promoter', 'all'] as const;
type WorkerKind = (typeof WORKER_KINDS)[number];

/** Adds `worker deployer|analyzer|all` to the CLI program. */
export function registerWorkerCommands(program: Command, deps: WorkerCommandDeps): void {
  program
    .command('worker')
    .description('run one saga worker on its own, for scale-out over NATS (needs NATS_URL)')
    .addArgument(
      new Argument(
        '<kind>',
        'which worker (all: every one, sharing one local data plane; promoter: needs PHOENIX_GITOPS_REPO)',
      ).choices(WORKER_KINDS),
    )
    .option(
      '--concurrency <n>',
      'deploys or analyses carried out at once (default: deployer PHOENIX_DEPLOYER_CONCURRENCY, else 4, or 32 with PHOENIX_DEPLOYER=kubernetes; analyzer 2)',
      positiveInt,
    )
    .option(
      '--ack-wait-seconds <n>',
      'how long a command held by a worker that died waits before it is redelivered',
      positiveInt,
      30,
    )
    .option('--subject-prefix <prefix>', 'NATS subject and stream prefix (default: PHOENIX_NATS_PREFIX)')
    .option(
      '--health-port <port>',
      'serve /healthz, /readyz and /metrics on HOST:port, 0 for any free port (default: PHOENIX_WORKER_HEALTH_PORT; none when unset)',
      port,
    )
    .action(async (kind: WorkerKind, options: WorkerOptions) => runWorker(kind, options, deps));
}

async function runWorker(kind: WorkerKind, options: WorkerOptions, deps: WorkerCommandDeps): Promise<void> {
  const config = deps.config();
  if (!config.NATS_URL) {
    throw new CliError(
      `NATS_URL is required for a standalone ${kind} worker (without NATS the server runs the workers in-process)`,
      2,
    );
  }
  const prefix = options.subjectPrefix ?? config.PHOENIX_NATS_PREFIX;
  const deploys = kind === 'deployer' || kind === 'all';
  const analyzes = kind === 'analyzer' || kind === 'all';
  const gitops = kind === 'promoter' || kind === 'all' ? deps.createGitops?.(config) : undefined;
  if (kind === 'promoter' && gitops === undefined)
    throw new CliError(
      'PHOENIX_GITOPS_REPO is required for a promoter worker (the repository it commits to)',
      2,
    );
  const logger = deps.createLogger(config, { worker: kind, pid: process.pid });
  const bus = await deps.createBus(config, logger, {
    prefix,
    ackWaitMs: (options.ackWaitSeconds ?? 30) * 1000,
    name: `phoenix-${kind}-worker`,
  });
  // A standalone worker builds only the adapters of its kinds; `all` shares one local data plane.
  let adapters: WorkerAdapters | undefined;
  let health: WorkerHealth | undefined;
  const consumers: Consumer[] = [];
  const healthPort = options.healthPort ?? config.PHOENIX_WORKER_HEALTH_PORT;
  try {
    // First, so that a port that cannot be had fails the start before any command is taken.
    if (healthPort !== undefined) {
      health = await startWorkerHealth({ host: config.HOST, port: healthPort, bus, logger }).catch((err) => {
        const code = (err as NodeJS.ErrnoException).code;
        throw code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL'
          ? new CliError(
              `cannot serve the worker's health on ${config.HOST}:${healthPort} (${code}); set --health-port or HOST`,
              2,
            )
          : err;
      });
    }
    adapters = await deps.createWorkerAdapters(config, logger, { deployer: deploys, analyzer: analyzes });
    if (adapters.deployer) {
      const { deployer, usage } = adapters.deployer;
      consumers.push(
        await startDeployerWorker({
          bus,
          deployer,
          ...(usage ? { usage } : {}),
          logger,
          concurrency: options.concurrency ?? deployerConcurrency(config),
        }),
      );
    }
    if (adapters.analyzer) {
      if (config.PHOENIX_ANALYZER === 'local' && !deploys) {
        logger.warn(
          'PHOENIX_ANALYZER=local in a standalone analyzer sees only its own (empty) local data plane: every analysis will be inconclusive; run `worker all` or use PHOENIX_ANALYZER=prometheus',
        );
      }
      consumers.push(
        await startAnalyzerWorker({
          bus,
          analyzer: adapters.analyzer,
          logger,
          pricingProfiles: config.pricingProfiles,
          ...(options.concurrency ? { concurrency: options.concurrency } : {}),
        }),
      );
    }
    if (gitops) consumers.push(await startPromoterWorker({ bus, repository: gitops, logger }));
  } catch (err) {
    // Everything opened is closed in order, each whatever the others do, and the start's own error is
    // what is reported: a health server left open would keep a worker that cannot work alive and "live".
    const close = async (what: string, step: () => Promise<unknown> | undefined) => {
      try {
        await step();
      } catch (closeErr) {
        logger.warn({ err: closeErr }, `closing the ${what} of a ${kind} worker that did not start failed`);
      }
    };
    await close('consumers', () => Promise.all(consumers.map((c) => c.stop())));
    await close('bus', () => bus.close({ graceMs: 0 }));
    await close('adapters', () => adapters?.close());
    await close('health server', () => health?.close());
    throw err;
  }
  health?.running();
  logger.info(
    { deployer: config.PHOENIX_DEPLOYER, analyzer: config.PHOENIX_ANALYZER },
    `${kind} worker started`,
  );
  process.stderr.write(
    `phoenix: ${kind} worker consuming from NATS (${prefix})${health ? `; health on ${health.url}` : ''}; Ctrl-C stops it\n`,
  );
  // Listeners stay for the whole stop: a second signal while stopping is ignored (said in the log)
  // instead of killing the worker with its default action before it has finished what it holds.
  let stopping = false;
  const signal = await new Promise<string>((resolve) => {
    const onSignal = (name: string) => {
      if (stopping) logger.info({ signal: name }, `${kind} worker already stopping`);
      stopping = true;
      resolve(name);
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
  });
  logger.info({ signal }, `${kind} worker stopping`);
  const force = setTimeout(() => process.exit(1), 30_000);
  force.unref();
  health?.stopping();
  try {
    await Promise.all(consumers.map((c) => c.stop()));
    await bus.close();
    await adapters.close();
  } finally {
    await health?.close();
  }
  logger.info(`${kind} worker stopped`);
}

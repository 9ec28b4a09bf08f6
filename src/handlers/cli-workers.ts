/**
 * `phoenix worker deployer|analyzer`: one saga worker on its own, competing over NATS with any other
 * workers of its kind. Also the factories that build the bus, the deployer and the analyzer from the
 * configuration, for the composition root (which runs both workers in-process) and for this command.
 *
 * The local data plane lives in the process that deploys to it: the `local` deployer and analyzer share
 * one instance, so with PHOENIX_DEPLOYER=local the analyzer must run in the same process (the embedded
 * default, or a server with NATS that runs its workers in-process).
 */
import { Argument, type Command, InvalidArgumentError } from 'commander';
import pino, { type Logger } from 'pino';
import { createInProcessBus } from '../adapters/inprocess-bus.js';
import { LocalAnalyzer } from '../adapters/local-analyzer.js';
import { LocalDataPlane } from '../adapters/local-dataplane.js';
import { LocalDeployer } from '../adapters/local-deployer.js';
import { NatsBus } from '../adapters/nats-bus.js';
import { PrometheusAnalyzer } from '../adapters/prometheus-analyzer.js';
import { CliError } from '../cli.js';
import { type Config, ConfigError, loadConfig } from '../config.js';
import type { Analyzer } from './ports/analyzer.js';
import type { Bus, Consumer } from './ports/bus.js';
import type { Deployer, UsageSource } from './ports/deployer.js';
import { startAnalyzerWorker, startDeployerWorker } from './workers.js';

export interface BusOptions {
  /** NATS subject and stream prefix; default `phoenix`. */
  readonly prefix?: string;
  /** How long a worker that died holds a message before it is redelivered; default 30 s. */
  readonly ackWaitMs?: number;
  /** Connection name, for the server's monitoring. */
  readonly name?: string;
}

/** NATS JetStream when NATS_URL is set, else the in-process bus. */
export async function createBus(config: Config, logger: Logger, options: BusOptions = {}): Promise<Bus> {
  if (!config.NATS_URL) return createInProcessBus();
  return NatsBus.connect({
    servers: config.NATS_URL,
    logger,
    ...(options.prefix ? { prefix: options.prefix } : {}),
    ...(options.ackWaitMs ? { ackWaitMs: options.ackWaitMs } : {}),
    name: options.name ?? 'phoenix',
  });
}

export interface AdapterDeps {
  readonly logger: Logger;
  /** The local data plane to use; one is started (and closed with the adapters) when needed and absent. */
  readonly dataPlane?: LocalDataPlane;
}

export interface WorkerAdapters {
  readonly deployer: Deployer;
  /** Where tuned candidates read the baseline's usage; undefined when nothing can provide it. */
  readonly usage: UsageSource | undefined;
  readonly analyzer: Analyzer;
  /** The local data plane in use, if any (the server may expose its endpoint). */
  readonly dataPlane: LocalDataPlane | undefined;
  /** Closes what the factory opened (a data plane it started). */
  close(): Promise<void>;
}

/** The deployer PHOENIX_DEPLOYER names, and the usage source that goes with it. */
export async function createDeployer(
  config: Config,
  deps: { readonly dataPlane?: LocalDataPlane },
): Promise<{ deployer: Deployer; usage: UsageSource | undefined }> {
  if (config.PHOENIX_DEPLOYER === 'local') {
    if (!deps.dataPlane) throw new Error('the local deployer needs the local data plane');
    const local = new LocalDeployer(deps.dataPlane);
    return { deployer: local, usage: local };
  }
  // Loaded only when asked for: the Kubernetes client is heavy, and the embedded default never needs it.
  const [{ KubeConfig }, { KubernetesDeployer }] = await Promise.all([
    import('@kubernetes/client-node'),
    import('../adapters/kubernetes-deployer.js'),
  ]);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromDefault();
  return {
    deployer: new KubernetesDeployer(kubeConfig),
    usage: config.PROMETHEUS_URL ? new PrometheusAnalyzer({ url: config.PROMETHEUS_URL }) : undefined,
  };
}

/** The analyzer PHOENIX_ANALYZER names. */
export function createAnalyzer(config: Config, deps: { readonly dataPlane?: LocalDataPlane }): Analyzer {
  if (config.PHOENIX_ANALYZER === 'prometheus') {
    if (!config.PROMETHEUS_URL)
      throw new Error('PROMETHEUS_URL is required when PHOENIX_ANALYZER=prometheus');
    return new PrometheusAnalyzer({ url: config.PROMETHEUS_URL });
  }
  if (!deps.dataPlane) throw new Error('the local analyzer needs the local data plane');
  return new LocalAnalyzer(deps.dataPlane);
}

/** Where the local data plane listens (PHOENIX_DATAPLANE_HOST/PORT), so a Prometheus can scrape it. */
export const dataPlaneAddress = (config: Config) => ({
  host: config.PHOENIX_DATAPLANE_HOST,
  port: config.PHOENIX_DATAPLANE_PORT,
});

/** Deployer, usage source and analyzer from the configuration, sharing one local data plane. */
export async function createWorkerAdapters(config: Config, deps: AdapterDeps): Promise<WorkerAdapters> {
  const needsPlane = config.PHOENIX_DEPLOYER === 'local' || config.PHOENIX_ANALYZER === 'local';
  const owned =
    needsPlane && !deps.dataPlane ? await LocalDataPlane.start(dataPlaneAddress(config)) : undefined;
  const dataPlane = deps.dataPlane ?? owned;
  if (owned) deps.logger.info({ url: owned.url }, 'local data plane serving');
  try {
    const { deployer, usage } = await createDeployer(config, dataPlane ? { dataPlane } : {});
    const analyzer = createAnalyzer(config, dataPlane ? { dataPlane } : {});
    return {
      deployer,
      usage,
      analyzer,
      dataPlane,
      async close() {
        await owned?.close();
      },
    };
  } catch (err) {
    await owned?.close();
    throw err;
  }
}

interface WorkerOptions {
  concurrency?: number;
  ackWaitSeconds?: number;
  subjectPrefix?: string;
}

const positiveInt = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer.');
  return n;
};

const WORKER_KINDS = ['deployer', 'analyzer', 'all'] as const;
type WorkerKind = (typeof WORKER_KINDS)[number];

/** Adds `worker deployer|analyzer` to the CLI program. */
export function registerWorkerCommands(program: Command): void {
  program
    .command('worker')
    .description('run one saga worker on its own, for scale-out over NATS (needs NATS_URL)')
    .addArgument(
      new Argument('<kind>', 'which worker (all: both, sharing one local data plane)').choices(WORKER_KINDS),
    )
    .option(
      '--concurrency <n>',
      'deploys or analyses carried out at once (default: deployer 4, analyzer 2)',
      positiveInt,
    )
    .option(
      '--ack-wait-seconds <n>',
      'how long a command held by a worker that died waits before it is redelivered',
      positiveInt,
      30,
    )
    .option('--subject-prefix <prefix>', 'NATS subject and stream prefix (default: PHOENIX_NATS_PREFIX)')
    .action(async (kind: WorkerKind, options: WorkerOptions) => runWorker(kind, options));
}

async function runWorker(kind: WorkerKind, options: WorkerOptions): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`invalid configuration: ${err.message}`, 2);
    throw err;
  }
  if (!config.NATS_URL) {
    throw new CliError(
      `NATS_URL is required for a standalone ${kind} worker (without NATS the server runs the workers in-process)`,
      2,
    );
  }
  const prefix = options.subjectPrefix ?? config.PHOENIX_NATS_PREFIX;
  const deploys = kind === 'deployer' || kind === 'all';
  const analyzes = kind === 'analyzer' || kind === 'all';
  const logger = pino({
    level: config.LOG_LEVEL,
    base: { service: 'phoenix', worker: kind, pid: process.pid },
  });
  const bus = await createBus(config, logger, {
    prefix,
    ackWaitMs: (options.ackWaitSeconds ?? 30) * 1000,
    name: `phoenix-${kind}-worker`,
  });
  // A standalone worker builds only the adapters of its kinds; `all` shares one local data plane.
  let dataPlane: LocalDataPlane | undefined;
  const consumers: Consumer[] = [];
  try {
    if (
      (deploys && config.PHOENIX_DEPLOYER === 'local') ||
      (analyzes && config.PHOENIX_ANALYZER === 'local')
    ) {
      dataPlane = await LocalDataPlane.start(dataPlaneAddress(config));
      logger.info({ url: dataPlane.url }, 'local data plane serving');
    }
    if (deploys) {
      const { deployer, usage } = await createDeployer(config, dataPlane ? { dataPlane } : {});
      consumers.push(
        await startDeployerWorker({
          bus,
          deployer,
          ...(usage ? { usage } : {}),
          logger,
          ...(options.concurrency ? { concurrency: options.concurrency } : {}),
        }),
      );
    }
    if (analyzes) {
      if (config.PHOENIX_ANALYZER === 'local' && !deploys) {
        logger.warn(
          'PHOENIX_ANALYZER=local in a standalone analyzer sees only its own (empty) local data plane: every analysis will be inconclusive; run `worker all` or use PHOENIX_ANALYZER=prometheus',
        );
      }
      consumers.push(
        await startAnalyzerWorker({
          bus,
          analyzer: createAnalyzer(config, dataPlane ? { dataPlane } : {}),
          logger,
          ...(options.concurrency ? { concurrency: options.concurrency } : {}),
        }),
      );
    }
  } catch (err) {
    await Promise.all(consumers.map((c) => c.stop()));
    await bus.close({ graceMs: 0 });
    await dataPlane?.close();
    throw err;
  }
  logger.info(
    { deployer: config.PHOENIX_DEPLOYER, analyzer: config.PHOENIX_ANALYZER },
    `${kind} worker started`,
  );
  process.stderr.write(`phoenix: ${kind} worker consuming from NATS (${prefix}); Ctrl-C stops it\n`);
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  logger.info({ signal }, `${kind} worker stopping`);
  const force = setTimeout(() => process.exit(1), 30_000);
  force.unref();
  await Promise.all(consumers.map((c) => c.stop()));
  await bus.close();
  await dataPlane?.close();
  logger.info(`${kind} worker stopped`);
}

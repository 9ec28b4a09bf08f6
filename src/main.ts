import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { EmulatorFleetSampler } from './adapters/emulator-fleet-sampler.js';
import { EsdbEventStore } from './adapters/esdb-event-store.js';
import { GitCliRepository } from './adapters/git-gitops.js';
import { createInProcessBus } from './adapters/inprocess-bus.js';
import { LocalAnalyzer } from './adapters/local-analyzer.js';
import { LocalDataPlane, LocalDataPlaneError } from './adapters/local-dataplane.js';
import { LocalDeployer } from './adapters/local-deployer.js';
import { NatsBus } from './adapters/nats-bus.js';
import { openPGlite, openPostgres, pingDatabase } from './adapters/postgres-database.js';
import { PostgresEventStore } from './adapters/postgres-event-store.js';
import { PostgresIdempotencyStore } from './adapters/postgres-idempotency.js';
import { PostgresLogReader } from './adapters/postgres-log-reader.js';
import { migrateToLatest } from './adapters/postgres-migrations.js';
import { PrometheusAnalyzer } from './adapters/prometheus-analyzer.js';
import { loadOrCreateSecret } from './adapters/secret-file.js';
import { createCommandService } from './application/command-service.js';
import { experimentCodec } from './application/experiment-codec.js';
import { KnownStreams, STREAM_PREFIX } from './application/experiment-commands.js';
import type { Analyzer } from './application/ports/analyzer.js';
import type { Bus } from './application/ports/bus.js';
import type { SqlDatabase } from './application/ports/database.js';
import type { Deployer, UsageSource } from './application/ports/deployer.js';
import type { EventStore } from './application/ports/event-store.js';
import type { GitopsRepository } from './application/ports/gitops.js';
import type { LogReader } from './application/ports/log-reader.js';
import type { ReadModels } from './application/ports/read-models.js';
import { createPreviewService } from './application/preview.js';
import { type Config, deployerConcurrency } from './config.js';
import type { ExperimentEvent } from './domain/experiment.js';
import { TokenService } from './handlers/auth.js';
import type { CommandDatabase, CommandStorage } from './handlers/cli-replay.js';
import type { BusOptions, WorkerAdapters, WorkerKinds } from './handlers/cli-workers.js';
import { registerExperimentMetrics } from './handlers/experiment-metrics.js';
import { DEFAULT_SAGA_TIMEOUTS, lifecycleSagaHandler, SagaEffects } from './handlers/experiment-saga.js';
import { createGrpcServer, type GrpcServer } from './handlers/grpc/server.js';
import { buildApp } from './handlers/http/app.js';
import { auditRoutes } from './handlers/http/audit.js';
import { catchUpWith, experimentRoutes } from './handlers/http/experiments.js';
import { liveRoutes } from './handlers/http/live.js';
import { previewRoutes } from './handlers/http/preview.js';
import { LiveHub } from './handlers/live-hub.js';
import { commandMetricsOf, createMetrics, type Metrics, readSideMetricsOf } from './handlers/metrics.js';
import { startPromoterWorker } from './handlers/promoter-worker.js';
import { lockEmbeddedDatabase } from './handlers/serve.js';
import { startWorkers } from './handlers/workers.js';
import { createProjections, ProjectionRunner, type Projections } from './projections/index.js';

/**
 * The composition root: the one place that builds the adapters and wires everything by passing them
 * as arguments. The configuration arrives read and validated (by the entry, src/cli.ts, or a test).
 * `buildSystem` listens on nothing; `serve` does. The CLI commands get the openers below from
 * src/cli.ts as arguments; nothing under src/handlers or src/projections imports this module.
 */
export interface System {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: SqlDatabase;
  readonly store: EventStore<ExperimentEvent>;
  /** The store's log reader: what projections, the saga runner and the live feed follow. */
  readonly log: LogReader<ExperimentEvent>;
  readonly metrics: Metrics;
  readonly tokens: TokenService;
  readonly projections: Projections;
  readonly readModels: ReadModels;
  readonly bus: Bus;
  readonly app: FastifyInstance;
  /** The gRPC API, built without listening (serve listens on GRPC_PORT); undefined when GRPC_PORT=0. */
  readonly grpc: GrpcServer | undefined;
  /** The local data plane of the in-process workers, when they run one (chaos: collector faults). */
  readonly dataPlane: LocalDataPlane | undefined;
  /** Starts the background parts (projections, sagas). */
  start(): Promise<void>;
  /** Stops everything, in reverse order, and closes connections. */
  stop(): Promise<void>;
}

/** The process's logger; `bindings` adds fields to every line (a worker's kind, say). */
export function createLogger(
  config: Pick<Config, 'LOG_LEVEL'>,
  bindings: Record<string, unknown> = {},
): Logger {
  return pino({ level: config.LOG_LEVEL, base: { service: 'phoenix', ...bindings } });
}

/** The database for read models (and events, without EVENTSTORE_URL): real PostgreSQL or embedded PGlite. */
export async function openDatabase(config: Config, logger: Logger): Promise<SqlDatabase> {
  const database = config.DATABASE_URL
    ? openPostgres({ url: config.DATABASE_URL, logger })
    : await openPGlite(join(config.PHOENIX_DATA_DIR, 'pgdata'));
  await migrateToLatest(database.db);
  return database;
}

/** The event store, and its log reader for the read side (over the experiment streams). */
export function openEventStore(
  config: Config,
  database: SqlDatabase,
): { store: EventStore<ExperimentEvent>; log: LogReader<ExperimentEvent> } {
  if (config.EVENTSTORE_URL) {
    const store = new EsdbEventStore<ExperimentEvent>(config.EVENTSTORE_URL, { codec: experimentCodec });
    return { store, log: store.logReader({ streamPrefix: STREAM_PREFIX }) };
  }
  const store = new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec });
  return { store, log: new PostgresLogReader(store, database, experimentCodec) };
}

/**
 * The database for a one-shot command (migrate, audit): the embedded one is one process's, so it is
 * locked while open and never opened under a running server.
 */
export async function openCommandDatabase(config: Config, logger: Logger): Promise<CommandDatabase> {
  const release = config.DATABASE_URL ? () => undefined : lockEmbeddedDatabase(config.PHOENIX_DATA_DIR);
  try {
    const database = await openDatabase(config, logger);
    return {
      database,
      async close() {
        try {
          await database.close();
        } finally {
          release();
        }
      },
    };
  } catch (err) {
    release();
    throw err;
  }
}

/** The database and the event store for a one-shot command (replay, events, state), as the server opens them. */
export async function openCommandStorage(config: Config, logger: Logger): Promise<CommandStorage> {
  const opened = await openCommandDatabase(config, logger);
  let store: EventStore<ExperimentEvent>;
  let log: LogReader<ExperimentEvent>;
  try {
    ({ store, log } = openEventStore(config, opened.database));
  } catch (err) {
    await opened.close();
    throw err;
  }
  return {
    database: opened.database,
    store,
    log,
    async close() {
      try {
        await store.close();
      } finally {
        await opened.close();
      }
    },
  };
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

/** The deployer PHOENIX_DEPLOYER names, and the usage source that goes with it. */
async function createDeployer(
  config: Config,
  logger: Logger,
  deps: { readonly dataPlane?: LocalDataPlane; readonly prometheusUrl?: string },
): Promise<{ deployer: Deployer; usage: UsageSource | undefined; close?: () => Promise<void> }> {
  if (config.PHOENIX_DEPLOYER === 'local') {
    if (!deps.dataPlane) throw new Error('the local deployer needs the local data plane');
    const local = new LocalDeployer(deps.dataPlane);
    return { deployer: local, usage: local };
  }
  const usage = deps.prometheusUrl ? new PrometheusAnalyzer({ url: deps.prometheusUrl }) : undefined;
  if (config.PHOENIX_DEPLOYER === 'otelcol') {
    const { OtelcolDeployer } = await import('./adapters/otelcol-deployer.js');
    const otelcol = new OtelcolDeployer({
      bin: config.PHOENIX_OTELCOL,
      stateDir: join(config.PHOENIX_DATA_DIR, 'otelcol'),
      sdDir: prometheusSdDir(config),
      processesPerHost: config.PHOENIX_OTELCOL_PROCESSES_PER_HOST,
      maxProcessesPerCollector: config.PHOENIX_OTELCOL_MAX_PROCESSES_PER_COLLECTOR,
      maxShardsPerVariant: config.PHOENIX_OTELCOL_MAX_SHARDS,
      logger,
    });
    await otelcol.recover();
    return { deployer: otelcol, usage, close: () => otelcol.close() };
  }
  // Loaded only when asked for: the Kubernetes client is heavy, and the embedded default never needs it.
  const [{ KubeConfig }, { KubernetesDeployer }] = await Promise.all([
    import('@kubernetes/client-node'),
    import('./adapters/kubernetes-deployer.js'),
  ]);
  // KUBECONFIG, ~/.kube/config, or the pod's service account in a cluster.
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromDefault();
  const kubernetes = new KubernetesDeployer(kubeConfig, {
    mode: config.PHOENIX_KUBERNETES_MODE,
    readinessTimeoutMs: config.PHOENIX_KUBERNETES_READINESS_TIMEOUT_SECONDS * 1000,
    retryBudgetMs: config.PHOENIX_KUBERNETES_RETRY_SECONDS * 1000,
    logger,
  });
  return { deployer: kubernetes, usage, close: () => kubernetes.close() };
}

/** Where the otelcol deployer writes Prometheus file_sd targets. */
const prometheusSdDir = (config: Config): string =>
  config.PHOENIX_PROMETHEUS_SD_DIR ?? join(config.PHOENIX_DATA_DIR, 'prometheus', 'targets');

/** The analyzer PHOENIX_ANALYZER names. */
function createAnalyzer(
  config: Config,
  deps: { readonly dataPlane?: LocalDataPlane; readonly prometheusUrl?: string },
): Analyzer {
  if (config.PHOENIX_ANALYZER === 'prometheus') {
    if (!deps.prometheusUrl)
      throw new Error(
        'PHOENIX_ANALYZER=prometheus needs PROMETHEUS_URL, or the Prometheus of PHOENIX_DEPLOYER=otelcol in the same process',
      );
    return new PrometheusAnalyzer({ url: deps.prometheusUrl });
  }
  if (!deps.dataPlane) throw new Error('the local analyzer needs the local data plane');
  return new LocalAnalyzer(deps.dataPlane);
}

/**
 * The deployer (with its usage source) and the analyzer of the kinds asked for, from the configuration.
 * The local data plane lives in the process that deploys to it: when a kind asked for is `local`, one
 * is started (PHOENIX_DATAPLANE_HOST/PORT, so a Prometheus can scrape it), shared by both, and closed
 * by `close`. So does the Prometheus of the otelcol data plane when PROMETHEUS_URL is not set.
 */
export async function createWorkerAdapters(
  config: Config,
  logger: Logger,
  kinds: WorkerKinds = { deployer: true, analyzer: true },
): Promise<WorkerAdapters & { readonly dataPlane?: LocalDataPlane }> {
  const needsPlane =
    (kinds.deployer && config.PHOENIX_DEPLOYER === 'local') ||
    (kinds.analyzer && config.PHOENIX_ANALYZER === 'local');
  const dataPlane = needsPlane
    ? await LocalDataPlane.start({ host: config.PHOENIX_DATAPLANE_HOST, port: config.PHOENIX_DATAPLANE_PORT })
    : undefined;
  if (dataPlane) logger.info({ url: dataPlane.url }, 'local data plane serving');
  const closers: (() => Promise<void>)[] = [async () => dataPlane?.close()];
  const close = async () => {
    for (const step of [...closers].reverse()) await step();
  };
  try {
    let prometheusUrl = config.PROMETHEUS_URL;
    if (!prometheusUrl && kinds.deployer && config.PHOENIX_DEPLOYER === 'otelcol') {
      const { ManagedPrometheus } = await import('./adapters/prometheus-server.js');
      const prometheus = await ManagedPrometheus.start({
        bin: config.PHOENIX_PROMETHEUS_BIN,
        dir: join(config.PHOENIX_DATA_DIR, 'prometheus'),
        sdDir: prometheusSdDir(config),
      });
      closers.push(() => prometheus.stop());
      prometheusUrl = prometheus.url;
      logger.info({ url: prometheusUrl }, 'managed Prometheus serving');
    }
    const deps = { ...(dataPlane ? { dataPlane } : {}), ...(prometheusUrl ? { prometheusUrl } : {}) };
    const deployer = kinds.deployer ? await createDeployer(config, logger, deps) : undefined;
    if (deployer?.close) closers.push(deployer.close);
    return {
      ...(deployer ? { deployer: { deployer: deployer.deployer, usage: deployer.usage } } : {}),
      ...(kinds.analyzer ? { analyzer: createAnalyzer(config, deps) } : {}),
      ...(dataPlane ? { dataPlane } : {}),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** `phoenix simulate`'s fleet: a local data plane that serves nothing and ticks only when asked. */
export const openSimulator = () => new LocalDataPlane({ tickMs: 0 });

/** A refusal of the local data plane (a config it cannot run): the user's input, not a failure. */
export const isSimulatorRefusal = (err: unknown): err is Error => err instanceof LocalDataPlaneError;

export function jwtSecret(config: Config): string {
  return config.PHOENIX_JWT_SECRET ?? loadOrCreateSecret(config.PHOENIX_DATA_DIR);
}

/**
 * The GitOps repository PHOENIX_GITOPS_REPO names (undefined: promotion is disabled). The token comes
 * from PHOENIX_GITOPS_TOKEN or the file PHOENIX_GITOPS_TOKEN_FILE names; it is never logged.
 */
export function createGitops(config: Config): GitopsRepository | undefined {
  if (!config.PHOENIX_GITOPS_REPO) return undefined;
  const token =
    config.PHOENIX_GITOPS_TOKEN ??
    (config.PHOENIX_GITOPS_TOKEN_FILE
      ? readFileSync(config.PHOENIX_GITOPS_TOKEN_FILE, 'utf8').trim()
      : undefined);
  return new GitCliRepository({
    url: config.PHOENIX_GITOPS_REPO,
    branch: config.PHOENIX_GITOPS_BRANCH,
    workDir: config.PHOENIX_GITOPS_WORKDIR ?? join(config.PHOENIX_DATA_DIR, 'gitops'),
    username: config.PHOENIX_GITOPS_USERNAME,
    token,
  });
}

/** Read models further behind than this make /readyz fail. */
const READY_MAX_LAG_EVENTS = 1_000;

/**
 * Where `npm run build` writes the dashboard (ui/, Vite): dist/ui of the repository, the same folder
 * whether this module runs from src/ (tsx) or from dist/ (compiled).
 */
const DASHBOARD_ASSETS = fileURLToPath(new URL('../dist/ui/', import.meta.url));

export async function buildSystem(config: Config, options: { logger?: Logger } = {}): Promise<System> {
  const logger = options.logger ?? createLogger(config);
  const database = await openDatabase(config, logger);
  const { store, log } = openEventStore(config, database);
  const metrics = createMetrics();
  const secret = jwtSecret(config);
  const tokens = new TokenService(secret);
  const projections = createProjections({
    database,
    log,
    store,
    metrics: readSideMetricsOf(metrics),
    logger,
    cursorSecret: secret,
  });
  const readModels = projections.readModels;
  registerExperimentMetrics(metrics.registry, {
    readModels,
    maxExperiments: config.PHOENIX_METRICS_EXPERIMENTS,
    maxAgeDays: config.PHOENIX_METRICS_EXPERIMENT_DAYS,
    onError: (err) => logger.warn({ err }, 'could not read the experiments for /metrics'),
  });
  const hub = new LiveHub(log, logger);
  const idempotency = new PostgresIdempotencyStore(database.db);
  const catchUp = catchUpWith(readModels);

  // The lifecycle saga: a checkpointed subscriber (one active instance across processes, never run by
  // a rebuild) decides; SagaEffects carries its decisions out over the bus.
  const bus = await createBus(config, logger, { prefix: config.PHOENIX_NATS_PREFIX });
  // One view of recently decided experiments for the API and the saga, which take turns on them.
  const known = new KnownStreams();
  const commandMetrics = commandMetricsOf(metrics);
  const sagaEffects = new SagaEffects({
    db: database.db,
    store,
    bus,
    logger,
    metrics: commandMetrics,
    known,
    probeIntervalMs: config.PHOENIX_PROBE_INTERVAL_SECONDS * 1000,
    sweepIntervalMs: config.PHOENIX_SWEEP_INTERVAL_SECONDS * 1000,
  });
  const sagaRunner = new ProjectionRunner<ExperimentEvent>({
    database,
    log,
    store,
    logger,
    handler: lifecycleSagaHandler(store, DEFAULT_SAGA_TIMEOUTS),
  });
  // A batch that only moved the checkpoint decided nothing for the effects to carry out.
  sagaRunner.on('applied', (_position, wrote) => {
    if (wrote) sagaEffects.wake();
  });
  // Without NATS there is no one else to do the work; with NATS the server works too unless told not to.
  const workerAdapters = config.PHOENIX_INPROCESS_WORKERS
    ? await createWorkerAdapters(config, logger)
    : undefined;
  let workers: { stop(): Promise<void> } | undefined;
  const gitops = createGitops(config);
  let promoter: { stop(): Promise<void> } | undefined;

  // The one command service every transport calls.
  const clock = () => new Date();
  const newId = () => randomUUID();
  const commands = createCommandService({
    store,
    idempotency,
    metrics: commandMetrics,
    clock,
    newId,
    known,
  });

  const readiness = {
    database: () => pingDatabase(database.db),
    eventStore: () => store.ping(),
    bus: () => bus.ping(),
    readModels: async () => {
      if (projections.runner.status === 'failed') throw new Error('the read-model projection has stopped');
      const lag = await projections.lag();
      if (lag.events > READY_MAX_LAG_EVENTS) throw new Error(`read models are ${lag.events} events behind`);
    },
  };
  // The preview samples the fleet the deployer in use simulates (the otelcol deployer's is smaller).
  const previews = createPreviewService({
    sampler: new EmulatorFleetSampler({
      processesPerHost:
        config.PHOENIX_DEPLOYER === 'otelcol' ? config.PHOENIX_OTELCOL_PROCESSES_PER_HOST : 500,
    }),
  });
  const pricingProfileNames = config.pricingProfiles.map((p) => p.name);

  // The gRPC API: the same command service, read models, live hub, tokens and readiness as HTTP.
  const grpc =
    config.GRPC_PORT === 0
      ? undefined
      : createGrpcServer({
          logger,
          tokens,
          commands,
          store,
          readModels,
          hub,
          readiness,
          rateLimitPerMinute: config.PHOENIX_RATE_LIMIT_PER_MINUTE,
          metrics,
          previews,
          pricingProfiles: config.pricingProfiles,
          promotionEnabled: gitops !== undefined,
        });

  const app = await buildApp({
    logger,
    metrics,
    tokens,
    rateLimitPerMinute: config.PHOENIX_RATE_LIMIT_PER_MINUTE,
    corsOrigins: config.PHOENIX_CORS_ORIGINS,
    readiness,
    dashboard: { root: DASHBOARD_ASSETS },
    routes: [
      (scope) =>
        experimentRoutes(scope, {
          store,
          readModels,
          idempotency,
          metrics,
          clock,
          newId,
          known,
          commands,
          pricingProfiles: pricingProfileNames,
          promotionEnabled: gitops !== undefined,
        }),
      (scope) => previewRoutes(scope, { store, previews, pricingProfiles: config.pricingProfiles }),
      (scope) => auditRoutes(scope, { readModels, catchUp }),
      (scope) => liveRoutes(scope, { hub }),
    ],
  });

  const purgeIdempotency = setInterval(() => {
    idempotency
      .purge(24 * 3600)
      .catch((err: unknown) => logger.warn({ err }, 'could not purge idempotency keys'));
  }, 3600_000);
  purgeIdempotency.unref();

  let stopped = false;
  return {
    config,
    logger,
    database,
    store,
    log,
    metrics,
    tokens,
    projections,
    readModels,
    bus,
    app,
    grpc,
    dataPlane: workerAdapters?.dataPlane,
    async start() {
      await projections.start();
      await hub.start();
      if (workerAdapters?.deployer && workerAdapters.analyzer) {
        const { deployer, usage } = workerAdapters.deployer;
        workers = await startWorkers({
          bus,
          deployer,
          analyzer: workerAdapters.analyzer,
          ...(usage ? { usage } : {}),
          logger,
          pricingProfiles: config.pricingProfiles,
          deployerConcurrency: deployerConcurrency(config),
        });
      }
      if (gitops && config.PHOENIX_INPROCESS_WORKERS) {
        promoter = await startPromoterWorker({ bus, repository: gitops, logger });
        logger.info({ repository: gitops.repository, branch: gitops.branch }, 'promotions commit to Git');
      }
      sagaRunner.start();
      await sagaEffects.start();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(purgeIdempotency);
      // Outside in: stop taking requests, then the background parts, then the connections.
      const steps: [string, () => Promise<void> | undefined][] = [
        ['http', () => app.close()],
        ['grpc', () => grpc?.stop()],
        ['saga effects', () => sagaEffects.stop()],
        ['saga runner', () => sagaRunner.stop()],
        ['workers', () => workers?.stop()],
        ['promoter', () => promoter?.stop()],
        ['bus', () => bus.close()],
        ['worker adapters', () => workerAdapters?.close()],
        ['live hub', () => hub.stop()],
        ['projections', () => projections.stop()],
        ['event store', () => store.close()],
        ['database', () => database.close()],
      ];
      for (const [name, step] of steps) {
        logger.debug({ step: name }, 'stopping');
        await step();
      }
    },
  };
}

import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { EsdbEventStore } from './adapters/esdb-event-store.js';
import { openPGlite, openPostgres, pingDatabase, type SqlDatabase } from './adapters/postgres-database.js';
import { PostgresEventStore } from './adapters/postgres-event-store.js';
import { PostgresIdempotencyStore } from './adapters/postgres-idempotency.js';
import { migrateToLatest } from './adapters/postgres-migrations.js';
import { loadOrCreateSecret } from './adapters/secret-file.js';
import type { Config } from './config.js';
import type { ExperimentEvent } from './domain/experiment.js';
import { TokenService } from './handlers/auth.js';
import { createBus, createWorkerAdapters } from './handlers/cli-workers.js';
import { experimentCodec } from './handlers/experiment-codec.js';
import { KnownStreams } from './handlers/experiment-commands.js';
import { DEFAULT_SAGA_TIMEOUTS, lifecycleSagaHandler, SagaEffects } from './handlers/experiment-saga.js';
import { buildApp } from './handlers/http/app.js';
import { auditRoutes } from './handlers/http/audit.js';
import { catchUpWith, experimentRoutes } from './handlers/http/experiments.js';
import { liveRoutes } from './handlers/http/live.js';
import { LiveHub } from './handlers/live-hub.js';
import { createMetrics, type Metrics } from './handlers/metrics.js';
import type { Bus } from './handlers/ports/bus.js';
import type { EventStore } from './handlers/ports/event-store.js';
import type { ReadModels } from './handlers/ports/read-models.js';
import { startWorkers } from './handlers/workers.js';
import { createProjections, ProjectionRunner, type Projections } from './projections/index.js';

/**
 * The composition root: the one place that reads configuration, builds the adapters and wires
 * everything by passing them as arguments. `buildSystem` listens on nothing; `serve` does.
 */
export interface System {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: SqlDatabase;
  readonly store: EventStore<ExperimentEvent>;
  readonly metrics: Metrics;
  readonly tokens: TokenService;
  readonly projections: Projections;
  readonly readModels: ReadModels;
  readonly bus: Bus;
  readonly app: FastifyInstance;
  /** Starts the background parts (projections, sagas). */
  start(): Promise<void>;
  /** Stops everything, in reverse order, and closes connections. */
  stop(): Promise<void>;
}

export function createLogger(config: Pick<Config, 'LOG_LEVEL'>): Logger {
  return pino({ level: config.LOG_LEVEL, base: { service: 'phoenix' } });
}

/** The database for read models (and events, without EVENTSTORE_URL): real PostgreSQL or embedded PGlite. */
export async function openDatabase(config: Config, logger: Logger): Promise<SqlDatabase> {
  const database = config.DATABASE_URL
    ? openPostgres({ url: config.DATABASE_URL, logger })
    : await openPGlite(join(config.PHOENIX_DATA_DIR, 'pgdata'));
  await migrateToLatest(database.db);
  return database;
}

export function openEventStore(config: Config, database: SqlDatabase): EventStore<ExperimentEvent> {
  return config.EVENTSTORE_URL
    ? new EsdbEventStore<ExperimentEvent>(config.EVENTSTORE_URL, { codec: experimentCodec })
    : new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec });
}

export function jwtSecret(config: Config): string {
  return config.PHOENIX_JWT_SECRET ?? loadOrCreateSecret(config.PHOENIX_DATA_DIR);
}

/** Read models further behind than this make /readyz fail. */
const READY_MAX_LAG_EVENTS = 1_000;

export async function buildSystem(config: Config, options: { logger?: Logger } = {}): Promise<System> {
  const logger = options.logger ?? createLogger(config);
  const database = await openDatabase(config, logger);
  const store = openEventStore(config, database);
  const metrics = createMetrics();
  const secret = jwtSecret(config);
  const tokens = new TokenService(secret);
  const projections = createProjections({ database, store, metrics, logger, cursorSecret: secret });
  const readModels = projections.readModels;
  const hub = new LiveHub(store, logger);
  const idempotency = new PostgresIdempotencyStore(database.db);
  const catchUp = catchUpWith(readModels);

  // The lifecycle saga: a checkpointed subscriber (one active instance across processes, never run by
  // a rebuild) decides; SagaEffects carries its decisions out over the bus.
  const bus = await createBus(config, logger, { prefix: config.PHOENIX_NATS_PREFIX });
  // One view of recently decided experiments for the API and the saga, which take turns on them.
  const known = new KnownStreams();
  const sagaEffects = new SagaEffects({ db: database.db, store, bus, logger, metrics, known });
  const sagaRunner = new ProjectionRunner<ExperimentEvent>({
    database,
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
    ? await createWorkerAdapters(config, { logger })
    : undefined;
  let workers: { stop(): Promise<void> } | undefined;

  const app = await buildApp({
    logger,
    metrics,
    tokens,
    rateLimitPerMinute: config.PHOENIX_RATE_LIMIT_PER_MINUTE,
    corsOrigins: config.PHOENIX_CORS_ORIGINS,
    readiness: {
      database: () => pingDatabase(database.db),
      eventStore: () => store.ping(),
      bus: () => bus.ping(),
      readModels: async () => {
        if (projections.runner.status === 'failed') throw new Error('the read-model projection has stopped');
        const lag = await projections.lag();
        if (lag.events > READY_MAX_LAG_EVENTS) throw new Error(`read models are ${lag.events} events behind`);
      },
    },
    routes: [
      (scope) =>
        experimentRoutes(scope, {
          store,
          readModels,
          idempotency,
          metrics,
          clock: () => new Date(),
          newId: () => randomUUID(),
          known,
        }),
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
    metrics,
    tokens,
    projections,
    readModels,
    bus,
    app,
    async start() {
      await projections.start();
      await hub.start();
      if (workerAdapters) {
        workers = await startWorkers({
          bus,
          deployer: workerAdapters.deployer,
          analyzer: workerAdapters.analyzer,
          ...(workerAdapters.usage ? { usage: workerAdapters.usage } : {}),
          logger,
        });
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
        ['saga effects', () => sagaEffects.stop()],
        ['saga runner', () => sagaRunner.stop()],
        ['workers', () => workers?.stop()],
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

import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { EsdbEventStore } from './adapters/esdb-event-store.js';
import { openPGlite, openPostgres, pingDatabase, type SqlDatabase } from './adapters/postgres-database.js';
import { PostgresEventStore } from './adapters/postgres-event-store.js';
import { migrateToLatest } from './adapters/postgres-migrations.js';
import { loadOrCreateSecret } from './adapters/secret-file.js';
import type { Config } from './config.js';
import type { ExperimentEvent } from './domain/experiment.js';
import { TokenService } from './handlers/auth.js';
import { experimentCodec } from './handlers/experiment-codec.js';
import { buildApp } from './handlers/http/app.js';
import { createMetrics, type Metrics } from './handlers/metrics.js';
import type { EventStore } from './handlers/ports/event-store.js';

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

export async function buildSystem(config: Config, options: { logger?: Logger } = {}): Promise<System> {
  const logger = options.logger ?? createLogger(config);
  const database = await openDatabase(config, logger);
  const store = openEventStore(config, database);
  const metrics = createMetrics();
  const tokens = new TokenService(jwtSecret(config));

  const app = await buildApp({
    logger,
    metrics,
    tokens,
    rateLimitPerMinute: config.PHOENIX_RATE_LIMIT_PER_MINUTE,
    readiness: {
      database: () => pingDatabase(database.db),
      eventStore: () => store.ping(),
    },
  });

  let stopped = false;
  return {
    config,
    logger,
    database,
    store,
    metrics,
    tokens,
    app,
    async start() {},
    async stop() {
      if (stopped) return;
      stopped = true;
      await app.close();
      await store.close();
      await database.close();
    },
  };
}

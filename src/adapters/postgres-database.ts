import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { PGlitePool } from './pglite-pool.js';

/**
 * One PostgreSQL database, real or embedded, behind Kysely. Everything that touches SQL takes this
 * (or its `db`) as its first argument, so callers own connections and transactions.
 */
export interface SqlDatabase {
  readonly kind: 'postgres' | 'pglite';
  // biome-ignore lint/suspicious/noExplicitAny: each module declares the tables it queries.
  readonly db: Kysely<any>;
  /**
   * Calls `onNotify` on each NOTIFY on `channel` from any process, and once after every reconnect (a
   * notification may have been missed meanwhile). Embedded: a no-op, only this process can write.
   */
  listen(channel: string, onNotify: () => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface PostgresOptions {
  readonly url: string;
  readonly poolSize?: number;
  readonly logger?: Logger;
  readonly applicationName?: string;
}

export function openPostgres(options: PostgresOptions): SqlDatabase {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? 20,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    application_name: options.applicationName ?? 'phoenix',
  });
  // An idle client that loses its server emits here; without a listener it would crash the process.
  pool.on('error', (err) => options.logger?.warn({ err }, 'postgres pool client error'));
  const db = new Kysely({ dialect: new PostgresDialect({ pool }) });
  const listeners = new Set<() => Promise<void>>();

  return {
    kind: 'postgres',
    db,
    async listen(channel, onNotify) {
      let client: pg.Client | undefined;
      let stopped = false;
      let delay = 100;
      const connect = async (): Promise<void> => {
        while (!stopped) {
          const c = new pg.Client({ connectionString: options.url, application_name: 'phoenix-listen' });
          c.on('error', () => undefined);
          try {
            await c.connect();
            await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
            c.on('notification', () => onNotify());
            c.on('end', () => {
              if (!stopped) {
                client = undefined;
                setTimeout(() => void connect(), delay);
              }
            });
            client = c;
            delay = 100;
            onNotify();
            return;
          } catch (err) {
            options.logger?.warn({ err, channel }, 'LISTEN connection failed; retrying');
            await c.end().catch(() => undefined);
            await new Promise((r) => setTimeout(r, delay));
            delay = Math.min(delay * 2, 5_000);
          }
        }
      };
      await connect();
      const stop = async () => {
        stopped = true;
        listeners.delete(stop);
        await client?.end().catch(() => undefined);
      };
      listeners.add(stop);
      return stop;
    },
    async close() {
      await Promise.all([...listeners].map((stop) => stop()));
      await db.destroy();
    },
  };
}

/** The embedded default: PostgreSQL compiled to WASM, in this process, kept under `dataDir`. */
export async function openPGlite(dataDir: string | undefined): Promise<SqlDatabase> {
  if (dataDir) mkdirSync(dataDir, { recursive: true });
  const pglite = await PGlite.create(dataDir ? { dataDir } : {});
  const db = new Kysely({ dialect: new PostgresDialect({ pool: new PGlitePool(pglite) }) });
  return {
    kind: 'pglite',
    db,
    async listen() {
      return async () => undefined;
    },
    async close() {
      await db.destroy();
    },
  };
}

/** A cheap round trip: is the database there? */
// biome-ignore lint/suspicious/noExplicitAny: any schema will do
export async function pingDatabase(db: Kysely<any>): Promise<void> {
  await sql`select 1`.execute(db);
}

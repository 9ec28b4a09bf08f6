import { mkdirSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, type PostgresPool, type PostgresPoolClient, sql } from 'kysely';
import pg from 'pg';
import { from as copyFromStdin } from 'pg-copy-streams';
import type { Logger } from 'pino';
import type { Db, PhoenixTables, SqlDatabase } from '../application/ports/database.js';
import { PGlitePool } from './pglite-pool.js';
import { unavailableOr } from './unreachable.js';

/** The advisory-lock key space of Phoenix ('PHNX'); the second key is a hash of schema and name. */
const ADVISORY_LOCK_SPACE = 0x50484e58;
const LOCK_HEARTBEAT_MS = 2_000;

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
  // A client checked out (inside a transaction, between statements) whose connection dies emits
  // 'error' with no query to take it; unheard, that would crash the process. The caller's next query
  // fails instead, and the pool discards the client.
  pool.on('connect', (client) => {
    client.on('error', (err) => options.logger?.warn({ err }, 'postgres connection lost'));
  });
  const db = new Kysely<PhoenixTables>({
    dialect: new PostgresDialect({ pool: reportingUnavailable(pool) }),
  });
  const listeners = new Set<() => Promise<void>>();
  const locks = new Set<() => Promise<void>>();

  return {
    kind: 'postgres',
    url: options.url,
    db,
    async query<R>(text: string, values: readonly unknown[]) {
      try {
        const { rows } = await pool.query(text, [...values]);
        return rows as R[];
      } catch (err) {
        throw unavailableOr(err);
      }
    },
    async copyFrom(statement, data) {
      const client = await pool.connect().catch(rethrowUnavailable);
      let failure: Error | undefined;
      try {
        await pipeline(Readable.from([data]), client.query(copyFromStdin(statement)));
      } catch (err) {
        // the connection may be mid-COPY: never hand it back to the pool
        failure = err instanceof Error ? err : new Error(String(err));
        throw unavailableOr(err);
      } finally {
        client.release(failure);
      }
    },
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
            c.on('notification', (n) => onNotify(n.payload ?? ''));
            c.on('end', () => {
              if (!stopped) {
                client = undefined;
                setTimeout(() => void connect(), delay);
              }
            });
            client = c;
            delay = 100;
            // Whatever was sent while this connection was away is not coming: a caller catches up.
            onNotify('');
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
    async tryAdvisoryLock(name) {
      const client = new pg.Client({
        connectionString: options.url,
        application_name: 'phoenix-lock',
        keepAlive: true,
      });
      const controller = new AbortController();
      const lose = (why: string) => {
        if (!controller.signal.aborted) controller.abort(new Error(`advisory lock '${name}' lost: ${why}`));
      };
      client.on('error', (err) => lose(err.message));
      await client.connect();
      const key = [ADVISORY_LOCK_SPACE, `:${name}`];
      let ok = false;
      try {
        const { rows } = await client.query<{ ok: boolean }>(
          'select pg_try_advisory_lock($1::int4, hashtext(current_schema() || $2)) as ok',
          key,
        );
        ok = rows[0]?.ok === true;
      } finally {
        if (!ok) await client.end().catch(() => undefined);
      }
      if (!ok) return undefined;
      client.on('end', () => lose('connection closed'));
      // A dead peer is only noticed when something is sent: probe, with a deadline.
      const heartbeat = setInterval(() => {
        const timer = setTimeout(() => lose('heartbeat timed out'), LOCK_HEARTBEAT_MS * 2);
        client
          .query('select 1')
          .catch((err: Error) => lose(err.message))
          .finally(() => clearTimeout(timer));
      }, LOCK_HEARTBEAT_MS);
      heartbeat.unref();
      let released = false;
      const release = async () => {
        if (released) return;
        released = true;
        clearInterval(heartbeat);
        locks.delete(release);
        client.removeAllListeners('end');
        await client
          .query('select pg_advisory_unlock($1::int4, hashtext(current_schema() || $2))', key)
          .catch(() => undefined);
        await client.end().catch(() => undefined);
      };
      locks.add(release);
      return { lost: controller.signal, release };
    },
    async close() {
      await Promise.all([...locks].map((release) => release()));
      await Promise.all([...listeners].map((stop) => stop()));
      await db.destroy();
    },
  };
}

/** The embedded default: PostgreSQL compiled to WASM, in this process, kept under `dataDir`. */
export async function openPGlite(dataDir: string | undefined): Promise<SqlDatabase> {
  if (dataDir) mkdirSync(dataDir, { recursive: true });
  const pglite = await PGlite.create(dataDir ? { dataDir } : {});
  const pool = new PGlitePool(pglite);
  const db = new Kysely<PhoenixTables>({
    dialect: new PostgresDialect({ pool: reportingUnavailable(pool) }),
  });
  const held = new Map<string, AbortController>();
  return {
    kind: 'pglite',
    db,
    async query<R>(text: string, values: readonly unknown[]) {
      const client = await pool.connect().catch(rethrowUnavailable);
      try {
        return (await client.query<R>(text, values)).rows;
      } catch (err) {
        throw unavailableOr(err);
      } finally {
        client.release();
      }
    },
    async listen() {
      return async () => undefined;
    },
    async tryAdvisoryLock(name) {
      if (held.has(name)) return undefined;
      const controller = new AbortController();
      held.set(name, controller);
      return {
        lost: controller.signal,
        async release() {
          if (held.get(name) === controller) held.delete(name);
        },
      };
    },
    async close() {
      for (const controller of held.values()) controller.abort(new Error('the database is closed'));
      held.clear();
      await db.destroy();
    },
  };
}

const isThenable = (x: unknown): x is PromiseLike<unknown> =>
  typeof (x as { then?: unknown } | null)?.then === 'function';

const rethrowUnavailable = (err: unknown): never => {
  throw unavailableOr(err);
};

/**
 * The pool as Kysely sees it, with the driver's connection-level failures (refused, lost, shutting
 * down, closed) turned into StoreUnavailableError, so that every module querying through `db` reports
 * an unreachable database the same way, in the port's terms, and none reads driver codes. A wrapper
 * per client, kept as long as the client: Kysely keeps its connection object per client too.
 */
function reportingUnavailable(pool: PostgresPool): PostgresPool {
  const wrappers = new WeakMap<PostgresPoolClient, PostgresPoolClient>();
  const wrap = (client: PostgresPoolClient): PostgresPoolClient => ({
    query: ((...args: Parameters<PostgresPoolClient['query']>) => {
      const result = (client.query as (...a: unknown[]) => unknown)(...args);
      // A cursor (streamed query) comes back as it is; a statement's promise reports its failure.
      return isThenable(result) ? result.then(undefined, rethrowUnavailable) : result;
    }) as PostgresPoolClient['query'],
    release: () => client.release(),
  });
  return {
    async connect() {
      const client = await pool.connect().catch(rethrowUnavailable);
      let wrapped = wrappers.get(client);
      if (!wrapped) {
        wrapped = wrap(client);
        wrappers.set(client, wrapped);
      }
      return wrapped;
    },
    end: () => pool.end(),
  };
}

/** A cheap round trip: is the database there? */
export async function pingDatabase(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
}

import type { ColumnType, Generated, Kysely } from 'kysely';

/**
 * The tables every part of Phoenix shares (migrations/001 and 002), as Kysely's query builder sees
 * them. Most SQL here is written out (sql`…`), where these types do not reach; a module that builds
 * queries on tables of its own adds them with `db.withTables<…>()` (the read models do).
 */
export interface PhoenixTables {
  phoenix_events: {
    global_position: Generated<string>;
    transaction_id: Generated<string>;
    stream_id: string;
    version: ColumnType<string, number | string, number | string>;
    event_id: string;
    type: string;
    data: unknown;
    metadata: unknown;
    recorded_at: ColumnType<Date, Date | string | undefined, Date | string>;
  };
  projection_checkpoints: {
    name: string;
    position: string;
    updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
  };
}

/** The shared handle's type: Kysely over the shared tables. */
export type Db = Kysely<PhoenixTables>;

/**
 * The database port of the read side: one PostgreSQL database, real or embedded, behind Kysely, where
 * projections keep read models, sagas their state and the command side its idempotency keys. Adapters
 * (src/adapters/postgres-database.ts: a server, or PGlite embedded) implement it; the root opens it.
 * Everything that touches SQL takes this
 * (or its `db`) as its first argument, so callers own connections and transactions.
 */
export interface SqlDatabase {
  readonly kind: 'postgres' | 'pglite';
  /**
   * PostgreSQL server: the connection string it was opened with (search_path included), for work
   * that opens connections of its own elsewhere (the rebuild's worker threads). Undefined embedded.
   */
  readonly url?: string;
  readonly db: Db;
  /**
   * Calls `onNotify` on each NOTIFY on `channel` from any process, and once after every reconnect (a
   * notification may have been missed meanwhile). Embedded: a no-op, only this process can write.
   */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  /**
   * Tries once to take the exclusive lock `name` (scoped to the current schema) for as long as this
   * process keeps it: PostgreSQL holds a session-level advisory lock on a dedicated connection, so the
   * lock goes when the connection does (a crashed or killed process releases it); embedded, the
   * database belongs to one process and the lock is an in-process one. Undefined when someone else
   * holds it. Used by the projection runner for "one active runner per projection".
   */
  tryAdvisoryLock?(name: string): Promise<AdvisoryLock | undefined>;
  /**
   * Runs one statement on a pooled connection, without Kysely: for the event store's hot paths. The
   * statement is planned for its values each time (an unnamed statement): a named, prepared one would
   * keep the plan made while its tables were small (a sequential scan) as they grow.
   */
  query<R>(text: string, values: readonly unknown[]): Promise<R[]>;
  /**
   * Runs `COPY … FROM STDIN` (text format) on a pooled connection with these rows, already encoded
   * (see copyText): PostgreSQL's fastest way in, for bulk loads. Its own transaction. Server only:
   * undefined on the embedded database.
   */
  copyFrom?(statement: string, data: string): Promise<void>;
  close(): Promise<void>;
}

/** A held lock. `lost` is aborted if it goes away without `release()` (its connection died). */
export interface AdvisoryLock {
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

import { EventEmitter } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { sql, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import type {
  AdvisoryLock,
  PhoenixTables,
  Db as SharedDb,
  SqlDatabase,
} from '../application/ports/database.js';
import {
  type AnyEvent,
  CorruptEventError,
  type EventStore,
  type Position,
  START,
  type StoredEvent,
  StoreUnavailableError,
} from '../application/ports/event-store.js';
import type { LogReader } from '../application/ports/log-reader.js';

/**
 * The projection runner: follows the global log from a checkpoint and hands batches of events to a
 * named handler, checkpointed and exclusive.
 *
 * - Each batch is applied and its checkpoint stored in ONE transaction, which first locks the
 *   checkpoint row and checks it still holds the position this runner started the batch from. So a
 *   crash anywhere neither applies an event twice nor skips one, and whoever moved the checkpoint
 *   meanwhile (a blue/green swap, a second runner that should not be running) wins: this runner
 *   rolls back and resumes from the stored position.
 * - One active runner per name across processes: the runner holds an advisory lock (a session lock
 *   on a dedicated connection on PostgreSQL) while it works; a standby polls for it every
 *   `lockRetryMs` and takes over when the holder's connection goes.
 * - A batch that fails is retried with backoff; if it keeps failing, its events are applied one per
 *   transaction, so the event that fails is found and named, and the runner stops (`failure`). It never
 *   skips an event. An unreachable database is waited out (it shows as lag), not counted as failure.
 * - Works on every EventStore adapter through the port alone (`subscribe`, `readAll`, `head`).
 *
 * The saga process managers reuse it: their handler declares `sideEffects: true`, which a rebuild
 * refuses to run.
 */

/** A transaction on the shared handle; handlers reach their own tables with `sql` or `withTables`. */
export type Tx = Transaction<PhoenixTables>;
export type Db = SharedDb;

export interface ApplyContext {
  /** `live` when following the log, `rebuild` when filling new tables from position zero. */
  readonly mode: 'live' | 'rebuild';
  /** The projection (checkpoint) name this batch is applied under. */
  readonly checkpoint: string;
}

/**
 * Carried by a handler's error when events of a stream never reached it: the runner looks them up in
 * the log and says where they are before it stops.
 */
export interface MissingEvents {
  readonly missing: { readonly streamId: string; readonly fromVersion: number; readonly toVersion: number };
}

/** What a projection (or a saga process manager) supplies to a runner. */
export interface ProjectionHandler<E extends AnyEvent = AnyEvent> {
  /** Names the checkpoint row and the lock (unless the runner overrides the checkpoint name). */
  readonly name: string;
  /**
   * True when `apply` does anything outside its transaction (sends saga commands, calls out). Such a
   * handler only ever runs live; `rebuild` refuses it, so a replay never fires side effects again.
   */
  readonly sideEffects: boolean;
  /** Only events of streams with this prefix are delivered (the checkpoint still moves over the rest). */
  readonly streamPrefix?: string;
  /**
   * Events `apply` does nothing with. A runner does not hand over a batch of only these ('applied'
   * says nothing was written), and stores the checkpoint it moves to at most once a second, by one
   * statement (see IGNORED_CHECKPOINT_EVERY_MS).
   */
  readonly ignores?: (event: StoredEvent<E>) => boolean;
  /**
   * Applies events (in log order, each after the checkpoint) inside `tx`, which the runner commits
   * together with the new checkpoint. Must write through `tx` only; throwing rolls the batch back.
   */
  apply(tx: Tx, events: readonly StoredEvent<E>[], context: ApplyContext): Promise<void>;
  /**
   * Optional, instead of `apply` in a runner's transaction: applies `events` (each after `expected`)
   * and moves checkpoint `context.checkpoint` from `expected` to `position` (undefined: leaves it) by
   * itself, atomically, as one statement (one round trip, no BEGIN and COMMIT). Writes nothing when the
   * stored checkpoint is not `expected`. Returns the position the checkpoint held before.
   */
  applyAndCheckpoint?(
    db: Db,
    events: readonly StoredEvent<E>[],
    context: ApplyContext & { readonly expected: Position; readonly position: Position | undefined },
  ): Promise<Position>;
  /**
   * Optional: runs before each batch the runner hands to `apply`, outside its transaction, to read
   * what `apply` needs from elsewhere (the event store), so that the transaction waits on nothing.
   */
  prepare?(events: readonly StoredEvent<E>[]): Promise<void>;
  /** Housekeeping (creating partitions ahead of time), run when the runner becomes active and then periodically. */
  maintain?(db: Db): Promise<void>;
  /** Forget cached state: called before a batch is retried and after the checkpoint moved elsewhere. */
  reset?(): void;
}

export type RunnerStatus = 'idle' | 'standby' | 'active' | 'stopped' | 'failed';

export interface RunnerOptions<E extends AnyEvent> {
  readonly database: SqlDatabase;
  /** The log it follows. */
  readonly log: LogReader<E>;
  /** Where a stream is read back when the log seems to have skipped one of its events. */
  readonly store: Pick<EventStore<E>, 'readStream'>;
  readonly handler: ProjectionHandler<E>;
  readonly logger?: Logger | undefined;
  /** Checkpoint row name; default `handler.name`. */
  readonly checkpointName?: string;
  /** Largest batch per transaction (default 250: short transactions, see migrations/001). */
  readonly batchSize?: number;
  /** How often a standby tries to take the lock (default 1 s). */
  readonly lockRetryMs?: number;
  /** Attempts at a failing batch, then at each of its events, before stopping (default 5). */
  readonly maxAttempts?: number;
  /** First retry delay, doubled each attempt up to 5 s (default 100 ms). */
  readonly retryBaseMs?: number;
  /** How often `maintain` runs while active (default 1 h). */
  readonly maintainEveryMs?: number;
  readonly mode?: 'live' | 'rebuild';
  /**
   * Test seam: runs inside the batch transaction after `apply` and before the checkpoint is written;
   * throwing from it is a crash between apply and commit.
   */
  readonly beforeCommit?: (events: readonly StoredEvent<E>[]) => void | Promise<void>;
}

export interface Lag {
  /** Events in the log after the applied position (counted up to LAG_COUNT_CAP). */
  readonly events: number;
  /** Age of the oldest event not applied yet; 0 when caught up. */
  readonly seconds: number;
}

/**
 * How often a runner stores a checkpoint that only ignored events moved. Those events have no effects
 * to keep in step with it: after a crash the runner reads at most this much of them again, and
 * ignores them again. A batch the handler applies stores its checkpoint with it, as always.
 */
export const IGNORED_CHECKPOINT_EVERY_MS = 1_000;

/** lag() counts unapplied events by reading them; beyond this many it reports this many. */
export const LAG_COUNT_CAP = 10_000;

/** The checkpoint row no longer holds the position this runner applied from: someone else moved it. */
export class CheckpointMovedError extends Error {
  readonly code = 'checkpoint_moved';
  constructor(
    readonly checkpoint: string,
    readonly expected: Position,
    readonly actual: Position,
  ) {
    super(`checkpoint '${checkpoint}' is at ${actual}, not ${expected}: another writer moved it`);
  }
}

/** An event the handler failed on `attempts` times; the runner stops on it. */
export class ProjectionFailedError extends Error {
  readonly code = 'projection_failed';
  constructor(
    readonly projection: string,
    readonly event: { streamId: string; version: number; position: Position; type: string; eventId?: string },
    readonly attempts: number,
    cause: unknown,
  ) {
    super(
      `projection '${projection}' stopped: event ${event.type} of ${event.streamId} version ${event.version} ` +
        `at position ${event.position}${event.eventId ? ` (id ${event.eventId})` : ''} failed ${attempts} times: ` +
        `${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
  }
}

/** Reads a checkpoint; START when the projection has never run. */
export async function readCheckpoint(db: Db | Tx, name: string): Promise<Position> {
  const { rows } = await sql<{ position: string }>`
    select position from projection_checkpoints where name = ${name}`.execute(db);
  return rows[0]?.position ?? START;
}

/** Reads a checkpoint, creating its row at START when the projection has never run. */
export async function ensureCheckpoint(db: Db | Tx, name: string): Promise<Position> {
  await sql`insert into projection_checkpoints (name, position) values (${name}, ${START})
            on conflict (name) do nothing`.execute(db);
  return readCheckpoint(db, name);
}

/** Sets a checkpoint (creating its row); callers own the transaction. */
export async function writeCheckpoint(db: Db | Tx, name: string, position: Position): Promise<void> {
  await sql`
    insert into projection_checkpoints (name, position, updated_at) values (${name}, ${position}, now())
    on conflict (name) do update set position = excluded.position, updated_at = excluded.updated_at`.execute(
    db,
  );
}

/** Whether `apply` has anything to do with `event` (after `expected`, its stream, not ignored). */
const isForHandler = <E extends AnyEvent>(
  handler: ProjectionHandler<E>,
  event: StoredEvent<E>,
  expected: Position,
): boolean =>
  event.position > expected &&
  (!handler.streamPrefix || event.streamId.startsWith(handler.streamPrefix)) &&
  !handler.ignores?.(event);

/**
 * Moves checkpoint `name` from `expected` to `position` in one statement (its own transaction, not
 * waiting for the WAL flush, like a batch's).
 * @throws CheckpointMovedError when the stored checkpoint is not `expected`
 */
export async function moveCheckpoint(
  db: Db,
  name: string,
  expected: Position,
  position: Position,
): Promise<void> {
  const { rows } = await sql<{ moved: boolean; stored: string | null }>`
    with sync as materialized (select set_config('synchronous_commit', 'off', true)),
    moved as (
      update projection_checkpoints set position = ${position}, updated_at = now()
        from sync where name = ${name} and position = ${expected}
      returning 1
    )
    select exists (select 1 from moved) as moved,
           (select position from projection_checkpoints where name = ${name}) as stored`.execute(db);
  if (!rows[0]?.moved) throw new CheckpointMovedError(name, expected, rows[0]?.stored ?? START);
}

/**
 * Applies `events` and moves checkpoint `name` from `expected` to the last event's position, in one
 * transaction: the handler's own statement when it has `applyAndCheckpoint` (and no `beforeCommit`
 * seam asks for a moment between the two), else `apply` and the checkpoint in a transaction of ours.
 * Events at or before the stored checkpoint are dropped first (delivered twice: no change). Returns
 * the new position.
 * @throws CheckpointMovedError when the stored checkpoint is not `expected`
 */
export async function applyBatch<E extends AnyEvent>(
  db: Db,
  handler: ProjectionHandler<E>,
  name: string,
  expected: Position,
  events: readonly StoredEvent<E>[],
  options: {
    mode: 'live' | 'rebuild';
    upTo?: Position;
    beforeCommit?: ((events: readonly StoredEvent<E>[]) => void | Promise<void>) | undefined;
  },
): Promise<Position> {
  const last = options.upTo ?? events[events.length - 1]?.position ?? expected;
  if (handler.applyAndCheckpoint && !options.beforeCommit) {
    // one statement: locks the checkpoint, applies, moves it (or, moved meanwhile, writes nothing)
    const fresh = events.filter(
      (e) => e.position > expected && (!handler.streamPrefix || e.streamId.startsWith(handler.streamPrefix)),
    );
    const stored = await handler.applyAndCheckpoint(db, fresh, {
      mode: options.mode,
      checkpoint: name,
      expected,
      position: last > expected ? last : undefined,
    });
    if (stored !== expected) throw new CheckpointMovedError(name, expected, stored);
    return last > expected ? last : expected;
  }
  return db.transaction().execute(async (tx) => {
    // Derived data: a crash may lose the last few commits, and the checkpoint with them (commits stay
    // atomic and in order), so the runner re-applies them; not waiting for the WAL flush cuts the lag.
    // (set_config(…, true) is SET LOCAL, here in the same round trip as the checkpoint row lock.)
    const { rows } = await sql<{ position: string }>`
      select position, set_config('synchronous_commit', 'off', true) as sync
        from projection_checkpoints where name = ${name} for update`.execute(tx);
    const stored = rows[0]?.position ?? START;
    if (stored !== expected) throw new CheckpointMovedError(name, expected, stored);
    const fresh = events.filter(
      (e) => e.position > stored && (!handler.streamPrefix || e.streamId.startsWith(handler.streamPrefix)),
    );
    if (fresh.length > 0) await handler.apply(tx, fresh, { mode: options.mode, checkpoint: name });
    await options.beforeCommit?.(fresh);
    if (last > stored) {
      if (rows.length === 0) await writeCheckpoint(tx, name, last);
      else
        await sql`update projection_checkpoints set position = ${last}, updated_at = now()
                  where name = ${name}`.execute(tx);
    }
    // positions are strings: Math.max would not do
    if (last > stored) return last;
    return stored;
  });
}

/** Waits `ms` (without holding the process open), or until `signal` aborts: the loops check it next. */
const sleep = (ms: number, signal: AbortSignal) =>
  delay(ms, undefined, { signal, ref: false }).catch((err: unknown) => {
    if (!signal.aborted) throw err;
  });

/** Errors as log fields: database errors carry their whole query and parameters, too much for a log line. */
export const brief = (err: unknown) =>
  err instanceof Error
    ? { type: err.name, message: err.message, code: (err as { code?: unknown }).code }
    : { message: String(err) };

const CONNECTION_CODES = [
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  '57P01',
  '57P02',
  '57P03',
];

/** The database (or event store) is away: wait it out, it is nobody's fault. */
export const isTransient = (err: unknown): boolean => {
  if (err instanceof StoreUnavailableError) return true;
  const code = String((err as { code?: unknown }).code ?? '');
  if (CONNECTION_CODES.includes(code) || code.startsWith('08') || code === '40001' || code === '40P01')
    return true;
  const message = err instanceof Error ? err.message : String(err);
  return /Connection terminated|connection is closed|timeout exceeded when trying to connect/i.test(message);
};

/**
 * Runs one handler: `start()` returns at once and works in the background (standby until it holds
 * the lock, then active); `stop()` finishes the batch in flight, releases the lock and resolves.
 * Listen to `'applied'` (position) for progress; `failure` says why a failed runner stopped.
 */
export class ProjectionRunner<E extends AnyEvent = AnyEvent> extends EventEmitter<{
  /** The checkpoint moved here; `wrote`: the handler applied events (false: it ignored them all). */
  applied: [position: Position, wrote: boolean];
  live: [Position];
  status: [RunnerStatus];
}> {
  readonly name: string;
  readonly #database: SqlDatabase;
  readonly #log: LogReader<E>;
  readonly #store: Pick<EventStore<E>, 'readStream'>;
  readonly #handler: ProjectionHandler<E>;
  readonly #logger: Logger | undefined;
  readonly #batchSize: number;
  readonly #lockRetryMs: number;
  readonly #maxAttempts: number;
  readonly #retryBaseMs: number;
  readonly #maintainEveryMs: number;
  readonly #mode: 'live' | 'rebuild';
  readonly #beforeCommit: RunnerOptions<E>['beforeCommit'];
  #status: RunnerStatus = 'idle';
  #position: Position = START;
  /** The checkpoint as stored (behind #position while only ignored events moved it), and when. */
  #stored: Position = START;
  #storedAt = 0;
  #isLive = false;
  #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #failure: Error | undefined;

  constructor(options: RunnerOptions<E>) {
    super();
    this.setMaxListeners(0);
    this.#database = options.database;
    this.#log = options.log;
    this.#store = options.store;
    this.#handler = options.handler;
    this.#logger = options.logger;
    this.name = options.checkpointName ?? options.handler.name;
    this.#batchSize = options.batchSize ?? 250;
    this.#lockRetryMs = options.lockRetryMs ?? 1_000;
    this.#maxAttempts = options.maxAttempts ?? 5;
    this.#retryBaseMs = options.retryBaseMs ?? 100;
    this.#maintainEveryMs = options.maintainEveryMs ?? 3_600_000;
    this.#mode = options.mode ?? 'live';
    this.#beforeCommit = options.beforeCommit;
    if (this.#mode === 'rebuild' && this.#handler.sideEffects) {
      throw new Error(`handler '${this.#handler.name}' has side effects: it never runs in a rebuild`);
    }
  }

  get status(): RunnerStatus {
    return this.#status;
  }

  /** The position this runner last applied (as active runner); START before it has been active. */
  get position(): Position {
    return this.#position;
  }

  /** True once the active runner has caught up with the head of the log. */
  get isLive(): boolean {
    return this.#isLive;
  }

  /** Why the runner stopped on its own, if it did. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  start(): void {
    if (this.#loop) return;
    this.#stop = new AbortController();
    this.#loop = this.#run(this.#stop.signal);
  }

  /** Graceful: the batch in flight commits or rolls back, then the lock is released. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
    this.#loop = undefined;
    if (this.#status !== 'failed') this.#setStatus('stopped');
  }

  /** Resolves when the runner stops by itself (failure) or is stopped. */
  async done(): Promise<void> {
    await this.#loop;
  }

  /** How far the stored checkpoint is behind the head of the log (works from any process). */
  async lag(): Promise<Lag> {
    const position = await readCheckpoint(this.#database.db, this.name);
    const pending = await this.#log.readAll({
      after: position,
      limit: LAG_COUNT_CAP,
      ...(this.#handler.streamPrefix ? { streamPrefix: this.#handler.streamPrefix } : {}),
    });
    const oldest = pending[0];
    return {
      events: pending.length,
      seconds: oldest ? Math.max(0, (Date.now() - Date.parse(oldest.recordedAt)) / 1000) : 0,
    };
  }

  #setStatus(status: RunnerStatus): void {
    if (this.#status === status) return;
    this.#status = status;
    this.emit('status', status);
  }

  async #run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      this.#setStatus('standby');
      let lock: AdvisoryLock | undefined;
      try {
        lock = await this.#acquire();
      } catch (err) {
        this.#logger?.warn(
          { err: brief(err), projection: this.name },
          'could not try the projection lock; retrying',
        );
      }
      if (!lock) {
        await sleep(this.#lockRetryMs, signal);
        continue;
      }
      const active = AbortSignal.any([signal, lock.lost]);
      try {
        this.#setStatus('active');
        this.#logger?.info({ projection: this.name }, 'projection runner active');
        await this.#runActive(active);
        if (lock.lost.aborted && !signal.aborted) {
          this.#logger?.warn(
            { projection: this.name, reason: String(lock.lost.reason) },
            'projection lock lost',
          );
        }
      } catch (err) {
        this.#failure = err instanceof Error ? err : new Error(String(err));
        this.#logger?.error({ err: brief(err), projection: this.name }, this.#failure.message);
        this.#setStatus('failed');
        await lock.release();
        return;
      } finally {
        this.#isLive = false;
      }
      await lock.release();
    }
  }

  async #acquire(): Promise<AdvisoryLock | undefined> {
    if (this.#database.tryAdvisoryLock) return this.#database.tryAdvisoryLock(`projection:${this.name}`);
    if (this.#database.kind === 'pglite') {
      return { lost: new AbortController().signal, release: async () => undefined };
    }
    throw new Error('this database cannot take advisory locks: one active runner cannot be guaranteed');
  }

  /** Active: follow the log until stopped or the lock goes; restart from the stored checkpoint when it moves. */
  async #runActive(signal: AbortSignal): Promise<void> {
    let lastMaintain = 0;
    let subscribeFailures = 0;
    while (!signal.aborted) {
      let position: Position;
      try {
        position = await ensureCheckpoint(this.#database.db, this.name);
      } catch (err) {
        if (!isTransient(err)) throw err;
        await this.#waitOut(err, signal, 0);
        continue;
      }
      this.#position = position;
      this.#stored = position;
      this.#storedAt = Date.now();
      this.emit('applied', position, false);
      if (Date.now() - lastMaintain >= this.#maintainEveryMs) lastMaintain = await this.#maintain();
      // The store promises each event once, in log order, after `position`: what breaks that is logged
      // (the events at or before one already given are not applied again, see applyBatch).
      let lastSeen = position;
      try {
        for await (const message of this.#log.subscribe({
          after: position,
          batchSize: this.#batchSize,
          signal,
          ...(this.#handler.streamPrefix ? { streamPrefix: this.#handler.streamPrefix } : {}),
        })) {
          if (signal.aborted) break;
          subscribeFailures = 0;
          if (message.kind === 'live') {
            if (!this.#isLive) this.emit('live', message.position);
            this.#isLive = true;
            continue;
          }
          if (message.kind === 'checkpoint') {
            if (message.position > this.#position) await this.#applyWithRetry([], signal, message.position);
          } else {
            lastSeen = this.#checkOrder(message.events, lastSeen);
            await this.#applyWithRetry(message.events, signal);
          }
          if (Date.now() - lastMaintain >= this.#maintainEveryMs) lastMaintain = await this.#maintain();
        }
      } catch (err) {
        if (err instanceof CheckpointMovedError) {
          this.#logger?.info(
            { projection: this.name, position: err.actual },
            'checkpoint moved; resuming from it',
          );
          this.#handler.reset?.();
          continue;
        }
        if (err instanceof ProjectionFailedError) throw err;
        if (signal.aborted) break;
        if (isTransient(err)) {
          await this.#waitOut(err, signal, Math.min(++subscribeFailures, 6));
          continue;
        }
        // Reading the log keeps failing (an event the store cannot decode, say): retried, then fatal.
        if (++subscribeFailures >= this.#maxAttempts) {
          if (err instanceof CorruptEventError) {
            throw new ProjectionFailedError(
              this.name,
              {
                streamId: err.streamId,
                version: err.version,
                position: `after ${this.#position}`,
                type: '(unreadable)',
              },
              subscribeFailures,
              err,
            );
          }
          throw new Error(
            `projection '${this.name}' stopped: reading the log after ${this.#position} failed ` +
              `${subscribeFailures} times: ${err instanceof Error ? err.message : String(err)}`,
            { cause: err },
          );
        }
        await this.#waitOut(err, signal, subscribeFailures);
      }
    }
    // Stopping (or the lock went): keep what ignored events moved, unless someone else moved it since.
    await this.#storeIgnored().catch((err: unknown) =>
      this.#logger?.debug({ err: brief(err), projection: this.name }, 'checkpoint not stored on the way out'),
    );
  }

  /** Housekeeping never stops the runner: a failure is logged and tried again next time. */
  async #maintain(): Promise<number> {
    try {
      await this.#handler.maintain?.(this.#database.db);
      return Date.now();
    } catch (err) {
      this.#logger?.warn({ err: brief(err), projection: this.name }, 'projection maintenance failed');
      return Date.now() - this.#maintainEveryMs + 60_000; // try again in a minute
    }
  }

  async #waitOut(err: unknown, signal: AbortSignal, attempt: number): Promise<void> {
    const delay = Math.min(this.#retryBaseMs * 2 ** attempt, 5_000);
    this.#logger?.warn(
      { err: brief(err), projection: this.name, retryInMs: delay },
      'projection runner waiting to retry',
    );
    await sleep(delay, signal);
  }

  /** The batch, retried; then each event alone, so the one that keeps failing is named. */
  async #applyWithRetry(
    events: readonly StoredEvent<E>[],
    signal: AbortSignal,
    upTo?: Position,
  ): Promise<void> {
    let lastError: unknown;
    for (let attempt = 0; attempt < this.#maxAttempts; ) {
      if (signal.aborted) return;
      try {
        await this.#commit(events, upTo);
        return;
      } catch (err) {
        if (err instanceof CheckpointMovedError) throw err;
        lastError = err;
        this.#handler.reset?.();
        if (isTransient(err)) {
          await this.#waitOut(err, signal, Math.min(attempt + 1, 6));
          continue;
        }
        attempt++;
        if (events.length <= 1) {
          if (attempt >= this.#maxAttempts) break;
        } else {
          break; // narrow down: one event per transaction
        }
        await this.#waitOut(err, signal, attempt);
      }
    }
    if (events.length === 0) throw lastError;
    if (events.length === 1) {
      const e = events[0]!;
      await this.#describeMissing(lastError);
      throw new ProjectionFailedError(
        this.name,
        {
          streamId: e.streamId,
          version: e.version,
          position: e.position,
          type: e.type,
          eventId: e.metadata.eventId,
        },
        this.#maxAttempts,
        lastError,
      );
    }
    this.#logger?.warn(
      { err: brief(lastError), projection: this.name, events: events.length },
      'a batch failed; applying its events one by one',
    );
    for (const event of events) await this.#applyWithRetry([event], signal);
  }

  /** Logs events that come at or before one the subscription gave already; the last position seen. */
  #checkOrder(events: readonly StoredEvent<E>[], lastSeen: Position): Position {
    let last = lastSeen;
    let late = 0;
    let first: StoredEvent<E> | undefined;
    for (const e of events) {
      if (e.position <= last) {
        late++;
        first ??= e;
      } else {
        last = e.position;
      }
    }
    if (first) {
      this.#logger?.error(
        {
          projection: this.name,
          after: lastSeen,
          late,
          first: { streamId: first.streamId, version: first.version, position: first.position },
        },
        'the subscription gave events out of log order: those at or before a position it gave already are not applied',
      );
    }
    return last;
  }

  /**
   * When the handler says events of a stream never reached it (`missing` on the error), logs where the
   * log has them: at or before the checkpoint means they were passed over, after it that they come
   * out of order. Either way the projection stops; this line is what tells the two apart.
   */
  async #describeMissing(err: unknown): Promise<void> {
    const missing = (err as Partial<MissingEvents> | undefined)?.missing;
    if (!missing || missing.toVersion < missing.fromVersion) return;
    try {
      const found = await this.#store.readStream(missing.streamId, {
        fromVersion: missing.fromVersion,
        toVersion: missing.toVersion,
      });
      this.#logger?.error(
        {
          projection: this.name,
          checkpoint: this.#stored,
          streamId: missing.streamId,
          missing: found.map((m) => ({
            version: m.version,
            position: m.position,
            passed: m.position <= this.#stored,
          })),
        },
        `events the projection never got: ${found.length} of versions ${missing.fromVersion}–${missing.toVersion} are in the log`,
      );
    } catch (lookup) {
      this.#logger?.warn(
        { err: brief(lookup), projection: this.name },
        'could not look up the missing events',
      );
    }
  }

  async #commit(events: readonly StoredEvent<E>[], upTo?: Position): Promise<void> {
    const wrote = events.some((e) => isForHandler(this.#handler, e, this.#position));
    if (!wrote && this.#handler.ignores && !this.#beforeCommit) {
      const last = upTo ?? events[events.length - 1]?.position ?? this.#position;
      if (last > this.#position) {
        this.#position = last;
        this.emit('applied', last, false);
      }
      if (Date.now() - this.#storedAt >= IGNORED_CHECKPOINT_EVERY_MS) await this.#storeIgnored();
      return;
    }
    await this.#handler.prepare?.(events);
    // From the stored checkpoint: the events between it and this batch were all ignored.
    const next = await applyBatch(this.#database.db, this.#handler, this.name, this.#stored, events, {
      mode: this.#mode,
      ...(upTo !== undefined ? { upTo } : {}),
      beforeCommit: this.#beforeCommit,
    });
    this.#stored = next;
    this.#storedAt = Date.now();
    if (next !== this.#position) {
      this.#position = next;
      this.emit('applied', next, wrote);
    }
  }

  /** Stores the checkpoint that ignored events moved. */
  async #storeIgnored(): Promise<void> {
    if (this.#position <= this.#stored) return;
    await moveCheckpoint(this.#database.db, this.name, this.#stored, this.#position);
    this.#stored = this.#position;
    this.#storedAt = Date.now();
  }
}

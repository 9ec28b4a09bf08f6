import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Db, SqlDatabase } from '../application/ports/database.js';
import {
  type AnyEvent,
  type AppendResult,
  DuplicateEventIdError,
  decodeStored,
  type EventCodec,
  type EventMetadata,
  type EventStore,
  type ExpectedVersion,
  isPosition,
  type NewEvent,
  type Position,
  type ReadAllOptions,
  type ReadStreamOptions,
  START,
  type StoredEvent,
  StoreUnavailableError,
  type SubscribeOptions,
  type SubscriptionMessage,
  UnstorableEventError,
  WrongExpectedVersionError,
} from '../application/ports/event-store.js';
import { Batcher } from './batcher.js';
import { LogTail } from './log-tail.js';
import { unavailableOr } from './unreachable.js';

/**
 * The event store on PostgreSQL or PGlite (schema: migrations/001_event_store.sql).
 *
 * - Appends are idempotent on event id; concurrent appends share one round trip and one commit
 *   (APPEND_BATCH, a prepared statement), each still checked against its own expected version.
 * - Log order is (transaction_id, global_position); readers only take rows of transactions older
 *   than every running one, so an event whose transaction commits late is never skipped.
 * - Subscribers in this process are woken directly when each batch of appends ends; subscribers in
 *   other processes by a NOTIFY that this store sends outside the append transaction, coalesced,
 *   because a NOTIFY inside it would serialise every append's commit on PostgreSQL's global notify
 *   lock. Caught-up subscribers of this process share one reader of the head of the log (LogTail).
 */
export interface PostgresEventStoreOptions<E extends AnyEvent> {
  readonly codec?: EventCodec<E>;
  /** Longest wait between polls of the log when nothing wakes a subscriber. */
  readonly idlePollMs?: number;
  readonly channel?: string;
  /**
   * Batches of appends out at once (PGlite: always 1, it has one connection); default 2. One would
   * make batches larger and round trips fewer (creates ran 4–7% faster), but then every append waits
   * behind any slow commit: after a rebuild had written a million rows, the append p99 was 82 ms with
   * one batch out and 10 ms with two.
   */
  readonly maxConcurrentBatches?: number;
  /**
   * Batches of whole-stream reads (the command path's) out at once; default 1: reads take no locks
   * and wait on no commit, and one batch out at a time makes them larger, with fewer round trips
   * (A/B pairs gave 4–6% more commands that read their stream, about the noise of this machine).
   */
  readonly maxConcurrentReads?: number;
  /** Most appends in one batch. */
  readonly maxBatch?: number;
  /** Events a caught-up subscriber may have waiting before the shared reader lets it go (LogTail). */
  readonly tailMaxQueued?: number;
}

interface PendingAppend<E extends AnyEvent> {
  readonly streamId: string;
  readonly events: readonly NewEvent<E>[];
  readonly expected: ExpectedVersion;
  resolve(result: AppendResult): void;
  reject(err: unknown): void;
}

interface PendingRead<E extends AnyEvent> {
  readonly streamId: string;
  resolve(events: StoredEvent<E>[]): void;
  reject(err: unknown): void;
}

interface BatchRow {
  out_index: number;
  out_status: 'ok' | 'idempotent' | 'wrong_version' | 'duplicate_id';
  out_version: string | null;
  out_position: string | null;
}

/** `expected` as the append statement takes it: null for any, -1 for stream exists, else a version. */
const expectedCode = (expected: ExpectedVersion): number | null =>
  expected === 'any' ? null : expected === 'no_stream' ? 0 : expected === 'stream_exists' ? -1 : expected;

/**
 * The fast path of an append batch: one statement (no PL/pgSQL, whose statements each cost a plan on
 * every call). It takes the append mark (migrations/042_append_mark.sql) before anything else: every
 * row it locks or writes comes out of `input`, which cannot yield a row before `mark` has one, so the
 * mark is held before the transaction has an id. Each append names a
 * different stream (the pump sees to it), so each is decided on its own against its stream's
 * version, locked in stream order so that two batches do not deadlock. A stream that a concurrent
 * batch creates first, or an event id stored already with a version that still matches, breaks a
 * unique index and fails the statement; the caller then writes the appends one at a time. An append
 * refused for its version may be the retry of one that a concurrent batch stored while this one
 * waited for the stream's lock, after this statement's snapshot: the careful path,
 * `phoenix_append_each`, in a transaction of its own, tells a retry (answered as the first time)
 * from a clash of ids and from a plain wrong version.
 */
const APPEND_BATCH = `
WITH mark AS MATERIALIZED (
  SELECT pg_advisory_xact_lock_shared(1347964504, hashtext(current_schema() || ':append'))
),
input AS (
  SELECT x.i, x.stream, x.expected, x.events, jsonb_array_length(x.events) AS n
    FROM mark, jsonb_to_recordset($1::jsonb) AS x(i int, stream text, expected int8, events jsonb)
),
locked AS (
  SELECT s.stream_id, s.version FROM phoenix_streams s
   WHERE s.stream_id = ANY (ARRAY(SELECT input.stream FROM input))
   ORDER BY s.stream_id
     FOR UPDATE
),
decided AS (
  SELECT i.i, i.stream, i.n, i.events, coalesce(l.version, 0) AS cur,
         CASE WHEN i.expected IS NULL THEN true
              WHEN i.expected = -1 THEN coalesce(l.version, 0) > 0
              ELSE coalesce(l.version, 0) = i.expected END AS ok
    FROM input i LEFT JOIN locked l ON l.stream_id = i.stream
),
streams AS (
  INSERT INTO phoenix_streams AS st (stream_id, version)
  SELECT d.stream, d.cur + d.n FROM decided d WHERE d.ok ORDER BY d.stream
  ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version
),
inserted AS (
  INSERT INTO phoenix_events (stream_id, version, event_id, type, data, metadata)
  SELECT d.stream, d.cur + e.ord, (e.x -> 'metadata' ->> 'eventId')::uuid, e.x ->> 'type', e.x -> 'data', e.x -> 'metadata'
    FROM decided d, jsonb_array_elements(d.events) WITH ORDINALITY AS e(x, ord)
   WHERE d.ok
   ORDER BY d.i, e.ord
  RETURNING stream_id, version, transaction_id, global_position
)
SELECT d.i AS out_index,
       CASE WHEN d.ok THEN 'ok' ELSE 'wrong_version' END AS out_status,
       (CASE WHEN d.ok THEN d.cur + d.n ELSE d.cur END)::text AS out_version,
       (SELECT lpad(x.transaction_id::text, 20, '0') || '-' || lpad(x.global_position::text, 20, '0')
          FROM inserted x
         WHERE x.stream_id = d.stream AND x.version = d.cur + d.n) AS out_position
  FROM decided d
 ORDER BY d.i`;

/**
 * Whole streams, for a batch of reads: `$1` the stream ids. Every ORDER BY of a read names the
 * table's columns (`phoenix_events.version`): a bare `version` is the output column, text, which sorts
 * 1, 10, 2 (and folded streams of more than nine events out of order).
 */
const READ_STREAMS = `SELECT stream_id, version::int8::text AS version,
  lpad(transaction_id::text, 20, '0') || '-' || lpad(global_position::text, 20, '0') AS position,
  type, data, metadata, recorded_at
  FROM phoenix_events WHERE stream_id = ANY ($1::text[])
 ORDER BY phoenix_events.stream_id, phoenix_events.version`;

const POSITION = /^(\d{20})-(\d{20})$/;

/**
 * Under a stream of appends, at most one NOTIFY per this many ms (the first after a quiet spell goes at
 * once). Each is a round trip of its own; other processes' subscribers learn of new events at most
 * this much later, this process's at once.
 */
const NOTIFY_EVERY_MS = 20;

export class InvalidPositionError extends Error {
  readonly code = 'invalid_position';
  constructor(readonly position: string) {
    super(`'${position}' is not a position of this event store`);
  }
}

/** Splits a position into its (transaction id, global position) pair; START is (0, 0). */
export const parsePosition = (position: Position): [string, string] => {
  if (position === START) return ['0', '0'];
  const m = POSITION.exec(position);
  // beyond what xid8 and bigint hold, the database would refuse it mid-read (isPosition)
  if (!m || !isPosition(position)) throw new InvalidPositionError(position);
  return [m[1]!.replace(/^0+(?=\d)/, ''), m[2]!.replace(/^0+(?=\d)/, '')];
};

interface EventRow {
  stream_id: string;
  version: string | number;
  position: string;
  type: string;
  data: unknown;
  metadata: EventMetadata;
  recorded_at: Date;
}

const SELECT_EVENT = sql`stream_id, version::int8::text as version,
  lpad(transaction_id::text, 20, '0') || '-' || lpad(global_position::text, 20, '0') as position,
  type, data, metadata, recorded_at`;

export class PostgresEventStore<E extends AnyEvent = AnyEvent> implements EventStore<E> {
  readonly #db: Db;
  readonly #codec: EventCodec<E> | undefined;
  readonly #wake = new EventEmitter();
  readonly #idlePollMs: number;
  readonly #channel: string;
  /** Group commit: appends made together go in one statement and one commit (see Batcher). */
  readonly #appends: Batcher<PendingAppend<E>>;
  /** Whole-stream reads made together go in one query. */
  readonly #reads: Batcher<PendingRead<E>>;
  /** Names this store's NOTIFYs, so that it can tell them from other processes'. */
  readonly #instance = randomUUID();
  #notifyTimer: NodeJS.Timeout | undefined;
  /** Append batches in flight: each wakes the subscribers when it ends. */
  #appending = 0;
  /** Caught-up subscribers of this process share one reader of the head of the log. */
  readonly #tail: LogTail<E>;
  #notifyPending = false;
  #stopListening: Promise<() => Promise<void>> | undefined;
  #closed = false;

  constructor(
    private readonly database: SqlDatabase,
    options: PostgresEventStoreOptions<E> = {},
  ) {
    this.#db = database.db;
    this.#codec = options.codec;
    this.#idlePollMs = options.idlePollMs ?? 1_000;
    this.#channel = options.channel ?? 'phoenix_events';
    const single = database.kind === 'pglite';
    const maxInFlight = single ? 1 : (options.maxConcurrentBatches ?? 2);
    const maxBatch = options.maxBatch ?? 64;
    // One append per stream in a batch: a second one waits for the next, where it sees the first's
    // version.
    this.#appends = new Batcher((batch) => this.#sendBatch(batch), {
      maxInFlight,
      maxBatch,
      admit: (a, batch) => !batch.some((b) => b.streamId === a.streamId),
    });
    this.#reads = new Batcher((batch) => this.#readBatch(batch), {
      maxInFlight: single ? 1 : (options.maxConcurrentReads ?? 1),
      maxBatch,
    });
    this.#wake.setMaxListeners(0);
    this.#tail = new LogTail<E>(
      {
        read: (after, limit) => this.readAll({ after, limit }),
        heldBack: (after) => this.#heldBack(after),
        wakeComing: () => this.#appending > 0,
        nextWake: () => this.#nextWake(undefined),
        closed: () => this.#closed,
      },
      {
        idlePollMs: this.#idlePollMs,
        ...(options.tailMaxQueued !== undefined ? { maxQueued: options.tailMaxQueued } : {}),
      },
    );
  }

  append(streamId: string, events: readonly NewEvent<E>[], expected: ExpectedVersion): Promise<AppendResult> {
    // Refused here, before it can share a statement with other appends (see UnstorableEventError).
    const nul = nulIn(streamId, events);
    if (nul) return Promise.reject(new UnstorableEventError(streamId, `a NUL character (\\u0000) in ${nul}`));
    if (events.length === 0) return this.#currentVersion(streamId, expected);
    return new Promise((resolve, reject) => {
      this.#appends.push({ streamId, events, expected, resolve, reject });
    });
  }

  /** A batch of appends; when it ends, written or not, this process's subscribers are woken. */
  async #sendBatch(batch: PendingAppend<E>[]): Promise<void> {
    this.#appending++;
    try {
      await this.#writeBatch(batch);
    } finally {
      this.#appending--;
      this.#wake.emit('wake');
    }
  }

  async #writeBatch(batch: PendingAppend<E>[]): Promise<void> {
    const payload = JSON.stringify(
      batch.map((a, i) => ({
        i,
        stream: a.streamId,
        expected: expectedCode(a.expected),
        events: a.events.map((e) => ({ type: e.type, data: e.data, metadata: e.metadata })),
      })),
    );
    let rows: BatchRow[];
    try {
      rows = await this.database.query<BatchRow>(APPEND_BATCH, [payload]);
    } catch (err) {
      const failure = unavailableOr(err);
      const code = (failure as { code?: string }).code;
      if (!(failure instanceof StoreUnavailableError) && isContentRefusal(failure)) {
        // One append (or more) holds what the database refuses, and took the statement with it. Halves
        // are written on their own, down to the appends at fault: a few more round trips for the batch
        // of a bad append, and every other append of it is stored.
        if (batch.length === 1) batch[0]!.reject(unstorable(batch[0]!.streamId, failure));
        else {
          const half = Math.ceil(batch.length / 2);
          await Promise.all([this.#writeBatch(batch.slice(0, half)), this.#writeBatch(batch.slice(half))]);
        }
      } else if (failure instanceof StoreUnavailableError || (code !== '23505' && code !== '40P01')) {
        for (const a of batch) a.reject(failure);
      } else if (batch.length > 1) {
        // One append broke a unique index (a concurrent batch created its stream first, or its event
        // ids are stored) and took the batch with it: write them one by one so only that one fails.
        await Promise.all(batch.map((a) => this.#writeBatch([a])));
      } else {
        await this.#appendEach(batch);
      }
      return;
    }
    let wrote = false;
    const recheck: PendingAppend<E>[] = [];
    for (const row of rows) {
      const a = batch[row.out_index];
      if (!a) continue;
      switch (row.out_status) {
        case 'ok':
          wrote = true;
          a.resolve({ version: Number(row.out_version), position: row.out_position! });
          break;
        default:
          recheck.push(a);
      }
    }
    if (wrote) this.#announce();
    await Promise.all(recheck.map((a) => this.#appendEach([a])));
  }

  /**
   * The careful path (`phoenix_append_each`): appends one at a time, each answered precisely: a
   * retry of an append already stored as the first time, a clash of event ids, a wrong version.
   */
  async #appendEach(appends: readonly PendingAppend<E>[]): Promise<void> {
    const payload = JSON.stringify(
      appends.map((a) => ({
        stream: a.streamId,
        expected: String(a.expected),
        events: a.events.map((e) => ({ type: e.type, data: e.data, metadata: e.metadata })),
      })),
    );
    let rows: BatchRow[];
    try {
      ({ rows } = await sql<BatchRow>`
        select out_index, out_status, out_version::text as out_version, out_position
        from phoenix_append_each(${payload}::jsonb)`.execute(this.#db));
    } catch (err) {
      for (const a of appends) this.#settleFailure(a, unavailableOr(err));
      return;
    }
    let wrote = false;
    for (const row of rows) {
      const a = appends[row.out_index];
      if (!a) continue;
      switch (row.out_status) {
        case 'ok':
          wrote = true;
          a.resolve({ version: Number(row.out_version), position: row.out_position! });
          break;
        case 'idempotent':
          a.resolve({ version: Number(row.out_version), position: row.out_position! });
          break;
        case 'wrong_version':
          a.reject(new WrongExpectedVersionError(a.streamId, a.expected, Number(row.out_version)));
          break;
        default:
          a.reject(new DuplicateEventIdError(a.streamId, a.events[0]?.metadata.eventId ?? ''));
      }
    }
    if (wrote) this.#announce();
  }

  /** The careful path failed outright: a concurrent retry of this same append may have won. */
  #settleFailure(a: PendingAppend<E>, err: unknown): void {
    if ((err as { code?: string }).code !== '23505') {
      a.reject(
        !(err instanceof StoreUnavailableError) && isContentRefusal(err) ? unstorable(a.streamId, err) : err,
      );
      return;
    }
    this.#storedAppend(a.streamId, a.events).then(
      (stored) =>
        stored
          ? a.resolve(stored)
          : a.reject(new DuplicateEventIdError(a.streamId, a.events[0]?.metadata.eventId ?? '')),
      (e) => a.reject(unavailableOr(e)),
    );
  }

  async #storedAppend(streamId: string, events: readonly NewEvent<E>[]): Promise<AppendResult | undefined> {
    const ids = events.map((e) => e.metadata.eventId);
    const { rows } = await sql<{ version: string; position: string }>`
      select version::text as version,
             lpad(transaction_id::text, 20, '0') || '-' || lpad(global_position::text, 20, '0') as position
      from phoenix_events where stream_id = ${streamId} and event_id = any(${ids}::uuid[])
      order by phoenix_events.version`.execute(this.#db);
    if (rows.length !== ids.length) return undefined;
    const last = rows[rows.length - 1]!;
    return { version: Number(last.version), position: last.position };
  }

  async #currentVersion(streamId: string, expected: ExpectedVersion): Promise<AppendResult> {
    const { rows } = await sql<{ version: string }>`
      select version::text as version from phoenix_streams where stream_id = ${streamId}`.execute(this.#db);
    const actual = Number(rows[0]?.version ?? 0);
    const ok =
      expected === 'any' ||
      (expected === 'no_stream' && actual === 0) ||
      (expected === 'stream_exists' && actual > 0) ||
      expected === actual;
    if (!ok) throw new WrongExpectedVersionError(streamId, expected, actual);
    return { version: actual, position: await this.head() };
  }

  readStream(streamId: string, options: ReadStreamOptions = {}): Promise<StoredEvent<E>[]> {
    const whole =
      (options.fromVersion ?? 1) <= 1 &&
      options.toVersion === undefined &&
      options.until === undefined &&
      options.limit === undefined;
    // No stream id holds a NUL (appends refuse it), and one in a batch of reads would fail them all.
    if (streamId.includes('\u0000')) return Promise.resolve([]);
    if (!whole) return this.#readRange(streamId, options);
    // The command path's read: batched with the others made at the same time.
    return new Promise((resolve, reject) => this.#reads.push({ streamId, resolve, reject }));
  }

  async #readBatch(batch: PendingRead<E>[]): Promise<void> {
    const streams = [...new Set(batch.map((r) => r.streamId))];
    let rows: EventRow[];
    try {
      rows = await this.database.query<EventRow>(READ_STREAMS, [streams]);
    } catch (err) {
      for (const r of batch) r.reject(unavailableOr(err));
      return;
    }
    const byStream = new Map<string, EventRow[]>();
    for (const row of rows) {
      const list = byStream.get(row.stream_id);
      if (list) list.push(row);
      else byStream.set(row.stream_id, [row]);
    }
    // Each caller gets events of its own (decoded once per caller: callers may keep and change them).
    for (const r of batch) {
      try {
        r.resolve((byStream.get(r.streamId) ?? []).map((row) => this.#decode(row)));
      } catch (err) {
        r.reject(err);
      }
    }
  }

  async #readRange(streamId: string, options: ReadStreamOptions): Promise<StoredEvent<E>[]> {
    const from = options.fromVersion ?? 1;
    const to = options.toVersion ?? null;
    const until = options.until ?? null;
    const limit = options.limit ?? null;
    try {
      const { rows } = await sql<EventRow>`
        select ${SELECT_EVENT} from phoenix_events
        where stream_id = ${streamId} and version >= ${from}
          and (${to}::int8 is null or version <= ${to}::int8)
          and (${until}::timestamptz is null or recorded_at <= ${until}::timestamptz)
        order by phoenix_events.version
        limit ${limit}::int8`.execute(this.#db);
      return rows.map((r) => this.#decode(r));
    } catch (err) {
      throw unavailableOr(err);
    }
  }

  readAll(options: ReadAllOptions): Promise<StoredEvent<E>[]> {
    return this.#readLog(options.after ?? START, options.limit, options.streamPrefix, undefined);
  }

  /**
   * Events after `after`, in log order, at most `limit`: below the horizon, or, given `through` (a
   * position that a reader of this store was given), up to it and with no horizon. Below such a
   * position the log no longer changes (the horizon that reader read under was above it), and a
   * read up to it must not use a horizon: one can be lower now than it was then, when a transaction
   * that the earlier read let pass (it wrote no events) ends between this statement's snapshot and
   * its look at pg_locks, and a read stopped short by it would look complete.
   */
  async #readLog(
    after: Position,
    limit: number,
    streamPrefix: string | undefined,
    through: Position | undefined,
  ): Promise<StoredEvent<E>[]> {
    const [txid, pos] = parsePosition(after);
    const prefix = streamPrefix ? `${escapeLike(streamPrefix)}%` : null;
    let bound = sql`transaction_id < phoenix_log_horizon()`;
    if (through !== undefined) {
      const [toTxid, toPos] = parsePosition(through);
      bound = sql`(transaction_id, global_position) <= (${toTxid}::xid8, ${toPos}::int8)`;
    }
    try {
      const { rows } = await sql<EventRow>`
        select ${SELECT_EVENT} from phoenix_events
        where (transaction_id, global_position) > (${txid}::xid8, ${pos}::int8)
          and ${bound}
          and (${prefix}::text is null or stream_id like ${prefix}::text)
        order by phoenix_events.transaction_id, phoenix_events.global_position
        limit ${limit}`.execute(this.#db);
      return rows.map((r) => this.#decode(r));
    } catch (err) {
      throw unavailableOr(err);
    }
  }

  async head(): Promise<Position> {
    try {
      const { rows } = await sql<{ position: string }>`
        select lpad(transaction_id::text, 20, '0') || '-' || lpad(global_position::text, 20, '0') as position
        from phoenix_events
        where transaction_id < phoenix_log_horizon()
        order by transaction_id desc, global_position desc
        limit 1`.execute(this.#db);
      return rows[0]?.position ?? START;
    } catch (err) {
      throw unavailableOr(err);
    }
  }

  async lastCommitted(): Promise<Position> {
    try {
      const { rows } = await sql<{ position: string }>`
        select lpad(transaction_id::text, 20, '0') || '-' || lpad(global_position::text, 20, '0') as position
        from phoenix_events
        order by transaction_id desc, global_position desc
        limit 1`.execute(this.#db);
      return rows[0]?.position ?? START;
    } catch (err) {
      throw unavailableOr(err);
    }
  }

  /** Committed events that readers cannot take yet because an older transaction is still open. */
  async #heldBack(after: Position): Promise<boolean> {
    const [txid, pos] = parsePosition(after);
    const { rows } = await sql<{ held: boolean }>`
      select exists (
        select 1 from phoenix_events
        where transaction_id >= phoenix_log_horizon()
          and (transaction_id, global_position) > (${txid}::xid8, ${pos}::int8)
      ) as held`.execute(this.#db);
    return rows[0]?.held ?? false;
  }

  async *subscribe(options: SubscribeOptions): AsyncIterable<SubscriptionMessage<E>> {
    const signal = options.signal;
    const batchSize = options.batchSize ?? 500;
    const prefix = options.streamPrefix;
    this.#ensureListening();
    let checkpoint = options.after ?? (await this.head());
    parsePosition(checkpoint);
    let liveSent = false;
    let backoff = 1;
    const readOwn = (after: Position) => this.#readLog(after, batchSize, prefix, undefined);
    while (!signal?.aborted && !this.#closed) {
      // Behind the head (or let go by the tail): read on our own.
      let page: StoredEvent<E>[];
      try {
        page = await readOwn(checkpoint);
      } catch (err) {
        if (!(err instanceof StoreUnavailableError)) throw err;
        // The database is away: wait and try again; the subscriber sees lag, not an error.
        const woken = this.#nextWake(signal);
        const retry = new AbortController();
        const ms = Math.min(backoff * 100, 5_000);
        await Promise.race([delay(ms, undefined, { signal: retry.signal, ref: false }), woken.promise]);
        retry.abort(); // woken first: drop the timer (its rejection goes to the settled race)
        backoff = Math.min(backoff * 2, 50);
        woken.cancel();
        continue;
      }
      backoff = 1;
      if (page.length > 0) {
        checkpoint = page[page.length - 1]!.position;
        yield { kind: 'events', events: page };
        if (page.length === batchSize) continue;
      }
      if (!liveSent) {
        liveSent = true;
        yield { kind: 'live', position: checkpoint };
      }
      if (signal?.aborted || this.#closed) break;
      // Caught up: follow the head with the process's other subscribers (see LogTail).
      const member = this.#tail.join(checkpoint, prefix);
      try {
        // The tail had passed our checkpoint: read the events in between ourselves first, up to the
        // tail's position and not to our own horizon, which may be lower than the tail's was (see
        // #readLog): a short read must mean the gap is read, not that a horizon stopped it.
        const through = member.gapThrough;
        let gapRead = through === undefined;
        while (!gapRead) {
          let gap: StoredEvent<E>[];
          try {
            gap = await this.#readLog(checkpoint, batchSize, prefix, through!);
          } catch {
            break; // read it again on our own, where a failure is handled
          }
          if (gap.length > 0) {
            checkpoint = gap[gap.length - 1]!.position;
            yield { kind: 'events', events: gap };
          }
          gapRead = gap.length < batchSize;
        }
        if (!gapRead) continue;
        // Everything of ours up to the tail's position is delivered (the last event there may not be ours).
        checkpoint = through ?? checkpoint;
        while (member.attached && !signal?.aborted) {
          const events = member.take(batchSize);
          if (events.length === 0) {
            await member.wait(signal);
            continue;
          }
          checkpoint = events[events.length - 1]!.position;
          yield { kind: 'events', events };
        }
      } finally {
        member.leave();
      }
      // The tail's read failed: our own read meets that failure, or (an event outside our prefix
      // that the tail cannot read, say) does not; either way, no tight loop of reads.
      if (member.failed) await delay(100, undefined, { ref: false });
    }
  }

  async ping(): Promise<void> {
    try {
      await sql`select 1`.execute(this.#db);
    } catch (err) {
      throw unavailableOr(err);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#wake.emit('wake');
    if (this.#notifyTimer) clearTimeout(this.#notifyTimer);
    const stop = await this.#stopListening;
    await stop?.();
  }

  #decode(row: EventRow): StoredEvent<E> {
    const raw: StoredEvent = {
      streamId: row.stream_id,
      version: Number(row.version),
      position: row.position,
      type: row.type,
      data: row.data,
      metadata: row.metadata,
      recordedAt: row.recorded_at.toISOString(),
    };
    return decodeStored(this.#codec, raw);
  }

  /**
   * Wakes other processes' subscribers through a coalesced NOTIFY (this process's are woken when the
   * batch ends, see #sendBatch).
   */
  #announce(): void {
    if (this.database.kind === 'pglite') return;
    if (this.#notifyTimer) {
      this.#notifyPending = true;
      return;
    }
    const send = () => {
      this.#notifyPending = false;
      sql`select pg_notify(${this.#channel}, ${this.#instance})`.execute(this.#db).catch(() => undefined);
      this.#notifyTimer = setTimeout(() => {
        this.#notifyTimer = undefined;
        if (this.#notifyPending) send();
      }, NOTIFY_EVERY_MS);
      this.#notifyTimer.unref();
    };
    send();
  }

  #ensureListening(): void {
    // A NOTIFY of this store's own comes back here too; its subscribers were woken at the append.
    this.#stopListening ??= this.database.listen(this.#channel, (payload) => {
      if (payload !== this.#instance) this.#wake.emit('wake');
    });
  }

  #nextWake(signal: AbortSignal | undefined): { promise: Promise<void>; cancel: () => void } {
    let cancel: () => void = () => undefined;
    const promise = new Promise<void>((resolve) => {
      const on = () => resolve();
      this.#wake.once('wake', on);
      signal?.addEventListener('abort', on, { once: true });
      cancel = () => {
        this.#wake.off('wake', on);
        signal?.removeEventListener('abort', on);
        resolve();
      };
    });
    return { promise, cancel };
  }
}

/**
 * Where an append holds a NUL character, which PostgreSQL's text and jsonb refuse (in the statement's
 * JSON, the whole batch's): the stream id, an event's type, or a string or key of its data or metadata.
 */
const nulIn = (streamId: string, events: readonly NewEvent[]): string | undefined => {
  if (streamId.includes('\u0000')) return 'the stream id';
  for (const [i, e] of events.entries()) {
    if (typeof e.type === 'string' && e.type.includes('\u0000')) return `the type of event ${i + 1}`;
    if (holdsNul(e.data)) return `the data of event ${i + 1}`;
    if (holdsNul(e.metadata)) return `the metadata of event ${i + 1}`;
  }
  return undefined;
};

const holdsNul = (value: unknown): boolean => {
  if (typeof value === 'string') return value.includes('\u0000');
  if (value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.some(holdsNul);
  // what JSON.stringify writes: toJSON's result (a Date's), own enumerable keys and their values
  const json = (value as { toJSON?: () => unknown }).toJSON;
  if (typeof json === 'function') return holdsNul(json.call(value));
  return Object.entries(value).some(([k, v]) => k.includes('\u0000') || holdsNul(v));
};

/**
 * Whether the database refused a statement for the data it was given (SQLSTATE class 22, data
 * exception: a NUL in text or jsonb, a value out of its column's range or of the wrong form; class 23
 * but a unique key, which the store answers itself: a NOT NULL or CHECK constraint) rather than for
 * its own state or the connection.
 */
const isContentRefusal = (err: unknown): boolean => {
  const code = String((err as { code?: unknown } | null)?.code ?? '');
  return code.startsWith('22') || (code.startsWith('23') && code !== '23505');
};

/** A content refusal as the port says it: which append, and what the database said (not the data). */
const unstorable = (streamId: string, err: unknown): UnstorableEventError => {
  const e = err as { message?: unknown; detail?: unknown; code?: unknown };
  const reason = [e.message, e.detail]
    .filter((x): x is string => typeof x === 'string' && x.length > 0)
    .join(': ');
  return new UnstorableEventError(
    streamId,
    `${reason || 'refused by the database'} (SQLSTATE ${String(e.code)})`,
    {
      cause: err,
    },
  );
};

const escapeLike = (s: string): string => s.replace(/[\\%_]/g, (c) => `\\${c}`);

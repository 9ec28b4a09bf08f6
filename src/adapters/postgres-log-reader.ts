import type { SqlDatabase } from '../application/ports/database.js';
import {
  type AnyEvent,
  decodeStored,
  type EventCodec,
  type EventMetadata,
  type Position,
  type ReadAllOptions,
  type StoredEvent,
  type SubscribeOptions,
  type SubscriptionMessage,
} from '../application/ports/event-store.js';
import type { LogPage, LogReader, StreamSlice } from '../application/ports/log-reader.js';
import { type PostgresEventStore, parsePosition } from './postgres-event-store.js';

interface LogRow {
  stream_id: string;
  version: string;
  tx: string;
  gp: string;
  type: string;
  data: unknown;
  metadata: EventMetadata;
  recorded_at: string;
}

/**
 * The rebuild's read of `phoenix_events`, straight from the database the PostgreSQL store keeps its
 * log in: the same order and the same rule as the store's readAll (only rows below
 * phoenix_log_horizon(), so none is skipped), bounded by `upTo` on the server, and cheaper per row: the position
 * is put together here rather than by the server, and the recording time comes as UTC text instead
 * of being parsed into a Date. Every event is decoded through the store's codec (upcasters,
 * schema checks), as the store would.
 */
const READ_LOG = `
SELECT stream_id, version::text AS version, transaction_id::text AS tx, global_position::text AS gp, type, data, metadata,
       (recorded_at AT TIME ZONE 'UTC')::text AS recorded_at
  FROM phoenix_events
 WHERE (transaction_id, global_position) > ($1::xid8, $2::int8)
   AND (transaction_id, global_position) <= ($3::xid8, $4::int8)
   AND transaction_id < phoenix_log_horizon()
 ORDER BY transaction_id, global_position
 LIMIT $5`;

const ZEROS = '00000000000000000000';
const pad20 = (digits: string) => (digits.length >= 20 ? digits : ZEROS.slice(digits.length) + digits);

/** `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC, ISO DateStyle as node-postgres requires) as ISO 8601 to the ms. */
export const utcTextToIso = (text: string): string => {
  if (text.length >= 19 && text[10] === ' ' && text[4] === '-') {
    const fraction = text.length > 20 && text[19] === '.' ? text.slice(20, 23).padEnd(3, '0') : '000';
    return `${text.slice(0, 10)}T${text.slice(11, 19)}.${fraction}Z`;
  }
  return new Date(`${text.replace(' ', 'T')}Z`).toISOString();
};

/** An event of phoenix_events as READ_LOG and READ_SLICE select it, decoded through `codec`. */
const eventOfLogRow = <E extends AnyEvent>(codec: EventCodec<E> | undefined, row: LogRow): StoredEvent<E> =>
  decodeStored(codec, {
    streamId: row.stream_id,
    version: Number(row.version),
    position: `${pad20(row.tx)}-${pad20(row.gp)}`,
    type: row.type,
    data: row.data,
    metadata: row.metadata,
    recordedAt: utcTextToIso(row.recorded_at),
  });

/**
 * The log reader of the PostgreSQL event store: pages of the log for a rebuild straight from the
 * table (READ_LOG), catch-up and live through the store's own subscription (its log tail and NOTIFY),
 * and on a server the address worker threads read slices of streams from (readSlice).
 */
export class PostgresLogReader<E extends AnyEvent = AnyEvent> implements LogReader<E> {
  readonly parallel: { readonly url: string } | undefined;
  readonly #store: PostgresEventStore<E>;
  readonly #database: SqlDatabase;
  readonly #codec: EventCodec<E> | undefined;

  /** `database` is the one `store` keeps its log in; `codec` the store's (upcasters, schema checks). */
  constructor(store: PostgresEventStore<E>, database: SqlDatabase, codec?: EventCodec<E>) {
    this.#store = store;
    this.#database = database;
    this.#codec = codec;
    this.parallel =
      database.kind === 'postgres' && database.url !== undefined ? { url: database.url } : undefined;
  }

  readAll(options: ReadAllOptions): Promise<StoredEvent<E>[]> {
    return this.#store.readAll(options);
  }

  subscribe(options: SubscribeOptions): AsyncIterable<SubscriptionMessage<E>> {
    return this.#store.subscribe(options);
  }

  head(): Promise<Position> {
    return this.#store.head();
  }

  lastCommitted(): Promise<Position> {
    return this.#store.lastCommitted();
  }

  async readRange(after: Position, upTo: Position, limit: number): Promise<LogPage<E>> {
    const [afterTx, afterPos] = parsePosition(after);
    const [upToTx, upToPos] = parsePosition(upTo);
    const rows = await this.#database.query<LogRow>(READ_LOG, [afterTx, afterPos, upToTx, upToPos, limit]);
    const events: StoredEvent<E>[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) events[i] = eventOfLogRow(this.#codec, rows[i]!);
    return { events, done: rows.length < limit };
  }
}

/**
 * A page of a slice, through the primary key (stream_id, version): after ($1, $2), up to `upTo` ($3,
 * $4), and below the slice's end ($6) when it has one. ORDER BY names the table's columns: a bare
 * `version` would be the output column, text.
 */
const readSliceSql = (bounded: boolean) => `
SELECT stream_id, version::text AS version, transaction_id::text AS tx, global_position::text AS gp, type,
       data, metadata, (recorded_at AT TIME ZONE 'UTC')::text AS recorded_at
  FROM phoenix_events
 WHERE (stream_id, version) > ($1::text, $2::int8)${bounded ? ' AND stream_id < $6::text' : ''}
   AND (transaction_id, global_position) <= ($3::xid8, $4::int8)
 ORDER BY phoenix_events.stream_id, phoenix_events.version
 LIMIT $5`;
const READ_SLICE = readSliceSql(false);
const READ_SLICE_UNTIL = readSliceSql(true);

/**
 * The events of the streams of `slice` up to position `upTo` (inclusive), stream after stream, each
 * stream's in version order (which is its log order), in pages of `limit`. Events past `upTo` come
 * after every event of their stream up to it, so each stream is read as far as `upTo` and no further.
 * The log below `upTo` must be final (a rebuild reads up to the live checkpoint, which is).
 */
export async function* readSlice<E extends AnyEvent>(
  database: SqlDatabase,
  codec: EventCodec<E> | undefined,
  slice: StreamSlice,
  upTo: Position,
  limit: number,
): AsyncGenerator<StoredEvent<E>[]> {
  const [upToTx, upToPos] = parsePosition(upTo);
  let afterStream = slice.from;
  let afterVersion = 0;
  for (;;) {
    const rows = await (slice.to === undefined
      ? database.query<LogRow>(READ_SLICE, [afterStream, afterVersion, upToTx, upToPos, limit])
      : database.query<LogRow>(READ_SLICE_UNTIL, [
          afterStream,
          afterVersion,
          upToTx,
          upToPos,
          limit,
          slice.to,
        ]));
    if (rows.length === 0) return;
    const events: StoredEvent<E>[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) events[i] = eventOfLogRow(codec, rows[i]!);
    yield events;
    if (rows.length < limit) return;
    const last = rows[rows.length - 1]!;
    afterStream = last.stream_id;
    afterVersion = Number(last.version);
  }
}

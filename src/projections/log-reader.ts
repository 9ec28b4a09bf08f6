import type { SqlDatabase } from '../adapters/postgres-database.js';
import { PostgresEventStore, parsePosition } from '../adapters/postgres-event-store.js';
import { experimentCodec } from '../application/experiment-codec.js';
import {
  decodeStored,
  type EventMetadata,
  type EventStore,
  type Position,
  type StoredEvent,
} from '../application/ports/event-store.js';
import type { ExperimentEvent } from '../domain/experiment.js';

/**
 * Reads the global log in large pages for a rebuild: the events after `after` up to `upTo`
 * (inclusive), in log order. `done` says no event up to `upTo` follows the page.
 */
export type LogReader = (
  after: Position,
  upTo: Position,
  limit: number,
) => Promise<{ events: StoredEvent<ExperimentEvent>[]; done: boolean }>;

/** Through the port: works on every adapter. */
export const storeLogReader =
  (store: EventStore<ExperimentEvent>): LogReader =>
  async (after, upTo, limit) => {
    const page = await store.readAll({ after, limit });
    const events = page.filter((e) => e.position <= upTo);
    return { events, done: page.length < limit || events.length < page.length };
  };

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
 * of being parsed into a Date. Every event is decoded through the experiment codec (upcasters,
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

/** An event of phoenix_events as READ_LOG and READ_SLICE select it, decoded through the experiment codec. */
const eventOfLogRow = (row: LogRow): StoredEvent<ExperimentEvent> =>
  decodeStored(experimentCodec, {
    streamId: row.stream_id,
    version: Number(row.version),
    position: `${pad20(row.tx)}-${pad20(row.gp)}`,
    type: row.type,
    data: row.data,
    metadata: row.metadata,
    recordedAt: utcTextToIso(row.recorded_at),
  });

export function sqlLogReader(database: SqlDatabase): LogReader {
  return async (after, upTo, limit) => {
    const [afterTx, afterPos] = parsePosition(after);
    const [upToTx, upToPos] = parsePosition(upTo);
    const rows = await database.query<LogRow>(READ_LOG, [afterTx, afterPos, upToTx, upToPos, limit]);
    const events: StoredEvent<ExperimentEvent>[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) events[i] = eventOfLogRow(rows[i]!);
    return { events, done: rows.length < limit };
  };
}

/**
 * A range of streams of the log, `from` (inclusive) to `to` (exclusive; undefined: no end), in the
 * order of the stream ids' collation: a rebuild's worker threads split the log into such slices.
 */
export interface StreamSlice {
  readonly from: string;
  readonly to: string | undefined;
}

/**
 * Every experiment stream falls in one of these: the first hex digit of the id after the prefix
 * splits them (ids are random), and the first and last slice are open-ended, so that a stream id
 * of any other form is still read (and then skipped by the fold, as in log order).
 */
export const STREAM_SLICES: readonly StreamSlice[] = Array.from({ length: 16 }, (_, i) => ({
  from: i === 0 ? '' : `experiment-${i.toString(16)}`,
  to: i === 15 ? undefined : `experiment-${(i + 1).toString(16)}`,
}));

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
export async function* readSlice(
  database: SqlDatabase,
  slice: StreamSlice,
  upTo: Position,
  limit: number,
): AsyncGenerator<StoredEvent<ExperimentEvent>[]> {
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
    const events: StoredEvent<ExperimentEvent>[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) events[i] = eventOfLogRow(rows[i]!);
    yield events;
    if (rows.length < limit) return;
    const last = rows[rows.length - 1]!;
    afterStream = last.stream_id;
    afterVersion = Number(last.version);
  }
}

/**
 * The fastest reader for `store`: a PostgreSQL store keeps its log in the database the read models
 * live in (the composition root builds both on one), so the rebuild reads it there; any other
 * adapter is read through the port.
 */
export const logReaderFor = (store: EventStore<ExperimentEvent>, database: SqlDatabase): LogReader =>
  store instanceof PostgresEventStore ? sqlLogReader(database) : storeLogReader(store);

/**
 * The pages of the log after `after` up to `upTo`, each read as soon as the one before it has arrived,
 * up to `ahead` pages before they are used: reading goes on while the caller works on a page.
 */
export async function* readAhead(
  read: LogReader,
  after: Position,
  upTo: Position,
  limit: number,
  ahead: number,
): AsyncGenerator<StoredEvent<ExperimentEvent>[]> {
  type Page = Awaited<ReturnType<LogReader>>;
  const queue: Promise<Page>[] = [];
  let newest: Promise<Page> | undefined;
  const more = () => {
    while (queue.length < Math.max(ahead, 1)) {
      const previous = newest;
      const page: Promise<Page> = previous
        ? previous.then((p) => {
            const last = p.events[p.events.length - 1];
            return p.done || !last ? { events: [], done: true } : read(last.position, upTo, limit);
          })
        : read(after, upTo, limit);
      page.catch(() => undefined); // awaited (and thrown) in turn
      queue.push(page);
      newest = page;
    }
  };
  more();
  for (;;) {
    const page = await queue.shift()!;
    if (page.events.length > 0) {
      if (!page.done) more();
      yield page.events;
    }
    if (page.done || page.events.length === 0) return;
  }
}

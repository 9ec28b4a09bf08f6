import type { SqlDatabase } from '../adapters/postgres-database.js';
import { PostgresEventStore, parsePosition } from '../adapters/postgres-event-store.js';
import type { ExperimentEvent } from '../domain/experiment.js';
import { experimentCodec } from '../handlers/experiment-codec.js';
import {
  decodeStored,
  type EventMetadata,
  type EventStore,
  type Position,
  type StoredEvent,
} from '../handlers/ports/event-store.js';

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

export function sqlLogReader(database: SqlDatabase): LogReader {
  return async (after, upTo, limit) => {
    const [afterTx, afterPos] = parsePosition(after);
    const [upToTx, upToPos] = parsePosition(upTo);
    const rows = await database.query<LogRow>(READ_LOG, [afterTx, afterPos, upToTx, upToPos, limit]);
    const events: StoredEvent<ExperimentEvent>[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      const raw: StoredEvent = {
        streamId: row.stream_id,
        version: Number(row.version),
        position: `${pad20(row.tx)}-${pad20(row.gp)}`,
        type: row.type,
        data: row.data,
        metadata: row.metadata,
        recordedAt: utcTextToIso(row.recorded_at),
      };
      events[i] = decodeStored(experimentCodec, raw);
    }
    return { events, done: rows.length < limit };
  };
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

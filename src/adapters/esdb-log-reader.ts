import {
  BACKWARDS,
  DeadlineExceededError,
  START as ESDB_START,
  type Position as EsdbPosition,
  type EventStoreDBClient,
  excludeSystemEvents,
  FORWARDS,
  streamNameFilter,
  UnavailableError,
} from '@eventstore/db-client';
import {
  type AnyEvent,
  CorruptEventError,
  decodeStored,
  type EventCodec,
  type EventMetadata,
  isPosition,
  type Position,
  type ReadAllOptions,
  START,
  type StoredEvent,
  StoreUnavailableError,
  type SubscribeOptions,
  type SubscriptionMessage,
} from '../application/ports/event-store.js';
import type { LogPage, LogReader } from '../application/ports/log-reader.js';

/**
 * The log reader of the EventStoreDB / KurrentDB event store: `$all` read forwards in pages and
 * followed with `subscribeToAll`, filtered to the streams of one prefix (the root reads
 * `experiment-`), system events left out, positions those of the store (formatEsdbPosition).
 *
 * - Positions are the commit/prepare pair, each zero-padded to 20 digits, so they order as strings in
 *   the log's order; START maps to `$all`'s start.
 * - Subscriptions catch up with `readAll` pages, say `live`, then follow with `subscribeToAll` from the
 *   last position read (exclusive), filtered by stream prefix server-side, with `checkpointReached`
 *   reported so filtered readers can save progress over sparse data.
 * - `readAll` takes no filter, so the catch-up pages and a rebuild's ranges filter here.
 */

const POSITION = /^(\d{20})-(\d{20})$/;

export const formatEsdbPosition = (p: EsdbPosition): Position =>
  `${p.commit.toString().padStart(20, '0')}-${p.prepare.toString().padStart(20, '0')}`;

export const parseEsdbPosition = (position: Position): EsdbPosition | typeof ESDB_START => {
  if (position === START) return ESDB_START;
  const m = POSITION.exec(position);
  if (!m || !isPosition(position)) throw new Error(`'${position}' is not an EventStoreDB position`);
  return { commit: BigInt(m[1]!), prepare: BigInt(m[2]!) };
};

/** What the adapters read of a recorded event: the client's, JSON or binary, with or without a position. */
export interface RecordedLike {
  readonly streamId: string;
  readonly revision: bigint;
  readonly type: string;
  readonly data: unknown;
  readonly metadata: unknown;
  readonly isJson: boolean;
  readonly created: Date;
  readonly position?: EsdbPosition | undefined;
}
type LogRecorded = RecordedLike & { readonly position: EsdbPosition };

export const isSystem = (e: { streamId: string; type: string }) =>
  e.streamId.startsWith('$') || e.type.startsWith('$');

/** Whether an event of `$all` belongs to the log Phoenix reads: not a system event, of the prefix's streams. */
export const isLogEvent = (
  e: { streamId: string; type: string },
  streamPrefix: string | undefined,
): boolean => !isSystem(e) && (streamPrefix === undefined || e.streamId.startsWith(streamPrefix));

/** A recorded event as the port's StoredEvent (version = revision + 1), decoded through `codec`. */
export function decodeRecorded<E extends AnyEvent>(
  codec: EventCodec<E> | undefined,
  event: RecordedLike,
): StoredEvent<E> {
  const version = Number(event.revision) + 1;
  if (!event.isJson || typeof event.metadata !== 'object' || event.metadata === null) {
    throw new CorruptEventError(event.streamId, version, 'payload or metadata is not JSON');
  }
  const raw: StoredEvent = {
    streamId: event.streamId,
    version,
    position: event.position ? formatEsdbPosition(event.position) : START,
    type: event.type,
    data: event.data,
    metadata: event.metadata as EventMetadata,
    recordedAt: event.created.toISOString(),
  };
  return decodeStored(codec, raw);
}

/** The client's failures that mean the server cannot be reached become the port's StoreUnavailableError. */
export const unavailableOr = (err: unknown): unknown =>
  err instanceof UnavailableError || err instanceof DeadlineExceededError
    ? new StoreUnavailableError(`EventStoreDB unavailable: ${(err as Error).message}`, { cause: err })
    : err;

export interface EsdbLogReaderOptions<E extends AnyEvent> {
  readonly codec?: EventCodec<E> | undefined;
  /** Only streams with this prefix, unless a call names its own; undefined: every non-system stream. */
  readonly streamPrefix?: string | undefined;
}

/** The part of the client the reader uses (the store's client; a test's stand-in). */
export type EsdbLogClient = Pick<EventStoreDBClient, 'readAll' | 'subscribeToAll'>;

export class EsdbLogReader<E extends AnyEvent = AnyEvent> implements LogReader<E> {
  readonly #client: EsdbLogClient;
  readonly #codec: EventCodec<E> | undefined;
  readonly #streamPrefix: string | undefined;

  constructor(client: EsdbLogClient, options: EsdbLogReaderOptions<E> = {}) {
    this.#client = client;
    this.#codec = options.codec;
    this.#streamPrefix = options.streamPrefix;
  }

  async readAll(options: ReadAllOptions): Promise<StoredEvent<E>[]> {
    const prefix = options.streamPrefix ?? this.#streamPrefix;
    const out: StoredEvent<E>[] = [];
    try {
      for await (const event of this.#scan(options.after ?? START, Math.max(options.limit, 100))) {
        if (!isLogEvent(event, prefix)) continue;
        out.push(decodeRecorded(this.#codec, event));
        if (out.length >= options.limit) break;
      }
    } catch (err) {
      throw unavailableOr(err);
    }
    return out;
  }

  async readRange(after: Position, upTo: Position, limit: number): Promise<LogPage<E>> {
    const events: StoredEvent<E>[] = [];
    try {
      for await (const event of this.#scan(after, Math.max(limit, 100))) {
        if (formatEsdbPosition(event.position) > upTo) return { events, done: true };
        if (!isLogEvent(event, this.#streamPrefix)) continue;
        events.push(decodeRecorded(this.#codec, event));
        if (events.length >= limit) return { events, done: false };
      }
    } catch (err) {
      throw unavailableOr(err);
    }
    return { events, done: true };
  }

  /**
   * Every event of `$all` after `after`, system events included, in log order: pages of `pageSize`
   * read forwards, each from the last position of the one before (readAll starts at its position
   * inclusively, so that event is dropped), until a page brings nothing new.
   */
  async *#scan(after: Position, pageSize: number): AsyncGenerator<LogRecorded> {
    let last = after;
    for (;;) {
      let fresh = 0;
      const read = this.#client.readAll({
        fromPosition: parseEsdbPosition(last),
        direction: FORWARDS,
        maxCount: pageSize,
      });
      for await (const resolved of read) {
        const event = resolved.event;
        if (!event?.position) continue;
        const position = formatEsdbPosition(event.position);
        if (position <= last) continue;
        fresh++;
        last = position;
        yield event;
      }
      if (fresh === 0) return;
    }
  }

  async *subscribe(options: SubscribeOptions): AsyncIterable<SubscriptionMessage<E>> {
    const batchSize = options.batchSize ?? 500;
    const prefix = options.streamPrefix ?? this.#streamPrefix;
    let checkpoint = options.after ?? (await this.head());
    // Catch up with pages of the log, then follow live from where the pages ended.
    for (;;) {
      if (options.signal?.aborted) return;
      const page = await this.readAll({
        after: checkpoint,
        limit: batchSize,
        streamPrefix: prefix,
      });
      if (page.length === 0) break;
      checkpoint = page[page.length - 1]!.position;
      yield { kind: 'events', events: page };
      if (page.length < batchSize) break;
    }
    yield { kind: 'live', position: checkpoint };

    const queue: SubscriptionMessage<E>[] = [];
    let wake: (() => void) | undefined;
    let failure: unknown;
    const push = (m: SubscriptionMessage<E>) => {
      queue.push(m);
      if (queue.length > 2 * batchSize) subscription.pause();
      wake?.();
    };
    const filterOptions = {
      checkpointInterval: 32,
      checkpointReached: (_: unknown, position: EsdbPosition) => {
        push({ kind: 'checkpoint', position: formatEsdbPosition(position) });
      },
    };
    const subscription = this.#client.subscribeToAll({
      fromPosition: parseEsdbPosition(checkpoint),
      filter: prefix
        ? streamNameFilter({ prefixes: [prefix], ...filterOptions })
        : excludeSystemEvents(filterOptions),
    });
    subscription.on('data', (resolved) => {
      const event = resolved.event;
      if (!event?.position) return;
      try {
        push({ kind: 'events', events: [decodeRecorded(this.#codec, event)] });
      } catch (err) {
        failure = err;
        wake?.();
      }
    });
    subscription.on('error', (err) => {
      failure = unavailableOr(err);
      wake?.();
    });
    const onAbort = () => wake?.();
    options.signal?.addEventListener('abort', onAbort);
    try {
      while (!options.signal?.aborted) {
        if (failure) throw failure;
        const next = queue.shift();
        if (!next) {
          subscription.resume();
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = undefined;
          continue;
        }
        if (next.kind === 'checkpoint' && next.position <= checkpoint) continue;
        if (next.kind === 'events') {
          // Coalesce what is already queued into one batch.
          const events = [...next.events];
          while (queue[0]?.kind === 'events' && events.length < batchSize) {
            events.push(...(queue.shift() as { events: readonly StoredEvent<E>[] }).events);
          }
          const fresh = events.filter((e) => e.position > checkpoint);
          if (fresh.length === 0) continue;
          checkpoint = fresh[fresh.length - 1]!.position;
          yield { kind: 'events', events: fresh };
        } else {
          checkpoint = next.position;
          yield next;
        }
      }
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      await subscription.unsubscribe().catch(() => undefined);
    }
  }

  async head(): Promise<Position> {
    try {
      const read = this.#client.readAll({ fromPosition: 'end', direction: BACKWARDS, maxCount: 1_000 });
      for await (const resolved of read) {
        const event = resolved.event;
        if (event?.position && !isSystem(event)) return formatEsdbPosition(event.position);
      }
      return START;
    } catch (err) {
      throw unavailableOr(err);
    }
  }

  /** EventStoreDB makes an event readable when it commits: the same as the head. */
  lastCommitted(): Promise<Position> {
    return this.head();
  }
}

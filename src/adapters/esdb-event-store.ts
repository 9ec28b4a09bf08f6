import {
  ANY,
  type AppendExpectedRevision,
  BACKWARDS,
  DeadlineExceededError,
  START as ESDB_START,
  type Position as EsdbPosition,
  WrongExpectedVersionError as EsdbWrongExpectedVersion,
  EventStoreDBClient,
  excludeSystemEvents,
  FORWARDS,
  jsonEvent,
  NO_STREAM,
  STREAM_EXISTS,
  StreamNotFoundError,
  streamNameFilter,
  UnavailableError,
} from '@eventstore/db-client';
import {
  type AnyEvent,
  type AppendResult,
  CorruptEventError,
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
  WrongExpectedVersionError,
} from '../application/ports/event-store.js';

/**
 * The event store on EventStoreDB / KurrentDB through `@eventstore/db-client` (the only file that
 * knows that client; its successor `@kurrent/kurrentdb-client` renames `expectedRevision` to
 * `streamState`, so a switch stays in here).
 *
 * - Streams are `experiment-<id>`; the port's versions are 1-based counts, EventStoreDB's revisions
 *   0-based: revision = version - 1.
 * - Positions are the commit/prepare pair, each zero-padded to 20 digits, so they order as strings.
 * - Subscriptions catch up with `readAll` pages, say `live`, then follow with `subscribeToAll` from the
 *   last position read (exclusive), filtered by stream prefix, with `checkpointReached` reported so
 *   filtered readers can save progress over sparse data.
 */
export interface EsdbEventStoreOptions<E extends AnyEvent> {
  readonly codec?: EventCodec<E>;
}

const POSITION = /^(\d{20})-(\d{20})$/;

export const formatEsdbPosition = (p: EsdbPosition): Position =>
  `${p.commit.toString().padStart(20, '0')}-${p.prepare.toString().padStart(20, '0')}`;

export const parseEsdbPosition = (position: Position): EsdbPosition | typeof ESDB_START => {
  if (position === START) return ESDB_START;
  const m = POSITION.exec(position);
  if (!m || !isPosition(position)) throw new Error(`'${position}' is not an EventStoreDB position`);
  return { commit: BigInt(m[1]!), prepare: BigInt(m[2]!) };
};

export const toExpectedRevision = (expected: ExpectedVersion): AppendExpectedRevision => {
  if (expected === 'any') return ANY;
  if (expected === 'no_stream' || expected === 0) return NO_STREAM;
  if (expected === 'stream_exists') return STREAM_EXISTS;
  return BigInt(expected - 1);
};

interface RecordedLike {
  streamId: string;
  revision: bigint;
  type: string;
  data: unknown;
  metadata: unknown;
  isJson: boolean;
  created: Date;
  position?: EsdbPosition;
}

const isSystem = (e: { streamId: string; type: string }) =>
  e.streamId.startsWith('$') || e.type.startsWith('$');

export class EsdbEventStore<E extends AnyEvent = AnyEvent> implements EventStore<E> {
  readonly #client: EventStoreDBClient;
  readonly #codec: EventCodec<E> | undefined;

  constructor(connectionString: string, options: EsdbEventStoreOptions<E> = {}) {
    this.#client = EventStoreDBClient.connectionString(connectionString);
    this.#codec = options.codec;
  }

  async append(
    streamId: string,
    events: readonly NewEvent<E>[],
    expected: ExpectedVersion,
  ): Promise<AppendResult> {
    try {
      const result = await this.#client.appendToStream(
        streamId,
        events.map((e) =>
          jsonEvent({
            id: e.metadata.eventId,
            type: e.type,
            data: e.data as never,
            metadata: e.metadata as never,
          }),
        ),
        { expectedRevision: toExpectedRevision(expected) },
      );
      const position = result.position ? formatEsdbPosition(result.position) : await this.head();
      return { version: Number(result.nextExpectedRevision) + 1, position };
    } catch (err) {
      if (err instanceof EsdbWrongExpectedVersion) {
        const actual = typeof err.actualVersion === 'bigint' ? Number(err.actualVersion) + 1 : 0;
        throw new WrongExpectedVersionError(streamId, expected, actual);
      }
      throw unavailableOr(err);
    }
  }

  async readStream(streamId: string, options: ReadStreamOptions = {}): Promise<StoredEvent<E>[]> {
    const from = Math.max(1, options.fromVersion ?? 1);
    const out: StoredEvent<E>[] = [];
    try {
      const read = this.#client.readStream(streamId, {
        fromRevision: BigInt(from - 1),
        direction: FORWARDS,
        ...(options.limit !== undefined ? { maxCount: options.limit } : {}),
      });
      for await (const resolved of read) {
        const event = resolved.event as RecordedLike | undefined;
        if (!event) continue;
        const version = Number(event.revision) + 1;
        if (options.toVersion !== undefined && version > options.toVersion) break;
        if (options.until && event.created > options.until) break;
        out.push(this.#decode(event));
      }
    } catch (err) {
      if (err instanceof StreamNotFoundError) return [];
      throw unavailableOr(err);
    }
    return out;
  }

  async readAll(options: ReadAllOptions): Promise<StoredEvent<E>[]> {
    const out: StoredEvent<E>[] = [];
    let after = options.after ?? START;
    const pageSize = Math.max(options.limit, 100);
    try {
      for (;;) {
        let readInPage = 0;
        const read = this.#client.readAll({
          fromPosition: parseEsdbPosition(after),
          direction: FORWARDS,
          maxCount: pageSize,
        });
        for await (const resolved of read) {
          const event = resolved.event as RecordedLike | undefined;
          if (!event?.position) continue;
          const position = formatEsdbPosition(event.position);
          if (position <= after) continue; // readAll's start position is inclusive
          readInPage++;
          after = position;
          if (isSystem(event)) continue;
          if (options.streamPrefix && !event.streamId.startsWith(options.streamPrefix)) continue;
          out.push(this.#decode(event));
          if (out.length >= options.limit) return out;
        }
        if (readInPage === 0) return out;
      }
    } catch (err) {
      throw unavailableOr(err);
    }
  }

  async *subscribe(options: SubscribeOptions): AsyncIterable<SubscriptionMessage<E>> {
    const batchSize = options.batchSize ?? 500;
    let checkpoint = options.after ?? (await this.head());
    // Catch up with pages of the log, then follow live from where the pages ended.
    for (;;) {
      if (options.signal?.aborted) return;
      const page = await this.readAll({
        after: checkpoint,
        limit: batchSize,
        ...(options.streamPrefix ? { streamPrefix: options.streamPrefix } : {}),
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
      filter: options.streamPrefix
        ? streamNameFilter({ prefixes: [options.streamPrefix], ...filterOptions })
        : excludeSystemEvents(filterOptions),
    });
    subscription.on('data', (resolved) => {
      const event = resolved.event as RecordedLike | undefined;
      if (!event?.position) return;
      try {
        push({ kind: 'events', events: [this.#decode(event)] });
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
        const event = resolved.event as RecordedLike | undefined;
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

  async ping(): Promise<void> {
    try {
      for await (const _ of this.#client.readAll({ direction: BACKWARDS, fromPosition: 'end', maxCount: 1 }))
        break;
    } catch (err) {
      throw unavailableOr(err);
    }
  }

  async close(): Promise<void> {
    await this.#client.dispose();
  }

  #decode(event: RecordedLike): StoredEvent<E> {
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
    return decodeStored(this.#codec, raw);
  }
}

const unavailableOr = (err: unknown): unknown =>
  err instanceof UnavailableError || err instanceof DeadlineExceededError
    ? new StoreUnavailableError(`EventStoreDB unavailable: ${(err as Error).message}`, { cause: err })
    : err;

import {
  ANY,
  type AppendExpectedRevision,
  BACKWARDS,
  WrongExpectedVersionError as EsdbWrongExpectedVersion,
  EventStoreDBClient,
  FORWARDS,
  jsonEvent,
  NO_STREAM,
  STREAM_EXISTS,
  StreamNotFoundError,
} from '@eventstore/db-client';
import {
  type AnyEvent,
  type AppendResult,
  type EventCodec,
  type EventStore,
  type ExpectedVersion,
  type NewEvent,
  type Position,
  type ReadAllOptions,
  type ReadStreamOptions,
  type StoredEvent,
  type SubscribeOptions,
  type SubscriptionMessage,
  WrongExpectedVersionError,
} from '../application/ports/event-store.js';
import {
  decodeRecorded,
  EsdbLogReader,
  formatEsdbPosition,
  type RecordedLike,
  unavailableOr,
} from './esdb-log-reader.js';

/**
 * The event store on EventStoreDB / KurrentDB through `@eventstore/db-client` (the only file that
 * knows that client; its successor `@kurrent/kurrentdb-client` renames `expectedRevision` to
 * `streamState`, so a switch stays in here).
 *
 * - Streams are `experiment-<id>`; the port's versions are 1-based counts, EventStoreDB's revisions
 *   0-based: revision = version - 1.
 * - Positions are the commit/prepare pair, each zero-padded to 20 digits, so they order as strings.
 * - The read side of the port (readAll, subscribe, head) is the store's log reader
 *   (esdb-log-reader.ts), which the root also builds for the projections, filtered to experiment streams.
 */
export interface EsdbEventStoreOptions<E extends AnyEvent> {
  readonly codec?: EventCodec<E>;
}

export const toExpectedRevision = (expected: ExpectedVersion): AppendExpectedRevision => {
  if (expected === 'any') return ANY;
  if (expected === 'no_stream' || expected === 0) return NO_STREAM;
  if (expected === 'stream_exists') return STREAM_EXISTS;
  return BigInt(expected - 1);
};

export class EsdbEventStore<E extends AnyEvent = AnyEvent> implements EventStore<E> {
  readonly #client: EventStoreDBClient;
  readonly #codec: EventCodec<E> | undefined;
  /** The read side of the port (readAll, subscribe, head), unfiltered as the port's contract has it. */
  readonly #log: EsdbLogReader<E>;

  constructor(connectionString: string, options: EsdbEventStoreOptions<E> = {}) {
    this.#client = EventStoreDBClient.connectionString(connectionString);
    this.#codec = options.codec;
    this.#log = new EsdbLogReader(this.#client, { codec: options.codec });
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
        out.push(decodeRecorded(this.#codec, event));
      }
    } catch (err) {
      if (err instanceof StreamNotFoundError) return [];
      throw unavailableOr(err);
    }
    return out;
  }

  readAll(options: ReadAllOptions): Promise<StoredEvent<E>[]> {
    return this.#log.readAll(options);
  }

  subscribe(options: SubscribeOptions): AsyncIterable<SubscriptionMessage<E>> {
    return this.#log.subscribe(options);
  }

  head(): Promise<Position> {
    return this.#log.head();
  }

  lastCommitted(): Promise<Position> {
    return this.#log.lastCommitted();
  }

  /** The log reader of this store, on its connection: `streamPrefix` filters what it reads. */
  logReader(options: { readonly streamPrefix?: string } = {}): EsdbLogReader<E> {
    return new EsdbLogReader(this.#client, { codec: this.#codec, ...options });
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
}

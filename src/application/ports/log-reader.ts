import type {
  AnyEvent,
  Position,
  ReadAllOptions,
  StoredEvent,
  SubscribeOptions,
  SubscriptionMessage,
} from './event-store.js';

/**
 * The log reader port: the global log as the read side consumes it (projections, the rebuild, the live
 * feed), in log order and with the event store's positions. Every event store has one (the PostgreSQL
 * one reads its table directly, the EventStoreDB one reads `$all`); the composition root builds it next
 * to the store and passes it down, so nothing on the read side knows which store it reads.
 */
export interface LogReader<E extends AnyEvent = AnyEvent> {
  /** One page of the global log after `options.after`, in log order. Never skips an event that commits later. */
  readAll(options: ReadAllOptions): Promise<StoredEvent<E>[]>;
  /**
   * A rebuild's page: at most `limit` events after `after` up to `upTo` (inclusive), in log order.
   * `done` says no event up to `upTo` follows the page.
   */
  readRange(after: Position, upTo: Position, limit: number): Promise<LogPage<E>>;
  /** Catch-up then live: every committed event after `after`, exactly once, in log order. */
  subscribe(options: SubscribeOptions): AsyncIterable<SubscriptionMessage<E>>;
  /** The position of the last event readers can see; START when the log is empty. */
  head(): Promise<Position>;
  /**
   * The position of the last committed event, which readers may not be able to take yet: a reader that
   * has reached it has every event committed before the call (what "the backlog" means for a feed).
   */
  lastCommitted(): Promise<Position>;
  /**
   * Present where the log can also be read in slices of streams by worker threads with connections
   * of their own (PostgreSQL on a server): what such a worker needs to open its reader.
   */
  readonly parallel?: { readonly url: string } | undefined;
}

export interface LogPage<E extends AnyEvent = AnyEvent> {
  readonly events: StoredEvent<E>[];
  readonly done: boolean;
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

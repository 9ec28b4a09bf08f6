/**
 * The event store port: what the command side, projections, sagas and the live feed need from an
 * event store, and nothing more. Adapters (PostgreSQL, PGlite, EventStoreDB) implement it.
 *
 * Conventions, the same for every adapter:
 * - A stream's `version` counts its events: the first event of a stream has version 1, and a stream
 *   with N events is at version N. "No stream" is version 0. (EventStoreDB's 0-based revisions are
 *   converted in its adapter.)
 * - A `Position` is an opaque string naming a place in the global log. Positions of one store compare
 *   in log order as plain strings (fixed width), so `a < b` means `a` comes first. `'0'` (START) is
 *   before every event.
 * - A refused expected version throws an error whose `code` is `'wrong_expected_version'`.
 * - Every read path decodes through the store's codec, so upcasters run wherever events are read.
 */

export type Position = string;
export const START: Position = '0';

/** any: no check; no_stream: the stream must not exist; stream_exists: it must; a number: exact version. */
export type ExpectedVersion = 'any' | 'no_stream' | 'stream_exists' | number;

export interface EventMetadata {
  readonly eventId: string;
  readonly actor: string;
  readonly correlationId: string;
  readonly causationId: string | null;
  readonly occurredAt: string;
  readonly schemaVersion: number;
}

export interface AnyEvent {
  readonly type: string;
  readonly data: unknown;
}

export interface NewEvent<E extends AnyEvent = AnyEvent> {
  readonly type: E['type'];
  readonly data: E['data'];
  readonly metadata: EventMetadata;
}

/** What the store records with every event, besides the event itself. */
export interface StoredMeta {
  readonly streamId: string;
  readonly version: number;
  readonly position: Position;
  readonly metadata: EventMetadata;
  /** When the store recorded it (server time), ISO 8601. */
  readonly recordedAt: string;
}

/**
 * An event as stored: the event itself (one value of the union `E`, so `type` discriminates `data`)
 * with what the store recorded. A StoredEvent<ExperimentEvent> is an ExperimentEvent: the domain
 * folds it as it is, no cast.
 */
export type StoredEvent<E extends AnyEvent = AnyEvent> = E & StoredMeta;

export interface AppendResult {
  /** The stream's version after the append. */
  readonly version: number;
  /** The position of the last event appended. */
  readonly position: Position;
}

export interface ReadStreamOptions {
  /** First version to return (inclusive); default 1. */
  readonly fromVersion?: number;
  /** Last version to return (inclusive). */
  readonly toVersion?: number;
  /** Only events recorded at or before this time. */
  readonly until?: Date;
  readonly limit?: number;
}

/** The part of the port that commands need: read a stream, append to it with an expected version. */
export interface CommandEventStore<E extends AnyEvent = AnyEvent> {
  /**
   * Appends atomically, checking the expected version. Retrying an append whose event ids are already
   * stored returns the first result and writes nothing.
   * @throws an error with `code: 'wrong_expected_version'` when the stream is not at the expected version
   */
  append(streamId: string, events: readonly NewEvent<E>[], expected: ExpectedVersion): Promise<AppendResult>;
  /** The stream's events in version order; [] when the stream does not exist. */
  readStream(streamId: string, options?: ReadStreamOptions): Promise<StoredEvent<E>[]>;
}

/** Whether the store refused an append because the stream was not at the expected version. */
export const isWrongExpectedVersion = (error: unknown): boolean =>
  error instanceof Error && (error as { code?: unknown }).code === 'wrong_expected_version';

export interface ReadAllOptions {
  /** Return events after this position; default START. */
  readonly after?: Position;
  readonly limit: number;
  /** Only streams whose id starts with this prefix. */
  readonly streamPrefix?: string;
}

export interface SubscribeOptions {
  /** Deliver events after this position (START replays everything); undefined starts at the head. */
  readonly after?: Position | undefined;
  readonly streamPrefix?: string;
  /** Largest batch delivered at once. */
  readonly batchSize?: number;
  readonly signal?: AbortSignal;
}

/**
 * What a subscription yields, in log order:
 * - `events`: the next events after the last position delivered;
 * - `live`: the backlog is delivered and the subscription follows the head (sent each time it catches up);
 * - `checkpoint`: no matching events up to `position` (lets filtered readers save progress over sparse data).
 */
export type SubscriptionMessage<E extends AnyEvent = AnyEvent> =
  | { readonly kind: 'events'; readonly events: readonly StoredEvent<E>[] }
  | { readonly kind: 'live'; readonly position: Position }
  | { readonly kind: 'checkpoint'; readonly position: Position };

/** Turns a raw stored event into a typed one: upcasts old schema versions, rejects what it can't read. */
export interface EventCodec<E extends AnyEvent> {
  decode(raw: StoredEvent): StoredEvent<E>;
}

/** The whole port; `append` throws WrongExpectedVersionError when the stream is not at the expected version. */
export interface EventStore<E extends AnyEvent = AnyEvent> extends CommandEventStore<E> {
  /** One page of the global log, in log order. Never skips an event that commits later. */
  readAll(options: ReadAllOptions): Promise<StoredEvent<E>[]>;
  /** Catch-up then live: every committed event after `after`, exactly once, in log order. */
  subscribe(options: SubscribeOptions): AsyncIterable<SubscriptionMessage<E>>;
  /** The position of the last event readers can see; START when the log is empty. */
  head(): Promise<Position>;
  /**
   * The position of the last committed event, which readers may not be able to take yet (PostgreSQL
   * holds events back behind an older transaction still open). A reader that has reached it has every
   * event committed before the call: what "the backlog" means for a feed.
   */
  lastCommitted(): Promise<Position>;
  /** Cheap liveness probe of the backing service. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export class WrongExpectedVersionError extends Error {
  readonly code = 'wrong_expected_version';
  constructor(
    readonly streamId: string,
    readonly expected: ExpectedVersion,
    readonly actual: number,
  ) {
    super(`stream ${streamId}: expected version ${String(expected)}, actual ${actual}`);
  }
}

/** An event the store holds but cannot read: unknown type, corrupt or invalid payload. */
export class CorruptEventError extends Error {
  readonly code = 'corrupt_event';
  constructor(
    readonly streamId: string,
    readonly version: number,
    readonly reason: string,
  ) {
    super(`stream ${streamId} version ${version}: ${reason}`);
  }
}

/**
 * Decodes a stored event with `codec`: whatever the codec throws becomes a CorruptEventError naming
 * the stream and version. Without a codec the event passes as it is.
 */
export function decodeStored<E extends AnyEvent>(
  codec: EventCodec<E> | undefined,
  raw: StoredEvent,
): StoredEvent<E> {
  if (!codec) return raw as StoredEvent<E>;
  try {
    return codec.decode(raw);
  } catch (err) {
    if (err instanceof CorruptEventError) throw err;
    throw new CorruptEventError(raw.streamId, raw.version, err instanceof Error ? err.message : String(err));
  }
}

/** An append retried with event ids that are stored, but not as that same append. */
export class DuplicateEventIdError extends Error {
  readonly code = 'duplicate_event_id';
  constructor(
    readonly streamId: string,
    readonly eventId: string,
  ) {
    super(`stream ${streamId}: event id ${eventId} is already stored elsewhere`);
  }
}

/**
 * The store cannot hold what an append carries: on PostgreSQL and PGlite a NUL character (`\u0000`)
 * anywhere in the stream id, an event's type, data or metadata (text and jsonb refuse it), or a value
 * its columns cannot take (an event id that is not a UUID, say). Nothing of that append is written,
 * and appends made at the same time (which may share its statement) are not affected. The request is
 * wrong, not the store: the API answers it with 400, never 500. `reason` says what was refused (the
 * database's own words when it refused it).
 */
export class UnstorableEventError extends Error {
  readonly code = 'unstorable_event';
  constructor(
    readonly streamId: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`stream ${streamId}: the event store cannot hold this append: ${reason}`, options);
  }
}

/**
 * The backing service cannot be reached (connection refused or lost, shutting down, closed); the
 * operation wrote nothing and may be retried. Adapters throw it for every such failure, whatever their
 * technology calls it, so callers never read driver codes: the API answers it with 503.
 */
export class StoreUnavailableError extends Error {
  readonly code = 'store_unavailable';
}

/**
 * Both adapters write positions as two zero-padded 20-digit numbers joined by a dash: PostgreSQL's
 * (transaction id, global position), EventStoreDB's (commit, prepare).
 */
const POSITION = /^(\d{20})-(\d{20})$/;
/** The largest first part: PostgreSQL's xid8 (and EventStoreDB's commit position) is an unsigned 64-bit number. */
const MAX_FIRST = '18446744073709551615';
/** The largest second part: PostgreSQL's global position is a bigint (EventStoreDB's prepare position a signed 64-bit number). */
const MAX_SECOND = '09223372036854775807';

/**
 * Whether `s` is a position a store could have issued: START, or both parts within what their
 * columns hold. Anything else is refused where it comes in (the live feed's `from`, `minPosition`):
 * passed on, it would fail in the database instead. Fixed-width digit strings compare as numbers.
 */
export const isPosition = (s: string): boolean => {
  if (s === START) return true;
  const m = POSITION.exec(s);
  return m !== null && m[1]! <= MAX_FIRST && m[2]! <= MAX_SECOND;
};

export const comparePositions = (a: Position, b: Position): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The part of the event store port that commands need: read a stream, append to it with an expected
 * version. Adapters (PostgreSQL, PGlite, EventStoreDB) implement it; the conventions are the store's:
 * - A stream's `version` counts its events: a stream with N events is at version N, "no stream" is 0.
 * - A `Position` is an opaque string naming a place in the global log; `'0'` (START) is before every
 *   event.
 * - A refused expected version throws an error whose `code` is `'wrong_expected_version'`.
 *
 * Owned here, by its consumer (issue 16); the rest of the port (readAll, subscribe, head) joins it when
 * the read side moves behind application ports.
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

export interface StoredEvent<E extends AnyEvent = AnyEvent> {
  readonly streamId: string;
  readonly version: number;
  readonly position: Position;
  readonly type: E['type'];
  readonly data: E['data'];
  readonly metadata: EventMetadata;
  /** When the store recorded it (server time), ISO 8601. */
  readonly recordedAt: string;
}

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

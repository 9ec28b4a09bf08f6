import { createHash, randomUUID } from 'node:crypto';
import {
  decide,
  type Experiment,
  type ExperimentCommand,
  type ExperimentEvent,
  fold,
} from '../domain/experiment.js';
import { currentSchemaVersion } from '../domain/upcasters.js';
import {
  type AppendResult,
  type CommandEventStore,
  isWrongExpectedVersion,
  type NewEvent,
  type Position,
  START,
} from './ports/event-store.js';

export const streamIdOf = (experimentId: string): string => `experiment-${experimentId}`;
export const STREAM_PREFIX = 'experiment-';
export const experimentIdOf = (streamId: string): string => streamId.slice(STREAM_PREFIX.length);

export interface CommandContext {
  readonly actor: string;
  readonly correlationId: string;
  readonly causationId?: string | null;
  /**
   * Makes the command idempotent: its event ids are derived from this id, so running the same
   * command again (a client retry, a redelivered saga message) writes nothing the second time.
   */
  readonly commandId?: string;
  /** `If-Match`: the version the caller last saw; any other current version is a VersionMismatchError. */
  readonly expectedVersion?: number;
}

export interface CommandResult {
  readonly experimentId: string;
  /** The status before the command ('empty' for a new experiment). */
  readonly previousStatus: Experiment['status'];
  readonly state: Experiment;
  /** Events in the stream after the command. */
  readonly version: number;
  /** Global position of the last event written (or, if nothing was written, of the stream's last). */
  readonly position: Position;
  /** The events this command wrote; empty when it changed nothing or was a repeat. */
  readonly written: readonly ExperimentEvent[];
}

/** `If-Match` named a version that is not the current one. */
export class VersionMismatchError extends Error {
  readonly code = 'version_mismatch';
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`the experiment is at version ${actual}, not ${expected}`);
  }
}

/** Every retry lost to a concurrent writer. */
export class ConcurrencyConflictError extends Error {
  readonly code = 'concurrency_conflict';
}

/** A stable UUID (v8 layout) for the `index`-th event of command `commandId`. */
export const deriveEventId = (commandId: string, index: number): string => {
  const h = createHash('sha256').update(`${commandId}\u0000${index}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
};

/** What this process last knew of an experiment's stream: enough to decide without reading it. */
interface KnownStream {
  readonly version: number;
  readonly state: Experiment;
  readonly position: Position;
  /** Every event id in the stream up to `version`: a command that already ran is found here. */
  readonly eventIds: ReadonlySet<string>;
}

/**
 * The experiments this process decided on lately, by stream (least recently used go first). A
 * command on one of them decides on what is known and appends with that version as the expected
 * one, skipping the read: the store refuses the append if anything was written since (by another
 * process, say), and the command then reads and decides again. Only a command that writes trusts
 * it: one that the known state refuses or that changes nothing is decided again on a fresh read.
 */
export class KnownStreams {
  readonly #entries = new Map<string, KnownStream>();
  constructor(readonly capacity = 10_000) {}

  get(streamId: string): KnownStream | undefined {
    const known = this.#entries.get(streamId);
    if (known) {
      this.#entries.delete(streamId);
      this.#entries.set(streamId, known);
    }
    return known;
  }

  set(streamId: string, known: KnownStream): void {
    this.#entries.delete(streamId);
    this.#entries.set(streamId, known);
    if (this.#entries.size > this.capacity) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
  }

  forget(streamId: string): void {
    this.#entries.delete(streamId);
  }

  get size(): number {
    return this.#entries.size;
  }
}

export interface CommandOptions {
  readonly maxAttempts?: number;
  readonly onConflict?: () => void;
  /** Streams this process knows, to decide without reading them first. */
  readonly known?: KnownStreams;
}

/**
 * load → fold → decide → append with the expected version. A lost race re-runs the whole cycle, at
 * most `maxAttempts` times; domain errors pass through untouched for the edge to map.
 */
export async function handleExperimentCommand(
  store: CommandEventStore<ExperimentEvent>,
  experimentId: string,
  command: ExperimentCommand,
  context: CommandContext,
  options: CommandOptions = {},
): Promise<CommandResult> {
  const { maxAttempts = 5, onConflict, known } = options;
  const streamId = streamIdOf(experimentId);
  const fromKnown = known
    ? await decideOnKnown(store, streamId, experimentId, command, context, known)
    : undefined;
  if (fromKnown) return fromKnown;
  for (let attempt = 1; ; attempt++) {
    // A creation first tries without reading: a new stream has nothing to read, and the append's
    // no_stream check (or the store's idempotency on event ids) catches every other case, which then
    // takes the normal path.
    const optimistic =
      attempt === 1 && command.type === 'CreateExperiment' && context.expectedVersion === undefined;
    const history = optimistic ? [] : await store.readStream(streamId);
    const version = history.length;
    const lastPosition = history[version - 1]?.position ?? START;

    if (context.commandId !== undefined) {
      const firstId = deriveEventId(context.commandId, 0);
      const done = history.findIndex((e) => e.metadata.eventId === firstId);
      if (done >= 0) {
        // This command already ran: answer from what it wrote, write nothing.
        let end = done;
        while (
          end + 1 < version &&
          history[end + 1]!.metadata.eventId === deriveEventId(context.commandId, end + 1 - done)
        )
          end++;
        const upTo = history.slice(0, end + 1);
        return {
          experimentId,
          previousStatus: fold(history.slice(0, done)).status,
          state: fold(upTo),
          version: end + 1,
          position: history[end]!.position,
          written: [],
        };
      }
    }

    if (context.expectedVersion !== undefined && context.expectedVersion !== version) {
      throw new VersionMismatchError(context.expectedVersion, version);
    }
    const state = fold(history);
    const read: KnownStream = {
      version,
      state,
      position: lastPosition,
      eventIds: new Set(history.map((e) => e.metadata.eventId)),
    };
    known?.set(streamId, read);
    const events = decide(command, state);
    if (events.length === 0) {
      return {
        experimentId,
        previousStatus: state.status,
        state,
        version,
        position: lastPosition,
        written: [],
      };
    }

    const toAppend = eventsToAppend(command, events, context);
    try {
      const result = await store.append(streamId, toAppend, version === 0 ? 'no_stream' : version);
      const after = fold(events, state);
      remember(known, streamId, read, after, result, toAppend);
      return {
        experimentId,
        previousStatus: state.status,
        state: after,
        version: result.version,
        position: result.position,
        written: events,
      };
    } catch (err) {
      known?.forget(streamId);
      if (!isWrongExpectedVersion(err)) throw err;
      if (optimistic) continue; // the stream exists: decide again on what it holds
      onConflict?.();
      if (attempt >= maxAttempts) {
        throw new ConcurrencyConflictError(`experiment ${experimentId}: a concurrent change won`, {
          cause: err,
        });
      }
    }
  }
}

/** Builds the events a command appends, with their metadata. */
const eventsToAppend = (
  command: ExperimentCommand,
  events: readonly ExperimentEvent[],
  context: CommandContext,
): NewEvent<ExperimentEvent>[] =>
  events.map((event, i) => ({
    type: event.type,
    data: event.data,
    metadata: {
      eventId: context.commandId !== undefined ? deriveEventId(context.commandId, i) : randomUUID(),
      actor: context.actor,
      correlationId: context.correlationId,
      causationId: context.causationId ?? null,
      occurredAt: command.at,
      schemaVersion: currentSchemaVersion(event.type),
    },
  }));

/** After an append: what the stream now holds, if its version follows on from what was known. */
function remember(
  known: KnownStreams | undefined,
  streamId: string,
  before: KnownStream,
  state: Experiment,
  result: AppendResult,
  appended: readonly NewEvent<ExperimentEvent>[],
): void {
  if (!known) return;
  if (before.version + appended.length !== result.version) {
    known.forget(streamId);
    return;
  }
  const ids = new Set(before.eventIds);
  for (const e of appended) ids.add(e.metadata.eventId);
  known.set(streamId, { version: result.version, state, position: result.position, eventIds: ids });
}

/**
 * The fast path: decide on the known state and append at the known version. Undefined when it does
 * not apply (nothing known, a repeat of a command, an If-Match, a refusal or a no-op on the known
 * state) or when the stream has moved on: the caller then reads and decides as usual.
 */
async function decideOnKnown(
  store: CommandEventStore<ExperimentEvent>,
  streamId: string,
  experimentId: string,
  command: ExperimentCommand,
  context: CommandContext,
  known: KnownStreams,
): Promise<CommandResult | undefined> {
  const entry = known.get(streamId);
  if (!entry || context.expectedVersion !== undefined) return undefined;
  if (context.commandId !== undefined && entry.eventIds.has(deriveEventId(context.commandId, 0)))
    return undefined;
  let events: ExperimentEvent[];
  try {
    events = decide(command, entry.state);
  } catch {
    return undefined; // refused on what is known: make sure on what is stored
  }
  if (events.length === 0) return undefined;
  const toAppend = eventsToAppend(command, events, context);
  let result: AppendResult;
  try {
    result = await store.append(streamId, toAppend, entry.version === 0 ? 'no_stream' : entry.version);
  } catch (err) {
    known.forget(streamId);
    if (isWrongExpectedVersion(err)) return undefined;
    throw err;
  }
  if (result.version !== entry.version + toAppend.length) {
    // The store answered a retry of events it already holds: the normal path answers repeats.
    known.forget(streamId);
    return undefined;
  }
  const state = fold(events, entry.state);
  remember(known, streamId, entry, state, result, toAppend);
  return {
    experimentId,
    previousStatus: entry.state.status,
    state,
    version: result.version,
    position: result.position,
    written: events,
  };
}

import { createHash } from 'node:crypto';
import {
  type CreateExperiment,
  type ExperimentCommand,
  type ExperimentEvent,
  InvalidTransitionError,
} from '../domain/experiment.js';
import type { ExperimentSpec } from '../domain/experiment-spec.js';
import {
  type CommandContext,
  type CommandOptions,
  type CommandResult,
  deriveEventId,
  handleExperimentCommand,
  type KnownStreams,
} from './experiment-commands.js';
import type { Clock, IdGenerator } from './ports/clock.js';
import type { CommandEventStore } from './ports/event-store.js';
import type { IdempotencyStore, StoredOutcome } from './ports/idempotency.js';
import type { CommandMetrics } from './ports/metrics.js';

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * A command as a transport hands it over: what the caller asked for, without the time (the service
 * stamps it) and, for a creation, without the id (derived from the idempotency key, or new).
 */
export type ServiceCommand =
  | { readonly type: 'CreateExperiment'; readonly spec: ExperimentSpec }
  | (DistributiveOmit<Exclude<ExperimentCommand, CreateExperiment>, 'at'> & {
      readonly experimentId: string;
    });

/** Who asks, and the caller's conditions: the same for every transport. */
export interface ExecuteContext {
  /** The authenticated subject; idempotency keys are scoped to it. */
  readonly actor: string;
  /** Carried into the metadata of every event written (the request id, a trace id). */
  readonly correlationId: string;
  readonly causationId?: string | null;
  /**
   * Makes the command idempotent: a retry with the same key and the same command gets the first
   * outcome and writes nothing; the same key with another command is an IdempotencyKeyReusedError.
   */
  readonly idempotencyKey?: string | undefined;
  /** The version the caller last saw (HTTP If-Match); any other is a VersionMismatchError. */
  readonly expectedVersion?: number | undefined;
}

/** What a command did, as every transport answers it. */
export interface CommandOutcome extends StoredOutcome {
  /** This is the outcome stored for the idempotency key, answered again: nothing ran now. */
  readonly replayed: boolean;
}

/** An idempotency key came back with another command than the one it was first used with. */
export class IdempotencyKeyReusedError extends Error {
  readonly code = 'idempotency_key_reused';
  constructor(readonly key: string) {
    super('this Idempotency-Key was used with a different request');
  }
}

export interface CommandService {
  execute(command: ServiceCommand, context: ExecuteContext): Promise<CommandOutcome>;
}

export interface CommandServiceDependencies {
  readonly store: CommandEventStore<ExperimentEvent>;
  readonly idempotency: IdempotencyStore;
  readonly metrics: CommandMetrics;
  readonly clock: Clock;
  readonly newId: IdGenerator;
  /** Streams this process decided on lately: commands on them skip the read (see KnownStreams). */
  readonly known?: KnownStreams | undefined;
  /** Attempts at a command that keeps losing races before ConcurrencyConflictError; default 5. */
  readonly maxAttempts?: number;
}

/**
 * The command service every transport calls (HTTP now, gRPC next): idempotency keys, expected
 * versions, bounded retries on a version conflict, transition metrics and correlation, around
 * load → fold → decide → append. Transports only parse their input and map the outcome or the typed
 * errors (domain errors, VersionMismatchError, ConcurrencyConflictError, IdempotencyKeyReusedError).
 */
export function createCommandService(deps: CommandServiceDependencies): CommandService {
  return {
    async execute(command, context) {
      const { actor, idempotencyKey: key } = context;
      const requestHash = key === undefined ? '' : commandHash(command, context.expectedVersion);
      // The key is claimed with this command's hash before anything is written: another command with
      // the key, concurrent or later, finds the hash and is refused. The same command that finds the
      // key still held runs too: its event ids derive from the key, so it writes nothing twice, and it
      // answers even when the holder died before answering.
      let claimed = false;
      if (key !== undefined) {
        const claim = await deps.idempotency.claim(actor, key, requestHash);
        if (claim.kind === 'held') {
          if (claim.requestHash !== requestHash) throw new IdempotencyKeyReusedError(key);
          if (claim.outcome) return { ...claim.outcome, replayed: true };
        } else {
          claimed = true;
        }
      }
      const experimentId =
        command.type === 'CreateExperiment'
          ? key !== undefined
            ? experimentIdForKey(actor, key)
            : deps.newId()
          : command.experimentId;
      const commandContext: CommandContext = {
        actor,
        correlationId: context.correlationId,
        causationId: context.causationId ?? null,
        ...(key !== undefined ? { commandId: commandIdForKey(actor, key) } : {}),
        ...(context.expectedVersion !== undefined ? { expectedVersion: context.expectedVersion } : {}),
      };
      let result: CommandResult;
      try {
        result = await handleMeasuredCommand(
          deps.store,
          experimentId,
          toDomainCommand(command, experimentId, deps.clock().toISOString()),
          commandContext,
          deps.metrics,
          {
            ...(deps.known ? { known: deps.known } : {}),
            ...(deps.maxAttempts !== undefined ? { maxAttempts: deps.maxAttempts } : {}),
          },
        );
      } catch (err) {
        // A failed command keeps nothing: the key serves the next request, as if never sent.
        if (claimed) await deps.idempotency.release(actor, key!, requestHash).catch(() => undefined);
        throw err;
      }
      const outcome: StoredOutcome = {
        experimentId,
        state: stateLabel(result.state.status),
        version: result.version,
        position: result.position,
      };
      if (key !== undefined) await deps.idempotency.complete(actor, key, requestHash, outcome);
      return { ...outcome, replayed: false };
    },
  };
}

/**
 * handleExperimentCommand with what every caller reports of it, the command service and the saga
 * alike: each version conflict it retried, and its time as a transition, from the status before to the
 * status after (`none` for a new experiment). A failure goes `to` `unknown`, `from` what the domain
 * found (`unknown` when it found nothing). A command that wrote nothing (a repeat of one already
 * applied, as a redelivery is) made no transition and is not observed.
 */
export async function handleMeasuredCommand(
  store: CommandEventStore<ExperimentEvent>,
  experimentId: string,
  command: ExperimentCommand,
  context: CommandContext,
  metrics: CommandMetrics | undefined,
  options: Omit<CommandOptions, 'onConflict'> & {
    /**
     * Refusals that are no failure of the caller's: the saga's redelivered or overtaken commands
     * ("no longer applies") are expected, and counting them as failed transitions would page whoever
     * alerts on the failure rate. Not observed at all.
     */
    readonly expectedRefusal?: (err: unknown) => boolean;
  } = {},
): Promise<CommandResult> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  let result: CommandResult;
  try {
    const { expectedRefusal: _, ...commandOptions } = options;
    result = await handleExperimentCommand(store, experimentId, command, context, {
      ...commandOptions,
      ...(metrics ? { onConflict: () => metrics.conflict('experiment') } : {}),
    });
  } catch (err) {
    if (options.expectedRefusal?.(err)) throw err;
    const from = err instanceof InvalidTransitionError ? err.actual : 'unknown';
    metrics?.transition(from, 'unknown', false, seconds());
    throw err;
  }
  if (result.written.length > 0) {
    const from = result.previousStatus === 'empty' ? 'none' : result.previousStatus;
    metrics?.transition(from, stateLabel(result.state.status), true, seconds());
  }
  return result;
}

const stateLabel = (status: CommandResult['state']['status']) => (status === 'empty' ? 'unknown' : status);

/** The domain command: the service's input stamped with the time (and the new experiment's id). */
const toDomainCommand = (command: ServiceCommand, experimentId: string, at: string): ExperimentCommand => {
  if (command.type === 'CreateExperiment') {
    return { type: 'CreateExperiment', experimentId, spec: command.spec, at };
  }
  const { experimentId: _target, ...rest } = command;
  return { ...rest, at } as ExperimentCommand;
};

/**
 * What a retry with a key must repeat exactly: the command and its inputs, and the expected version.
 * Not the transport's request (URL, headers), so that every transport gives a key the same meaning;
 * not the time, which the service stamps. Object keys are sorted: the same input parsed by another
 * transport may list its fields in another order.
 */
export const commandHash = (command: ServiceCommand, expectedVersion: number | undefined): string =>
  createHash('sha256')
    .update(canonicalJson({ command, expectedVersion: expectedVersion ?? null }))
    .digest('hex');

const canonicalJson = (value: unknown): string => {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
};

/** A stable UUID for an actor's key, so a creation retried with its key lands on the same stream. */
export const experimentIdForKey = (actor: string, key: string): string =>
  deriveEventId(`experiment-id:${actor}:${key}`, 0);

/**
 * The command id of an actor's key, from which its events' ids derive. The `http:` prefix is what
 * stored event ids were derived with before other transports shared keys: kept, so that a key still
 * in flight across an upgrade writes nothing twice.
 */
const commandIdForKey = (actor: string, key: string): string => `http:${actor}:${key}`;

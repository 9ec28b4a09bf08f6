import type { AbortEvidence, MissingSince } from './early-abort.js';
import type { Analysis, ExperimentSpec, Variant } from './experiment-spec.js';

/**
 * The Experiment aggregate as a decider: `decide(command, state)` returns the events a command
 * produces or throws a typed domain error; `evolve(state, event)` folds one event into the state.
 * Pure: time, ids and the acting user arrive in the command.
 */

export const STATUSES = [
  'pending',
  'initializing',
  'running',
  'analyzing',
  'completed',
  'failed',
  'cancelled',
] as const;
export type ExperimentStatus = (typeof STATUSES)[number];
export const TERMINAL_STATUSES: readonly ExperimentStatus[] = ['completed', 'failed', 'cancelled'];

export interface Deployment {
  readonly status: 'deployed' | 'failed' | 'torn_down';
  readonly at: string;
  readonly reason?: string | undefined;
  readonly detail?: Readonly<Record<string, unknown>> | undefined;
}

export interface ExistingExperiment {
  readonly status: ExperimentStatus;
  readonly id: string;
  readonly spec: ExperimentSpec;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly startedAt?: string | undefined;
  readonly runStartedAt?: string | undefined;
  readonly runEndsAt?: string | undefined;
  readonly endedAt?: string | undefined;
  readonly deployments: Readonly<Partial<Record<Variant, Deployment>>>;
  readonly analysis?: Analysis | undefined;
  readonly analysisAttempts: number;
  /** Why the experiment is in its current status (the reason of the last transition). */
  readonly statusReason?: string | undefined;
  /** Critical processes the run's probes find missing from the candidate, since when (early abort). */
  readonly probeMissing?: readonly MissingSince[] | undefined;
  /** The evidence of an early abort, when the run was failed by one. */
  readonly abort?: AbortEvidence | undefined;
}

export type Experiment = { readonly status: 'empty' } | ExistingExperiment;

export const initialState = (): Experiment => ({ status: 'empty' });

// ---------------------------------------------------------------------------------------------
// Commands

type Cmd<T extends string, D> = Readonly<{ type: T; at: string } & D>;

export type CreateExperiment = Cmd<'CreateExperiment', { experimentId: string; spec: ExperimentSpec }>;
export type StartExperiment = Cmd<'StartExperiment', object>;
export type RecordVariantDeployed = Cmd<
  'RecordVariantDeployed',
  { variant: Variant; detail?: Readonly<Record<string, unknown>> | undefined }
>;
export type RecordVariantDeploymentFailed = Cmd<
  'RecordVariantDeploymentFailed',
  { variant: Variant; reason: string }
>;
/** Recovery: the resources of an experiment stuck in initializing were found to exist. */
export type MarkExperimentRunning = Cmd<'MarkExperimentRunning', { reason: string }>;
/** The experiment's duration has elapsed. */
export type CompleteRun = Cmd<'CompleteRun', object>;
export type RecordAnalysis = Cmd<'RecordAnalysis', { analysis: Analysis }>;
export type RetryAnalysis = Cmd<'RetryAnalysis', { reason: string }>;
export type ExtendRuntime = Cmd<'ExtendRuntime', { extraSeconds: number; reason: string }>;
export type CancelExperiment = Cmd<'CancelExperiment', { reason?: string | undefined }>;
export type FailExperiment = Cmd<'FailExperiment', { reason: string; abort?: AbortEvidence | undefined }>;
/** A probe of the running experiment changed the set of critical processes missing from the candidate. */
export type RecordProbe = Cmd<'RecordProbe', { missing: readonly MissingSince[] }>;
export type RecordVariantTornDown = Cmd<'RecordVariantTornDown', { variant: Variant }>;

export type ExperimentCommand =
  | CreateExperiment
  | StartExperiment
  | RecordVariantDeployed
  | RecordVariantDeploymentFailed
  | MarkExperimentRunning
  | CompleteRun
  | RecordAnalysis
  | RetryAnalysis
  | ExtendRuntime
  | CancelExperiment
  | FailExperiment
  | RecordProbe
  | RecordVariantTornDown;

export type ExperimentCommandType = ExperimentCommand['type'];

// ---------------------------------------------------------------------------------------------
// Events

type Evt<T extends string, D> = Readonly<{ type: T; data: Readonly<{ at: string } & D> }>;

export type ExperimentCreated = Evt<'ExperimentCreated', { experimentId: string; spec: ExperimentSpec }>;
export type ExperimentStarted = Evt<'ExperimentStarted', object>;
export type VariantDeployed = Evt<
  'VariantDeployed',
  { variant: Variant; detail?: Readonly<Record<string, unknown>> | undefined }
>;
export type VariantDeploymentFailed = Evt<'VariantDeploymentFailed', { variant: Variant; reason: string }>;
export type ExperimentRunStarted = Evt<'ExperimentRunStarted', { runEndsAt: string; reason: string }>;
export type ExperimentRunCompleted = Evt<'ExperimentRunCompleted', object>;
export type AnalysisRecorded = Evt<'AnalysisRecorded', { analysis: Analysis }>;
export type AnalysisRetried = Evt<'AnalysisRetried', { attempt: number; reason: string }>;
export type ExperimentRuntimeExtended = Evt<
  'ExperimentRuntimeExtended',
  { extraSeconds: number; runEndsAt: string; reason: string }
>;
export type ExperimentCompleted = Evt<'ExperimentCompleted', { reason: string }>;
export type ExperimentFailed = Evt<'ExperimentFailed', { reason: string; abort?: AbortEvidence | undefined }>;
export type ExperimentProbed = Evt<'ExperimentProbed', { missing: readonly MissingSince[] }>;
export type ExperimentCancelled = Evt<'ExperimentCancelled', { reason: string }>;
export type VariantTornDown = Evt<'VariantTornDown', { variant: Variant }>;

export type ExperimentEvent =
  | ExperimentCreated
  | ExperimentStarted
  | VariantDeployed
  | VariantDeploymentFailed
  | ExperimentRunStarted
  | ExperimentRunCompleted
  | AnalysisRecorded
  | AnalysisRetried
  | ExperimentRuntimeExtended
  | ExperimentCompleted
  | ExperimentFailed
  | ExperimentCancelled
  | ExperimentProbed
  | VariantTornDown;

export type ExperimentEventType = ExperimentEvent['type'];

// ---------------------------------------------------------------------------------------------
// Errors

export abstract class DomainError extends Error {
  abstract readonly code: string;
}

export class ExperimentNotFoundError extends DomainError {
  readonly code = 'experiment_not_found';
  constructor(readonly command: ExperimentCommandType) {
    super(`${command}: the experiment does not exist`);
  }
}

export class ExperimentAlreadyExistsError extends DomainError {
  readonly code = 'experiment_already_exists';
  constructor(readonly experimentId: string) {
    super(`experiment ${experimentId} already exists`);
  }
}

/** A command that the experiment's current status does not allow. */
export class InvalidTransitionError extends DomainError {
  readonly code = 'invalid_transition';
  constructor(
    readonly command: ExperimentCommandType,
    readonly expected: readonly ExperimentStatus[],
    readonly actual: ExperimentStatus,
  ) {
    super(`${command} is not allowed in state '${actual}' (allowed in: ${expected.join(', ')})`);
  }
}

export class RunNotFinishedError extends DomainError {
  readonly code = 'run_not_finished';
  constructor(
    readonly runEndsAt: string,
    readonly at: string,
  ) {
    super(`the run ends at ${runEndsAt}; it cannot be completed at ${at}`);
  }
}

// ---------------------------------------------------------------------------------------------
// decide

const addSeconds = (iso: string, seconds: number): string =>
  new Date(Date.parse(iso) + seconds * 1000).toISOString();

/** Deployer answers may arrive late (after a cancel or a recovery): they are recorded, not refused. */
const AFTER_START: readonly ExperimentStatus[] = STATUSES.filter((s) => s !== 'pending');

const otherVariant = (v: Variant): Variant => (v === 'baseline' ? 'candidate' : 'baseline');

function ensureStatus(
  state: ExistingExperiment,
  command: ExperimentCommand,
  allowed: readonly ExperimentStatus[],
): void {
  if (!allowed.includes(state.status)) throw new InvalidTransitionError(command.type, allowed, state.status);
}

export const decide = (command: ExperimentCommand, state: Experiment): ExperimentEvent[] => {
  if (command.type === 'CreateExperiment') {
    if (state.status !== 'empty') throw new ExperimentAlreadyExistsError(command.experimentId);
    return [
      {
        type: 'ExperimentCreated',
        data: { experimentId: command.experimentId, spec: command.spec, at: command.at },
      },
    ];
  }
  if (state.status === 'empty') throw new ExperimentNotFoundError(command.type);
  const at = command.at;

  switch (command.type) {
    case 'StartExperiment':
      ensureStatus(state, command, ['pending']);
      return [{ type: 'ExperimentStarted', data: { at } }];

    case 'RecordVariantDeployed': {
      const existing = state.deployments[command.variant];
      if (existing && existing.status !== 'failed') return []; // a repeated answer changes nothing
      ensureStatus(state, command, AFTER_START);
      const deployed: ExperimentEvent = {
        type: 'VariantDeployed',
        data: { variant: command.variant, detail: command.detail, at },
      };
      if (state.status !== 'initializing') return [deployed]; // late answer: record it so it gets torn down
      const other = state.deployments[otherVariant(command.variant)];
      if (other?.status !== 'deployed') return [deployed];
      return [
        deployed,
        {
          type: 'ExperimentRunStarted',
          data: {
            at,
            runEndsAt: addSeconds(at, state.spec.durationSeconds),
            reason: 'both variants deployed',
          },
        },
      ];
    }

    case 'RecordVariantDeploymentFailed': {
      if (state.deployments[command.variant]) return []; // repeated, or stale after it deployed
      ensureStatus(state, command, AFTER_START);
      const failed: ExperimentEvent = {
        type: 'VariantDeploymentFailed',
        data: { variant: command.variant, reason: command.reason, at },
      };
      if (state.status !== 'initializing') return [failed];
      return [
        failed,
        {
          type: 'ExperimentFailed',
          data: { at, reason: `${command.variant} deployment failed: ${command.reason}` },
        },
      ];
    }

    case 'MarkExperimentRunning':
      ensureStatus(state, command, ['initializing']);
      return [
        {
          type: 'ExperimentRunStarted',
          data: { at, runEndsAt: addSeconds(at, state.spec.durationSeconds), reason: command.reason },
        },
      ];

    case 'CompleteRun':
      ensureStatus(state, command, ['running']);
      if (state.runEndsAt !== undefined && Date.parse(at) < Date.parse(state.runEndsAt)) {
        throw new RunNotFinishedError(state.runEndsAt, at);
      }
      return [{ type: 'ExperimentRunCompleted', data: { at } }];

    case 'RecordAnalysis': {
      ensureStatus(state, command, ['analyzing']);
      const { analysis } = command;
      const verdictEvent: ExperimentEvent =
        analysis.verdict === 'pass'
          ? { type: 'ExperimentCompleted', data: { at, reason: 'success criteria met' } }
          : {
              type: 'ExperimentFailed',
              data: {
                at,
                reason: `analysis ${analysis.verdict}: ${analysis.reasons.join('; ') || 'no reason given'}`,
              },
            };
      return [{ type: 'AnalysisRecorded', data: { at, analysis } }, verdictEvent];
    }

    case 'RetryAnalysis':
      ensureStatus(state, command, ['analyzing']);
      return [
        {
          type: 'AnalysisRetried',
          data: { at, attempt: state.analysisAttempts + 1, reason: command.reason },
        },
      ];

    case 'ExtendRuntime': {
      ensureStatus(state, command, ['running', 'analyzing']);
      const from =
        state.runEndsAt !== undefined && Date.parse(state.runEndsAt) > Date.parse(at) ? state.runEndsAt : at;
      return [
        {
          type: 'ExperimentRuntimeExtended',
          data: {
            at,
            extraSeconds: command.extraSeconds,
            runEndsAt: addSeconds(from, command.extraSeconds),
            reason: command.reason,
          },
        },
      ];
    }

    case 'CancelExperiment':
      ensureStatus(state, command, ['pending', 'initializing', 'running']);
      return [{ type: 'ExperimentCancelled', data: { at, reason: command.reason ?? 'cancelled by user' } }];

    case 'FailExperiment':
      ensureStatus(state, command, ['initializing', 'running', 'analyzing']);
      return [
        {
          type: 'ExperimentFailed',
          data: command.abort
            ? { at, reason: command.reason, abort: command.abort }
            : { at, reason: command.reason },
        },
      ];

    case 'RecordProbe':
      ensureStatus(state, command, ['running']);
      return [{ type: 'ExperimentProbed', data: { at, missing: command.missing } }];

    case 'RecordVariantTornDown': {
      const deployment = state.deployments[command.variant];
      if (deployment?.status === 'torn_down') return [];
      ensureStatus(state, command, TERMINAL_STATUSES);
      return [{ type: 'VariantTornDown', data: { at, variant: command.variant } }];
    }

    default: {
      const _never: never = command;
      return _never;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// evolve

/** The status an event moves the experiment to, or undefined when it records a fact only. */
export const statusAfter = (event: ExperimentEvent, before: Experiment): ExperimentStatus | undefined => {
  switch (event.type) {
    case 'ExperimentCreated':
      return 'pending';
    case 'ExperimentStarted':
      return 'initializing';
    case 'ExperimentRunStarted':
      return 'running';
    case 'ExperimentRunCompleted':
      return 'analyzing';
    case 'ExperimentCompleted':
      return 'completed';
    case 'ExperimentFailed':
      return 'failed';
    case 'ExperimentCancelled':
      return 'cancelled';
    case 'ExperimentRuntimeExtended':
      return before.status === 'analyzing' ? 'running' : undefined;
    case 'VariantDeployed':
    case 'VariantDeploymentFailed':
    case 'AnalysisRecorded':
    case 'AnalysisRetried':
    case 'ExperimentProbed':
    case 'VariantTornDown':
      return undefined;
    default: {
      const _never: never = event;
      return _never;
    }
  }
};

export const evolve = (state: Experiment, event: ExperimentEvent): Experiment => {
  if (event.type === 'ExperimentCreated') {
    if (state.status !== 'empty') return state;
    return {
      status: 'pending',
      id: event.data.experimentId,
      spec: event.data.spec,
      createdAt: event.data.at,
      updatedAt: event.data.at,
      deployments: {},
      analysisAttempts: 0,
      statusReason: 'created',
    };
  }
  if (state.status === 'empty') return state;
  const at = event.data.at;
  const next = statusAfter(event, state);
  // One copy of the state per event (a replay folds millions), completed below: it is this call's
  // own until it is returned, and `state` is never changed.
  const moved: { -readonly [K in keyof ExistingExperiment]: ExistingExperiment[K] } = next
    ? { ...state, status: next, updatedAt: at, statusReason: reasonOf(event) }
    : { ...state, updatedAt: at };

  switch (event.type) {
    case 'ExperimentStarted':
      moved.startedAt = at;
      return moved;
    case 'VariantDeployed':
      moved.deployments = {
        ...state.deployments,
        [event.data.variant]: { status: 'deployed', at, detail: event.data.detail },
      };
      return moved;
    case 'VariantDeploymentFailed':
      moved.deployments = {
        ...state.deployments,
        [event.data.variant]: { status: 'failed', at, reason: event.data.reason },
      };
      return moved;
    case 'VariantTornDown': {
      const previous = state.deployments[event.data.variant];
      moved.deployments = {
        ...state.deployments,
        [event.data.variant]: { ...previous, status: 'torn_down', at },
      };
      return moved;
    }
    case 'ExperimentRunStarted':
      moved.runStartedAt = at;
      moved.runEndsAt = event.data.runEndsAt;
      return moved;
    case 'ExperimentRuntimeExtended':
      moved.runEndsAt = event.data.runEndsAt;
      return moved;
    case 'AnalysisRecorded':
      moved.analysis = event.data.analysis;
      moved.analysisAttempts = state.analysisAttempts + 1;
      return moved;
    case 'AnalysisRetried':
      moved.analysisAttempts = event.data.attempt;
      return moved;
    case 'ExperimentFailed':
      moved.endedAt = at;
      if (event.data.abort) moved.abort = event.data.abort;
      return moved;
    case 'ExperimentCompleted':
    case 'ExperimentCancelled':
      moved.endedAt = at;
      return moved;
    case 'ExperimentProbed':
      moved.probeMissing = event.data.missing;
      return moved;
    case 'ExperimentRunCompleted':
      return moved;
    default: {
      const _never: never = event;
      return _never;
    }
  }
};

/** The reason a transition event gives, for history and audit. */
export const reasonOf = (event: ExperimentEvent): string => {
  switch (event.type) {
    case 'ExperimentCreated':
      return 'created';
    case 'ExperimentStarted':
      return 'started';
    case 'ExperimentRunStarted':
    case 'ExperimentRuntimeExtended':
    case 'ExperimentCompleted':
    case 'ExperimentFailed':
    case 'ExperimentCancelled':
    case 'AnalysisRetried':
      return event.data.reason;
    case 'ExperimentRunCompleted':
      return 'duration elapsed';
    case 'VariantDeployed':
      return `${event.data.variant} deployed`;
    case 'VariantDeploymentFailed':
      return `${event.data.variant} deployment failed: ${event.data.reason}`;
    case 'AnalysisRecorded':
      return `analysis ${event.data.analysis.verdict}`;
    case 'ExperimentProbed':
      return event.data.missing.length === 0
        ? 'probe: no critical process missing'
        : `probe: ${event.data.missing.length} critical process${event.data.missing.length === 1 ? '' : 'es'} missing from the candidate`;
    case 'VariantTornDown':
      return `${event.data.variant} torn down`;
    default: {
      const _never: never = event;
      return _never;
    }
  }
};

/**
 * The one fold of an experiment's events (stored ones included: a StoredEvent<ExperimentEvent> is an
 * ExperimentEvent): the command side, the saga and replay fold with it; the read models step the same
 * `evolve` event by event, as they record each transition.
 */
export const fold = (events: Iterable<ExperimentEvent>, state: Experiment = initialState()): Experiment => {
  let s = state;
  for (const e of events) s = evolve(s, e);
  return s;
};

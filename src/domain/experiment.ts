import type { AbortEvidence, MissingSince } from './early-abort.js';
import type { Analysis, ExperimentSpec, SuccessCriteria, Variant } from './experiment-spec.js';
import { evidenceOf, rejudge } from './verdict.js';

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

/** Where a promotion of the experiment's candidate stands (issue 20 §4). */
export const PROMOTION_STATUSES = [
  'requested',
  'committed',
  'rolled_out',
  'failed',
  'rollback_requested',
  'rolled_back',
  'rollback_failed',
] as const;
export type PromotionStatus = (typeof PROMOTION_STATUSES)[number];

export interface Promotion {
  readonly status: PromotionStatus;
  /** Who asked for the promotion. */
  readonly requestedBy: string;
  readonly requestedAt: string;
  /** When the promotion last moved. */
  readonly at: string;
  /** The Git repository, the folder in it, and the commit that holds the candidate's configs. */
  readonly repository?: string | undefined;
  readonly path?: string | undefined;
  readonly commit?: string | undefined;
  /** Why it failed (promotion or rollback). */
  readonly reason?: string | undefined;
  /** The commit that reverted the promotion: the compensation of a failed rollout, or a rollback. */
  readonly revertCommit?: string | undefined;
  readonly rollbackRequestedBy?: string | undefined;
  /** What the deployer reported of the last rollout (the candidate's, or the baseline's on rollback). */
  readonly rollout?: Readonly<Record<string, unknown>> | undefined;
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
  /** The latest promotion of the candidate, once one was requested. */
  readonly promotion?: Promotion | undefined;
  /** Other criteria applied to the stored evidence after the fact, oldest first; `analysis` stays the verdict. */
  readonly rejudgements?: readonly Rejudgement[] | undefined;
}

/** Other criteria applied to a finished experiment's stored evidence (issue 20 §3). */
export interface Rejudgement {
  readonly at: string;
  readonly actor: string;
  readonly criteria: SuccessCriteria;
  readonly analysis: Analysis;
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
export type RequestPromotion = Cmd<'RequestPromotion', { actor: string }>;
export type RecordPromotionCommitted = Cmd<
  'RecordPromotionCommitted',
  { repository: string; path: string; commit: string }
>;
export type RecordPromotionRolledOut = Cmd<
  'RecordPromotionRolledOut',
  { detail?: Readonly<Record<string, unknown>> | undefined }
>;
export type RecordPromotionFailed = Cmd<
  'RecordPromotionFailed',
  { reason: string; reverted?: string | undefined }
>;
export type RequestRollback = Cmd<'RequestRollback', { actor: string; reason?: string | undefined }>;
export type RecordRollbackCommitted = Cmd<'RecordRollbackCommitted', { commit: string }>;
export type RecordRolledBack = Cmd<
  'RecordRolledBack',
  { detail?: Readonly<Record<string, unknown>> | undefined }
>;
export type RecordRollbackFailed = Cmd<'RecordRollbackFailed', { reason: string }>;
/**
 * Applies other success criteria to the stored evidence of a finished experiment, without measuring:
 * each field given replaces the experiment's own criterion, the rest stay as they were.
 */
export type RejudgeAnalysis = Cmd<'RejudgeAnalysis', { actor: string; criteria: Partial<SuccessCriteria> }>;

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
  | RecordVariantTornDown
  | RequestPromotion
  | RecordPromotionCommitted
  | RecordPromotionRolledOut
  | RecordPromotionFailed
  | RequestRollback
  | RecordRollbackCommitted
  | RecordRolledBack
  | RecordRollbackFailed
  | RejudgeAnalysis
  | RecordProbe;

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
export type PromotionRequested = Evt<'PromotionRequested', { actor: string }>;
export type PromotionCommitted = Evt<
  'PromotionCommitted',
  { repository: string; path: string; commit: string }
>;
export type PromotionRolledOut = Evt<
  'PromotionRolledOut',
  { detail?: Readonly<Record<string, unknown>> | undefined }
>;
export type PromotionFailed = Evt<'PromotionFailed', { reason: string; reverted?: string | undefined }>;
export type RollbackRequested = Evt<'RollbackRequested', { actor: string; reason?: string | undefined }>;
export type RollbackCommitted = Evt<'RollbackCommitted', { commit: string }>;
export type RolledBack = Evt<'RolledBack', { detail?: Readonly<Record<string, unknown>> | undefined }>;
export type RollbackFailed = Evt<'RollbackFailed', { reason: string }>;

/** The events of a promotion: steps recorded on a completed experiment, which stays completed. */
export const PROMOTION_EVENT_TYPES = [
  'PromotionRequested',
  'PromotionCommitted',
  'PromotionRolledOut',
  'PromotionFailed',
  'RollbackRequested',
  'RollbackCommitted',
  'RolledBack',
  'RollbackFailed',
] as const;
export type PromotionEvent =
  | PromotionRequested
  | PromotionCommitted
  | PromotionRolledOut
  | PromotionFailed
  | RollbackRequested
  | RollbackCommitted
  | RolledBack
  | RollbackFailed;

export const isPromotionEvent = (event: { readonly type: string }): event is PromotionEvent =>
  (PROMOTION_EVENT_TYPES as readonly string[]).includes(event.type);
export type AnalysisRejudged = Evt<
  'AnalysisRejudged',
  { actor: string; criteria: SuccessCriteria; analysis: Analysis }
>;

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
  | VariantTornDown
  | PromotionEvent
  | AnalysisRejudged
  | ExperimentProbed;

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

/**
 * A promotion command the experiment's verdict or its promotion's progress does not allow: a
 * promotion of anything but a pass, a second promotion while one is in flight or rolled out, a
 * rollback of nothing.
 */
export class PromotionNotAllowedError extends DomainError {
  readonly code = 'promotion_not_allowed';
  constructor(
    readonly command: ExperimentCommandType,
    /** What the command needs (a verdict, or promotion statuses). */
    readonly expected: readonly string[],
    /** What it found. */
    readonly actual: string,
    detail: string,
  ) {
    super(`${command}: ${detail}`);
  }
}

/** Re-judging needs an analysis that kept its evidence (one recorded before it was kept has none). */
export class NoEvidenceError extends DomainError {
  readonly code = 'no_evidence';
  constructor(readonly command: ExperimentCommandType) {
    super(`${command}: the experiment has no stored analysis evidence to judge again`);
  }
}

// ---------------------------------------------------------------------------------------------
// decide

const addSeconds = (iso: string, seconds: number): string =>
  new Date(Date.parse(iso) + seconds * 1000).toISOString();

/** Deployer answers may arrive late (after a cancel or a recovery): they are recorded, not refused. */
const AFTER_START: readonly ExperimentStatus[] = STATUSES.filter((s) => s !== 'pending');

/** The fields that are set: an explicit `undefined` must not erase the experiment's own criterion. */
const definedOf = <T extends object>(o: T): Partial<T> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;

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

    case 'RequestPromotion':
    case 'RecordPromotionCommitted':
    case 'RecordPromotionRolledOut':
    case 'RecordPromotionFailed':
    case 'RequestRollback':
    case 'RecordRollbackCommitted':
    case 'RecordRolledBack':
    case 'RecordRollbackFailed':
      ensureStatus(state, command, ['completed']);
      return decidePromotion(command, state);
    case 'RejudgeAnalysis': {
      ensureStatus(state, command, ['completed', 'failed']);
      const criteria = { ...state.spec.successCriteria, ...definedOf(command.criteria) };
      const analysis =
        state.analysis && evidenceOf(state.analysis)
          ? rejudge(state.analysis, criteria, state.spec.criticalProcesses, state.spec.compatibilityQueries)
          : undefined;
      if (!analysis) throw new NoEvidenceError(command.type);
      return [{ type: 'AnalysisRejudged', data: { at, actor: command.actor, criteria, analysis } }];
    }

    default: {
      const _never: never = command;
      return _never;
    }
  }
};

type PromotionCommand = Extract<ExperimentCommand, { type: PromotionCommandType }>;
type PromotionCommandType =
  | 'RequestPromotion'
  | 'RecordPromotionCommitted'
  | 'RecordPromotionRolledOut'
  | 'RecordPromotionFailed'
  | 'RequestRollback'
  | 'RecordRollbackCommitted'
  | 'RecordRolledBack'
  | 'RecordRollbackFailed';

/** A new promotion may start when none is in flight or out there: never one, or the last one is undone. */
const PROMOTABLE_FROM: readonly (PromotionStatus | 'none')[] = ['none', 'failed', 'rolled_back'];
const ROLLBACK_FROM: readonly PromotionStatus[] = ['committed', 'rolled_out', 'rollback_failed'];

/**
 * The promotion's steps, on a completed experiment. The recording commands come from the saga: a
 * repeat of a step already recorded (a redelivered answer) changes nothing; a step the promotion has
 * moved past is refused, and the saga drops it.
 */
function decidePromotion(command: PromotionCommand, state: ExistingExperiment): ExperimentEvent[] {
  const at = command.at;
  const p = state.promotion;
  const status: PromotionStatus | 'none' = p?.status ?? 'none';
  const refuse = (expected: readonly string[], detail: string): never => {
    throw new PromotionNotAllowedError(command.type, expected, status, detail);
  };
  const need = (expected: readonly (PromotionStatus | 'none')[]): void => {
    if (!expected.includes(status))
      refuse(expected, `the promotion is ${status}; allowed when it is ${expected.join(', ')}`);
  };
  switch (command.type) {
    case 'RequestPromotion': {
      const verdict = state.analysis?.verdict ?? 'none';
      if (verdict !== 'pass')
        throw new PromotionNotAllowedError(
          command.type,
          ['pass'],
          verdict,
          `only a candidate whose verdict is pass can be promoted; the verdict is ${verdict}`,
        );
      need(PROMOTABLE_FROM);
      return [{ type: 'PromotionRequested', data: { at, actor: command.actor } }];
    }
    case 'RecordPromotionCommitted':
      if (p?.commit === command.commit && status !== 'requested') return [];
      need(['requested']);
      return [
        {
          type: 'PromotionCommitted',
          data: { at, repository: command.repository, path: command.path, commit: command.commit },
        },
      ];
    case 'RecordPromotionRolledOut':
      if (status === 'rolled_out') return [];
      need(['committed']);
      return [{ type: 'PromotionRolledOut', data: { at, detail: command.detail } }];
    case 'RecordPromotionFailed':
      if (status === 'failed') return [];
      need(['requested', 'committed']);
      return [{ type: 'PromotionFailed', data: { at, reason: command.reason, reverted: command.reverted } }];
    case 'RequestRollback':
      need(ROLLBACK_FROM);
      return [{ type: 'RollbackRequested', data: { at, actor: command.actor, reason: command.reason } }];
    case 'RecordRollbackCommitted':
      if (status === 'rollback_requested' && p?.revertCommit === command.commit) return [];
      if (status === 'rolled_back' && p?.revertCommit === command.commit) return [];
      need(['rollback_requested']);
      if (p?.revertCommit !== undefined) refuse(['rollback_requested'], 'the rollback is committed already');
      return [{ type: 'RollbackCommitted', data: { at, commit: command.commit } }];
    case 'RecordRolledBack':
      if (status === 'rolled_back') return [];
      need(['rollback_requested']);
      if (p?.revertCommit === undefined)
        refuse(['rollback_requested'], 'the rollback has no revert commit yet');
      return [{ type: 'RolledBack', data: { at, detail: command.detail } }];
    case 'RecordRollbackFailed':
      if (status === 'rollback_failed') return [];
      need(['rollback_requested']);
      return [{ type: 'RollbackFailed', data: { at, reason: command.reason } }];
    default: {
      const _never: never = command;
      return _never;
    }
  }
}

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
    case 'PromotionRequested':
    case 'PromotionCommitted':
    case 'PromotionRolledOut':
    case 'PromotionFailed':
    case 'RollbackRequested':
    case 'RollbackCommitted':
    case 'RolledBack':
    case 'RollbackFailed':
    case 'AnalysisRejudged':
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
    case 'AnalysisRejudged':
      moved.rejudgements = [
        ...(state.rejudgements ?? []),
        { at, actor: event.data.actor, criteria: event.data.criteria, analysis: event.data.analysis },
      ];
      return moved;
    case 'PromotionRequested':
    case 'PromotionCommitted':
    case 'PromotionRolledOut':
    case 'PromotionFailed':
    case 'RollbackRequested':
    case 'RollbackCommitted':
    case 'RolledBack':
    case 'RollbackFailed':
      moved.promotion = evolvePromotion(state.promotion, event);
      return moved;
    default: {
      const _never: never = event;
      return _never;
    }
  }
};

const evolvePromotion = (p: Promotion | undefined, event: PromotionEvent): Promotion | undefined => {
  const at = event.data.at;
  if (event.type === 'PromotionRequested')
    return { status: 'requested', requestedBy: event.data.actor, requestedAt: at, at };
  if (p === undefined) return p; // a step of no promotion: the decider never writes one
  switch (event.type) {
    case 'PromotionCommitted':
      return {
        ...p,
        status: 'committed',
        at,
        repository: event.data.repository,
        path: event.data.path,
        commit: event.data.commit,
      };
    case 'PromotionRolledOut':
      return { ...p, status: 'rolled_out', at, rollout: event.data.detail };
    case 'PromotionFailed':
      return { ...p, status: 'failed', at, reason: event.data.reason, revertCommit: event.data.reverted };
    case 'RollbackRequested':
      return {
        ...p,
        status: 'rollback_requested',
        at,
        rollbackRequestedBy: event.data.actor,
        reason: event.data.reason,
        revertCommit: undefined,
      };
    case 'RollbackCommitted':
      return { ...p, at, revertCommit: event.data.commit };
    case 'RolledBack':
      return { ...p, status: 'rolled_back', at, rollout: event.data.detail };
    case 'RollbackFailed':
      return { ...p, status: 'rollback_failed', at, reason: event.data.reason };
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
    case 'PromotionRequested':
      return `promotion requested by ${event.data.actor}`;
    case 'PromotionCommitted':
      return `promotion committed ${event.data.commit.slice(0, 12)} to ${event.data.repository} (${event.data.path})`;
    case 'PromotionRolledOut':
      return 'promotion rolled out over the target';
    case 'PromotionFailed':
      return `promotion failed: ${event.data.reason}${event.data.reverted ? `; reverted by ${event.data.reverted.slice(0, 12)}` : ''}`;
    case 'RollbackRequested':
      return `rollback requested by ${event.data.actor}${event.data.reason ? `: ${event.data.reason}` : ''}`;
    case 'RollbackCommitted':
      return `rollback committed ${event.data.commit.slice(0, 12)}`;
    case 'RolledBack':
      return 'rolled back: the baseline runs over the target again';
    case 'RollbackFailed':
      return `rollback failed: ${event.data.reason}`;
    case 'AnalysisRejudged':
      return `re-judged by ${event.data.actor}: ${event.data.analysis.verdict}`;
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

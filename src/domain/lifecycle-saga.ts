import { assessProbe, DEFAULT_CRITICAL_GRACE_SECONDS, type ProbeFindings } from './early-abort.js';
import type {
  ExistingExperiment,
  Experiment,
  ExperimentCommand,
  ExperimentEvent,
  PromotionEvent,
} from './experiment.js';
import { type Analysis, type ExperimentSpec, VARIANTS, type Variant } from './experiment-spec.js';

/**
 * The lifecycle saga as a process manager: once an experiment is started it deploys both variants,
 * waits out the run, has it analyzed, records the verdict, and tears down whatever it deployed when
 * the experiment ends.
 *
 * `react(state, input)` is its every decision, and pure: no I/O, no clock (time arrives in the
 * input), no ids drawn (they derive from the input). Where its state is kept, how the outbox is
 * drained, how timers fire and how commands run is the adapter's business
 * (src/handlers/experiment-saga.ts).
 */

export const SAGA_ACTOR = 'phoenix-saga';

/** The actor of the commands reconciliation issues (history and audit show it). */
export const RECONCILER_ACTOR = 'system:reconciler';

export interface SagaTimeouts {
  /** Both variants must be deployed within this. */
  readonly deployTimeoutMs: number;
  /** An analysis must be recorded within this after the run ends. */
  readonly analysisTimeoutMs: number;
  /** Analysis attempts before the experiment fails. */
  readonly maxAnalysisAttempts: number;
}

export const DEFAULT_SAGA_TIMEOUTS: SagaTimeouts = {
  deployTimeoutMs: 5 * 60_000,
  analysisTimeoutMs: 2 * 60_000,
  maxAnalysisAttempts: 3,
};

export type TimerKind = 'deploy-timeout' | 'run-end' | 'analysis-timeout';

/**
 * What the saga keeps of one experiment: recorded when it starts (not when it is created: most
 * experiments are created long before they start, or never start), `undefined` before.
 */
export interface SagaExperiment {
  readonly spec: ExperimentSpec;
  readonly started: boolean;
  /** ISO time the run started, once it has. */
  readonly runStartedAt: string | null;
  readonly ended: boolean;
}

export type SagaState = SagaExperiment | undefined;

// ---------------------------------------------------------------------------------------------
// Inputs

/** What a worker answers (the bus's results, as the saga reads them). */
type Answer<T extends string, D> = Readonly<
  {
    type: T;
    /** The command this answers. */
    commandId: string;
    experimentId: string;
    /** When the worker finished (passed on as the domain command's `at`). */
    at: string;
    correlationId?: string | undefined;
  } & D
>;

export type VariantDeployedAnswer = Answer<
  'VariantDeployed',
  { variant: Variant; detail: Readonly<Record<string, unknown>> }
>;
export type VariantDeployFailedAnswer = Answer<'VariantDeployFailed', { variant: Variant; reason: string }>;
export type ExperimentTornDownAnswer = Answer<'ExperimentTornDown', { variants: readonly Variant[] }>;
export type DeploymentVerifiedAnswer = Answer<
  'DeploymentVerified',
  { present: readonly Variant[]; missing: readonly Variant[] }
>;
export type AnalysisCompletedAnswer = Answer<'AnalysisCompleted', { analysis: Analysis }>;
export type AnalysisFailedAnswer = Answer<'AnalysisFailed', { reason: string }>;
/** The analyzer's probe of a running experiment (early abort). */
export type ProbeCompletedAnswer = Answer<'ProbeCompleted', { findings: ProbeFindings }>;

/** Which part of a promotion a Git or rollout answer is for. */
export type PromotionStep = 'promote' | 'compensate' | 'rollback';

export type PromotionCommittedAnswer = Answer<
  'PromotionCommitted',
  { repository: string; path: string; commit: string }
>;
/** A promotion's commit was reverted (and pushed): `commit` is the revert, `reverted` the promotion's. */
export type PromotionRevertedAnswer = Answer<
  'PromotionReverted',
  { step: 'compensate' | 'rollback'; commit: string; reverted: string; cause?: string | undefined }
>;
/** The Git repository refused or could not be reached, for good (the worker gave up). */
export type GitopsFailedAnswer = Answer<
  'GitopsFailed',
  { step: PromotionStep; reason: string; cause?: string | undefined }
>;
export type TargetRolledOutAnswer = Answer<
  'TargetRolledOut',
  { step: 'promote' | 'rollback'; detail: Readonly<Record<string, unknown>> }
>;
export type TargetRolloutFailedAnswer = Answer<
  'TargetRolloutFailed',
  { step: 'promote' | 'rollback'; reason: string; commit: string }
>;

/** A worker's result other than reconciliation's answer (that one needs the experiment's state). */
export type WorkerResult =
  | VariantDeployedAnswer
  | VariantDeployFailedAnswer
  | ExperimentTornDownAnswer
  | AnalysisCompletedAnswer
  | AnalysisFailedAnswer
  | PromotionCommittedAnswer
  | PromotionRevertedAnswer
  | GitopsFailedAnswer
  | TargetRolledOutAnswer
  | TargetRolloutFailedAnswer;

export type SagaInput =
  /** An event of an experiment's stream, with the ids of the stored event. */
  | {
      readonly type: 'event';
      readonly experimentId: string;
      readonly event: ExperimentEvent;
      readonly eventId: string;
      readonly correlationId: string;
      /**
       * Where a start of an experiment the saga has not recorded finds its spec: the experiment's
       * creation event (the adapter reads it). Not needed for any other event.
       */
      readonly spec?: ExperimentSpec | undefined;
      /**
       * The aggregate as it stands after this event: what a promotion's steps need (the verdict, the
       * candidate as it was deployed, the promotion's commit). The adapter folds it for promotion
       * events only; no other event needs it.
       */
      readonly experiment?: Experiment | undefined;
    }
  /** A deadline the saga set has come. `experiment` is the aggregate's state as its events say now. */
  | {
      readonly type: 'timer';
      readonly experimentId: string;
      readonly kind: TimerKind;
      /** The id of the event that set the timer. */
      readonly causeId: string;
      readonly now: string;
      readonly experiment: Experiment;
    }
  | { readonly type: 'result'; readonly result: WorkerResult }
  /** The deployer's answer to reconciliation after a restart, with the experiment's state now. */
  | {
      readonly type: 'reconciliation';
      readonly result: DeploymentVerifiedAnswer;
      readonly experiment: Experiment;
    }
  /**
   * A probe is due (the adapter asks every `probe interval` about each experiment it knows as running).
   * `slot` numbers the interval; with the experiment it derives the probe's command id, so any number
   * of saga processes asking in the same interval send one probe.
   */
  | {
      readonly type: 'probe-due';
      readonly experimentId: string;
      readonly state: SagaState;
      readonly slot: number;
    }
  /** The analyzer's probe, with the experiment's state now (its probe history is in its events). */
  | { readonly type: 'probe'; readonly result: ProbeCompletedAnswer; readonly experiment: Experiment }
  /**
   * A sweep (at start, then periodically) found objects of the experiment in `namespace`; `state` is
   * what the saga knows of it now. `sweep` names the sweep (one per sweep a process runs), so the
   * teardown it sends derives its id from the sweep and the experiment: any number of answers for one
   * sweep send one teardown.
   */
  | {
      readonly type: 'held';
      readonly experimentId: string;
      readonly namespace: string;
      readonly state: SagaState;
      readonly sweep: string;
    };

// ---------------------------------------------------------------------------------------------
// Outputs

interface WorkerCommandIds {
  readonly experimentId: string;
  /** The id of what caused the command; with `purpose` it derives the command's id (the bus de-duplicates by it). */
  readonly causationId: string;
  readonly purpose: string;
  readonly correlationId: string;
}

/** The candidate (or baseline) exactly as it ran: its template, params and the tuning it was deployed with. */
export interface PromotedVariant {
  readonly variant: Variant;
  readonly template: string;
  readonly params: Readonly<Record<string, unknown>>;
  /** keepList / thresholds the deployer tuned the variant with (from its VariantDeployed detail). */
  readonly tuning?: Readonly<Record<string, unknown>> | undefined;
}

/** The commands the saga sends the workers (the deployer, the analyzer and the promoter). */
export type WorkerCommand =
  | (WorkerCommandIds & {
      readonly type: 'DeployVariant';
      readonly variant: Variant;
      readonly template: string;
      readonly params: Readonly<Record<string, unknown>>;
      readonly criticalProcesses: readonly string[];
      readonly hosts: number;
      readonly namespace: string;
      readonly nodeSelector: Readonly<Record<string, string>>;
    })
  | (WorkerCommandIds & { readonly type: 'TeardownExperiment'; readonly namespace: string })
  | (WorkerCommandIds & {
      readonly type: 'AnalyzeExperiment';
      readonly spec: ExperimentSpec;
      readonly window: { readonly start: string; readonly end: string };
    })
  /** Commit the candidate's configs and the evidence to the GitOps repository. */
  | (WorkerCommandIds & {
      readonly type: 'CommitPromotion';
      /** Who asked for the promotion (the commit says so). */
      readonly actor: string;
      readonly spec: ExperimentSpec;
      readonly analysis: Analysis;
      readonly candidate: PromotedVariant;
      readonly requestedAt: string;
    })
  /** Revert a promotion's commit (and push the revert). */
  | (WorkerCommandIds & {
      readonly type: 'RevertPromotion';
      readonly step: 'compensate' | 'rollback';
      readonly commit: string;
      readonly actor: string;
      /** Why (a failed rollout's reason, or the rollback's). */
      readonly cause?: string | undefined;
    })
  /** Run a variant over the whole target in place of what runs there (promote: the candidate; rollback: the baseline). */
  | (WorkerCommandIds & {
      readonly type: 'RolloutTarget';
      readonly step: 'promote' | 'rollback';
      readonly rollout: PromotedVariant;
      readonly criticalProcesses: readonly string[];
      readonly hosts: number;
      readonly namespace: string;
      readonly nodeSelector: Readonly<Record<string, string>>;
      /** The commit the rollout carries out (the promotion's, or the rollback's revert). */
      readonly commit: string;
    })
  | (WorkerCommandIds & {
      readonly type: 'ProbeExperiment';
      readonly spec: ExperimentSpec;
      readonly runStartedAt: string;
    });

/** A command for an experiment, run for the saga (or the reconciler) by the command handler. */
export interface ExperimentCommandToRun {
  readonly experimentId: string;
  readonly command: ExperimentCommand;
  readonly commandId: string;
  readonly causationId: string;
  readonly correlationId: string;
  readonly actor: string;
}

export type SagaCommand =
  | { readonly kind: 'worker'; readonly command: WorkerCommand }
  | ({ readonly kind: 'experiment' } & ExperimentCommandToRun);

/** Timers change in the order given; the last word on a kind holds. */
export type TimerChange =
  | { readonly kind: TimerKind; readonly action: 'set'; readonly dueAt: string; readonly causeId: string }
  | { readonly kind: TimerKind; readonly action: 'clear' };

export type EventInput = Extract<SagaInput, { type: 'event' }>;

/** What the saga sends on an event: events only ever ask the workers (timers and results run commands). */
export type WorkerOrder = Extract<SagaCommand, { kind: 'worker' }>;

export interface Reaction<C extends SagaCommand = SagaCommand> {
  readonly commands: readonly C[];
  readonly timers: readonly TimerChange[];
  /** The saga's record of the experiment after the input: the same object when nothing changed. */
  readonly state: SagaState;
  /** Why, for the log, where the commands do not say it themselves. */
  readonly why?: string;
}

/** A promotion event given without the aggregate it needs: the adapter must fold it. */
export class SagaExperimentMissingError extends Error {
  constructor(
    readonly experimentId: string,
    readonly eventType: string,
  ) {
    super(`experiment ${experimentId}: ${eventType} needs the experiment's state, and none was given`);
    this.name = 'SagaExperimentMissingError';
  }
}

/** A start whose stream has no creation before it: not a stream the saga can act on. */
export class SagaSpecMissingError extends Error {
  constructor(readonly experimentId: string) {
    super(`experiment ${experimentId} started, but its stream has no creation event`);
    this.name = 'SagaSpecMissingError';
  }
}

// ---------------------------------------------------------------------------------------------
// Decisions

const plus = (iso: string, ms: number) => new Date(Date.parse(iso) + ms).toISOString();

/** The events the saga does nothing with: a batch of only these just moves its checkpoint. */
export const sagaIgnoresEvent = (type: ExperimentEvent['type']): boolean =>
  type === 'ExperimentCreated' ||
  type === 'VariantDeploymentFailed' ||
  type === 'VariantTornDown' ||
  type === 'PromotionRolledOut' ||
  type === 'PromotionFailed' ||
  type === 'RolledBack' ||
  type === 'RollbackFailed' ||
  type === 'ExperimentProbed';

/** The events whose reaction needs the aggregate (SagaInput's `experiment`). */
export const sagaNeedsExperiment = (type: ExperimentEvent['type']): boolean =>
  type === 'PromotionRequested' ||
  type === 'PromotionCommitted' ||
  type === 'RollbackRequested' ||
  type === 'RollbackCommitted';

/** A variant as it was deployed in the experiment: its spec, and the tuning its deployment reported. */
export const promotedVariantOf = (experiment: ExistingExperiment, variant: Variant): PromotedVariant => {
  const detail = experiment.deployments[variant]?.detail ?? {};
  const tuning: Record<string, unknown> = {};
  if (detail.keepList !== undefined) tuning.keepList = detail.keepList;
  if (detail.thresholds !== undefined) tuning.thresholds = detail.thresholds;
  return {
    variant,
    template: experiment.spec[variant].template,
    params: { ...experiment.spec[variant].params },
    ...(Object.keys(tuning).length > 0 ? { tuning } : {}),
  };
};

/** The command that deploys one variant of an experiment, as its spec describes it. */
export const deployCommand = (
  spec: ExperimentSpec,
  experimentId: string,
  variant: Variant,
  ids: { readonly causationId: string; readonly purpose: string; readonly correlationId: string },
): WorkerCommand => {
  const v = spec[variant];
  return {
    type: 'DeployVariant',
    experimentId,
    variant,
    template: v.template,
    params: { ...v.params },
    criticalProcesses: [...spec.criticalProcesses],
    hosts: spec.target.hosts,
    namespace: spec.target.namespace,
    nodeSelector: { ...spec.target.nodeSelector },
    causationId: ids.causationId,
    purpose: ids.purpose,
    correlationId: ids.correlationId,
  };
};

const worker = (command: WorkerCommand): WorkerOrder => ({ kind: 'worker', command });
const unchanged = (state: SagaState): Reaction<WorkerOrder> => ({ commands: [], timers: [], state });

/**
 * Every decision of the lifecycle saga. Safe to apply twice to one input: the commands' ids derive
 * from the input, so the bus, the outbox and the decider drop the repeat.
 */
export function react(state: SagaState, input: EventInput, timeouts?: SagaTimeouts): Reaction<WorkerOrder>;
export function react(state: SagaState, input: SagaInput, timeouts?: SagaTimeouts): Reaction;
export function react(
  state: SagaState,
  input: SagaInput,
  timeouts: SagaTimeouts = DEFAULT_SAGA_TIMEOUTS,
): Reaction {
  switch (input.type) {
    case 'event':
      return onEvent(state, input, timeouts);
    case 'timer':
      return { ...onTimer(input, timeouts), state };
    case 'result':
      return { commands: onResult(input.result), timers: [], state };
    case 'reconciliation':
      return { ...onReconciliation(input.result, input.experiment), state };
    case 'probe-due':
      return { commands: onProbeDue(input), timers: [], state };
    case 'probe':
      return { ...onProbe(input.result, input.experiment), state };
    case 'held':
      return { ...onHeld(input), state };
    default: {
      const _never: never = input;
      return _never;
    }
  }
}

function onEvent(state: SagaState, input: EventInput, timeouts: SagaTimeouts): Reaction<WorkerOrder> {
  const { event, experimentId, eventId, correlationId } = input;
  const teardown = (s: SagaState, purpose: string): WorkerOrder[] =>
    s?.started
      ? [
          worker({
            type: 'TeardownExperiment',
            experimentId,
            namespace: s.spec.target.namespace,
            causationId: eventId,
            purpose,
            correlationId,
          }),
        ]
      : [];
  switch (event.type) {
    case 'ExperimentCreated':
      return unchanged(state); // recorded when it starts
    case 'ExperimentStarted': {
      const spec = state?.spec ?? input.spec;
      if (!spec) throw new SagaSpecMissingError(experimentId);
      const next: SagaExperiment = state
        ? { ...state, started: true }
        : { spec, started: true, runStartedAt: null, ended: false };
      return {
        commands: VARIANTS.map((variant) =>
          worker(
            deployCommand(next.spec, experimentId, variant, {
              causationId: eventId,
              purpose: `deploy:${variant}`,
              correlationId,
            }),
          ),
        ),
        timers: [
          {
            kind: 'deploy-timeout',
            action: 'set',
            dueAt: plus(event.data.at, timeouts.deployTimeoutMs),
            causeId: eventId,
          },
        ],
        state: next,
      };
    }
    case 'ExperimentRunStarted':
      return {
        commands: [],
        timers: [
          { kind: 'deploy-timeout', action: 'clear' },
          { kind: 'run-end', action: 'set', dueAt: plus(event.data.runEndsAt, 0), causeId: eventId },
        ],
        state: state && { ...state, runStartedAt: plus(event.data.at, 0) },
      };
    case 'ExperimentRuntimeExtended':
      return {
        commands: [],
        timers: [
          { kind: 'analysis-timeout', action: 'clear' },
          { kind: 'run-end', action: 'set', dueAt: plus(event.data.runEndsAt, 0), causeId: eventId },
        ],
        state,
      };
    case 'ExperimentRunCompleted':
    case 'AnalysisRetried': {
      if (!state) return unchanged(state);
      const runStartedAt = state.runStartedAt === null ? null : Date.parse(state.runStartedAt);
      const window = {
        start:
          runStartedAt === null
            ? plus(event.data.at, -state.spec.durationSeconds * 1000)
            : new Date(runStartedAt).toISOString(),
        end:
          event.type === 'ExperimentRunCompleted'
            ? event.data.at
            : new Date(Math.max(Date.parse(event.data.at), (runStartedAt ?? 0) + 1000)).toISOString(),
      };
      return {
        commands: [
          worker({
            type: 'AnalyzeExperiment',
            experimentId,
            spec: state.spec,
            window,
            causationId: eventId,
            purpose: 'analyze',
            correlationId,
          }),
        ],
        timers: [
          {
            kind: 'analysis-timeout',
            action: 'set',
            dueAt: plus(event.data.at, timeouts.analysisTimeoutMs),
            causeId: eventId,
          },
        ],
        state,
      };
    }
    case 'AnalysisRecorded':
      return { commands: [], timers: [{ kind: 'analysis-timeout', action: 'clear' }], state };
    case 'ExperimentCompleted':
    case 'ExperimentFailed':
    case 'ExperimentCancelled':
      return {
        commands: teardown(state, 'teardown'),
        timers: [
          { kind: 'deploy-timeout', action: 'clear' },
          { kind: 'run-end', action: 'clear' },
          { kind: 'analysis-timeout', action: 'clear' },
        ],
        state: state && { ...state, ended: true },
      };
    case 'VariantDeployed':
      // A deployment that finished after the experiment ended: take it away again.
      return {
        commands: state?.ended ? teardown(state, `teardown-late:${event.data.variant}`) : [],
        timers: [],
        state,
      };
    case 'VariantDeploymentFailed':
    case 'VariantTornDown':
    case 'AnalysisRejudged': // a finished experiment judged again: nothing to run
    case 'ExperimentProbed':
      return unchanged(state);
    case 'PromotionRequested':
    case 'PromotionCommitted':
    case 'PromotionRolledOut':
    case 'PromotionFailed':
    case 'RollbackRequested':
    case 'RollbackCommitted':
    case 'RolledBack':
    case 'RollbackFailed':
      return { commands: onPromotionEvent(input, event), timers: [], state };
    default: {
      const _never: never = event;
      return _never;
    }
  }
}

/**
 * A promotion moves in steps, each an event, each answered by one worker: the promoter commits, the
 * deployer rolls the candidate out; a rollback has the promoter revert and the deployer roll the
 * baseline back. Compensation (a failed rollout) is decided on the deployer's answer (onResult).
 */
function onPromotionEvent(input: EventInput, event: PromotionEvent): WorkerOrder[] {
  const { experimentId, eventId, correlationId } = input;
  if (
    event.type === 'PromotionRolledOut' ||
    event.type === 'PromotionFailed' ||
    event.type === 'RolledBack' ||
    event.type === 'RollbackFailed'
  )
    return [];
  const experiment = input.experiment;
  if (!experiment || experiment.status === 'empty')
    throw new SagaExperimentMissingError(experimentId, event.type);
  const s = experiment as ExistingExperiment;
  const ids = { experimentId, causationId: eventId, correlationId };
  const rollout = (step: 'promote' | 'rollback', variant: Variant, commit: string): WorkerOrder =>
    worker({
      type: 'RolloutTarget',
      ...ids,
      purpose: `rollout:${step}`,
      step,
      rollout: promotedVariantOf(s, variant),
      criticalProcesses: [...s.spec.criticalProcesses],
      hosts: s.spec.target.hosts,
      namespace: s.spec.target.namespace,
      nodeSelector: { ...s.spec.target.nodeSelector },
      commit,
    });
  switch (event.type) {
    case 'PromotionRequested':
      if (!s.analysis) return []; // the decider never accepts one without a verdict
      return [
        worker({
          type: 'CommitPromotion',
          ...ids,
          purpose: 'promote',
          actor: event.data.actor,
          spec: s.spec,
          analysis: s.analysis,
          candidate: promotedVariantOf(s, 'candidate'),
          requestedAt: event.data.at,
        }),
      ];
    case 'PromotionCommitted':
      return [rollout('promote', 'candidate', event.data.commit)];
    case 'RollbackRequested': {
      const commit = s.promotion?.commit;
      if (commit === undefined) return [];
      return [
        worker({
          type: 'RevertPromotion',
          ...ids,
          purpose: 'rollback',
          step: 'rollback',
          commit,
          actor: event.data.actor,
          cause: event.data.reason,
        }),
      ];
    }
    case 'RollbackCommitted':
      return [rollout('rollback', 'baseline', event.data.commit)];
    default: {
      const _never: never = event;
      return _never;
    }
  }
}

/** A deadline has come: what it means depends on where the experiment is now. */
function onTimer(
  input: Extract<SagaInput, { type: 'timer' }>,
  timeouts: SagaTimeouts,
): Omit<Reaction, 'state'> {
  const { experiment, kind, now, causeId, experimentId } = input;
  const none = { commands: [], timers: [] };
  if (experiment.status === 'empty') return none;
  const s = experiment as ExistingExperiment;
  let command: ExperimentCommand | undefined;
  if (kind === 'run-end' && s.status === 'running') {
    command = { type: 'CompleteRun', at: now };
  } else if (kind === 'deploy-timeout' && s.status === 'initializing') {
    const ready =
      s.deployments.baseline?.status === 'deployed' && s.deployments.candidate?.status === 'deployed';
    command = ready
      ? {
          type: 'MarkExperimentRunning',
          reason: 'both variants found deployed at the deploy deadline',
          at: now,
        }
      : {
          type: 'FailExperiment',
          reason: `deployment did not finish within ${Math.round(timeouts.deployTimeoutMs / 1000)} s`,
          at: now,
        };
  } else if (kind === 'analysis-timeout' && s.status === 'analyzing') {
    command =
      s.analysisAttempts + 1 < timeouts.maxAnalysisAttempts
        ? { type: 'RetryAnalysis', reason: 'the analysis did not answer in time', at: now }
        : {
            type: 'FailExperiment',
            reason: `no analysis after ${timeouts.maxAnalysisAttempts} attempts`,
            at: now,
          };
  }
  if (!command) return none; // the experiment moved on: the deadline no longer applies
  return {
    commands: [
      {
        kind: 'experiment',
        experimentId,
        command,
        commandId: `timer:${kind}:${causeId}`,
        causationId: causeId,
        correlationId: experimentId,
        actor: SAGA_ACTOR,
      },
    ],
    timers: [],
  };
}

/**
 * A worker's answer becomes the command that records it; its id derives from the answered command's.
 * One answer asks a worker instead: a failed rollout of a promotion has its commit reverted first
 * (the compensation), and the failure is recorded with the revert's answer.
 */
function onResult(result: WorkerResult): SagaCommand[] {
  const run = (command: ExperimentCommand, commandId = `result:${result.commandId}`): SagaCommand => ({
    kind: 'experiment',
    experimentId: result.experimentId,
    command,
    commandId,
    causationId: result.commandId,
    correlationId: result.correlationId ?? result.commandId,
    actor: SAGA_ACTOR,
  });
  switch (result.type) {
    case 'VariantDeployed':
      return [
        run({ type: 'RecordVariantDeployed', variant: result.variant, detail: result.detail, at: result.at }),
      ];
    case 'VariantDeployFailed':
      return [
        run({
          type: 'RecordVariantDeploymentFailed',
          variant: result.variant,
          reason: result.reason,
          at: result.at,
        }),
      ];
    case 'ExperimentTornDown':
      return result.variants.map((variant) =>
        run(
          { type: 'RecordVariantTornDown', variant, at: result.at },
          `result:${result.commandId}:${variant}`,
        ),
      );
    case 'AnalysisCompleted':
      return [run({ type: 'RecordAnalysis', analysis: result.analysis, at: result.at })];
    case 'AnalysisFailed':
      return [run({ type: 'FailExperiment', reason: `analysis failed: ${result.reason}`, at: result.at })];
    case 'PromotionCommitted':
      return [
        run({
          type: 'RecordPromotionCommitted',
          repository: result.repository,
          path: result.path,
          commit: result.commit,
          at: result.at,
        }),
      ];
    case 'PromotionReverted':
      return [
        result.step === 'rollback'
          ? run({ type: 'RecordRollbackCommitted', commit: result.commit, at: result.at })
          : run({
              type: 'RecordPromotionFailed',
              reason: `rollout failed: ${result.cause ?? 'no reason given'}`,
              reverted: result.commit,
              at: result.at,
            }),
      ];
    case 'GitopsFailed': {
      const reason = `the Git repository: ${result.reason}`;
      const step = result.step;
      switch (step) {
        case 'promote':
          return [run({ type: 'RecordPromotionFailed', reason, at: result.at })];
        case 'compensate':
          return [
            run({
              type: 'RecordPromotionFailed',
              reason: `rollout failed: ${result.cause ?? 'no reason given'}; reverting the commit failed too (${reason})`,
              at: result.at,
            }),
          ];
        case 'rollback':
          return [run({ type: 'RecordRollbackFailed', reason, at: result.at })];
        default: {
          const _never: never = step;
          return _never;
        }
      }
    }
    case 'TargetRolledOut':
      return [
        result.step === 'promote'
          ? run({ type: 'RecordPromotionRolledOut', detail: result.detail, at: result.at })
          : run({ type: 'RecordRolledBack', detail: result.detail, at: result.at }),
      ];
    case 'TargetRolloutFailed':
      if (result.step === 'rollback')
        return [
          run({
            type: 'RecordRollbackFailed',
            reason: `the revert ${result.commit.slice(0, 12)} is pushed, but rolling the baseline out failed: ${result.reason}`,
            at: result.at,
          }),
        ];
      return [
        {
          kind: 'worker',
          command: {
            type: 'RevertPromotion',
            experimentId: result.experimentId,
            causationId: result.commandId,
            purpose: 'compensate',
            correlationId: result.correlationId ?? result.commandId,
            step: 'compensate',
            commit: result.commit,
            actor: SAGA_ACTOR,
            cause: result.reason,
          },
        },
      ];
    default: {
      const _never: never = result;
      return _never;
    }
  }
}

/** A probe is due: ask the analyzer about an experiment whose run has started and not ended. */
function onProbeDue(input: Extract<SagaInput, { type: 'probe-due' }>): SagaCommand[] {
  const s = input.state;
  if (!s?.started || s.ended || s.runStartedAt === null) return [];
  return [
    worker({
      type: 'ProbeExperiment',
      experimentId: input.experimentId,
      spec: s.spec,
      runStartedAt: s.runStartedAt,
      causationId: `probe:${input.experimentId}:${input.slot}`,
      purpose: 'probe',
      correlationId: input.experimentId,
    }),
  ];
}

/**
 * A probe's findings, judged against the probes before it (assessProbe, domain/early-abort.ts): the
 * run fails with the evidence, or the change in what is missing is recorded, or nothing happens. Only
 * a running experiment is judged: a probe that comes back after the run ended is too late to matter.
 */
function onProbe(result: ProbeCompletedAnswer, experiment: Experiment): Omit<Reaction, 'state'> {
  if (experiment.status !== 'running') return { commands: [], timers: [] };
  const s = experiment as ExistingExperiment;
  const grace = s.spec.successCriteria.criticalGraceSeconds ?? DEFAULT_CRITICAL_GRACE_SECONDS;
  const assessment = assessProbe(s.probeMissing ?? [], result.findings, grace);
  const run = (command: ExperimentCommand): SagaCommand => ({
    kind: 'experiment',
    experimentId: result.experimentId,
    command,
    commandId: `result:${result.commandId}`,
    causationId: result.commandId,
    correlationId: result.correlationId ?? result.commandId,
    actor: SAGA_ACTOR,
  });
  switch (assessment.action) {
    case 'none':
      return { commands: [], timers: [] };
    case 'record':
      return {
        commands: [run({ type: 'RecordProbe', missing: assessment.missing, at: result.at })],
        timers: [],
      };
    case 'abort':
      return {
        commands: [
          run({
            type: 'FailExperiment',
            reason: assessment.reason,
            abort: assessment.evidence,
            at: result.at,
          }),
        ],
        timers: [],
        why: assessment.reason,
      };
    default: {
      const _never: never = assessment;
      return _never;
    }
  }
}

/**
 * Objects of an experiment on the data plane, found by a sweep. An experiment that ended is torn down: its own
 * teardown never happened (it kept failing, or the data plane was out of reach), or something made the
 * objects again; tearing down twice is harmless. One in flight is adoption's business (reconciliation
 * verifies it); one the saga has no record of is not its to judge, and is left where it is.
 */
function onHeld(input: Extract<SagaInput, { type: 'held' }>): Omit<Reaction, 'state'> {
  const { state, experimentId } = input;
  if (state === undefined)
    return { commands: [], timers: [], why: 'not an experiment this saga knows: left alone' };
  if (!state.ended) return { commands: [], timers: [] };
  return {
    commands: [
      worker({
        type: 'TeardownExperiment',
        experimentId,
        namespace: input.namespace,
        causationId: input.sweep,
        purpose: experimentId,
        correlationId: experimentId,
      }),
    ],
    timers: [],
    why: 'the experiment ended and its objects are still on the data plane',
  };
}

/** Carries reconciliation's decision into commands, with the reconciler as the actor. */
function onReconciliation(result: DeploymentVerifiedAnswer, experiment: Experiment): Omit<Reaction, 'state'> {
  const decision = reconcile(experiment, result.present);
  const correlationId = result.correlationId ?? result.commandId;
  switch (decision.action) {
    case 'none':
      return { commands: [], timers: [] };
    case 'fail':
      return {
        commands: [
          {
            kind: 'experiment',
            experimentId: result.experimentId,
            command: { type: 'FailExperiment', reason: decision.reason, at: result.at },
            commandId: `result:${result.commandId}`,
            causationId: result.commandId,
            correlationId,
            actor: RECONCILER_ACTOR,
          },
        ],
        timers: [],
        why: decision.reason,
      };
    case 'redeploy': {
      const s = experiment as ExistingExperiment; // reconcile redeploys only what exists
      return {
        commands: decision.variants.map((variant) =>
          worker(
            deployCommand(s.spec, result.experimentId, variant, {
              causationId: result.commandId,
              purpose: `redeploy:${variant}`,
              correlationId,
            }),
          ),
        ),
        timers: [],
        why: decision.reason,
      };
    }
    default: {
      const _never: never = decision;
      return _never;
    }
  }
}

/** What reconciliation does about one experiment, given the variants its deployer holds. */
export type Reconciliation =
  | { readonly action: 'none' }
  | { readonly action: 'redeploy'; readonly variants: readonly Variant[]; readonly reason: string }
  | { readonly action: 'fail'; readonly reason: string };

const listed = (variants: readonly Variant[]) =>
  `the ${variants.join(' and ')} variant${variants.length > 1 ? 's' : ''}`;

/**
 * Reconciliation's decision: the experiment as its events say, against what the deployer holds
 * after a restart.
 * - initializing: nothing has been measured yet, so whatever is not both recorded and held is
 *   deployed again (deploying is idempotent: a variant still there is adopted, and a repeated
 *   answer changes nothing).
 * - running, analyzing: a deployed variant that is gone took the run's data with it; the experiment
 *   fails, saying which variants were lost, instead of being analysed on data that is not there.
 * - pending and the terminal states: nothing to reconcile (the saga tears down what ended).
 */
export const reconcile = (state: Experiment, present: readonly Variant[]): Reconciliation => {
  if (state.status === 'empty') return { action: 'none' };
  const s = state as ExistingExperiment;
  switch (s.status) {
    case 'initializing': {
      const variants = VARIANTS.filter(
        (v) => s.deployments[v]?.status !== 'deployed' || !present.includes(v),
      );
      if (variants.length === 0) return { action: 'none' };
      const lost = variants.filter((v) => s.deployments[v]?.status === 'deployed');
      return {
        action: 'redeploy',
        variants,
        reason:
          lost.length > 0
            ? `the data plane no longer holds ${listed(lost)}; deploying again before the run starts`
            : `no answer recorded for ${listed(variants)}; deploying again`,
      };
    }
    case 'running':
    case 'analyzing': {
      const lost = VARIANTS.filter((v) => s.deployments[v]?.status === 'deployed' && !present.includes(v));
      if (lost.length === 0) return { action: 'none' };
      return {
        action: 'fail',
        reason: `reconciled after a restart: the data plane no longer holds ${listed(lost)}; the run's data since ${s.runStartedAt ?? s.startedAt ?? 'its start'} is lost`,
      };
    }
    case 'pending':
    case 'completed':
    case 'failed':
    case 'cancelled':
      return { action: 'none' };
    default: {
      const _never: never = s.status;
      return _never;
    }
  }
};

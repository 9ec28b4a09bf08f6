import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type Experiment,
  type ExperimentEvent,
  type ExperimentEventType,
  fold,
} from '../src/domain/experiment.js';
import type { Analysis, ExperimentSpec } from '../src/domain/experiment-spec.js';
import {
  DEFAULT_SAGA_TIMEOUTS,
  RECONCILER_ACTOR,
  type Reaction,
  react,
  SAGA_ACTOR,
  type SagaExperiment,
  type SagaInput,
  SagaSpecMissingError,
  type SagaState,
  type TimerKind,
  type WorkerResult,
} from '../src/domain/lifecycle-saga.js';

/**
 * The lifecycle saga's decisions, given/when/then and without I/O: given what the saga knows of an
 * experiment (or the experiment's events, for timers and results), when an input arrives, then these
 * commands, timers and state.
 */

const ID = 'exp-1';
const T0 = Date.parse('2026-03-01T12:00:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

const spec: ExperimentSpec = {
  name: 'topk vs baseline',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-topk-v1', params: { k: 20 } },
  target: { namespace: 'ns-a', nodeSelector: { pool: 'a' }, hosts: 4 },
  durationSeconds: 600,
  criticalProcesses: ['^postgres$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};

const analysis: Analysis = {
  verdict: 'pass',
  reasons: [],
  baseline: { series: 1000, datapointsPerMinute: 1000 },
  candidate: { series: 400, datapointsPerMinute: 400 },
  cardinalityReductionPct: 60,
  datapointReductionPct: 60,
  criticalProcessLossPct: 0,
  missingCriticalProcesses: [],
};

// ---------------------------------------------------------------------------------------------
// Events: every saga state × every event

/** What the saga can know of an experiment. `created` is a row written before starts were what recorded one. */
const sagaStates = {
  unknown: undefined,
  created: { spec, started: false, runStartedAt: null, ended: false },
  started: { spec, started: true, runStartedAt: null, ended: false },
  running: { spec, started: true, runStartedAt: at(3), ended: false },
  ended: { spec, started: true, runStartedAt: at(3), ended: true },
} satisfies Record<string, SagaState>;
type SagaStateName = keyof typeof sagaStates;
const SAGA_STATE_NAMES = Object.keys(sagaStates) as SagaStateName[];

const T = 1000; // seconds after T0: when the event under test happened
const events: Record<ExperimentEventType, ExperimentEvent> = {
  ExperimentCreated: { type: 'ExperimentCreated', data: { at: at(T), experimentId: ID, spec } },
  ExperimentStarted: { type: 'ExperimentStarted', data: { at: at(T) } },
  VariantDeployed: { type: 'VariantDeployed', data: { at: at(T), variant: 'candidate' } },
  VariantDeploymentFailed: {
    type: 'VariantDeploymentFailed',
    data: { at: at(T), variant: 'baseline', reason: 'ImagePullBackOff' },
  },
  ExperimentRunStarted: {
    type: 'ExperimentRunStarted',
    data: { at: at(T), runEndsAt: at(T + 600), reason: 'both variants deployed' },
  },
  ExperimentRunCompleted: { type: 'ExperimentRunCompleted', data: { at: at(T) } },
  AnalysisRecorded: { type: 'AnalysisRecorded', data: { at: at(T), analysis } },
  AnalysisRetried: { type: 'AnalysisRetried', data: { at: at(T), attempt: 1, reason: 'no data yet' } },
  ExperimentRuntimeExtended: {
    type: 'ExperimentRuntimeExtended',
    data: { at: at(T), extraSeconds: 300, runEndsAt: at(T + 300), reason: 'more data' },
  },
  ExperimentCompleted: { type: 'ExperimentCompleted', data: { at: at(T), reason: 'criteria met' } },
  ExperimentFailed: { type: 'ExperimentFailed', data: { at: at(T), reason: 'node lost' } },
  ExperimentCancelled: { type: 'ExperimentCancelled', data: { at: at(T), reason: 'not needed' } },
  VariantTornDown: { type: 'VariantTornDown', data: { at: at(T), variant: 'baseline' } },
  PromotionRequested: { type: 'PromotionRequested', data: { at: at(T), actor: 'olga' } },
  PromotionCommitted: {
    type: 'PromotionCommitted',
    data: { at: at(T), repository: '/srv/fleet.git', path: 'targets/ns-a/pool=a', commit: 'abc1234' },
  },
  PromotionRolledOut: { type: 'PromotionRolledOut', data: { at: at(T) } },
  PromotionFailed: { type: 'PromotionFailed', data: { at: at(T), reason: 'rollout failed' } },
  RollbackRequested: { type: 'RollbackRequested', data: { at: at(T), actor: 'olga' } },
  RollbackCommitted: { type: 'RollbackCommitted', data: { at: at(T), commit: 'def5678' } },
  RolledBack: { type: 'RolledBack', data: { at: at(T) } },
  RollbackFailed: { type: 'RollbackFailed', data: { at: at(T), reason: 'conflict' } },
  AnalysisRejudged: {
    type: 'AnalysisRejudged',
    data: { at: at(T), actor: 'alice', criteria: spec.successCriteria, analysis },
  },
  ExperimentProbed: {
    type: 'ExperimentProbed',
    data: { at: at(T), missing: [{ process: 'node-0001/sshd', since: at(T - 30) }] },
  },
};

/** A completed experiment whose promotion is out there (what promotion events are reacted to with). */
const promotedExperiment: Experiment = {
  ...(fold([
    { type: 'ExperimentCreated', data: { at: at(0), experimentId: ID, spec } },
    { type: 'ExperimentStarted', data: { at: at(1) } },
    {
      type: 'VariantDeployed',
      data: { at: at(2), variant: 'candidate', detail: { keepList: ['postgres', 'nginx'] } },
    },
    { type: 'AnalysisRecorded', data: { at: at(3), analysis } },
    { type: 'ExperimentCompleted', data: { at: at(3), reason: 'met' } },
    { type: 'PromotionRequested', data: { at: at(4), actor: 'olga' } },
    events.PromotionCommitted,
  ]) as Extract<Experiment, { id: string }>),
};

const EVENT_ID = 'evt-42';
const whenEvent = (state: SagaState, event: ExperimentEvent, withSpec = true) =>
  react(state, {
    type: 'event',
    experimentId: ID,
    event,
    eventId: EVENT_ID,
    correlationId: 'corr-1',
    spec: withSpec ? spec : undefined,
    experiment: promotedExperiment,
  });

/** A reaction in a line each: commands as `Type(variant|purpose)`, timers as `set kind@time` / `clear kind`. */
interface Then {
  readonly commands: readonly string[];
  readonly timers: readonly string[];
  /** The saga's record after: 'same' (the very object it had), or the fields that differ from before. */
  readonly state: 'same' | Partial<SagaExperiment>;
}

const summarize = (r: Reaction, before: SagaState): Then => ({
  commands: r.commands.map((c) =>
    c.kind === 'worker'
      ? `${c.command.type}(${c.command.type === 'DeployVariant' ? c.command.variant : c.command.purpose})`
      : `${c.command.type}`,
  ),
  timers: r.timers.map((t) => (t.action === 'set' ? `set ${t.kind}@${t.dueAt}` : `clear ${t.kind}`)),
  state:
    r.state === before
      ? 'same'
      : Object.fromEntries(
          Object.entries(r.state ?? {}).filter(
            ([k, v]) => !before || JSON.stringify(before[k as keyof SagaExperiment]) !== JSON.stringify(v),
          ),
        ),
});

const everyState = (then: (name: SagaStateName) => Then) =>
  Object.fromEntries(SAGA_STATE_NAMES.map((name) => [name, then(name)])) as Record<SagaStateName, Then>;
const nothing: Then = { commands: [], timers: [], state: 'same' };
const deploys = ['DeployVariant(baseline)', 'DeployVariant(candidate)'];
const deployDeadline = `set deploy-timeout@${at(T + DEFAULT_SAGA_TIMEOUTS.deployTimeoutMs / 1000)}`;
const analysisDeadline = `set analysis-timeout@${at(T + DEFAULT_SAGA_TIMEOUTS.analysisTimeoutMs / 1000)}`;
const clearAll = ['clear deploy-timeout', 'clear run-end', 'clear analysis-timeout'];
const ending: Record<SagaStateName, Then> = {
  unknown: { commands: [], timers: clearAll, state: 'same' },
  created: { commands: [], timers: clearAll, state: { ended: true } },
  started: { commands: ['TeardownExperiment(teardown)'], timers: clearAll, state: { ended: true } },
  running: { commands: ['TeardownExperiment(teardown)'], timers: clearAll, state: { ended: true } },
  // Ended twice (a second terminal event): torn down again, under that event's id.
  ended: { commands: ['TeardownExperiment(teardown)'], timers: clearAll, state: {} },
};
const analyze: Then = { commands: ['AnalyzeExperiment(analyze)'], timers: [analysisDeadline], state: 'same' };

/** Then, per event and saga state. */
const table: Record<ExperimentEventType, Record<SagaStateName, Then>> = {
  ExperimentCreated: everyState(() => nothing),
  ExperimentStarted: {
    unknown: {
      commands: deploys,
      timers: [deployDeadline],
      state: { spec, started: true, runStartedAt: null, ended: false },
    },
    created: { commands: deploys, timers: [deployDeadline], state: { started: true } },
    // A start seen again (a redelivery): the same commands, whose ids the outbox and the bus drop.
    started: { commands: deploys, timers: [deployDeadline], state: {} },
    running: { commands: deploys, timers: [deployDeadline], state: {} },
    ended: { commands: deploys, timers: [deployDeadline], state: {} },
  },
  VariantDeployed: {
    ...everyState(() => nothing),
    // Finished after the experiment ended: taken away again.
    ended: { commands: ['TeardownExperiment(teardown-late:candidate)'], timers: [], state: 'same' },
  },
  VariantDeploymentFailed: everyState(() => nothing),
  ExperimentRunStarted: everyState((name) => ({
    commands: [],
    timers: ['clear deploy-timeout', `set run-end@${at(T + 600)}`],
    state: name === 'unknown' ? 'same' : { runStartedAt: at(T) },
  })),
  ExperimentRunCompleted: everyState((name) => (name === 'unknown' ? nothing : analyze)),
  AnalysisRecorded: everyState(() => ({ commands: [], timers: ['clear analysis-timeout'], state: 'same' })),
  AnalysisRetried: everyState((name) => (name === 'unknown' ? nothing : analyze)),
  ExperimentRuntimeExtended: everyState(() => ({
    commands: [],
    timers: ['clear analysis-timeout', `set run-end@${at(T + 300)}`],
    state: 'same',
  })),
  ExperimentCompleted: ending,
  ExperimentFailed: ending,
  ExperimentCancelled: ending,
  VariantTornDown: everyState(() => nothing),
  // A promotion's steps ask the promoter and the deployer, whatever the saga's own record says.
  PromotionRequested: everyState(() => ({
    commands: ['CommitPromotion(promote)'],
    timers: [],
    state: 'same',
  })),
  PromotionCommitted: everyState(() => ({
    commands: ['RolloutTarget(rollout:promote)'],
    timers: [],
    state: 'same',
  })),
  PromotionRolledOut: everyState(() => nothing),
  PromotionFailed: everyState(() => nothing),
  RollbackRequested: everyState(() => ({
    commands: ['RevertPromotion(rollback)'],
    timers: [],
    state: 'same',
  })),
  RollbackCommitted: everyState(() => ({
    commands: ['RolloutTarget(rollout:rollback)'],
    timers: [],
    state: 'same',
  })),
  RolledBack: everyState(() => nothing),
  RollbackFailed: everyState(() => nothing),
  AnalysisRejudged: everyState(() => nothing),
  ExperimentProbed: everyState(() => nothing),
};

describe('Lifecycle saga: every saga state × every event', () => {
  for (const [type, byState] of Object.entries(table) as [
    ExperimentEventType,
    Record<SagaStateName, Then>,
  ][]) {
    for (const name of SAGA_STATE_NAMES) {
      const expected = byState[name];
      it(`${name} + ${type} → [${expected.commands.join(', ')}] [${expected.timers.join(', ')}]`, () => {
        const before = sagaStates[name];
        assert.deepEqual(summarize(whenEvent(before, events[type]), before), expected);
      });
    }
  }

  it('an unknown experiment started without its spec: SagaSpecMissingError naming it', () => {
    assert.throws(
      () => whenEvent(undefined, events.ExperimentStarted, false),
      (err: unknown) =>
        err instanceof SagaSpecMissingError &&
        err.experimentId === ID &&
        err.message === `experiment ${ID} started, but its stream has no creation event`,
    );
    // A start the saga has recorded keeps the spec it has.
    assert.equal(whenEvent(sagaStates.created, events.ExperimentStarted, false).state?.spec, spec);
  });
});

describe('Lifecycle saga: promotion', () => {
  const result = (r: Record<string, unknown>) =>
    react(undefined, {
      type: 'result',
      result: {
        commandId: 'cmd-9',
        experimentId: ID,
        at: at(T),
        correlationId: 'corr-1',
        ...r,
      } as WorkerResult,
    }).commands;

  it('commits the candidate as it was deployed (its tuning) with the evidence and the actor', () => {
    const [c] = whenEvent(undefined, events.PromotionRequested).commands;
    assert.ok(c?.kind === 'worker' && c.command.type === 'CommitPromotion');
    assert.equal(c.command.actor, 'olga');
    assert.deepEqual(c.command.analysis, analysis);
    assert.deepEqual(c.command.candidate, {
      variant: 'candidate',
      template: 'process-topk-v1',
      params: { k: 20 },
      tuning: { keepList: ['postgres', 'nginx'] },
    });
  });

  it('a failed rollout is compensated: the commit reverted first, the failure recorded with the revert', () => {
    const [revert] = result({
      type: 'TargetRolloutFailed',
      step: 'promote',
      reason: 'no nodes',
      commit: 'abc1234',
    });
    assert.ok(revert?.kind === 'worker' && revert.command.type === 'RevertPromotion');
    assert.deepEqual(
      [revert.command.step, revert.command.commit, revert.command.cause, revert.command.causationId],
      ['compensate', 'abc1234', 'no nodes', 'cmd-9'],
    );
    const [recorded] = result({
      type: 'PromotionReverted',
      step: 'compensate',
      commit: 'fff0000',
      reverted: 'abc1234',
      cause: 'no nodes',
    });
    assert.ok(recorded?.kind === 'experiment');
    assert.deepEqual(recorded.command, {
      type: 'RecordPromotionFailed',
      reason: 'rollout failed: no nodes',
      reverted: 'fff0000',
      at: at(T),
    });
    assert.equal(recorded.actor, SAGA_ACTOR);
  });

  it('Git failures end the step they were for', () => {
    const types = (['promote', 'compensate', 'rollback'] as const).map((step) => {
      const [c] = result({ type: 'GitopsFailed', step, reason: 'unreachable', cause: 'no nodes' });
      return c?.kind === 'experiment' ? c.command.type : undefined;
    });
    assert.deepEqual(types, ['RecordPromotionFailed', 'RecordPromotionFailed', 'RecordRollbackFailed']);
  });

  it('a promotion event without the aggregate is the adapter’s error, not a silent no-op', () => {
    assert.throws(() =>
      react(undefined, {
        type: 'event',
        experimentId: ID,
        event: events.PromotionRequested,
        eventId: EVENT_ID,
        correlationId: 'c',
      }),
    );
  });
});

describe('Lifecycle saga: what the commands carry', () => {
  it('a start deploys each variant as the spec says, caused by the event, with the deploy deadline', () => {
    const r = whenEvent(undefined, events.ExperimentStarted);
    assert.deepEqual(r.commands, [
      {
        kind: 'worker',
        command: {
          type: 'DeployVariant',
          experimentId: ID,
          variant: 'baseline',
          template: 'process-baseline-v1',
          params: {},
          criticalProcesses: ['^postgres$'],
          hosts: 4,
          namespace: 'ns-a',
          nodeSelector: { pool: 'a' },
          causationId: EVENT_ID,
          purpose: 'deploy:baseline',
          correlationId: 'corr-1',
        },
      },
      {
        kind: 'worker',
        command: {
          type: 'DeployVariant',
          experimentId: ID,
          variant: 'candidate',
          template: 'process-topk-v1',
          params: { k: 20 },
          criticalProcesses: ['^postgres$'],
          hosts: 4,
          namespace: 'ns-a',
          nodeSelector: { pool: 'a' },
          causationId: EVENT_ID,
          purpose: 'deploy:candidate',
          correlationId: 'corr-1',
        },
      },
    ]);
    assert.deepEqual(r.timers, [
      { kind: 'deploy-timeout', action: 'set', dueAt: at(T + 300), causeId: EVENT_ID },
    ]);
  });

  it('the timeouts given are the deadlines set', () => {
    const timeouts = { deployTimeoutMs: 7_000, analysisTimeoutMs: 9_000, maxAnalysisAttempts: 2 };
    const input = (event: ExperimentEvent): SagaInput => ({
      type: 'event',
      experimentId: ID,
      event,
      eventId: EVENT_ID,
      correlationId: 'c',
      spec,
    });
    assert.deepEqual(react(undefined, input(events.ExperimentStarted), timeouts).timers[0], {
      kind: 'deploy-timeout',
      action: 'set',
      dueAt: at(T + 7),
      causeId: EVENT_ID,
    });
    assert.deepEqual(react(sagaStates.running, input(events.ExperimentRunCompleted), timeouts).timers[0], {
      kind: 'analysis-timeout',
      action: 'set',
      dueAt: at(T + 9),
      causeId: EVENT_ID,
    });
  });

  it('the analysis window: from the run start to its end; a retry ends at the retry', () => {
    const window = (r: Reaction) => {
      const c = r.commands[0];
      assert.ok(c?.kind === 'worker' && c.command.type === 'AnalyzeExperiment');
      assert.deepEqual(c.command.spec, spec);
      return c.command.window;
    };
    assert.deepEqual(window(whenEvent(sagaStates.running, events.ExperimentRunCompleted)), {
      start: at(3),
      end: at(T),
    });
    assert.deepEqual(window(whenEvent(sagaStates.running, events.AnalysisRetried)), {
      start: at(3),
      end: at(T),
    });
    // No run start recorded: the window is the spec's duration before the event.
    assert.deepEqual(window(whenEvent(sagaStates.started, events.ExperimentRunCompleted)), {
      start: at(T - 600),
      end: at(T),
    });
    // A retry at the very moment the run started still asks for a window a second long.
    const early: SagaExperiment = { ...sagaStates.running, runStartedAt: at(T) };
    assert.deepEqual(window(whenEvent(early, events.AnalysisRetried)), { start: at(T), end: at(T + 1) });
  });

  it('a teardown names the namespace and derives from the ending event', () => {
    assert.deepEqual(whenEvent(sagaStates.running, events.ExperimentCancelled).commands, [
      {
        kind: 'worker',
        command: {
          type: 'TeardownExperiment',
          experimentId: ID,
          namespace: 'ns-a',
          causationId: EVENT_ID,
          purpose: 'teardown',
          correlationId: 'corr-1',
        },
      },
    ]);
  });

  it('a whole lifecycle, one event after another, decides the deploys, the analysis and the teardown', () => {
    let state: SagaState;
    const decided: string[] = [];
    const lifecycle: ExperimentEvent[] = [
      { type: 'ExperimentCreated', data: { at: at(0), experimentId: ID, spec } },
      { type: 'ExperimentStarted', data: { at: at(1) } },
      { type: 'VariantDeployed', data: { at: at(2), variant: 'baseline' } },
      { type: 'VariantDeployed', data: { at: at(3), variant: 'candidate' } },
      {
        type: 'ExperimentRunStarted',
        data: { at: at(3), runEndsAt: at(603), reason: 'both variants deployed' },
      },
      { type: 'ExperimentRunCompleted', data: { at: at(603) } },
      { type: 'AnalysisRecorded', data: { at: at(604), analysis } },
      { type: 'ExperimentCompleted', data: { at: at(604), reason: 'criteria met' } },
    ];
    for (const event of lifecycle) {
      const r = react(state, {
        type: 'event',
        experimentId: ID,
        event,
        eventId: 'e',
        correlationId: 'c',
        spec,
      });
      decided.push(...summarize(r, state).commands);
      state = r.state;
    }
    assert.deepEqual(decided, [...deploys, 'AnalyzeExperiment(analyze)', 'TeardownExperiment(teardown)']);
    assert.deepEqual(state, { spec, started: true, runStartedAt: at(3), ended: true });
  });

  it('react is pure: the same input gives the same reaction, the state is not mutated', () => {
    const before = structuredClone(sagaStates.running);
    const frozen = Object.freeze({ ...sagaStates.running });
    for (const event of Object.values(events)) {
      assert.deepEqual(whenEvent(frozen, event), whenEvent(frozen, event));
    }
    assert.deepEqual(sagaStates.running, before);
  });
});

// ---------------------------------------------------------------------------------------------
// Timers: every kind × where the experiment is when it fires

const created: ExperimentEvent = { type: 'ExperimentCreated', data: { at: at(0), experimentId: ID, spec } };
const started: ExperimentEvent = { type: 'ExperimentStarted', data: { at: at(1) } };
const up = (variant: 'baseline' | 'candidate', s: number): ExperimentEvent => ({
  type: 'VariantDeployed',
  data: { at: at(s), variant },
});
const runStarted: ExperimentEvent = {
  type: 'ExperimentRunStarted',
  data: { at: at(3), runEndsAt: at(603), reason: 'both variants deployed' },
};
const runCompleted: ExperimentEvent = { type: 'ExperimentRunCompleted', data: { at: at(603) } };
const retried = (attempt: number): ExperimentEvent => ({
  type: 'AnalysisRetried',
  data: { at: at(700 + attempt), attempt, reason: 'late' },
});

/** The experiment as its events say when the timer fires. */
const experiments: Record<string, ExperimentEvent[]> = {
  empty: [],
  pending: [created],
  initializing: [created, started, up('baseline', 2)],
  'initializing, both deployed': [created, started, up('baseline', 2), up('candidate', 3)],
  running: [created, started, up('baseline', 2), up('candidate', 3), runStarted],
  'analyzing, first attempt': [
    created,
    started,
    up('baseline', 2),
    up('candidate', 3),
    runStarted,
    runCompleted,
  ],
  'analyzing, last attempt': [
    created,
    started,
    up('baseline', 2),
    up('candidate', 3),
    runStarted,
    runCompleted,
    retried(1),
    retried(2),
  ],
  completed: [
    created,
    started,
    up('baseline', 2),
    up('candidate', 3),
    runStarted,
    runCompleted,
    { type: 'AnalysisRecorded', data: { at: at(604), analysis } },
    { type: 'ExperimentCompleted', data: { at: at(604), reason: 'criteria met' } },
  ],
  failed: [created, started, { type: 'ExperimentFailed', data: { at: at(5), reason: 'x' } }],
  cancelled: [created, { type: 'ExperimentCancelled', data: { at: at(1), reason: 'x' } }],
};

const NOW = at(5000);
const timerTable: Record<TimerKind, Record<string, string | undefined>> = {
  'deploy-timeout': {
    initializing: 'FailExperiment: deployment did not finish within 300 s',
    'initializing, both deployed':
      'MarkExperimentRunning: both variants found deployed at the deploy deadline',
  },
  'run-end': { running: 'CompleteRun' },
  'analysis-timeout': {
    'analyzing, first attempt': 'RetryAnalysis: the analysis did not answer in time',
    'analyzing, last attempt': 'FailExperiment: no analysis after 3 attempts',
  },
};

const fire = (kind: TimerKind, experiment: Experiment) =>
  react(undefined, { type: 'timer', experimentId: ID, kind, causeId: 'evt-7', now: NOW, experiment });

describe('Lifecycle saga: every timer × where the experiment is', () => {
  for (const [kind, outcomes] of Object.entries(timerTable) as [
    TimerKind,
    Record<string, string | undefined>,
  ][]) {
    for (const [where, history] of Object.entries(experiments)) {
      const expected = outcomes[where];
      it(`${kind} fires, ${where} → ${expected ?? 'nothing (the deadline no longer applies)'}`, () => {
        const r = fire(kind, fold(history));
        assert.deepEqual(r.timers, []);
        assert.equal(r.state, undefined);
        if (!expected) return assert.deepEqual(r.commands, []);
        const [type, reason] = expected.split(': ');
        assert.deepEqual(r.commands, [
          {
            kind: 'experiment',
            experimentId: ID,
            command: reason === undefined ? { type, at: NOW } : { type, reason, at: NOW },
            commandId: `timer:${kind}:evt-7`,
            causationId: 'evt-7',
            correlationId: ID,
            actor: SAGA_ACTOR,
          },
        ]);
      });
    }
  }

  it('the attempts and the deadline in the reasons are the timeouts given', () => {
    const timeouts = { deployTimeoutMs: 42_000, analysisTimeoutMs: 1, maxAnalysisAttempts: 5 };
    const on = (kind: TimerKind, where: string) => {
      const c = react(
        undefined,
        {
          type: 'timer',
          experimentId: ID,
          kind,
          causeId: 'c',
          now: NOW,
          experiment: fold(experiments[where]!),
        },
        timeouts,
      ).commands[0];
      return c?.kind === 'experiment' ? c.command : undefined;
    };
    assert.deepEqual(on('deploy-timeout', 'initializing'), {
      type: 'FailExperiment',
      reason: 'deployment did not finish within 42 s',
      at: NOW,
    });
    // Two attempts made of five: a third is asked for.
    assert.equal(on('analysis-timeout', 'analyzing, last attempt')?.type, 'RetryAnalysis');
  });
});

// ---------------------------------------------------------------------------------------------
// Workers' results and reconciliation

const base = { commandId: 'cmd-9', experimentId: ID, at: at(50), correlationId: 'corr-9' };
const results: {
  result: WorkerResult;
  expected: { command: Record<string, unknown>; commandId: string }[];
}[] = [
  {
    result: { ...base, type: 'VariantDeployed', variant: 'baseline', detail: { pods: 4 } },
    expected: [
      {
        command: { type: 'RecordVariantDeployed', variant: 'baseline', detail: { pods: 4 }, at: at(50) },
        commandId: 'result:cmd-9',
      },
    ],
  },
  {
    result: { ...base, type: 'VariantDeployFailed', variant: 'candidate', reason: 'quota' },
    expected: [
      {
        command: { type: 'RecordVariantDeploymentFailed', variant: 'candidate', reason: 'quota', at: at(50) },
        commandId: 'result:cmd-9',
      },
    ],
  },
  {
    result: { ...base, type: 'ExperimentTornDown', variants: ['baseline', 'candidate'] },
    expected: [
      {
        command: { type: 'RecordVariantTornDown', variant: 'baseline', at: at(50) },
        commandId: 'result:cmd-9:baseline',
      },
      {
        command: { type: 'RecordVariantTornDown', variant: 'candidate', at: at(50) },
        commandId: 'result:cmd-9:candidate',
      },
    ],
  },
  {
    result: { ...base, type: 'AnalysisCompleted', analysis },
    expected: [{ command: { type: 'RecordAnalysis', analysis, at: at(50) }, commandId: 'result:cmd-9' }],
  },
  {
    result: { ...base, type: 'AnalysisFailed', reason: 'no series' },
    expected: [
      {
        command: { type: 'FailExperiment', reason: 'analysis failed: no series', at: at(50) },
        commandId: 'result:cmd-9',
      },
    ],
  },
];

describe('Lifecycle saga: every worker result', () => {
  for (const { result, expected } of results) {
    it(`${result.type} → [${expected.map((t) => t.command.type).join(', ')}], ids from the answered command`, () => {
      const r = react(undefined, { type: 'result', result });
      assert.deepEqual(r.timers, []);
      assert.deepEqual(
        r.commands,
        expected.map((t) => ({
          kind: 'experiment',
          experimentId: ID,
          command: t.command,
          commandId: t.commandId,
          causationId: 'cmd-9',
          correlationId: 'corr-9',
          actor: SAGA_ACTOR,
        })),
      );
    });
  }

  it('a result without a correlation id is correlated by the command it answers', () => {
    const { correlationId: _, ...uncorrelated } = base;
    const [c] = react(undefined, {
      type: 'result',
      result: { ...uncorrelated, type: 'AnalysisFailed', reason: 'x' },
    }).commands;
    assert.equal(c?.kind === 'experiment' && c.correlationId, 'cmd-9');
  });
});

describe('Lifecycle saga: reconciliation answers', () => {
  const verified = (present: ('baseline' | 'candidate')[]) => ({
    ...base,
    type: 'DeploymentVerified' as const,
    present,
    missing: (['baseline', 'candidate'] as const).filter((v) => !present.includes(v)),
  });
  const when = (where: string, present: ('baseline' | 'candidate')[]) =>
    react(undefined, {
      type: 'reconciliation',
      result: verified(present),
      experiment: fold(experiments[where]!),
    });

  it('initializing: what is not recorded and held is deployed again, ids from the question', () => {
    const r = when('initializing', ['baseline']);
    assert.deepEqual(
      r.commands.map(
        (c) => c.kind === 'worker' && [c.command.type, c.command.purpose, c.command.causationId],
      ),
      [['DeployVariant', 'redeploy:candidate', 'cmd-9']],
    );
    assert.equal(r.why, 'no answer recorded for the candidate variant; deploying again');
    const lost = when('initializing', []);
    assert.deepEqual(
      lost.commands.map(
        (c) => c.kind === 'worker' && c.command.type === 'DeployVariant' && c.command.variant,
      ),
      ['baseline', 'candidate'],
    );
    assert.match(lost.why ?? '', /no longer holds the baseline variant/);
  });

  it('running or analyzing with a variant gone: the reconciler fails the experiment, naming it', () => {
    for (const where of ['running', 'analyzing, first attempt']) {
      const r = when(where, ['baseline']);
      assert.equal(r.commands.length, 1);
      const [c] = r.commands;
      assert.ok(c?.kind === 'experiment');
      assert.equal(c.actor, RECONCILER_ACTOR);
      assert.equal(c.commandId, 'result:cmd-9');
      assert.equal(c.correlationId, 'corr-9');
      assert.equal(c.command.type, 'FailExperiment');
      assert.match(
        c.command.type === 'FailExperiment' ? c.command.reason : '',
        /no longer holds the candidate variant/,
      );
      assert.equal(c.command.at, at(50));
    }
  });

  it('everything held, or nothing to reconcile: no commands', () => {
    for (const where of Object.keys(experiments)) {
      if (where === 'initializing') continue;
      const r = when(where, ['baseline', 'candidate']);
      assert.deepEqual(r.commands, [], where);
      assert.deepEqual(r.timers, []);
    }
    for (const where of ['empty', 'pending', 'completed', 'failed', 'cancelled'])
      assert.deepEqual(when(where, []).commands, [], where);
  });
});

describe('Lifecycle saga: the start-up sweep, every saga state', () => {
  const when = (state: SagaState) =>
    react(undefined, { type: 'held', experimentId: ID, namespace: 'ns-held', state, sweep: 'sweep:run-1' });
  const expected: Record<SagaStateName, string> = {
    unknown: 'nothing: not the saga’s to judge',
    created: 'nothing: in flight',
    started: 'nothing: in flight',
    running: 'nothing: in flight',
    ended: 'TeardownExperiment',
  };

  for (const name of SAGA_STATE_NAMES) {
    it(`objects of an experiment the saga knows as ${name} → ${expected[name]}`, () => {
      const r = when(sagaStates[name]);
      assert.deepEqual(r.timers, []);
      if (name !== 'ended') {
        assert.deepEqual(r.commands, []);
        if (name === 'unknown') assert.match(r.why ?? '', /not an experiment this saga knows/);
        return;
      }
      assert.deepEqual(
        r.commands.map((c) => c.kind === 'worker' && c.command),
        [
          {
            type: 'TeardownExperiment',
            experimentId: ID,
            // Where the objects were found, which is where they are removed.
            namespace: 'ns-held',
            causationId: 'sweep:run-1',
            purpose: ID,
            correlationId: ID,
          },
        ],
      );
    });
  }

  it('the same sweep decides the same teardown; another sweep another one', () => {
    const ended = sagaStates.ended;
    assert.deepEqual(when(ended), when(ended));
    const other = react(undefined, {
      type: 'held',
      experimentId: ID,
      namespace: 'ns-held',
      state: ended,
      sweep: 'sweep:run-2',
    });
    const causes = [when(ended), other].map((r) =>
      r.commands.map((c) => c.kind === 'worker' && c.command.causationId),
    );
    assert.deepEqual(causes, [['sweep:run-1'], ['sweep:run-2']]);
  });
});

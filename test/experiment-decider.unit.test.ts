import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decide,
  type Experiment,
  ExperimentAlreadyExistsError,
  type ExperimentCommand,
  type ExperimentEvent,
  type ExperimentEventType,
  ExperimentNotFoundError,
  type ExperimentStatus,
  fold,
  InvalidTransitionError,
  NoEvidenceError,
  RunNotFinishedError,
  STATUSES,
} from '../src/domain/experiment.js';
import type { Analysis, ExperimentSpec } from '../src/domain/experiment-spec.js';

const ID = '0b6f1c2e-2f0a-4a59-9d3e-1d2a3b4c5d6e';
const T0 = '2026-01-01T00:00:00.000Z';
const at = (s: number) => new Date(Date.parse(T0) + s * 1000).toISOString();

const spec: ExperimentSpec = {
  name: 'topk vs baseline',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-topk-v1', params: { k: 20 } },
  target: { namespace: 'phoenix-experiments', nodeSelector: { pool: 'a' }, hosts: 10 },
  durationSeconds: 600,
  criticalProcesses: ['^postgres$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};

const analysis = (verdict: Analysis['verdict']): Analysis => ({
  verdict,
  reasons: verdict === 'pass' ? [] : ['cardinality reduction 12% < 50%'],
  baseline: { series: 1000, datapointsPerMinute: 1000 },
  candidate: { series: 880, datapointsPerMinute: 880 },
  cardinalityReductionPct: 12,
  datapointReductionPct: 12,
  criticalProcessLossPct: 0,
  missingCriticalProcesses: [],
  // What judge stores and a re-judge reads back (domain/verdict.ts evidenceOf).
  evidence: {
    figures: {
      baseline: {
        series: 1000,
        datapointsPerMinute: 1000,
        collectorCpuCores: 0.1,
        collectorMemoryBytes: 6e7,
      },
      candidate: { series: 880, datapointsPerMinute: 880, collectorCpuCores: 0.1, collectorMemoryBytes: 6e7 },
    },
    criticalInBaseline: 4,
  },
});

const created: ExperimentEvent = { type: 'ExperimentCreated', data: { experimentId: ID, spec, at: at(0) } };
const started: ExperimentEvent = { type: 'ExperimentStarted', data: { at: at(1) } };
const baselineUp: ExperimentEvent = { type: 'VariantDeployed', data: { variant: 'baseline', at: at(2) } };
const candidateUp: ExperimentEvent = { type: 'VariantDeployed', data: { variant: 'candidate', at: at(3) } };
const runStarted: ExperimentEvent = {
  type: 'ExperimentRunStarted',
  data: { at: at(3), runEndsAt: at(603), reason: 'both variants deployed' },
};
const runCompleted: ExperimentEvent = { type: 'ExperimentRunCompleted', data: { at: at(603) } };

/** One history per status: the given() of every row below. */
const histories: Record<ExperimentStatus | 'empty', ExperimentEvent[]> = {
  empty: [],
  pending: [created],
  initializing: [created, started],
  running: [created, started, baselineUp, candidateUp, runStarted],
  analyzing: [created, started, baselineUp, candidateUp, runStarted, runCompleted],
  completed: [
    created,
    started,
    baselineUp,
    candidateUp,
    runStarted,
    runCompleted,
    { type: 'AnalysisRecorded', data: { at: at(604), analysis: analysis('pass') } },
    { type: 'ExperimentCompleted', data: { at: at(604), reason: 'success criteria met' } },
  ],
  failed: [
    created,
    started,
    baselineUp,
    candidateUp,
    runStarted,
    runCompleted,
    { type: 'AnalysisRecorded', data: { at: at(604), analysis: analysis('fail') } },
    { type: 'ExperimentFailed', data: { at: at(604), reason: 'analysis fail' } },
  ],
  cancelled: [created, { type: 'ExperimentCancelled', data: { at: at(1), reason: 'not needed' } }],
};

type Outcome = ExperimentEventType[] | 'invalid';

interface Row {
  readonly command: ExperimentCommand;
  /** Outcome per status; a status not listed is an InvalidTransitionError. */
  readonly outcomes: Partial<Record<ExperimentStatus, ExperimentEventType[]>>;
}

const T = at(1000);
const rows: Row[] = [
  { command: { type: 'StartExperiment', at: T }, outcomes: { pending: ['ExperimentStarted'] } },
  {
    command: { type: 'RecordVariantDeployed', variant: 'baseline', at: T },
    outcomes: {
      initializing: ['VariantDeployed'],
      running: [],
      analyzing: [],
      completed: [],
      failed: [],
      cancelled: ['VariantDeployed'],
    },
  },
  {
    command: {
      type: 'RecordVariantDeploymentFailed',
      variant: 'baseline',
      reason: 'ImagePullBackOff',
      at: T,
    },
    outcomes: {
      initializing: ['VariantDeploymentFailed', 'ExperimentFailed'],
      running: [],
      analyzing: [],
      completed: [],
      failed: [],
      cancelled: ['VariantDeploymentFailed'],
    },
  },
  {
    command: { type: 'MarkExperimentRunning', reason: 'resources found', at: T },
    outcomes: { initializing: ['ExperimentRunStarted'] },
  },
  { command: { type: 'CompleteRun', at: at(603) }, outcomes: { running: ['ExperimentRunCompleted'] } },
  {
    command: { type: 'RecordAnalysis', analysis: analysis('pass'), at: T },
    outcomes: { analyzing: ['AnalysisRecorded', 'ExperimentCompleted'] },
  },
  {
    command: { type: 'RecordAnalysis', analysis: analysis('fail'), at: T },
    outcomes: { analyzing: ['AnalysisRecorded', 'ExperimentFailed'] },
  },
  {
    command: { type: 'RecordAnalysis', analysis: analysis('inconclusive'), at: T },
    outcomes: { analyzing: ['AnalysisRecorded', 'ExperimentFailed'] },
  },
  {
    command: { type: 'RetryAnalysis', reason: 'no data yet', at: T },
    outcomes: { analyzing: ['AnalysisRetried'] },
  },
  {
    command: { type: 'ExtendRuntime', extraSeconds: 300, reason: 'not enough data', at: T },
    outcomes: { running: ['ExperimentRuntimeExtended'], analyzing: ['ExperimentRuntimeExtended'] },
  },
  {
    command: { type: 'CancelExperiment', reason: 'changed my mind', at: T },
    outcomes: {
      pending: ['ExperimentCancelled'],
      initializing: ['ExperimentCancelled'],
      running: ['ExperimentCancelled'],
    },
  },
  {
    command: { type: 'FailExperiment', reason: 'collector crashed', at: T },
    outcomes: {
      initializing: ['ExperimentFailed'],
      running: ['ExperimentFailed'],
      analyzing: ['ExperimentFailed'],
    },
  },
  {
    command: {
      type: 'RejudgeAnalysis',
      actor: 'alice',
      criteria: { ...spec.successCriteria, minCardinalityReductionPct: 10 },
      at: T,
    },
    outcomes: { completed: ['AnalysisRejudged'], failed: ['AnalysisRejudged'] },
  },
  {
    command: { type: 'RecordVariantTornDown', variant: 'baseline', at: T },
    outcomes: { completed: ['VariantTornDown'], failed: ['VariantTornDown'], cancelled: ['VariantTornDown'] },
  },
];

describe('Experiment decider: every status × every command', () => {
  for (const row of rows) {
    for (const status of STATUSES) {
      const expected: Outcome = row.outcomes[status] ?? 'invalid';
      const label = `${status} + ${row.command.type}${'variant' in row.command ? `(${row.command.variant})` : ''}${
        row.command.type === 'RecordAnalysis' ? `(${row.command.analysis.verdict})` : ''
      } → ${expected === 'invalid' ? 'InvalidTransitionError' : `[${expected.join(', ')}]`}`;
      it(label, () => {
        const state = fold(histories[status]);
        assert.equal(state.status, status);
        if (expected === 'invalid') {
          assert.throws(
            () => decide(row.command, state),
            (err: unknown) =>
              err instanceof InvalidTransitionError &&
              err.actual === status &&
              err.command === row.command.type &&
              err.message.includes(`'${status}'`),
          );
        } else {
          assert.deepEqual(
            decide(row.command, state).map((e) => e.type),
            expected,
          );
        }
      });
    }
    it(`empty + ${row.command.type} → ExperimentNotFoundError`, () => {
      assert.throws(() => decide(row.command, fold([])), ExperimentNotFoundError);
    });
  }

  it('empty + CreateExperiment → [ExperimentCreated] carrying the spec, id and time', () => {
    const events = decide({ type: 'CreateExperiment', experimentId: ID, spec, at: T0 }, fold([]));
    assert.deepEqual(events, [created]);
  });

  for (const status of STATUSES) {
    it(`${status} + CreateExperiment → ExperimentAlreadyExistsError`, () => {
      assert.throws(
        () => decide({ type: 'CreateExperiment', experimentId: ID, spec, at: T }, fold(histories[status])),
        ExperimentAlreadyExistsError,
      );
    });
  }
});

describe('Experiment decider: the rules behind the transitions', () => {
  it('the second variant deployed starts the run, ending after the duration', () => {
    const state = fold([created, started, baselineUp]);
    const events = decide({ type: 'RecordVariantDeployed', variant: 'candidate', at: at(5) }, state);
    assert.deepEqual(events[1], {
      type: 'ExperimentRunStarted',
      data: { at: at(5), runEndsAt: at(605), reason: 'both variants deployed' },
    });
    assert.equal(fold(events, state).status, 'running');
  });

  it('the same deployed answer twice leads to one event', () => {
    const state = fold([created, started, baselineUp]);
    assert.deepEqual(decide({ type: 'RecordVariantDeployed', variant: 'baseline', at: at(9) }, state), []);
  });

  it('a run cannot complete before its end', () => {
    const state = fold(histories.running);
    assert.throws(() => decide({ type: 'CompleteRun', at: at(602) }, state), RunNotFinishedError);
  });

  it('extending an analyzing experiment sends it back to running with a later end', () => {
    const state = fold(histories.analyzing);
    const events = decide(
      { type: 'ExtendRuntime', extraSeconds: 300, reason: 'no data', at: at(700) },
      state,
    );
    const after = fold(events, state) as Extract<Experiment, { id: string }>;
    assert.equal(after.status, 'running');
    assert.equal(after.runEndsAt, at(1000));
  });

  it('a failing analysis fails the experiment with its reasons', () => {
    const state = fold(histories.analyzing);
    const events = decide({ type: 'RecordAnalysis', analysis: analysis('fail'), at: at(700) }, state);
    const after = fold(events, state) as Extract<Experiment, { id: string }>;
    assert.equal(after.status, 'failed');
    assert.match(after.statusReason ?? '', /cardinality reduction 12% < 50%/);
    assert.equal(after.analysis?.verdict, 'fail');
  });

  it('a deployment failure while initializing fails the experiment naming the variant', () => {
    const state = fold(histories.initializing);
    const events = decide(
      { type: 'RecordVariantDeploymentFailed', variant: 'candidate', reason: 'quota exceeded', at: at(5) },
      state,
    );
    const after = fold(events, state) as Extract<Experiment, { id: string }>;
    assert.equal(after.status, 'failed');
    assert.equal(after.statusReason, 'candidate deployment failed: quota exceeded');
  });

  it('decide and evolve are pure: the same input gives the same output, the state is not mutated', () => {
    const state = fold(histories.running);
    const snapshot = structuredClone(state);
    const cmd: ExperimentCommand = { type: 'CancelExperiment', at: T };
    assert.deepEqual(decide(cmd, state), decide(cmd, state));
    fold(decide(cmd, state), state);
    assert.deepEqual(state, snapshot);
  });
});

describe('Experiment decider: re-judging a finished experiment (issue 20 §3)', () => {
  const rejudge = (minCardinalityReductionPct: number): ExperimentCommand => ({
    type: 'RejudgeAnalysis',
    actor: 'alice',
    criteria: { ...spec.successCriteria, minCardinalityReductionPct },
    at: T,
  });

  it('given a failed verdict, when judged with a lower bar, then the new verdict is recorded beside the original', () => {
    const given = histories.failed;
    const events = decide(rejudge(10), fold(given));
    assert.equal(events.length, 1);
    const [event] = events;
    assert.equal(event?.type, 'AnalysisRejudged');
    if (event?.type !== 'AnalysisRejudged') return;
    assert.equal(event.data.actor, 'alice');
    assert.equal(event.data.analysis.verdict, 'pass', event.data.analysis.reasons.join(' | '));
    assert.equal(event.data.criteria.minCardinalityReductionPct, 10);

    const after = fold([...given, ...events]);
    assert.ok(after.status === 'failed', 'a re-judge changes no state');
    assert.equal(after.analysis?.verdict, 'fail', 'the original verdict stays');
    assert.deepEqual(
      after.rejudgements?.map((r) => [r.actor, r.at, r.analysis.verdict]),
      [['alice', T, 'pass']],
    );
  });

  it('re-judgements accumulate, oldest first', () => {
    const first = decide(rejudge(10), fold(histories.completed));
    const second = decide(rejudge(90), fold([...histories.completed, ...first]));
    const after = fold([...histories.completed, ...first, ...second]);
    assert.ok(after.status !== 'empty');
    assert.deepEqual(
      after.rejudgements?.map((r) => r.analysis.verdict),
      ['pass', 'fail'],
    );
    assert.equal(after.analysis?.verdict, 'pass');
  });

  it('an experiment that failed before any analysis has nothing to re-judge: NoEvidenceError', () => {
    const failedEarly = fold([
      created,
      started,
      { type: 'ExperimentFailed', data: { at: at(10), reason: 'node lost' } },
    ]);
    assert.throws(
      () => decide(rejudge(10), failedEarly),
      (err: unknown) => err instanceof NoEvidenceError && err.code === 'no_evidence',
    );
  });

  it('an analysis recorded without evidence (before it was kept) cannot be re-judged', () => {
    const { evidence: _none, ...bare } = analysis('pass');
    const state = fold([
      ...histories.analyzing,
      { type: 'AnalysisRecorded', data: { at: at(604), analysis: bare } },
      { type: 'ExperimentCompleted', data: { at: at(604), reason: 'success criteria met' } },
    ]);
    assert.throws(() => decide(rejudge(10), state), NoEvidenceError);
  });
});

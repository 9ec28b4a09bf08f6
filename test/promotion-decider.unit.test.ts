import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decide,
  type Experiment,
  type ExperimentCommand,
  type ExperimentEvent,
  fold,
  InvalidTransitionError,
  PromotionNotAllowedError,
} from '../src/domain/experiment.js';
import type { Analysis, ExperimentSpec } from '../src/domain/experiment-spec.js';

/**
 * The promotion's steps on the Experiment aggregate, given/when/then: given the events so far, when a
 * command, then the events it writes or the typed error (every promotion status × every command).
 */
const at = (s: number) => new Date(Date.UTC(2026, 0, 1) + s * 1000).toISOString();
const spec: ExperimentSpec = {
  name: 'x',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-minimal-v1', params: {} },
  target: { namespace: 'ns', nodeSelector: {}, hosts: 2 },
  durationSeconds: 1,
  criticalProcesses: [],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};
const analysis = (verdict: Analysis['verdict']): Analysis => ({
  verdict,
  reasons: [],
  baseline: { series: 10, datapointsPerMinute: 10 },
  candidate: { series: 2, datapointsPerMinute: 2 },
  cardinalityReductionPct: 80,
  datapointReductionPct: 80,
  criticalProcessLossPct: 0,
  missingCriticalProcesses: [],
});
const ended = (verdict: Analysis['verdict']): ExperimentEvent[] => [
  { type: 'ExperimentCreated', data: { at: at(0), experimentId: 'e', spec } },
  { type: 'ExperimentStarted', data: { at: at(1) } },
  { type: 'ExperimentRunStarted', data: { at: at(2), runEndsAt: at(3), reason: 'r' } },
  { type: 'ExperimentRunCompleted', data: { at: at(3) } },
  { type: 'AnalysisRecorded', data: { at: at(4), analysis: analysis(verdict) } },
  verdict === 'pass'
    ? { type: 'ExperimentCompleted', data: { at: at(4), reason: 'met' } }
    : { type: 'ExperimentFailed', data: { at: at(4), reason: 'not met' } },
];
const e = {
  requested: { type: 'PromotionRequested', data: { at: at(5), actor: 'olga' } },
  committed: { type: 'PromotionCommitted', data: { at: at(6), repository: 'r', path: 'p', commit: 'c1' } },
  rolledOut: { type: 'PromotionRolledOut', data: { at: at(7) } },
  failed: { type: 'PromotionFailed', data: { at: at(7), reason: 'x' } },
  rollback: { type: 'RollbackRequested', data: { at: at(8), actor: 'olga' } },
  rollbackCommitted: { type: 'RollbackCommitted', data: { at: at(9), commit: 'c2' } },
  rolledBack: { type: 'RolledBack', data: { at: at(10) } },
  rollbackFailed: { type: 'RollbackFailed', data: { at: at(10), reason: 'y' } },
} satisfies Record<string, ExperimentEvent>;

const pass = ended('pass');
/** Given: the experiment at each promotion status. */
const given: Record<string, ExperimentEvent[]> = {
  none: pass,
  requested: [...pass, e.requested],
  committed: [...pass, e.requested, e.committed],
  rolled_out: [...pass, e.requested, e.committed, e.rolledOut],
  failed: [...pass, e.requested, e.failed],
  rollback_requested: [...pass, e.requested, e.committed, e.rolledOut, e.rollback],
  rollback_committed: [...pass, e.requested, e.committed, e.rolledOut, e.rollback, e.rollbackCommitted],
  rolled_back: [
    ...pass,
    e.requested,
    e.committed,
    e.rolledOut,
    e.rollback,
    e.rollbackCommitted,
    e.rolledBack,
  ],
  rollback_failed: [...pass, e.requested, e.committed, e.rolledOut, e.rollback, e.rollbackFailed],
};
const T = at(20);
const when: Record<string, ExperimentCommand> = {
  promote: { type: 'RequestPromotion', actor: 'olga', at: T },
  committed: { type: 'RecordPromotionCommitted', repository: 'r', path: 'p', commit: 'c1', at: T },
  rolledOut: { type: 'RecordPromotionRolledOut', at: T },
  failed: { type: 'RecordPromotionFailed', reason: 'x', at: T },
  rollback: { type: 'RequestRollback', actor: 'olga', at: T },
  rollbackCommitted: { type: 'RecordRollbackCommitted', commit: 'c2', at: T },
  rolledBack: { type: 'RecordRolledBack', at: T },
  rollbackFailed: { type: 'RecordRollbackFailed', reason: 'y', at: T },
};
/** Then: the event type written, [] (a repeat: nothing), or 'refused'. */
const then: Record<string, Record<string, string | []>> = {
  none: { promote: 'PromotionRequested' },
  requested: { committed: 'PromotionCommitted', failed: 'PromotionFailed' },
  committed: {
    committed: [],
    rolledOut: 'PromotionRolledOut',
    failed: 'PromotionFailed',
    rollback: 'RollbackRequested',
  },
  rolled_out: { committed: [], rolledOut: [], rollback: 'RollbackRequested' },
  failed: { promote: 'PromotionRequested', failed: [] },
  rollback_requested: {
    rollbackCommitted: 'RollbackCommitted',
    rollbackFailed: 'RollbackFailed',
    committed: [],
  },
  rollback_committed: {
    rollbackCommitted: [],
    rolledBack: 'RolledBack',
    rollbackFailed: 'RollbackFailed',
    committed: [],
  },
  rolled_back: { promote: 'PromotionRequested', rolledBack: [], rollbackCommitted: [], committed: [] },
  rollback_failed: { rollback: 'RollbackRequested', rollbackFailed: [], committed: [] },
};

describe('Experiment decider: promotion status × promotion command', () => {
  for (const [status, events] of Object.entries(given)) {
    for (const [name, command] of Object.entries(when)) {
      const expected = then[status]?.[name] ?? 'refused';
      it(`${status} + ${command.type} → ${JSON.stringify(expected)}`, () => {
        const state: Experiment = fold(events);
        if (expected === 'refused') {
          assert.throws(() => decide(command, state), PromotionNotAllowedError);
          return;
        }
        const written = decide(command, state);
        assert.deepEqual(
          written.map((w) => w.type),
          Array.isArray(expected) ? [] : [expected],
        );
      });
    }
  }

  it('only a pass is promoted, and only once the experiment completed', () => {
    for (const verdict of ['fail', 'inconclusive'] as const) {
      assert.throws(() => decide(when.promote!, fold(ended(verdict))), InvalidTransitionError);
    }
    const running = fold(ended('pass').slice(0, 3));
    assert.throws(
      () => decide(when.promote!, running),
      (err: unknown) => err instanceof InvalidTransitionError && err.actual === 'running',
    );
  });

  it('folds the promotion for the resource: who, where, which commit, the revert', () => {
    const s = fold(given.rolled_back!);
    assert.ok(s.status === 'completed');
    assert.deepEqual(
      { ...s.promotion, rollout: undefined },
      {
        status: 'rolled_back',
        requestedBy: 'olga',
        requestedAt: at(5),
        at: at(10),
        repository: 'r',
        path: 'p',
        commit: 'c1',
        reason: undefined,
        revertCommit: 'c2',
        rollbackRequestedBy: 'olga',
        rollout: undefined,
      },
    );
  });
});

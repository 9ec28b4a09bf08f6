import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Experiment, type ExperimentEvent, fold } from '../src/domain/experiment.js';
import type { ExperimentSpec, Variant } from '../src/domain/experiment-spec.js';
import { reconcile } from '../src/domain/lifecycle-saga.js';

/** Reconciliation's decision for every status × what the deployer still holds. */
const spec = {
  name: 'r',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-minimal-v1', params: {} },
  target: { namespace: 'ns', nodeSelector: {}, hosts: 1 },
  durationSeconds: 60,
  criticalProcesses: [],
  successCriteria: {
    minCardinalityReductionPct: 1,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
} as unknown as ExperimentSpec;

const at = '2026-01-01T00:00:00.000Z';
const created: ExperimentEvent = { type: 'ExperimentCreated', data: { at, experimentId: 'x', spec } };
const started: ExperimentEvent = { type: 'ExperimentStarted', data: { at } };
const deployed = (variant: Variant): ExperimentEvent => ({ type: 'VariantDeployed', data: { at, variant } });
const runStarted: ExperimentEvent = {
  type: 'ExperimentRunStarted',
  data: { at, runEndsAt: '2026-01-01T00:01:00.000Z', reason: 'both variants deployed' },
};
const given = (...events: ExperimentEvent[]): Experiment => fold(events);
const both: Variant[] = ['baseline', 'candidate'];

describe('reconcile', () => {
  it('initializing: deploys again whatever is not both recorded and held', () => {
    assert.deepEqual(reconcile(given(created, started), []), {
      action: 'redeploy',
      variants: both,
      reason: 'no answer recorded for the baseline and candidate variants; deploying again',
    });
    const oneRecorded = given(created, started, deployed('baseline'));
    assert.deepEqual(reconcile(oneRecorded, ['baseline']), {
      action: 'redeploy',
      variants: ['candidate'],
      reason: 'no answer recorded for the candidate variant; deploying again',
    });
    assert.deepEqual(reconcile(oneRecorded, []), {
      action: 'redeploy',
      variants: both,
      reason: 'the data plane no longer holds the baseline variant; deploying again before the run starts',
    });
    assert.deepEqual(reconcile(given(created, started, deployed('baseline'), deployed('candidate')), both), {
      action: 'none',
    });
  });

  it('running and analyzing: a lost variant fails the experiment, naming it; all held is adopted', () => {
    const running = given(created, started, deployed('baseline'), deployed('candidate'), runStarted);
    assert.deepEqual(reconcile(running, both), { action: 'none' });
    const lostOne = reconcile(running, ['baseline']);
    assert.equal(lostOne.action, 'fail');
    assert.match(
      lostOne.action === 'fail' ? lostOne.reason : '',
      /no longer holds the candidate variant; the run's data since 2026-01-01T00:00:00.000Z is lost/,
    );
    const analyzing = fold([{ type: 'ExperimentRunCompleted', data: { at } }], running);
    assert.equal(analyzing.status, 'analyzing');
    const lostBoth = reconcile(analyzing, []);
    assert.match(lostBoth.action === 'fail' ? lostBoth.reason : '', /the baseline and candidate variants/);
  });

  it('pending and ended experiments: nothing to reconcile', () => {
    const ends: ExperimentEvent[] = [
      { type: 'ExperimentCancelled', data: { at, reason: 'r' } },
      { type: 'ExperimentFailed', data: { at, reason: 'r' } },
      { type: 'ExperimentCompleted', data: { at, reason: 'r' } },
    ];
    assert.deepEqual(reconcile(given(), []), { action: 'none' });
    assert.deepEqual(reconcile(given(created), []), { action: 'none' });
    for (const end of ends)
      assert.deepEqual(reconcile(given(created, started, deployed('baseline'), end), []), { action: 'none' });
  });
});

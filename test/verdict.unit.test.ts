import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SuccessCriteria } from '../src/domain/experiment-spec.js';
import { judge, type Measurements, reductionPct, type VariantMeasurement } from '../src/domain/verdict.js';

const criteria: SuccessCriteria = {
  minCardinalityReductionPct: 50,
  maxCriticalProcessLossPct: 0,
  maxCollectorCpuOverheadPct: 10,
};

const variant = (over: Partial<VariantMeasurement> = {}): VariantMeasurement => ({
  series: 1000,
  datapointsPerMinute: 1000,
  collectorCpuCores: 0.1,
  collectorMemoryBytes: 64e6,
  ...over,
});

const CRITICAL_PAIRS = ['node-1/postgres', 'node-2/postgres', 'node-1/sshd', 'node-2/sshd'];

const measured = (over: Partial<Measurements> = {}): Measurements => ({
  baseline: variant(),
  candidate: variant({ series: 300, datapointsPerMinute: 250, collectorCpuCores: 0.105 }),
  criticalInBaseline: CRITICAL_PAIRS,
  missingCriticalProcesses: [],
  evidence: { queries: { series: 'count(...)' } },
  ...over,
});

interface Case {
  readonly name: string;
  readonly measurements: Measurements;
  readonly criteria?: Partial<SuccessCriteria>;
  readonly critical?: readonly string[];
  readonly verdict: 'pass' | 'fail' | 'inconclusive';
  /** A fragment the first reason (the deciding one) contains. */
  readonly because: string;
  readonly loss?: number | null;
}

const cases: Case[] = [
  {
    name: 'every criterion met',
    measurements: measured(),
    verdict: 'pass',
    because: 'critical processes lost (0%',
  },
  {
    name: 'reduction exactly at the threshold passes',
    measurements: measured({ candidate: variant({ series: 500, collectorCpuCores: 0.1 }) }),
    verdict: 'pass',
    because: '',
  },
  {
    name: 'reduction below the threshold fails',
    measurements: measured({ candidate: variant({ series: 501, collectorCpuCores: 0.1 }) }),
    verdict: 'fail',
    because: 'cardinality reduced by 49.9%, below the required 50%',
  },
  {
    name: 'a candidate with more series than the baseline fails (negative reduction)',
    measurements: measured({ candidate: variant({ series: 1200 }) }),
    verdict: 'fail',
    because: 'cardinality reduced by -20%',
  },
  {
    name: 'one critical process lost with 0% allowed fails and names it',
    measurements: measured({ missingCriticalProcesses: ['node-2/sshd'] }),
    verdict: 'fail',
    because: '1 of 4 critical processes lost (25%, at most 0% allowed): node-2/sshd',
    loss: 25,
  },
  {
    name: 'critical loss within the allowance passes',
    measurements: measured({ missingCriticalProcesses: ['node-2/sshd'] }),
    criteria: { maxCriticalProcessLossPct: 25 },
    verdict: 'pass',
    because: '',
    loss: 25,
  },
  {
    name: 'critical loss fails even when collector CPU has no data',
    measurements: measured({
      missingCriticalProcesses: ['node-1/postgres'],
      candidate: variant({ series: 100, collectorCpuCores: null }),
    }),
    verdict: 'fail',
    because: 'critical processes lost',
    loss: 25,
  },
  {
    name: 'no data for the candidate is inconclusive, never a pass',
    measurements: measured({
      candidate: {
        series: null,
        datapointsPerMinute: null,
        collectorCpuCores: null,
        collectorMemoryBytes: null,
      },
    }),
    verdict: 'inconclusive',
    because: 'a variant has no data',
    loss: null,
  },
  {
    name: 'no data for the baseline is inconclusive',
    measurements: measured({
      baseline: {
        series: null,
        datapointsPerMinute: null,
        collectorCpuCores: null,
        collectorMemoryBytes: null,
      },
      criticalInBaseline: null,
    }),
    verdict: 'inconclusive',
    because: 'a variant has no data',
    loss: null,
  },
  {
    name: 'a baseline that exported no series is inconclusive (nothing to reduce)',
    measurements: measured({
      baseline: variant({ series: 0 }),
      candidate: variant({ series: 0 }),
      criticalInBaseline: CRITICAL_PAIRS,
    }),
    verdict: 'inconclusive',
    because: 'the baseline exported no process series',
  },
  {
    name: 'critical patterns that match nothing in the baseline are inconclusive',
    measurements: measured({ criticalInBaseline: [] }),
    verdict: 'inconclusive',
    because: 'no baseline process matched the critical patterns',
    loss: null,
  },
  {
    name: 'no critical patterns at all: the check is vacuous and passes',
    measurements: measured({ criticalInBaseline: [] }),
    critical: [],
    verdict: 'pass',
    because: '',
    loss: 0,
  },
  {
    name: 'collector CPU over the allowed overhead fails',
    measurements: measured({ candidate: variant({ series: 100, collectorCpuCores: 0.111 }) }),
    verdict: 'fail',
    because: 'collector CPU 11% above the baseline',
  },
  {
    name: 'collector CPU not measured is inconclusive',
    measurements: measured({ baseline: variant({ collectorCpuCores: null }) }),
    verdict: 'inconclusive',
    because: 'no collector CPU data for the baseline',
  },
  {
    name: 'a cheaper candidate collector passes',
    measurements: measured({ candidate: variant({ series: 100, collectorCpuCores: 0.05 }) }),
    verdict: 'pass',
    because: '',
  },
  {
    name: 'a failure outranks missing data elsewhere',
    measurements: measured({
      candidate: variant({ series: 900, collectorCpuCores: null }),
    }),
    verdict: 'fail',
    because: 'below the required',
  },
];

describe('judge (the verdict)', () => {
  for (const c of cases) {
    it(c.name, () => {
      const analysis = judge({
        criteria: { ...criteria, ...c.criteria },
        criticalProcesses: c.critical ?? ['^postgres$', '^sshd$'],
        measurements: c.measurements,
      });
      assert.equal(analysis.verdict, c.verdict, analysis.reasons.join(' | '));
      assert.ok(analysis.reasons[0]?.includes(c.because), `first reason: ${analysis.reasons[0]}`);
      assert.equal(analysis.reasons.length, 3, 'one reason per criterion');
      if (c.loss !== undefined) assert.equal(analysis.criticalProcessLossPct, c.loss);
      assert.deepEqual(analysis.missingCriticalProcesses, c.measurements.missingCriticalProcesses);
    });
  }

  it('keeps the evidence: queries, per-variant figures, checks and reductions', () => {
    const analysis = judge({ criteria, criticalProcesses: ['^sshd$'], measurements: measured() });
    assert.equal(analysis.cardinalityReductionPct, 70);
    assert.equal(analysis.datapointReductionPct, 75);
    assert.deepEqual(analysis.baseline, { series: 1000, datapointsPerMinute: 1000 });
    assert.deepEqual(analysis.candidate, { series: 300, datapointsPerMinute: 250 });
    const evidence = analysis.evidence as Record<string, unknown>;
    assert.deepEqual(evidence.queries, { series: 'count(...)' });
    assert.equal(evidence.collectorCpuOverheadPct, 5);
    assert.equal(evidence.criticalInBaseline, 4);
    assert.equal(evidence.checks, undefined, 'the criteria table is analysis.checks, not kept twice');
    assert.deepEqual(
      (analysis.checks ?? []).map((k) => [k.criterion, k.outcome]),
      [
        ['maxCriticalProcessLossPct', 'pass'],
        ['minCardinalityReductionPct', 'pass'],
        ['maxCollectorCpuOverheadPct', 'pass'],
      ],
    );
  });

  it('is deterministic: the same input gives the same analysis', () => {
    const input = { criteria, criticalProcesses: ['^sshd$'], measurements: measured() };
    assert.deepEqual(judge(input), judge(input));
  });
});

describe('reductionPct', () => {
  const table: [number | null, number | null, number | null][] = [
    [100, 25, 75],
    [3, 1, 66.67],
    [100, 100, 0],
    [100, 150, -50],
    [0, 0, null],
    [null, 10, null],
    [10, null, null],
  ];
  for (const [before, after, expected] of table) {
    it(`${before} → ${after} is ${expected}`, () => assert.equal(reductionPct(before, after), expected));
  }
});

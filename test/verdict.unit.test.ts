import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Analysis, CompatibilityQuery, SuccessCriteria } from '../src/domain/experiment-spec.js';
import {
  evidenceOf,
  type HostSample,
  judge,
  type Measurements,
  reductionPct,
  rejudge,
  type VariantMeasurement,
} from '../src/domain/verdict.js';

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

// ---------------------------------------------------------------------------------------------
// With per-host samples (issue 20): the paired statistics decide.

interface Fleet {
  readonly hosts?: number;
  readonly times?: number;
  /** Candidate series as a fraction of the baseline's, per host index. */
  readonly keep?: (host: number) => number;
  /** Candidate collector CPU as a fraction of the baseline's, per host index. */
  readonly cpu?: (host: number) => number;
  /** Candidate input as a fraction of the baseline's. */
  readonly input?: number | null;
  /** Sample times the candidate of this host misses. */
  readonly missing?: (host: number, time: number) => boolean;
}

const T0 = Date.parse('2026-03-01T00:00:00.000Z');
const timeAt = (i: number) => new Date(T0 + i * 15_000).toISOString();

const samplesOf = (f: Fleet = {}): HostSample[] => {
  const out: HostSample[] = [];
  for (let h = 0; h < (f.hosts ?? 5); h++) {
    const host = `node-${String(h).padStart(4, '0')}`;
    for (let t = 0; t < (f.times ?? 4); t++) {
      const series = 1000 + 10 * h + t; // hosts differ, and drift a little over time
      const at = timeAt(t);
      out.push({
        at,
        host,
        variant: 'baseline',
        series,
        datapointsPerMinute: series * 4,
        collectorCpuCores: 0.1,
        collectorMemoryBytes: 64e6,
        inputPointsPerMinute: 9000,
      });
      if (f.missing?.(h, t)) continue;
      const input = f.input === undefined ? 1 : f.input;
      out.push({
        at,
        host,
        variant: 'candidate',
        series: Math.round(series * (f.keep?.(h) ?? 0.3)),
        datapointsPerMinute: Math.round(series * 4 * (f.keep?.(h) ?? 0.3)),
        collectorCpuCores: 0.1 * (f.cpu?.(h) ?? 1.02),
        collectorMemoryBytes: 66e6,
        inputPointsPerMinute: input === null ? null : 9000 * input,
      });
    }
  }
  return out;
};

const withSamples = (f: Fleet = {}, over: Partial<Measurements> = {}): Measurements =>
  measured({ samples: samplesOf(f), ...over });

const judged = (
  m: Measurements,
  c: Partial<SuccessCriteria> = {},
  compatibilityQueries?: CompatibilityQuery[],
) =>
  judge({
    criteria: { ...criteria, ...c },
    criticalProcesses: ['^postgres$', '^sshd$'],
    measurements: m,
    ...(compatibilityQueries ? { compatibilityQueries } : {}),
  });

const check = (a: Analysis, criterion: string) => {
  const found = a.checks?.find((c) => c.criterion === criterion);
  assert.ok(found, `no check ${criterion} in ${a.checks?.map((c) => c.criterion).join(', ')}`);
  return found;
};

describe('judge with per-host samples (paired statistics)', () => {
  it('a clear reduction on every host passes, judged on the interval, with the test and effect size', () => {
    const a = judged(withSamples());
    assert.equal(a.verdict, 'pass', a.reasons.join(' | '));
    assert.deepEqual(
      a.checks?.map((c) => [c.criterion, c.outcome]),
      [
        ['sampleSize', 'pass'],
        ['inputParity', 'pass'],
        ['maxCriticalProcessLossPct', 'pass'],
        ['minCardinalityReductionPct', 'pass'],
        ['maxCollectorCpuOverheadPct', 'pass'],
      ],
    );
    const series = a.statistics?.series;
    assert.ok(series);
    assert.equal(series.hosts, 5);
    assert.equal(series.samples, 20);
    assert.ok(Math.abs(series.relativeChangePct + 70) < 0.1, String(series.relativeChangePct));
    assert.equal(series.test?.name, 'wilcoxon-signed-rank');
    assert.equal(series.test?.statistic, 0);
    assert.equal(series.test?.effectSize?.value, -1);
    const card = check(a, 'minCardinalityReductionPct');
    assert.equal(card.test, 'wilcoxon-signed-rank');
    assert.ok(card.interval && card.interval.low >= 50 && card.interval.confidence === 0.95);
    assert.equal(a.cardinalityReductionPct, card.value, 'the top-level figure is what was judged');
    assert.equal(
      card.reason,
      'cardinality reduced by 70% (95% CI 70% to 70%; 5 hosts, Wilcoxon p = 0.0625, rank-biserial -1.00), at least 50% required',
    );
  });

  it('hosts, timeline and top executables are filled, bounded and in order', () => {
    const a = judged(
      withSamples(
        {},
        {
          seriesByExecutable: {
            baseline: Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`exe-${i}`, 100 + i])),
            candidate: { 'exe-14': 7 },
          },
        },
      ),
    );
    assert.deepEqual(
      a.hosts?.map((h) => h.host),
      ['node-0000', 'node-0001', 'node-0002', 'node-0003', 'node-0004'],
    );
    const h0 = a.hosts?.[0];
    assert.equal(h0?.samples, 4);
    assert.equal(h0?.baseline.series, 1001.5);
    assert.equal(h0?.baseline.inputPointsPerMinute, 9000);
    assert.equal(a.timeline?.length, 4);
    assert.equal(a.timeline?.[0]?.baseline.series, 1000 + 1010 + 1020 + 1030 + 1040);
    assert.equal(a.topExecutables?.length, 10);
    assert.deepEqual(a.topExecutables?.[0], {
      executable: 'exe-14',
      baselineSeries: 114,
      candidateSeries: 7,
    });
    assert.deepEqual(a.topExecutables?.[1], {
      executable: 'exe-13',
      baselineSeries: 113,
      candidateSeries: 0,
    });
  });

  it('too few hosts is inconclusive, naming the reason (sampleSize)', () => {
    const a = judged(withSamples({ hosts: 2 }), { minHosts: 3, minSamplesPerHost: 3 });
    assert.equal(a.verdict, 'inconclusive');
    assert.equal(check(a, 'sampleSize').outcome, 'no_data');
    assert.match(
      a.reasons[0] ?? '',
      /only 2 hosts with at least 3 paired samples \(3 required\): too little evidence/,
    );
  });

  it('a host with fewer paired samples than minSamplesPerHost does not count', () => {
    // Hosts 0 and 1 miss the candidate at three of four times: one paired sample each.
    const a = judged(withSamples({ missing: (h, t) => h < 2 && t > 0 }), { minSamplesPerHost: 3 });
    assert.equal(a.verdict, 'pass', a.reasons.join(' | '));
    assert.equal(check(a, 'sampleSize').value, 3);
    assert.match(check(a, 'sampleSize').reason, /2 more had fewer/);
    assert.equal(a.statistics?.series?.hosts, 3);
    const strict = judged(withSamples({ missing: (h, t) => h < 2 && t > 0 }), {
      minHosts: 4,
      minSamplesPerHost: 3,
    });
    assert.equal(strict.verdict, 'inconclusive');
  });

  it('an input mismatch is inconclusive, never a pass (inputParity)', () => {
    const a = judged(withSamples({ input: 0.8 }));
    assert.equal(a.verdict, 'inconclusive');
    assert.equal(a.parity?.ok, false);
    assert.equal(a.parity?.mismatchPct, 20);
    assert.match(a.reasons[0] ?? '', /input mismatch.*20% apart, more than 5%/);
    assert.equal(judged(withSamples({ input: 0.8 }), { maxInputMismatchPct: 25 }).verdict, 'pass');
  });

  it('unmeasured input is inconclusive; as a dry run it is reported and does not decide', () => {
    const a = judged(withSamples({ input: null }));
    assert.equal(a.verdict, 'inconclusive');
    assert.equal(a.parity?.ok, null);
    const dry = judged(withSamples({ input: null }), { dryRun: ['inputParity'] });
    assert.equal(dry.verdict, 'pass', dry.reasons.join(' | '));
    const parity = check(dry, 'inputParity');
    assert.equal(parity.dryRun, true);
    assert.equal(parity.outcome, 'no_data');
    assert.match(dry.reasons.at(-1) ?? '', /^dry run \(no data\): /);
  });

  it('a reduction whose interval straddles the threshold is inconclusive, not a pass on the point estimate', () => {
    // Per host 40% … 64% kept: reductions 36% … 60%, the fleet's about 48–52%.
    const a = judged(withSamples({ hosts: 7, keep: (h) => 0.4 + 0.04 * h }));
    const card = check(a, 'minCardinalityReductionPct');
    assert.ok(card.interval && card.interval.low < 50 && card.interval.high > 50, JSON.stringify(card));
    assert.equal(card.outcome, 'no_data');
    assert.match(card.reason, /straddles the required 50%/);
    assert.equal(a.verdict, 'inconclusive');
  });

  it('a reduction whose whole interval is below the threshold fails', () => {
    const a = judged(withSamples({ keep: (h) => 0.85 + 0.01 * h }));
    assert.equal(a.verdict, 'fail');
    assert.equal(check(a, 'minCardinalityReductionPct').outcome, 'fail');
  });

  it('collector CPU: above the allowance on every host fails; an interval across it is inconclusive', () => {
    assert.equal(
      check(judged(withSamples({ cpu: () => 1.5 })), 'maxCollectorCpuOverheadPct').outcome,
      'fail',
    );
    const mixed = judged(withSamples({ hosts: 6, cpu: (h) => 0.8 + 0.1 * h }));
    const cpu = check(mixed, 'maxCollectorCpuOverheadPct');
    assert.equal(cpu.outcome, 'no_data', cpu.reason);
    assert.match(cpu.reason, /straddles the allowed \+10%/);
  });

  it('collector health: a restarting candidate fails, an unhealthy baseline is inconclusive', () => {
    const healthy = { restarts: 0, droppedPoints: 0 };
    const restart = judged(
      withSamples(
        {},
        { collectorHealth: { baseline: healthy, candidate: { restarts: 2, droppedPoints: 0 } } },
      ),
    );
    assert.equal(restart.verdict, 'fail');
    assert.match(restart.reasons[0] ?? '', /candidate collector is unhealthy: 2 restarts/);
    const drops = judged(
      withSamples(
        {},
        { collectorHealth: { baseline: { restarts: 0, droppedPoints: 50 }, candidate: healthy } },
      ),
    );
    assert.equal(drops.verdict, 'inconclusive');
    assert.equal(check(drops, 'collectorHealth').outcome, 'no_data');
    const fine = judged(withSamples({}, { collectorHealth: { baseline: healthy, candidate: healthy } }));
    assert.equal(fine.verdict, 'pass');
    const unknown = judged(
      withSamples(
        {},
        { collectorHealth: { baseline: healthy, candidate: { restarts: null, droppedPoints: 0 } } },
      ),
    );
    assert.equal(unknown.verdict, 'inconclusive');
  });

  it('compatibility queries: one check each; nothing on the candidate or divergence fails, an error has no data', () => {
    const queries: CompatibilityQuery[] = [
      { name: 'alerts', query: 'sum(rate(x[5m]))' },
      { name: 'dash', query: 'count(y)', maxDivergencePct: 10 },
      { name: 'broken', query: 'z' },
      { name: 'same', query: 'w', maxDivergencePct: 10 },
    ];
    const queryResults = [
      { name: 'alerts', query: 'sum(rate(x[5m]))', baseline: 3, candidate: null },
      { name: 'dash', query: 'count(y)', baseline: 100, candidate: 80 },
      { name: 'broken', query: 'z', baseline: null, candidate: null, error: 'bad_data: parse error' },
      { name: 'same', query: 'w', baseline: 100, candidate: 95 },
    ];
    const a = judged(withSamples({}, { queryResults }), {}, queries);
    assert.deepEqual(
      a.checks?.filter((c) => c.criterion.startsWith('query:')).map((c) => [c.criterion, c.outcome, c.value]),
      [
        ['query:alerts', 'fail', null],
        ['query:dash', 'fail', 20],
        ['query:broken', 'no_data', null],
        ['query:same', 'pass', 5],
      ],
    );
    assert.equal(a.verdict, 'fail');
    const dry = judged(
      withSamples({}, { queryResults }),
      { dryRun: ['query:alerts', 'query:dash', 'query:broken'] },
      queries,
    );
    assert.equal(dry.verdict, 'pass', dry.reasons.join(' | '));
    const notRun = judged(withSamples(), {}, queries.slice(0, 1));
    assert.equal(check(notRun, 'query:alerts').outcome, 'no_data');
  });

  it('keeps the stored analysis bounded: at most 1000 hosts (a fixed subset) and 360 timeline points', () => {
    const big = judged(withSamples({ hosts: 1100, times: 3 }));
    assert.equal(big.hosts?.length, 1000);
    assert.equal((big.evidence as { hostsOmitted?: number }).hostsOmitted, 100);
    assert.equal(big.statistics?.series?.hosts, 1000);
    assert.deepEqual(
      judged(withSamples({ hosts: 1100, times: 3 })).hosts,
      big.hosts,
      'the same subset every time',
    );
    const long = judged(withSamples({ hosts: 3, times: 500 }));
    assert.equal(long.timeline?.length, 360);
    assert.equal(long.timeline?.[0]?.at, timeAt(0));
    assert.equal(long.timeline?.at(-1)?.at, timeAt(499));
    assert.ok(JSON.stringify(big).length < 600_000, `${JSON.stringify(big).length} bytes`);
  });
});

describe('rejudge: other criteria on the stored evidence', () => {
  const stored = (a: Analysis): Analysis => JSON.parse(JSON.stringify(a)) as Analysis;

  it('the same criteria on the stored (JSON) analysis give the same analysis, statistics bit for bit', () => {
    const original = judged(withSamples({ hosts: 7, keep: (h) => 0.4 + 0.04 * h }));
    const again = rejudge(stored(original), { ...criteria }, ['^postgres$', '^sshd$']);
    assert.deepEqual(again, stored(original));
  });

  it('a lower bar turns an inconclusive verdict into a pass, without measuring', () => {
    const original = judged(withSamples({ hosts: 7, keep: (h) => 0.4 + 0.04 * h }));
    assert.equal(original.verdict, 'inconclusive');
    const again = rejudge(stored(original), { ...criteria, minCardinalityReductionPct: 30 }, [
      '^postgres$',
      '^sshd$',
    ]);
    assert.equal(again?.verdict, 'pass', again?.reasons.join(' | '));
    assert.deepEqual(again?.statistics, original.statistics);
    assert.deepEqual(again?.timeline, original.timeline);
    assert.equal(
      (again?.evidence as { criteria?: SuccessCriteria } | undefined)?.criteria?.minCardinalityReductionPct,
      30,
    );
  });

  it('minSamplesPerHost and minHosts apply to the stored per-host counts', () => {
    const original = judged(withSamples({ missing: (h, t) => h < 2 && t > 0 }));
    const again = rejudge(stored(original), { ...criteria, minSamplesPerHost: 1 }, ['^postgres$', '^sshd$']);
    assert.equal(again?.statistics?.series?.hosts, 5);
  });

  it('an analysis without samples (an old analyzer) is re-judged on its figures', () => {
    const original = judge({ criteria, criticalProcesses: ['^sshd$'], measurements: measured() });
    const again = rejudge(stored(original), { ...criteria, minCardinalityReductionPct: 80 }, ['^sshd$']);
    assert.equal(again?.verdict, 'fail');
    assert.match(again?.reasons[0] ?? '', /cardinality reduced by 70%, below the required 80%/);
  });

  it('nothing to re-judge without stored evidence', () => {
    const { evidence: _e, ...bare } = judge({ criteria, criticalProcesses: [], measurements: measured() });
    assert.equal(evidenceOf(bare), undefined);
    assert.equal(rejudge(bare, criteria, []), undefined);
  });
});

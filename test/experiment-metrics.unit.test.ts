import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import client from 'prom-client';
import type { ExperimentView, Page, ReadModels } from '../src/application/ports/read-models.js';
import { ConfigError, loadConfig } from '../src/config.js';
import type { Analysis } from '../src/domain/experiment-spec.js';
import { experimentLabel, registerExperimentMetrics } from '../src/handlers/experiment-metrics.js';
import { parseExposition, type Sample } from './support/exposition.js';
import { validSpec } from './support/system.js';

/**
 * What an analysis exports, field by field (the statistics and the money included), and the cap:
 * over a read model held in memory, so that every case is exact.
 */

const NOW = Date.parse('2026-12-06T12:00:00Z');
const DAY = 86_400_000;

const fullAnalysis = (verdict: Analysis['verdict'] = 'pass'): Analysis => ({
  verdict,
  reasons: ['cardinality reduced by 72.4%'],
  baseline: { series: 2800, datapointsPerMinute: 19_600.5 },
  candidate: { series: 773, datapointsPerMinute: 5411.25 },
  cardinalityReductionPct: 72.39,
  datapointReductionPct: 72.39,
  criticalProcessLossPct: 0,
  missingCriticalProcesses: [],
  evidence: { collectorCpuOverheadPct: 99 },
  checks: [
    {
      criterion: 'maxCollectorCpuOverheadPct',
      threshold: 10,
      value: -3.5,
      outcome: 'pass',
      reason: 'collector CPU 3.5% below the baseline',
      dryRun: false,
    },
  ],
  statistics: {
    series: {
      hosts: 10,
      samples: 60,
      baselineMean: 280,
      candidateMean: 77.3,
      relativeChangePct: -72.39,
      interval: { low: -74.01, high: -70.12, confidence: 0.95 },
      test: {
        name: 'wilcoxon-signed-rank',
        statistic: 0,
        pValue: 0.001953,
        effectSize: { name: 'rank-biserial', value: -1 },
      },
    },
    collectorCpuCores: {
      hosts: 10,
      samples: 60,
      baselineMean: 0.02,
      candidateMean: 0.0193,
      relativeChangePct: -3.5,
      interval: null,
      test: null,
    },
  },
  cost: {
    profile: 'default',
    currency: 'USD',
    monthly: {
      target: { saving: 120.5, low: 110, high: 131.25 },
      fleet: { saving: 12_050, low: null, high: null },
    },
    breakdown: {},
    assumptions: {},
  },
});

const view = (
  i: number,
  state: ExperimentView['state'],
  endedDaysAgo: number,
  analysis?: Analysis,
): ExperimentView => {
  const ended = new Date(NOW - endedDaysAgo * DAY).toISOString();
  return {
    ...(validSpec({ name: `experiment ${i}` }) as unknown as Omit<ExperimentView, 'id'>),
    id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    state,
    version: 9,
    createdAt: new Date(NOW - endedDaysAgo * DAY - 3600_000).toISOString(),
    updatedAt: ended,
    endedAt: ended,
    ...(analysis ? { analysis } : {}),
  };
};

/** listExperiments over an array, newest first, paged by a plain offset cursor; counts the calls. */
const memoryReadModels = (experiments: ExperimentView[]) => {
  const calls: { state?: string; limit: number }[] = [];
  const readModels: Pick<ReadModels, 'listExperiments'> = {
    async listExperiments(query): Promise<Page<ExperimentView>> {
      calls.push({ ...(query.state ? { state: query.state } : {}), limit: query.limit });
      const all = experiments
        .filter((e) => query.state === undefined || e.state === query.state)
        .sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
      const from = query.cursor ? Number(query.cursor) : 0;
      const items = all.slice(from, from + query.limit);
      return { items, nextCursor: from + query.limit < all.length ? String(from + query.limit) : null };
    },
  };
  return { readModels, calls };
};

const scrape = async (
  experiments: ExperimentView[],
  options: { maxExperiments?: number; maxAgeDays?: number } = {},
): Promise<{ samples: Sample[]; calls: number }> => {
  const registry = new client.Registry();
  const { readModels, calls } = memoryReadModels(experiments);
  registerExperimentMetrics(registry, { readModels, clock: () => new Date(NOW), refreshMs: 0, ...options });
  return { samples: parseExposition(await registry.metrics()).samples, calls: calls.length };
};

const pick = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .map((s) => s.value);

describe('experiment metrics', () => {
  it('exports every figure of the analysis, with its intervals and savings', async () => {
    const { samples } = await scrape([view(1, 'completed', 1, fullAnalysis())]);
    assert.ok(samples.every((s) => s.labels.experiment_id === view(1, 'completed', 1).id));
    assert.ok(samples.every((s) => s.labels.experiment === 'experiment 1'));
    assert.deepEqual(
      samples.filter((s) => s.name === 'phoenix_experiment_verdict').map((s) => [s.labels.verdict, s.value]),
      [['pass', 1]],
    );
    assert.deepEqual(pick(samples, 'phoenix_experiment_series', { variant: 'baseline' }), [2800]);
    assert.deepEqual(pick(samples, 'phoenix_experiment_series', { variant: 'candidate' }), [773]);
    assert.deepEqual(
      pick(samples, 'phoenix_experiment_datapoints_per_minute', { variant: 'baseline' }),
      [19_600.5],
    );
    assert.deepEqual(pick(samples, 'phoenix_experiment_series_reduction_percent'), [72.39]);
    assert.deepEqual(pick(samples, 'phoenix_experiment_datapoint_reduction_percent'), [72.39]);
    assert.deepEqual(pick(samples, 'phoenix_experiment_critical_process_loss_percent'), [0]);
    assert.deepEqual(pick(samples, 'phoenix_experiment_missing_critical_processes'), [0]);
    // The criteria table's overhead wins over the older evidence field.
    assert.deepEqual(pick(samples, 'phoenix_experiment_collector_cpu_overhead_percent'), [-3.5]);
    assert.deepEqual(pick(samples, 'phoenix_experiment_end_timestamp_seconds'), [(NOW - DAY) / 1000]);
    const change = (figure: string, bound: string) =>
      pick(samples, 'phoenix_experiment_change_percent', { figure, bound });
    assert.deepEqual(change('series', 'estimate'), [-72.39]);
    assert.deepEqual(change('series', 'low'), [-74.01]);
    assert.deepEqual(change('series', 'high'), [-70.12]);
    assert.deepEqual(change('collector_cpu_cores', 'estimate'), [-3.5]);
    assert.deepEqual(change('collector_cpu_cores', 'low'), [], 'no interval, no bounds');
    assert.deepEqual(pick(samples, 'phoenix_experiment_change_confidence', { figure: 'series' }), [0.95]);
    assert.deepEqual(
      pick(samples, 'phoenix_experiment_change_p_value', { figure: 'series', test: 'wilcoxon-signed-rank' }),
      [0.001953],
    );
    assert.deepEqual(pick(samples, 'phoenix_experiment_paired_hosts', { figure: 'series' }), [10]);
    const saving = (scope: string, bound: string) =>
      pick(samples, 'phoenix_experiment_monthly_saving', {
        scope,
        bound,
        currency: 'USD',
        profile: 'default',
      });
    assert.deepEqual(saving('target', 'estimate'), [120.5]);
    assert.deepEqual(saving('target', 'low'), [110]);
    assert.deepEqual(saving('target', 'high'), [131.25]);
    assert.deepEqual(saving('fleet', 'estimate'), [12_050]);
    assert.deepEqual(saving('fleet', 'low'), [], 'an unknown bound is left out, never exported as 0');
  });

  it('leaves out what the analysis does not know, and experiments without one', async () => {
    const partial: Analysis = {
      ...fullAnalysis('inconclusive'),
      cardinalityReductionPct: null,
      criticalProcessLossPct: null,
      checks: undefined,
      evidence: { collectorCpuOverheadPct: null },
      statistics: undefined,
      cost: undefined,
    };
    const { samples } = await scrape([
      view(1, 'completed', 1, partial),
      view(2, 'failed', 1),
      view(3, 'cancelled', 1),
    ]);
    assert.deepEqual(
      new Set(samples.map((s) => s.labels.experiment_id)),
      new Set([view(1, 'completed', 1).id]),
    );
    assert.deepEqual(pick(samples, 'phoenix_experiment_verdict', { verdict: 'inconclusive' }), [1]);
    for (const name of [
      'phoenix_experiment_series_reduction_percent',
      'phoenix_experiment_critical_process_loss_percent',
      'phoenix_experiment_collector_cpu_overhead_percent',
      'phoenix_experiment_change_percent',
      'phoenix_experiment_monthly_saving',
    ])
      assert.deepEqual(pick(samples, name), [], name);
  });

  it('caps the experiments: the most recently ended within the age limit, bounded reads', async () => {
    const experiments = [
      ...Array.from({ length: 30 }, (_, i) => view(i, 'completed', i + 1, fullAnalysis())),
      ...Array.from({ length: 30 }, (_, i) => view(100 + i, 'failed', i + 0.5, fullAnalysis('fail'))),
      view(200, 'completed', 45, fullAnalysis()), // ended too long ago
    ];
    const { samples, calls } = await scrape(experiments, { maxExperiments: 5, maxAgeDays: 30 });
    const ids = new Set(
      samples.filter((s) => s.name === 'phoenix_experiment_verdict').map((s) => s.labels.experiment_id),
    );
    // Ended 0.5, 1, 1.5, 2, 2.5 days ago: failed 100, completed 0, failed 101, completed 1, failed 102.
    assert.deepEqual([...ids].sort(), [100, 0, 101, 1, 102].map((i) => view(i, 'completed', 0).id).sort());
    assert.equal(new Set(samples.map((s) => s.labels.experiment_id)).size, 5, 'no family exports more');
    assert.ok(calls <= 6, `at most 3 pages per state, ${calls} reads`);

    const aged = await scrape(experiments, { maxExperiments: 100, maxAgeDays: 2 });
    const agedIds = new Set(aged.samples.map((s) => s.labels.experiment_id));
    assert.equal(agedIds.size, 4, 'ended within 2 days: 0, 1 (completed) and 100, 101 (failed)');

    const none = await scrape(experiments, { maxExperiments: 0 });
    assert.deepEqual(none.samples, []);
    assert.equal(none.calls, 0);
  });

  it('reads once per scrape and once per refresh interval', async () => {
    let now = NOW;
    const registry = new client.Registry();
    const { readModels, calls } = memoryReadModels([view(1, 'completed', 1, fullAnalysis())]);
    registerExperimentMetrics(registry, { readModels, clock: () => new Date(now), refreshMs: 10_000 });
    await registry.metrics();
    const perRead = calls.length;
    assert.equal(perRead, 2, 'one page of completed, one of failed');
    await registry.metrics();
    assert.equal(calls.length, perRead, 'within the refresh interval: no read');
    now += 10_000;
    await registry.metrics();
    assert.equal(calls.length, 2 * perRead);
  });

  it('keeps the previous figures when the read model cannot be read', async () => {
    let fail = false;
    const errors: unknown[] = [];
    const { readModels } = memoryReadModels([view(1, 'completed', 1, fullAnalysis())]);
    const registry = new client.Registry();
    registerExperimentMetrics(registry, {
      readModels: {
        listExperiments: (q) =>
          fail ? Promise.reject(new Error('database down')) : readModels.listExperiments(q),
      },
      clock: () => new Date(NOW),
      refreshMs: 0,
      onError: (err) => errors.push(err),
    });
    const before = await registry.metrics();
    fail = true;
    assert.equal(await registry.metrics(), before);
    assert.equal(errors.length, 1, 'told once per failed read, not once per family');
  });

  it('bounds the name label', () => {
    assert.equal(experimentLabel('a\nb\u0007c'), 'a b c');
    const long = experimentLabel('x'.repeat(200));
    assert.equal([...long].length, 64);
    assert.ok(long.endsWith('…'));
  });
});

describe('experiment metrics settings', () => {
  it('refuses a cap or an age that is not a count, naming the variable', () => {
    for (const [variable, value] of [
      ['PHOENIX_METRICS_EXPERIMENTS', '-1'],
      ['PHOENIX_METRICS_EXPERIMENTS', 'lots'],
      ['PHOENIX_METRICS_EXPERIMENT_DAYS', '0'],
    ] as const)
      assert.throws(
        () => loadConfig({ [variable]: value }),
        (err: unknown) => err instanceof ConfigError && err.problems.some((p) => p.variable === variable),
      );
    const config = loadConfig({});
    assert.equal(config.PHOENIX_METRICS_EXPERIMENTS, 100);
    assert.equal(config.PHOENIX_METRICS_EXPERIMENT_DAYS, 30);
  });
});

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseExposition, type Sample } from './support/exposition.js';
import { runToAnalysis, startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * The verdicts on /metrics, through the app in-process on the embedded default: after an experiment
 * completes, its figures on /metrics are the API's analysis; an experiment without an analysis
 * exports nothing; the cap on exported experiments holds.
 */
describe('experiment verdicts on /metrics', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let operator: string;

  before(async () => {
    // A cap of 2 experiments, so that the third analysed one pushes the oldest out.
    system = await startTestSystem({ PHOENIX_METRICS_EXPERIMENTS: '2' });
    operator = await tokenFor(system, 'operator', 'olga');
  });
  after(() => system.dispose());

  const call = async (method: 'GET' | 'POST', url: string, payload?: object) => {
    const res = await system.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${operator}` },
      ...(payload ? { payload } : {}),
    });
    return { status: res.statusCode, body: res.body, json: () => res.json() };
  };

  const scrape = async (): Promise<Sample[]> => {
    const res = await system.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(res.statusCode, 200);
    return parseExposition(res.body).samples.filter((s) => s.name.startsWith('phoenix_experiment_'));
  };

  /** Scrapes until `ready` holds (a scrape reuses the previous read for up to 10 s). */
  const scrapeUntil = async (what: string, ready: (samples: Sample[]) => boolean, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    let samples: Sample[] = [];
    while (Date.now() < deadline) {
      samples = await scrape();
      if (ready(samples)) return samples;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`${what} not on /metrics after ${timeoutMs} ms: ${JSON.stringify(samples.slice(0, 20))}`);
  };

  const run = (name: string, candidate = 'process-minimal-v1') =>
    runToAnalysis(
      system,
      operator,
      validSpec({
        name,
        candidate: { template: candidate, params: {} },
        target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 },
        durationSeconds: 1,
        criticalProcesses: ['^postgres$', '^kubelet$'],
        successCriteria: {
          minCardinalityReductionPct: 50,
          maxCriticalProcessLossPct: 0,
          maxCollectorCpuOverheadPct: 100,
        },
      }),
    );

  const of = (samples: Sample[], id: string) => samples.filter((s) => s.labels.experiment_id === id);
  const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) => {
    const found = samples.filter(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
    assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}: ${found.length} series`);
    return (found[0] as Sample).value;
  };

  let first: { id: string; name: string; state: string; analysis: Record<string, unknown> } & Record<
    string,
    unknown
  >;

  it('exports nothing for an experiment without an analysis', async () => {
    const created = await call('POST', '/api/v1/experiments', validSpec({ name: 'never started' }));
    assert.equal(created.status, 201);
    const { id } = created.json();
    const samples = await scrape();
    assert.deepEqual(of(samples, id), []);
    // The families are declared even when empty (so that dashboards and alerts find them).
    const text = (await system.app.inject({ method: 'GET', url: '/metrics' })).body;
    assert.match(text, /# TYPE phoenix_experiment_verdict gauge/);
  });

  it("after a completed experiment, /metrics shows the figures of the API's analysis", async () => {
    first = await run('metrics one: minimal\nvs "baseline"');
    const a = first.analysis as {
      verdict: string;
      baseline: { series: number; datapointsPerMinute: number };
      candidate: { series: number; datapointsPerMinute: number };
      cardinalityReductionPct: number | null;
      datapointReductionPct: number | null;
      criticalProcessLossPct: number | null;
      missingCriticalProcesses: string[];
      evidence?: { collectorCpuOverheadPct?: number | null };
      checks?: { criterion: string; value: number | null }[];
      statistics?: Record<
        string,
        { relativeChangePct: number; interval: { low: number; high: number } | null }
      >;
      cost?: {
        currency: string;
        monthly: Record<'target' | 'fleet', { saving: number; low: number | null; high: number | null }>;
      };
    };
    const samples = of(
      await scrapeUntil('the first experiment', (s) => of(s, first.id).length > 0),
      first.id,
    );
    // One verdict series, the analysis's, with the experiment's name as a single-line label.
    const verdicts = samples.filter((s) => s.name === 'phoenix_experiment_verdict');
    assert.deepEqual(
      verdicts.map((s) => [s.labels.verdict, s.labels.experiment, s.value]),
      [[a.verdict, 'metrics one: minimal vs "baseline"', 1]],
    );
    assert.equal(
      value(samples, 'phoenix_experiment_info', {
        state: first.state,
        baseline_template: 'process-baseline-v1',
        candidate_template: 'process-minimal-v1',
      }),
      1,
    );
    for (const variant of ['baseline', 'candidate'] as const) {
      assert.equal(value(samples, 'phoenix_experiment_series', { variant }), a[variant].series);
      assert.equal(
        value(samples, 'phoenix_experiment_datapoints_per_minute', { variant }),
        a[variant].datapointsPerMinute,
      );
    }
    assert.ok(a.cardinalityReductionPct !== null, 'the embedded default measures the reduction');
    assert.equal(value(samples, 'phoenix_experiment_series_reduction_percent'), a.cardinalityReductionPct);
    assert.equal(value(samples, 'phoenix_experiment_datapoint_reduction_percent'), a.datapointReductionPct);
    assert.equal(
      value(samples, 'phoenix_experiment_critical_process_loss_percent'),
      a.criticalProcessLossPct,
    );
    assert.equal(
      value(samples, 'phoenix_experiment_missing_critical_processes'),
      a.missingCriticalProcesses.length,
    );
    const overhead =
      a.checks?.find((c) => c.criterion === 'maxCollectorCpuOverheadPct')?.value ??
      a.evidence?.collectorCpuOverheadPct;
    assert.equal(typeof overhead, 'number', 'the embedded default measures the collector CPU');
    assert.equal(value(samples, 'phoenix_experiment_collector_cpu_overhead_percent'), overhead);
    assert.equal(
      value(samples, 'phoenix_experiment_end_timestamp_seconds'),
      Date.parse(first.endedAt as string) / 1000,
    );
    // The paired statistics and the money, as far as this analysis holds them (the analyzer fills
    // them once the statistics exist; the unit test covers every field).
    const changes = samples.filter((s) => s.name === 'phoenix_experiment_change_percent');
    const expectedChanges = Object.values(a.statistics ?? {}).reduce((n, s) => n + (s.interval ? 3 : 1), 0);
    assert.equal(changes.length, expectedChanges);
    const savings = samples.filter((s) => s.name === 'phoenix_experiment_monthly_saving');
    if (a.cost) {
      assert.equal(
        value(samples, 'phoenix_experiment_monthly_saving', {
          scope: 'fleet',
          bound: 'estimate',
          currency: a.cost.currency,
        }),
        a.cost.monthly.fleet.saving,
      );
    } else assert.deepEqual(savings, []);
  });

  it('exports at most the configured number of experiments, the most recently ended', async () => {
    const second = await run('metrics two');
    const third = await run('metrics three', 'process-topk-v1');
    const samples = await scrapeUntil('the third experiment', (s) =>
      of(s, third.id).some((x) => x.name === 'phoenix_experiment_verdict'),
    );
    const exported = new Set(
      samples.filter((s) => s.name === 'phoenix_experiment_verdict').map((s) => s.labels.experiment_id),
    );
    assert.deepEqual([...exported].sort(), [second.id, third.id].sort());
    // The oldest is gone from every family, not just the verdict's.
    assert.deepEqual(of(samples, first.id), []);
  });
});

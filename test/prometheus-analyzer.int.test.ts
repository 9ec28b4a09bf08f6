import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { LocalAnalyzer } from '../src/adapters/local-analyzer.js';
import { LocalDataPlane } from '../src/adapters/local-dataplane.js';
import { LocalDeployer } from '../src/adapters/local-deployer.js';
import { criticalRegex, PrometheusAnalyzer, promString } from '../src/adapters/prometheus-analyzer.js';
import type { ExperimentSpec, Variant } from '../src/domain/experiment-spec.js';
import { renderVariant, type TemplateName } from '../src/domain/pipelines/index.js';
import { judge } from '../src/domain/verdict.js';
import {
  prometheusSkipReason,
  type RunningPrometheus,
  startPrometheus,
  waitForScrapes,
} from './support/prometheus.js';

/**
 * The Prometheus analyzer against a real Prometheus scraping the local data plane every second, checked
 * against the local analyzer reading the same data plane directly: the two must agree.
 */
const skip = prometheusSkipReason();

const HOSTS = 3;
const experimentId = `exp-prom-${randomBytes(4).toString('hex')}`;
// The candidate is rendered knowing only sshd as critical; the experiment also names kubelet, which the
// minimal template rolls up: kubelet is lost on every node.
const RENDER_CRITICAL = ['^sshd$'];
const spec: ExperimentSpec = {
  name: 'minimal vs baseline',
  baseline: { template: 'process-baseline-v1', params: { collectionIntervalSeconds: 1 } },
  candidate: { template: 'process-minimal-v1', params: { collectionIntervalSeconds: 1 } },
  target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: HOSTS },
  durationSeconds: 60,
  criticalProcesses: ['^sshd$', '^kubelet$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};

const near = (actual: number | null, expected: number, tolerance: number, what: string) => {
  assert.ok(actual !== null, `${what}: no data`);
  assert.ok(
    Math.abs(actual - expected) <= tolerance * Math.abs(expected),
    `${what}: ${actual} is not within ${tolerance * 100}% of ${expected}`,
  );
};

describe('Prometheus analyzer against a real Prometheus', { skip }, () => {
  if (skip) {
    it(`skipped: ${skip}`, { skip }, () => {});
    return;
  }
  let plane: LocalDataPlane;
  let prometheus: RunningPrometheus;
  let windowStart: Date;
  let simulatedAtStart: number;

  before(async () => {
    // Real time: one simulated second per second, so rates read by Prometheus are the simulated ones.
    plane = await LocalDataPlane.start({
      tickMs: 250,
      simulatedSecondsPerTick: 0.25,
      defaultProcessesPerHost: 60,
    });
    const deployer = new LocalDeployer(plane);
    for (const variant of ['baseline', 'candidate'] as Variant[]) {
      const rendered = renderVariant({
        experimentId,
        variant,
        template: spec[variant].template,
        params: spec[variant].params,
        criticalProcesses: RENDER_CRITICAL,
      });
      assert.ok(rendered.ok);
      const outcome = await deployer.deploy({
        experimentId,
        variant,
        template: spec[variant].template as TemplateName,
        params: rendered.params as Record<string, unknown>,
        config: rendered.config,
        namespace: 'phoenix-experiments',
        nodeSelector: {},
        hosts: HOSTS,
        criticalProcesses: RENDER_CRITICAL,
      });
      assert.ok(outcome.ok);
    }
    prometheus = await startPrometheus(
      (['baseline', 'candidate'] as Variant[]).map((v) => ({
        job: v,
        url: plane.endpointUrl(experimentId, v)!,
      })),
    );
    // The window opens once Prometheus scrapes both variants (as a run's window lies inside the scraping).
    await waitForScrapes(prometheus.url, ['baseline', 'candidate'], 2);
    windowStart = new Date();
    simulatedAtStart = plane.snapshot(experimentId, 'baseline')!.simulatedTimeSeconds;
    await waitForScrapes(prometheus.url, ['baseline', 'candidate'], 12);
  });

  after(async () => {
    await prometheus?.stop();
    await plane?.close();
  });

  it('measures what the local analyzer measures on the same data plane, and reaches the same verdict', async () => {
    const analyzer = new PrometheusAnalyzer({ url: prometheus.url, warmupSeconds: 2 });
    const window = { start: windowStart, end: new Date() };
    const [fromPrometheus, fromPlane] = await Promise.all([
      analyzer.measure({ experimentId, spec, window }),
      new LocalAnalyzer(plane).measure({ experimentId, spec, window }),
    ]);
    // The simulation's clock runs a little behind the wall clock on a busy machine; rates read by
    // Prometheus are per wall-clock second, the data plane's per simulated second.
    const simulated = plane.snapshot(experimentId, 'baseline')!.simulatedTimeSeconds - simulatedAtStart;
    const speed = simulated / ((window.end.getTime() - windowStart.getTime()) / 1000);
    assert.ok(speed > 0.5 && speed <= 1.1, `simulation speed ${speed}`);
    for (const v of ['baseline', 'candidate'] as const) {
      const p = fromPrometheus[v];
      const l = fromPlane[v];
      // Distinct series over the window: process churn can only add a few.
      near(p.series, l.series!, 0.1, `${v} series`);
      assert.ok(
        (p.series ?? 0) >= l.series!,
        `${v}: ${p.series} distinct series, at least the ${l.series} of one scrape`,
      );
      near(p.datapointsPerMinute, l.datapointsPerMinute! * speed, 0.15, `${v} data points per minute`);
      near(p.collectorCpuCores, l.collectorCpuCores! * speed, 0.2, `${v} collector CPU`);
      near(p.collectorMemoryBytes, l.collectorMemoryBytes!, 0.1, `${v} collector memory`);
    }
    assert.deepEqual(fromPrometheus.criticalInBaseline, [...(fromPlane.criticalInBaseline ?? [])].sort());
    assert.equal(fromPrometheus.criticalInBaseline?.length, 2 * HOSTS, 'sshd and kubelet on every node');
    assert.deepEqual(fromPrometheus.missingCriticalProcesses, [...fromPlane.missingCriticalProcesses].sort());
    assert.deepEqual(
      fromPrometheus.missingCriticalProcesses.map((m) => m.split('/')[1]),
      Array(HOSTS).fill('kubelet'),
    );

    const verdict = judge({
      criteria: spec.successCriteria,
      criticalProcesses: spec.criticalProcesses,
      measurements: fromPrometheus,
    });
    assert.equal(verdict.verdict, 'fail');
    assert.match(verdict.reasons[0] ?? '', /3 of 6 critical processes lost \(50%/);
    assert.equal(verdict.criticalProcessLossPct, 50);
    const local = judge({
      criteria: spec.successCriteria,
      criticalProcesses: spec.criticalProcesses,
      measurements: fromPlane,
    });
    assert.equal(local.verdict, verdict.verdict);
    assert.equal(local.criticalProcessLossPct, verdict.criticalProcessLossPct);

    const evidence = fromPrometheus.evidence as {
      queries: { figure: string; variant: Variant | null; query: string; samples: number }[];
      window: { warmupSeconds: number; measured: { start: string } };
    };
    const queryOf = (figure: string, variant: Variant) =>
      evidence.queries.find((q) => q.figure === figure && q.variant === variant);
    assert.deepEqual(queryOf('series', 'baseline'), {
      figure: 'series',
      variant: 'baseline',
      query: `count(last_over_time({__name__=~"process_.+",experiment_id="${experimentId}",variant="baseline"}[${(fromPrometheus.evidence.window as { rangeSeconds: number }).rangeSeconds}s]))`,
      samples: 1,
    });
    assert.match(
      queryOf('missingCriticalProcesses', 'candidate')?.query ?? '',
      / unless on \(k8s_node_name, process_executable_name\) /,
    );
    assert.equal(queryOf('missingCriticalProcesses', 'candidate')?.samples, HOSTS);
    assert.equal(evidence.window.warmupSeconds, 2);
    assert.equal(Date.parse(evidence.window.measured.start), windowStart.getTime() + 2000);
  });

  it('returns every host’s samples of both variants over the window, from range queries', async () => {
    const analyzer = new PrometheusAnalyzer({
      url: prometheus.url,
      warmupSeconds: 2,
      stepSeconds: 1,
      rateWindowSeconds: 4,
    });
    const window = { start: windowStart, end: new Date() };
    const m = await analyzer.measure({
      experimentId,
      spec: {
        ...spec,
        compatibilityQueries: [
          { name: 'cpu', query: 'sum(rate(process_cpu_time_seconds_total[4s]))' },
          // The minimal template keeps no per-process CPU time: nothing on the candidate.
          { name: 'sshd-memory', query: 'sum(process_memory_usage_bytes{process_executable_name="sshd"})' },
          {
            name: 'kubelet',
            query:
              'count(count by (k8s_node_name) (process_memory_usage_bytes{process_executable_name="kubelet"}))',
          },
        ],
      },
      window,
    });
    const samples = m.samples ?? [];
    const rangeSeconds = (window.end.getTime() - windowStart.getTime()) / 1000 - 2;
    for (const v of ['baseline', 'candidate'] as const) {
      const mine = samples.filter((s) => s.variant === v);
      assert.equal(new Set(mine.map((s) => s.host)).size, HOSTS, `${v}: every host`);
      const perHost = mine.length / HOSTS;
      assert.ok(
        perHost >= rangeSeconds - 2 && perHost <= rangeSeconds + 2,
        `${v}: ${perHost} samples per host over ${rangeSeconds} s`,
      );
      for (const s of mine) {
        assert.ok((s.series ?? 0) > 0, `${v} ${s.host} ${s.at}: series ${s.series}`);
        assert.ok((s.collectorMemoryBytes ?? 0) > 40e6, `${v} memory ${s.collectorMemoryBytes}`);
      }
      // Rates need two scrapes in their window: the later samples all have them.
      const late = mine.filter((s) => Date.parse(s.at) > windowStart.getTime() + 6000);
      assert.ok(late.length > 0);
      for (const s of late) {
        assert.ok(
          (s.datapointsPerMinute ?? 0) > 0 && (s.collectorCpuCores ?? 0) > 0,
          `${v} rates at ${s.at}`,
        );
        assert.ok((s.inputPointsPerMinute ?? 0) > 0, `${v} input at ${s.at}`);
      }
    }
    // Per host, the fleet figure is the sum of the hosts' (the data plane's figures are per node).
    const lastAt = (v: Variant) => samples.filter((s) => s.variant === v).at(-1)?.at;
    const fleetSeries = samples
      .filter((s) => s.variant === 'candidate' && s.at === lastAt('candidate'))
      .reduce((n, s) => n + (s.series ?? 0), 0);
    near(fleetSeries, m.candidate.series!, 0.1, 'candidate series summed over hosts');
    assert.ok((m.seriesByExecutable?.baseline.kubelet ?? 0) > 0);
    assert.equal(m.seriesByExecutable?.candidate.kubelet, undefined);
    assert.deepEqual(m.collectorHealth, {
      baseline: { restarts: 0, droppedPoints: 0 },
      candidate: { restarts: 0, droppedPoints: 0 },
    });
    const result = (name: string) => m.queryResults?.find((q) => q.name === name);
    assert.ok((result('cpu')?.baseline ?? 0) > 0, `cpu: ${JSON.stringify(result('cpu'))}`);
    assert.equal(result('cpu')?.candidate, null);
    assert.equal(result('cpu')?.error, undefined);
    assert.ok((result('sshd-memory')?.baseline ?? 0) > 0 && (result('sshd-memory')?.candidate ?? 0) > 0);
    near(result('kubelet')?.baseline ?? null, HOSTS, 0.01, 'kubelet processes in the baseline');
    assert.equal(result('kubelet')?.candidate, null);
    const evidence = (
      m.evidence as { queries: { figure: string; variant: string; query: string; samples: number }[] }
    ).queries;
    const scoped = evidence.find((q) => q.figure === 'query:cpu' && q.variant === 'candidate');
    assert.equal(
      scoped?.query,
      `sum(rate(process_cpu_time_seconds_total{experiment_id="${experimentId}",variant="candidate"}[4s]))`,
    );
    assert.equal(scoped?.samples, 0);
    assert.ok(
      (evidence.find((q) => q.figure === 'host:series' && q.variant === 'baseline')?.samples ?? 0) > HOSTS,
    );
  });

  it('a compatibility query Prometheus refuses gets its error; the others still run', async () => {
    const analyzer = new PrometheusAnalyzer({ url: prometheus.url, warmupSeconds: 2, stepSeconds: 1 });
    const m = await analyzer.measure({
      experimentId,
      spec: {
        ...spec,
        // Parses (the grammar does not type-check), but Prometheus refuses it: a string where a number goes.
        compatibilityQueries: [{ name: 'bad', query: 'histogram_quantile("x", up)' }],
      },
      window: { start: windowStart, end: new Date() },
    });
    const bad = m.queryResults?.[0];
    assert.equal(bad?.baseline, null);
    assert.match(bad?.error ?? '', /bad_data/);
  });

  it('probes the running experiment: the critical processes the candidate lacks now', async () => {
    const analyzer = new PrometheusAnalyzer({ url: prometheus.url, probeLookbackSeconds: 5 });
    const findings = await analyzer.probe({ experimentId, spec, runStartedAt: windowStart });
    assert.deepEqual(
      findings.missingCriticalProcesses?.map((m) => m.split('/')[1]),
      Array(HOSTS).fill('kubelet'),
    );
    assert.deepEqual(findings.collectorHealth, {
      baseline: { restarts: 0, droppedPoints: 0 },
      candidate: { restarts: 0, droppedPoints: 0 },
    });
    const nobody = await analyzer.probe({
      experimentId: 'exp-nobody-deployed',
      spec,
      runStartedAt: windowStart,
    });
    assert.equal(nobody.missingCriticalProcesses, null);
    assert.deepEqual(nobody.collectorHealth.candidate, { restarts: null, droppedPoints: null });
  });

  it('reports no data for an experiment Prometheus has never seen, which the verdict makes inconclusive', async () => {
    const analyzer = new PrometheusAnalyzer({ url: prometheus.url, warmupSeconds: 0 });
    const m = await analyzer.measure({
      experimentId: 'exp-nobody-deployed',
      spec,
      window: { start: new Date(Date.now() - 30_000), end: new Date() },
    });
    assert.equal(m.baseline.series, null);
    assert.equal(m.candidate.datapointsPerMinute, null);
    assert.equal(m.criticalInBaseline, null);
    const analysis = judge({
      criteria: spec.successCriteria,
      criticalProcesses: spec.criticalProcesses,
      measurements: m,
    });
    assert.equal(analysis.verdict, 'inconclusive');
  });

  it('reads the baseline per-process usage for tuning, as the data plane reports it', async () => {
    const analyzer = new PrometheusAnalyzer({ url: prometheus.url });
    const fromPrometheus = await analyzer.usage(experimentId, 'baseline');
    const fromPlane = plane.usage(experimentId, 'baseline')!;
    assert.ok(fromPrometheus);
    near(fromPrometheus.length, fromPlane.length, 0.1, 'processes');
    const names = (u: typeof fromPlane) => new Set(Array.from(u.name, (i) => u.names[i]));
    assert.ok(names(fromPrometheus).has('sshd') && names(fromPrometheus).has('kubelet'));
    assert.ok(Array.from(fromPrometheus.memory).every((m) => m > 0));
    assert.equal(await analyzer.usage('exp-nobody-deployed', 'baseline'), undefined);
  });

  // Last: the faults stay in the data plane's counters.
  it('sees a collector restart and failed exports as Prometheus scraped them', async () => {
    // Prometheus scrapes every second here: one second back finds the sample before the restart.
    const analyzer = new PrometheusAnalyzer({ url: prometheus.url, healthLookbackSeconds: 2 });
    const from = new Date();
    assert.ok(plane.injectFault(experimentId, 'candidate', { kind: 'restart' }));
    assert.ok(plane.injectFault(experimentId, 'baseline', { kind: 'drop', pointsPerHost: 25 }));
    const deadline = Date.now() + 60_000;
    let findings = await analyzer.probe({ experimentId, spec, runStartedAt: from });
    while (
      (findings.collectorHealth.candidate.restarts !== 1 ||
        findings.collectorHealth.baseline.droppedPoints === 0) &&
      Date.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      findings = await analyzer.probe({ experimentId, spec, runStartedAt: from });
    }
    // The DaemonSet's collector restarted on every node.
    assert.equal(findings.collectorHealth.candidate.restarts, HOSTS);
    assert.equal(findings.collectorHealth.baseline.droppedPoints, 25 * HOSTS);
    assert.equal(findings.collectorHealth.baseline.restarts, 0);
  });
});

describe('Prometheus analyzer without a reachable Prometheus', () => {
  it('throws (so the worker retries) instead of reporting no data', async () => {
    const analyzer = new PrometheusAnalyzer({ url: 'http://127.0.0.1:9', timeoutMs: 2_000 });
    await assert.rejects(
      analyzer.measure({
        experimentId: 'x',
        spec,
        window: { start: new Date(Date.now() - 60_000), end: new Date() },
      }),
    );
  });

  it('measures nothing when the warm-up leaves no window', async () => {
    const analyzer = new PrometheusAnalyzer({ url: 'http://127.0.0.1:9', warmupSeconds: 60 });
    const now = Date.now();
    const m = await analyzer.measure({
      experimentId: 'x',
      spec,
      window: { start: new Date(now - 900), end: new Date(now) },
    });
    assert.equal(m.baseline.series, null);
  });
});

describe('PromQL building', () => {
  it('quotes label values and wraps collector patterns for PromQL full-match regexes', () => {
    assert.equal(promString('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(criticalRegex(['^postgres$', '^nginx']), '.*(?:^postgres$).*|.*(?:^nginx).*');
    const re = new RegExp(`^(?:${criticalRegex(['^postgres$', '^nginx'])})$`);
    assert.ok(
      re.test('postgres') && re.test('nginx-worker') && !re.test('xpostgres') && !re.test('my-nginx'),
    );
  });
});

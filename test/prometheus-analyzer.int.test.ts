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
      queries: { baseline: { series: string }; criticalProcesses: { missing: string } };
      window: { warmupSeconds: number; measured: { start: string } };
    };
    assert.equal(
      evidence.queries.baseline.series,
      `count(last_over_time({__name__=~"process_.+",experiment_id="${experimentId}",variant="baseline"}[${(fromPrometheus.evidence.window as { rangeSeconds: number }).rangeSeconds}s]))`,
    );
    assert.match(
      evidence.queries.criticalProcesses.missing,
      / unless on \(k8s_node_name, process_executable_name\) /,
    );
    assert.equal(evidence.window.warmupSeconds, 2);
    assert.equal(Date.parse(evidence.window.measured.start), windowStart.getTime() + 2000);
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

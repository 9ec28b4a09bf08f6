import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LOCAL_CANNOT_RUN_PROMQL, LocalAnalyzer } from '../src/adapters/local-analyzer.js';
import { LocalDataPlane } from '../src/adapters/local-dataplane.js';
import { ScrapeHistory } from '../src/adapters/local-dataplane-history.js';
import type { ExperimentSpec, Variant } from '../src/domain/experiment-spec.js';
import { renderVariant } from '../src/domain/pipelines/index.js';

/**
 * What the local analyzer measures over a run: every host's samples of both variants (warm-up
 * excluded), series by executable, collector health as the data plane knows it, and the probe of a
 * running experiment. The data plane is driven by hand (no timer) on a clock the test moves.
 */

describe('ScrapeHistory', () => {
  it('keeps at most its capacity, evenly spaced over the whole run, in fixed memory', () => {
    const history = new ScrapeHistory(3, 8);
    const bytes = history.bytes;
    for (let i = 0; i < 100; i++)
      history.record(i * 1000, i, (h) => ({
        series: i * 10 + h,
        datapointsPerMinute: i,
        collectorCpuCores: 0.01,
        collectorMemoryBytes: 50e6,
        inputPointsPerMinute: 7 * i,
        inputProcesses: 40,
      }));
    assert.ok(history.size <= 8, `${history.size} samples kept`);
    assert.equal(history.bytes, bytes);
    const kept = [...history.between(0, Number.POSITIVE_INFINITY)];
    const times = kept.map((s) => s.simulatedSeconds);
    // The run's beginning is still covered (a ring buffer would have lost it), and the spacing is even.
    assert.ok((times[0] as number) < 20, `first kept sample at ${times[0]}`);
    const gaps = new Set(times.slice(1).map((t, i) => t - (times[i] as number)));
    assert.equal(gaps.size, 1, `gaps ${[...gaps]}`);
    // Each host's figures stay with their sample.
    for (const s of kept) assert.equal(s.host(2).series, s.simulatedSeconds * 10 + 2);
    assert.deepEqual(
      [...history.between(10_000, 40_000)].map((s) => s.wallMs).every((t) => t >= 10_000 && t <= 40_000),
      true,
    );
  });

  it('1,000 hosts at the default capacity hold 2.9 MB per variant', () => {
    const history = new ScrapeHistory(1000);
    assert.ok(history.bytes < 3e6, `${history.bytes} bytes`);
  });
});

const HOSTS = 4;
const experimentId = 'exp-local-analyzer';
const spec: ExperimentSpec = {
  name: 'minimal vs baseline',
  baseline: { template: 'process-baseline-v1', params: { collectionIntervalSeconds: 10 } },
  candidate: { template: 'process-minimal-v1', params: { collectionIntervalSeconds: 10 } },
  target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: HOSTS },
  durationSeconds: 120,
  // The candidate is rendered knowing only sshd; kubelet is rolled up by the minimal template.
  criticalProcesses: ['^sshd$', '^kubelet$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
  compatibilityQueries: [{ name: 'cpu', query: 'sum(rate(process_cpu_time_seconds_total[5m]))' }],
};

describe('LocalAnalyzer over a run', () => {
  let now = Date.parse('2026-03-01T12:00:00.000Z');
  const clock = () => now;
  let plane: LocalDataPlane;
  let analyzer: LocalAnalyzer;
  const runStart = new Date(now);

  before(() => {
    plane = new LocalDataPlane({ tickMs: 0, defaultProcessesPerHost: 40, clock });
    for (const variant of ['baseline', 'candidate'] as Variant[]) {
      const rendered = renderVariant({
        experimentId,
        variant,
        template: spec[variant].template,
        params: spec[variant].params,
        criticalProcesses: ['^sshd$'],
      });
      assert.ok(rendered.ok);
      plane.deploy({
        experimentId,
        variant,
        config: rendered.config,
        hosts: HOSTS,
        criticalProcesses: spec.criticalProcesses,
      });
    }
    // Two minutes of the run, a scrape of each variant every 10 s.
    for (let i = 0; i < 12; i++) {
      now += 10_000;
      plane.tick(10);
    }
    analyzer = new LocalAnalyzer(plane, { warmupSeconds: 30, clock: () => new Date(now) });
  });

  after(() => plane.close());

  it('returns every host’s samples of both variants over the window, warm-up excluded', async () => {
    const m = await analyzer.measure({ experimentId, spec, window: { start: runStart, end: new Date(now) } });
    const samples = m.samples ?? [];
    for (const variant of ['baseline', 'candidate'] as const) {
      const mine = samples.filter((s) => s.variant === variant);
      const hosts = new Set(mine.map((s) => s.host));
      assert.equal(hosts.size, HOSTS);
      // 120 s of scrapes every 10 s, less the first 30 s: 9 or 10 per host.
      const perHost = mine.length / HOSTS;
      assert.ok(perHost >= 9 && perHost <= 10, `${perHost} samples per host`);
      for (const s of mine) {
        assert.ok(Date.parse(s.at) >= runStart.getTime() + 30_000, `${s.at} is in the warm-up`);
        assert.ok((s.series ?? 0) > 0 && (s.datapointsPerMinute ?? 0) > 0);
        assert.ok((s.collectorCpuCores ?? 0) > 0 && (s.collectorMemoryBytes ?? 0) > 40e6);
        assert.ok((s.inputPointsPerMinute ?? 0) > 0);
      }
    }
    // Same fleet, same input: both scrapers saw the same processes; the candidate's scraper config
    // collects fewer metrics, so its receiver accepted fewer points.
    const total = (v: Variant, f: 'inputProcesses' | 'inputPointsPerMinute') =>
      samples.filter((s) => s.variant === v).reduce((n, s) => n + (s[f] ?? 0), 0);
    assert.equal(total('baseline', 'inputProcesses'), total('candidate', 'inputProcesses'));
    assert.ok(total('baseline', 'inputProcesses') > 0);
    assert.ok(total('candidate', 'inputPointsPerMinute') < total('baseline', 'inputPointsPerMinute'));
    // The candidate rolls processes up: fewer series on every host.
    const mean = (v: Variant) =>
      samples.filter((s) => s.variant === v).reduce((n, s) => n + (s.series ?? 0), 0) / samples.length;
    assert.ok(mean('candidate') < mean('baseline'));
    const byExe = m.seriesByExecutable;
    assert.ok(byExe && (byExe.baseline.sshd ?? 0) > 0 && (byExe.candidate.sshd ?? 0) > 0);
    assert.equal(byExe.candidate.kubelet, undefined);
    assert.deepEqual(m.collectorHealth, {
      baseline: { restarts: 0, droppedPoints: 0 },
      candidate: { restarts: 0, droppedPoints: 0 },
    });
    assert.deepEqual(m.queryResults, [
      {
        name: 'cpu',
        query: spec.compatibilityQueries?.[0]?.query,
        baseline: null,
        candidate: null,
        error: LOCAL_CANNOT_RUN_PROMQL,
      },
    ]);
    const queries = m.evidence.queries as { figure: string; variant: string; samples: number }[];
    assert.ok(queries.some((q) => q.figure === 'series' && q.variant === 'candidate' && q.samples > 0));
  });

  it('probes: the critical processes the candidate lacks now, and faults since the run started', async () => {
    const clean = await analyzer.probe({ experimentId, spec, runStartedAt: runStart });
    assert.deepEqual(
      clean.missingCriticalProcesses,
      Array.from({ length: HOSTS }, (_, h) => `node-${String(h + 1).padStart(4, '0')}/kubelet`),
    );
    assert.deepEqual(clean.collectorHealth.candidate, { restarts: 0, droppedPoints: 0 });

    now += 1000;
    assert.ok(plane.injectFault(experimentId, 'candidate', { kind: 'restart' }));
    assert.ok(plane.injectFault(experimentId, 'baseline', { kind: 'drop', pointsPerHost: 10 }));
    const faulty = await analyzer.probe({ experimentId, spec, runStartedAt: runStart });
    assert.deepEqual(faulty.collectorHealth, {
      baseline: { restarts: 0, droppedPoints: 10 * HOSTS },
      candidate: { restarts: 1, droppedPoints: 0 },
    });
    // The restart shows in the exposition too: uptime starts again, failed exports are counted.
    const text = plane.exposition(experimentId);
    assert.match(
      text,
      /otelcol_exporter_send_failed_metric_points_total\{[^}]*variant="baseline"[^}]*\} 10\n/,
    );
    assert.match(text, /otelcol_process_uptime_total\{[^}]*variant="candidate"[^}]*\} 0\n/);
    // A later run (window after the faults) sees none of them.
    const later = await analyzer.probe({ experimentId, spec, runStartedAt: new Date(now + 1) });
    assert.deepEqual(later.collectorHealth.candidate, { restarts: 0, droppedPoints: 0 });
  });
});

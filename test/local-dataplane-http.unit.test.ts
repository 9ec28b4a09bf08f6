import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LocalDataPlane, LocalDataPlaneError } from '../src/adapters/local-dataplane.js';
import { renderVariant, type TemplateName, type Variant } from '../src/domain/pipelines/index.js';
import { parseExposition } from './support/exposition.js';

const CRITICAL = ['^kubelet$', '^sshd$'];

const config = (variant: Variant, template: TemplateName) => {
  const rendered = renderVariant({
    experimentId: 'exp-http',
    variant,
    template,
    criticalProcesses: CRITICAL,
  });
  assert.ok(rendered.ok);
  return rendered;
};

describe('local data plane HTTP exposition', () => {
  let plane: LocalDataPlane;
  const hosts = 3;

  before(async () => {
    plane = await LocalDataPlane.start({ port: 0, tickMs: 0 });
    plane.deploy({
      experimentId: 'exp-http',
      variant: 'baseline',
      config: config('baseline', 'process-baseline-v1').yaml,
      hosts,
      processesPerHost: 120,
      seed: 5,
      criticalProcesses: CRITICAL,
    });
    plane.deploy({
      experimentId: 'exp-http',
      variant: 'candidate',
      config: config('candidate', 'process-aggregated-v1').config,
      hosts,
      processesPerHost: 120,
      seed: 5,
      criticalProcesses: CRITICAL,
    });
  });

  after(async () => {
    await plane.close();
  });

  it('listens on a free port and serves each variant with the labels the analyzer queries by', async () => {
    const url = plane.endpointUrl('exp-http', 'candidate');
    assert.match(url ?? '', /^http:\/\/127\.0\.0\.1:\d+\/metrics\/exp-http\/candidate$/);
    const res = await fetch(url as string);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const { samples } = parseExposition(await res.text());
    const process = samples.filter((s) => s.name.startsWith('process_'));
    const snapshot = plane.snapshot('exp-http', 'candidate');
    assert.equal(process.length, snapshot?.series);
    const nodes = new Set(Object.keys(snapshot?.processesByNode ?? {}));
    assert.equal(nodes.size, hosts);
    for (const s of process) {
      assert.equal(s.labels.experiment_id, 'exp-http');
      assert.equal(s.labels.variant, 'candidate');
      assert.ok(nodes.has(s.labels.k8s_node_name as string), s.labels.k8s_node_name);
      assert.ok(s.labels.process_executable_name, 'process_executable_name');
    }
    // The first scrape, as the real scraper's: CPU utilization needs two scrapes of a process.
    assert.deepEqual([...new Set(process.map((s) => s.name))].sort(), ['process_memory_usage_bytes']);
    const second = new LocalDataPlane({ tickMs: 0 });
    second.deploy({
      experimentId: 'exp-http',
      variant: 'candidate',
      config: config('candidate', 'process-aggregated-v1').config,
      hosts,
      processesPerHost: 120,
      seed: 5,
      criticalProcesses: CRITICAL,
    });
    second.tick(60);
    const later = parseExposition(second.exposition('exp-http', 'candidate'));
    await second.close();
    assert.deepEqual(
      [...new Set(later.samples.map((s) => s.name).filter((n) => n.startsWith('process_')))].sort(),
      ['process_cpu_utilization_ratio', 'process_memory_usage_bytes'],
    );
    assert.equal(later.types.get('process_cpu_utilization_ratio'), 'gauge');
    // Critical processes stay per process (with a pid); the rest are aggregated without one.
    for (const s of process)
      assert.equal(
        s.labels.process_pid !== undefined,
        /^(kubelet|sshd)$/.test(s.labels.process_executable_name as string),
      );
  });

  it('exposes the collector self-metrics per node and variant', async () => {
    const { samples, types } = parseExposition(
      await (await fetch(plane.endpointUrl('exp-http', 'baseline') as string)).text(),
    );
    for (const name of [
      'otelcol_exporter_sent_metric_points_total',
      'otelcol_process_cpu_seconds_total',
      'otelcol_process_memory_rss',
      'otelcol_receiver_accepted_metric_points_total',
    ]) {
      const rows = samples.filter((s) => s.name === name);
      assert.ok(rows.length >= hosts, name);
      assert.ok(types.has(name), name);
      for (const r of rows) {
        assert.equal(r.labels.variant, 'baseline');
        assert.ok(r.value > 0, `${name} ${r.value}`);
      }
    }
    const sent = samples.filter(
      (s) => s.name === 'otelcol_exporter_sent_metric_points_total' && s.labels.exporter === 'prometheus',
    );
    const processSeries = samples.filter((s) => s.name.startsWith('process_')).length;
    assert.equal(
      sent.reduce((a, s) => a + s.value, 0),
      processSeries,
    );
    assert.equal(types.get('process_cpu_time_seconds_total'), 'counter');
  });

  it('serves all variants on /metrics with one TYPE line per family', async () => {
    const { samples } = parseExposition(await (await fetch(`${plane.url}/metrics`)).text());
    assert.deepEqual(new Set(samples.map((s) => s.labels.variant)), new Set(['baseline', 'candidate']));
  });

  it('answers 404 for variants that are not deployed and unknown paths', async () => {
    assert.equal((await fetch(`${plane.url}/metrics/nope/baseline`)).status, 404);
    assert.equal((await fetch(`${plane.url}/other`)).status, 404);
    assert.equal((await fetch(`${plane.url}/healthz`)).status, 200);
  });

  it('keeps scraping on its interval and accumulates counters', () => {
    const before = plane.snapshot('exp-http', 'baseline');
    plane.tick(30);
    assert.equal(
      plane.snapshot('exp-http', 'baseline')?.scrapes,
      before?.scrapes,
      'not due yet at 30 s of 60 s',
    );
    plane.tick(30);
    const after = plane.snapshot('exp-http', 'baseline');
    assert.equal(after?.scrapes, (before?.scrapes ?? 0) + 1);
    assert.ok((after?.collector.cpuSecondsTotal ?? 0) > (before?.collector.cpuSecondsTotal ?? 0));
    assert.equal(after?.simulatedTimeSeconds, 60);
  });

  it('reports the candidate cheaper than the baseline, with every critical process seen', () => {
    const b = plane.snapshot('exp-http', 'baseline');
    const c = plane.snapshot('exp-http', 'candidate');
    assert.ok(b && c);
    assert.ok(c.series < b.series / 2);
    assert.ok(c.datapointsPerMinute < b.datapointsPerMinute / 2);
    assert.ok(c.collector.memoryRssBytesPerNode < b.collector.memoryRssBytesPerNode);
    assert.deepEqual(c.criticalSeen, b.criticalSeen);
    assert.ok(b.criticalSeen.length >= hosts * 2);
  });

  it("gives the baseline's per-process usage for tuning", () => {
    const usage = plane.usage('exp-http', 'baseline');
    assert.equal(usage?.length, hosts * 120);
    assert.ok(Array.from(usage?.cpu ?? []).some((v) => v > 0));
  });

  it('refuses a second variant on a different fleet and a config it cannot run', () => {
    assert.throws(
      () =>
        plane.deploy({
          experimentId: 'exp-http',
          variant: 'candidate',
          config: config('candidate', 'process-topk-v1').config,
          hosts: 4,
          processesPerHost: 120,
          seed: 5,
        }),
      LocalDataPlaneError,
    );
    assert.throws(
      () =>
        plane.deploy({
          experimentId: 'x',
          variant: 'baseline',
          config: 'receivers: {}\nservice: {pipelines: {}}',
          hosts: 1,
        }),
      /cannot run this config/,
    );
    assert.throws(
      () => plane.deploy({ experimentId: 'x', variant: 'baseline', config: ': : :', hosts: 1 }),
      LocalDataPlaneError,
    );
  });

  it('tears an experiment down', async () => {
    plane.deploy({
      experimentId: 'gone',
      variant: 'baseline',
      config: config('baseline', 'process-baseline-v1').config,
      hosts: 1,
      processesPerHost: 50,
    });
    assert.equal(plane.isDeployed('gone', 'baseline'), true);
    assert.equal(plane.teardown('gone'), true);
    assert.equal(plane.isDeployed('gone', 'baseline'), false);
    assert.equal(plane.snapshot('gone', 'baseline'), undefined);
    assert.equal((await fetch(`${plane.url}/metrics/gone/baseline`)).status, 404);
    assert.equal(plane.teardown('gone'), false);
  });
});

describe('local data plane lifecycle', () => {
  it('ticks on a real timer and closes cleanly', async () => {
    const plane = await LocalDataPlane.start({ tickMs: 10, simulatedSecondsPerTick: 60 });
    const rendered = config('baseline', 'process-minimal-v1');
    plane.deploy({
      experimentId: 'timer',
      variant: 'baseline',
      config: rendered.config,
      hosts: 2,
      processesPerHost: 80,
    });
    const url = plane.url as string;
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.ok((plane.snapshot('timer', 'baseline')?.scrapes ?? 0) >= 3);
    await plane.close();
    await assert.rejects(fetch(`${url}/healthz`));
  });

  it('the timer, ticking in slices, scrapes every experiment and survives teardowns between slices', async () => {
    const plane = new LocalDataPlane({ tickMs: 20, simulatedSecondsPerTick: 60 });
    const rendered = config('baseline', 'process-baseline-v1');
    const ids = Array.from({ length: 40 }, (_, i) => `many-${i}`);
    for (const id of ids) {
      plane.deploy({
        experimentId: id,
        variant: 'baseline',
        config: rendered.config,
        hosts: 4,
        processesPerHost: 300,
      });
    }
    let torn = 0;
    const deadline = Date.now() + 10_000;
    // The torn-down ones never get there: waiting on them ran every time into the deadline.
    const kept = ids.slice(0, 35);
    while (kept.some((id) => (plane.snapshot(id, 'baseline')?.scrapes ?? 0) < 3) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (torn < 5) plane.teardown(`many-${39 - torn++}`);
    }
    for (const id of kept) assert.ok((plane.snapshot(id, 'baseline')?.scrapes ?? 0) >= 3, id);
    for (const id of ids.slice(35)) assert.equal(plane.snapshot(id, 'baseline'), undefined);
    await plane.close();
  });

  it('works without listening (the CLI uses it that way)', async () => {
    const plane = new LocalDataPlane({ tickMs: 0 });
    const snap = plane.deploy({
      experimentId: 'quiet',
      variant: 'baseline',
      config: config('baseline', 'process-baseline-v1').config,
      hosts: 2,
      processesPerHost: 50,
    });
    assert.equal(snap.endpoint, undefined);
    assert.equal(snap.series, 2 * 50 * 7);
    assert.match(plane.exposition('quiet', 'baseline'), /^# HELP /);
    await plane.close();
  });
});

describe('local data plane: a started variant scrapes when first needed', () => {
  const input = (experimentId: string) => ({
    experimentId,
    variant: 'baseline' as const,
    config: config('baseline', 'process-baseline-v1').config,
    hosts: 2,
    processesPerHost: 50,
    seed: 9,
    criticalProcesses: CRITICAL,
  });

  it('reports a started variant ready without scraping; a snapshot then scrapes it once', async () => {
    const plane = await LocalDataPlane.start({ port: 0, tickMs: 0 });
    try {
      const started = plane.startVariant(input('exp-lazy'));
      assert.equal(started.hosts, 2);
      assert.ok(started.collectionIntervalSeconds > 0);
      assert.match(started.endpoint ?? '', /\/metrics\/exp-lazy\/baseline$/);
      assert.ok(plane.isDeployed('exp-lazy', 'baseline'));
      const first = plane.snapshot('exp-lazy', 'baseline');
      assert.equal(first?.scrapes, 1);
      assert.ok((first?.series ?? 0) > 0);
      // asking again does not scrape again; the same output as deploy() gives at once
      assert.equal(plane.snapshot('exp-lazy', 'baseline')?.scrapes, 1);
      const deployed = plane.deploy(input('exp-eager'));
      assert.equal(deployed.scrapes, 1);
      assert.equal(deployed.series, first?.series);
      assert.deepEqual(deployed.processesByNode, first?.processesByNode);
    } finally {
      await plane.close();
    }
  });

  it('scrapes a started variant at the next tick, and gives its usage (to tune from) before that', async () => {
    const plane = await LocalDataPlane.start({ port: 0, tickMs: 0 });
    try {
      plane.startVariant(input('exp-tick'));
      plane.tick(1);
      assert.equal(plane.snapshot('exp-tick', 'baseline')?.scrapes, 1);
      plane.startVariant(input('exp-usage'));
      const usage = plane.usage('exp-usage', 'baseline');
      assert.ok((usage?.length ?? 0) > 0);
      assert.equal(plane.snapshot('exp-usage', 'baseline')?.scrapes, 1);
    } finally {
      await plane.close();
    }
  });
});

describe('local data plane: the exporter keeps series of exited processes until metric_expiration', () => {
  /** The processes (node/pid) in a variant's exposition, and its process series. */
  const shown = (plane: LocalDataPlane) => {
    const samples = parseExposition(plane.exposition('exp-stale', 'baseline')).samples.filter((s) =>
      s.name.startsWith('process_'),
    );
    return {
      series: samples.length,
      pids: new Set(samples.map((s) => `${s.labels.k8s_node_name}/${s.labels.process_pid}`)),
    };
  };
  const deploy = (expiration?: string) => {
    const rendered = config('baseline', 'process-baseline-v1');
    const prometheus = rendered.config.exporters.prometheus as Record<string, unknown>;
    if (expiration !== undefined) prometheus.metric_expiration = expiration;
    const plane = new LocalDataPlane({ tickMs: 0 });
    plane.deploy({
      experimentId: 'exp-stale',
      variant: 'baseline',
      config: rendered.config,
      hosts: 2,
      processesPerHost: 200,
      seed: 9,
    });
    return plane;
  };

  it('shows them with their last values for 5 simulated minutes by default, then drops them', async () => {
    const plane = deploy();
    const first = shown(plane).pids;
    plane.tick(60);
    const second = shown(plane);
    const live = plane.snapshot('exp-stale', 'baseline')?.series ?? 0;
    assert.ok(second.series > live, 'exited processes still shown');
    for (const pid of first) assert.ok(second.pids.has(pid), pid);
    for (let t = 120; t <= 300; t += 60) plane.tick(60);
    // At 300 s the first scrape's series are exactly 5 minutes old: still shown.
    const atFiveMinutes = shown(plane).pids;
    for (const pid of first) assert.ok(atFiveMinutes.has(pid), pid);
    plane.tick(60);
    const late = shown(plane).pids;
    const exitedAfterFirst = [...first].filter((pid) => !late.has(pid));
    assert.ok(exitedAfterFirst.length > 0, 'some processes of the first scrape are gone at 360 s');
    await plane.close();
  });

  it('honours a configured metric_expiration', async () => {
    const plane = deploy('90s');
    const first = shown(plane).pids;
    plane.tick(60);
    const live = plane.snapshot('exp-stale', 'baseline')?.series ?? 0;
    assert.ok(shown(plane).series > live);
    plane.tick(60);
    plane.tick(60);
    // Every series still shown was updated within the last 90 s, i.e. by one of the last two scrapes.
    const now = shown(plane);
    assert.ok(
      [...first].some((pid) => !now.pids.has(pid)),
      'the first scrape’s exited processes are gone',
    );
    await plane.close();
  });

  it('refuses a metric_expiration it cannot read', () => {
    const rendered = config('baseline', 'process-baseline-v1');
    (rendered.config.exporters.prometheus as Record<string, unknown>).metric_expiration = 'soon';
    const plane = new LocalDataPlane({ tickMs: 0 });
    assert.throws(
      () =>
        plane.deploy({
          experimentId: 'exp-stale',
          variant: 'baseline',
          config: rendered.config,
          hosts: 1,
          processesPerHost: 50,
        }),
      (err: unknown) => err instanceof LocalDataPlaneError && /metric_expiration/.test(err.message),
    );
  });
});

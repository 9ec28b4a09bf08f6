import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { freePort, isOurProcess } from '../src/adapters/child-processes.js';
import {
  OtelcolDeployer,
  shardLayout,
  shardsFor,
  simulatedScraper,
  simulationConfig,
  splitHosts,
} from '../src/adapters/otelcol-deployer.js';
import { renderVariant, TEMPLATE_NAMES } from '../src/domain/pipelines/index.js';

/**
 * The otelcol deployer turns the deployed config (what the worker rendered, tuning included) into the
 * config it runs here; these pin that it is the render's own simulation config, listeners aside.
 */
const PORTS = { otlp: 4001, prometheus: 4002, telemetry: 4003, health: 4004 };

const render = (template: string, simulation?: { otlpEndpoint: string }, otlpEndpoint?: string) => {
  const rendered = renderVariant({
    experimentId: 'exp-1',
    variant: 'candidate',
    template,
    params: { collectionIntervalSeconds: 7 },
    criticalProcesses: ['^kubelet$'],
    keepList: ['containerd'],
    thresholds: { cpuUtilization: 0.01, memoryBytes: 1e6 },
    ...(simulation ? { simulation } : {}),
    ...(otlpEndpoint ? { otlpEndpoint } : {}),
  });
  assert.ok(rendered.ok, JSON.stringify(rendered.ok ? [] : rendered.errors));
  return rendered;
};

describe('the otelcol deployer: the config it runs', () => {
  for (const template of TEMPLATE_NAMES) {
    it(`${template}: the simulator sends what the scraper of the deployed config would`, () => {
      const rendered = render(template);
      assert.deepEqual(simulatedScraper(rendered.config), rendered.processScraper);
    });

    it(`${template}: the render's simulation config, on the deployer's ports, without the unreachable default gateway`, () => {
      const deployed = render(template);
      const expected = render(template, { otlpEndpoint: `127.0.0.1:${PORTS.otlp}` }).config;
      const actual = simulationConfig(deployed.config, PORTS);
      assert.deepEqual(actual.receivers, expected.receivers);
      assert.deepEqual(actual.processors, expected.processors);
      assert.deepEqual(Object.keys(actual.exporters), ['prometheus']);
      assert.deepEqual(actual.service.pipelines.metrics?.exporters, ['prometheus']);
      assert.deepEqual(
        actual.service.pipelines.metrics?.processors,
        expected.service.pipelines.metrics?.processors,
      );
      assert.equal((actual.exporters.prometheus as { endpoint: string }).endpoint, '127.0.0.1:4002');
      assert.equal((actual.extensions.health_check as { endpoint: string }).endpoint, '127.0.0.1:4004');
      assert.deepEqual((actual.service.telemetry.metrics as { readers: unknown }).readers, [
        { pull: { exporter: { prometheus: { host: '127.0.0.1', port: 4003 } } } },
      ]);
      assert.equal((actual.service.telemetry.metrics as { level: string }).level, 'detailed');
      // The deployed config itself is left as it was.
      assert.ok('hostmetrics' in deployed.config.receivers);
    });
  }

  it('keeps an otlp exporter that points somewhere real', () => {
    const actual = simulationConfig(
      render('process-baseline-v1', undefined, 'gateway.local:4317').config,
      PORTS,
    );
    assert.deepEqual(actual.service.pipelines.metrics?.exporters, ['prometheus', 'otlp']);
  });

  it('has nothing to simulate without a process scraper', () => {
    const config = render('process-baseline-v1').config;
    assert.equal(simulatedScraper({ ...config, receivers: { otlp: {} } }), undefined);
  });

  it('refuses more collectors than a variant may run as, before starting anything', async () => {
    const deployer = new OtelcolDeployer({
      bin: '/nonexistent/otelcol',
      stateDir: '/nonexistent/state',
      sdDir: '/nonexistent/targets',
      processesPerHost: 50,
      maxShardsPerVariant: 2,
    });
    const rendered = render('process-baseline-v1');
    const outcome = await deployer.deploy({
      experimentId: 'exp-1',
      variant: 'baseline',
      template: rendered.template,
      params: {},
      config: rendered.config,
      namespace: 'phoenix-experiments',
      nodeSelector: {},
      hosts: 401,
      criticalProcesses: [],
    });
    assert.deepEqual(outcome, {
      ok: false,
      reason:
        '401 hosts × 50 processes is 20050 simulated processes, 3 collectors of at most 10000, more than a variant runs here (2): target fewer hosts, lower PHOENIX_OTELCOL_PROCESSES_PER_HOST or raise PHOENIX_OTELCOL_MAX_SHARDS',
    });
  });

  it('refuses an experiment id that could leave its folder', async () => {
    const deployer = new OtelcolDeployer({ bin: '/x', stateDir: '/nonexistent', sdDir: '/nonexistent' });
    const rendered = render('process-baseline-v1');
    const outcome = await deployer.deploy({
      experimentId: '../etc',
      variant: 'baseline',
      template: rendered.template,
      params: {},
      config: rendered.config,
      namespace: 'n',
      nodeSelector: {},
      hosts: 1,
      criticalProcesses: [],
    });
    assert.equal(outcome.ok, false);
    assert.deepEqual(await deployer.teardown('../etc'), { variants: [] });
    assert.equal(await deployer.isDeployed('../etc', 'baseline'), false);
  });
});

/** A stand-in for a collector: a process with the collector's marker whose health check answers. */
const fakeCollector = async (marker: string, health: number) => {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `require('node:http').createServer((q, s) => s.end('ok')).listen(${health}, '127.0.0.1')`,
      '--',
      marker,
    ],
    { detached: true, stdio: 'ignore' },
  );
  child.unref();
  for (let i = 0; i < 100; i++) {
    if (
      await fetch(`http://127.0.0.1:${health}/`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: child.pid as number,
    kill: () => {
      try {
        process.kill(child.pid as number, 'SIGKILL');
      } catch {
        // gone
      }
    },
  };
};

describe('the otelcol deployer: shards', () => {
  it('splits the hosts into runs of whole hosts, as even as can be, each host once', () => {
    assert.deepEqual(splitHosts(5, 2), [
      [0, 1, 2],
      [3, 4],
    ]);
    assert.deepEqual(splitHosts(3, 1), [[0, 1, 2]]);
    assert.deepEqual(splitHosts(4, 4), [[0], [1], [2], [3]]);
    for (const [hosts, shards] of [
      [201, 2],
      [1000, 7],
      [9, 8],
    ] as const) {
      const split = splitHosts(hosts, shards);
      assert.equal(split.length, shards);
      assert.deepEqual(
        split.flat(),
        Array.from({ length: hosts }, (_, h) => h),
      );
      const sizes = split.map((s) => s.length);
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `${hosts}/${shards}: ${sizes}`);
    }
    assert.throws(() => splitHosts(2, 3), RangeError);
    assert.throws(() => splitHosts(2, 0), RangeError);
  });

  it('runs the fewest collectors that keep each within its share, up to the bound', () => {
    const limits = { maxProcessesPerCollector: 10_000, maxShardsPerVariant: 8 };
    assert.deepEqual(shardsFor(200, 50, limits), { ok: true, shards: 1 });
    assert.deepEqual(shardsFor(201, 50, limits), { ok: true, shards: 2 });
    assert.deepEqual(shardsFor(1600, 50, limits), { ok: true, shards: 8 });
    // 201 hosts in 2 shards: 101 and 100 hosts, each within 10,000 processes.
    assert.ok(splitHosts(201, 2).every((s) => s.length * 50 <= 10_000));
    // 3 processes per host, at most 10 per collector: 3 hosts each.
    assert.deepEqual(shardsFor(7, 3, { maxProcessesPerCollector: 10, maxShardsPerVariant: 8 }), {
      ok: true,
      shards: 3,
    });
    const tooMany = shardsFor(1601, 50, limits);
    assert.equal(tooMany.ok, false);
    assert.match(
      tooMany.ok ? '' : tooMany.reason,
      /9 collectors of at most 10000, more than a variant runs here \(8\)/,
    );
    const tooBig = shardsFor(1, 50, { maxProcessesPerCollector: 40, maxShardsPerVariant: 8 });
    assert.deepEqual(tooBig, {
      ok: false,
      reason:
        "one host's 50 simulated processes are more than one collector here is sent (40): lower PHOENIX_OTELCOL_PROCESSES_PER_HOST",
    });
  });

  it('lays shard 0 out as a variant was before shards, the others in subfolders', () => {
    assert.deepEqual(shardLayout('/s', 'exp-1', 'baseline', 0), {
      dir: '/s/exp-1/baseline',
      config: '/s/exp-1/baseline/config.yaml',
      record: '/s/exp-1/baseline/collector.json',
      log: '/s/exp-1/baseline/collector.log',
      marker: '--config=/s/exp-1/baseline/config.yaml',
    });
    const second = shardLayout('/s', 'exp-1', 'baseline', 2);
    assert.equal(second.dir, '/s/exp-1/baseline/shard-2');
    assert.equal(second.marker, '--config=/s/exp-1/baseline/shard-2/config.yaml');
    // No marker is a prefix of another's (a process is found by its marker's prefix).
    const markers = [0, 1, 2, 10].map((k) => shardLayout('/s', 'e', 'candidate', k).marker);
    for (const a of markers) for (const b of markers) if (a !== b) assert.ok(!b.startsWith(a), `${a} ${b}`);
  });

  it('adopts a variant recorded before shards (one collector, no shard fields) at a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'phoenix-otelcol-legacy-'));
    const stateDir = join(dir, 'state');
    const sdDir = join(dir, 'targets');
    const health = await freePort();
    const layout = shardLayout(stateDir, 'exp-old', 'baseline', 0);
    mkdirSync(layout.dir, { recursive: true });
    const collector = await fakeCollector(layout.marker, health);
    // What a deployer before shards wrote: no shard, no shards.
    writeFileSync(
      layout.record,
      JSON.stringify({
        experimentId: 'exp-old',
        variant: 'baseline',
        pid: collector.pid,
        ports: { otlp: await freePort(), prometheus: 1, telemetry: 2, health },
        configHash: 'x',
        config: render('process-baseline-v1').config,
        hosts: 2,
        processesPerHost: 3,
        seed: 1,
        startedAt: new Date().toISOString(),
      }),
    );
    const deployer = new OtelcolDeployer({ bin: '/nonexistent', stateDir, sdDir, processesPerHost: 3 });
    try {
      assert.deepEqual(await deployer.recover(), { adopted: ['exp-old/baseline'], cleaned: [] });
      assert.deepEqual(await deployer.deployedVariants('exp-old'), ['baseline']);
      const targets = JSON.parse(readFileSync(join(sdDir, 'exp-old-baseline.json'), 'utf8'));
      assert.deepEqual(
        targets.map((t: { labels: Record<string, string> }) => t.labels),
        [{ experiment_id: 'exp-old', variant: 'baseline', data_plane: 'otelcol', shard: '0' }],
      );
      assert.deepEqual((await deployer.teardown('exp-old')).variants, ['baseline']);
      assert.equal(await isOurProcess(collector.pid, layout.marker), false);
      assert.equal(existsSync(join(stateDir, 'exp-old')), false);
    } finally {
      await deployer.close();
      collector.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('at a restart, stops and cleans every shard of a variant one of whose shards is gone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'phoenix-otelcol-partial-'));
    const stateDir = join(dir, 'state');
    const sdDir = join(dir, 'targets');
    const health = await freePort();
    const layouts = [0, 1].map((k) => shardLayout(stateDir, 'exp-part', 'candidate', k));
    for (const layout of layouts) mkdirSync(layout.dir, { recursive: true });
    // Shard 0 still answers; shard 1's process is gone (its pid is beyond any pid_max).
    const live = await fakeCollector(layouts[0]?.marker as string, health);
    const record = (shard: number, pid: number) => ({
      experimentId: 'exp-part',
      variant: 'candidate',
      shard,
      shards: 2,
      pid,
      ports: { otlp: 1, prometheus: 2, telemetry: 3, health },
      configHash: 'x',
      config: render('process-baseline-v1').config,
      hosts: 2,
      processesPerHost: 3,
      seed: 1,
      startedAt: new Date().toISOString(),
    });
    writeFileSync(layouts[0]?.record as string, JSON.stringify(record(0, live.pid)));
    writeFileSync(layouts[1]?.record as string, JSON.stringify(record(1, 2 ** 22 + 1)));
    mkdirSync(sdDir, { recursive: true });
    writeFileSync(join(sdDir, 'exp-part-candidate.json'), '[]');
    const deployer = new OtelcolDeployer({ bin: '/nonexistent', stateDir, sdDir });
    try {
      assert.equal(await deployer.isDeployed('exp-part', 'candidate'), false, 'short of a shard');
      assert.deepEqual(await deployer.recover(), { adopted: [], cleaned: ['exp-part/candidate'] });
      assert.equal(await isOurProcess(live.pid, layouts[0]?.marker as string), false);
      assert.equal(existsSync(join(stateDir, 'exp-part')), false);
      assert.equal(existsSync(join(sdDir, 'exp-part-candidate.json')), false);
    } finally {
      live.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lists the experiments recorded for a namespace; a record older than namespaces for any', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'phoenix-otelcol-held-'));
    const stateDir = join(dir, 'state');
    const write = (experimentId: string, variant: 'baseline' | 'candidate', namespace?: string) => {
      const layout = shardLayout(stateDir, experimentId, variant, 0);
      mkdirSync(layout.dir, { recursive: true });
      writeFileSync(
        layout.record,
        JSON.stringify({
          experimentId,
          variant,
          ...(namespace ? { namespace } : {}),
          shard: 0,
          shards: 1,
          pid: 2 ** 30,
          ports: { otlp: 1, prometheus: 2, telemetry: 3, health: 4 },
          configHash: 'x',
          config: render('process-baseline-v1').config,
          hosts: 2,
          processesPerHost: 3,
          seed: 1,
          startedAt: new Date().toISOString(),
        }),
      );
    };
    write('exp-here', 'candidate', 'ns-a');
    write('exp-there', 'baseline', 'ns-b');
    write('exp-old', 'baseline');
    // A folder with no record (a crash before the record was written) is recover()'s to clean.
    mkdirSync(join(stateDir, 'exp-bare', 'baseline'), { recursive: true });
    const deployer = new OtelcolDeployer({ bin: '/nonexistent', stateDir, sdDir: join(dir, 'targets') });
    try {
      assert.deepEqual([...(await deployer.heldExperiments('ns-a'))].sort(), ['exp-here', 'exp-old']);
      assert.deepEqual([...(await deployer.heldExperiments('ns-b'))].sort(), ['exp-old', 'exp-there']);
      assert.deepEqual(await deployer.heldExperiments('ns-c'), ['exp-old']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, isOurProcess, processesWithArgument } from '../src/adapters/child-processes.js';
import { OtelcolDeployer } from '../src/adapters/otelcol-deployer.js';
import { PrometheusAnalyzer } from '../src/adapters/prometheus-analyzer.js';
import { ManagedPrometheus } from '../src/adapters/prometheus-server.js';
import type { VariantDeployment } from '../src/application/ports/deployer.js';
import type { Variant } from '../src/domain/experiment-spec.js';
import { renderVariant } from '../src/domain/pipelines/index.js';
import { findCollector } from './support/otelcol.js';
import { prometheusSkipReason } from './support/prometheus.js';

/**
 * Issue 17 §5: the otelcol deployer runs each variant as a real collector fed by the simulator over
 * OTLP, a real Prometheus finds both through file_sd, the Prometheus analyzer's PromQL reads their
 * series and the collectors' own process metrics, teardown leaves no process, and a new deployer on
 * the same folder adopts what a killed one left running.
 */

const collector = findCollector();

/** SIGKILL to a leftover; one that ended meanwhile is fine. */
const killQuietly = (pid: number) => {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
};
const skip = collector.skip || prometheusSkipReason();
if (skip) console.log(`# skipping the otelcol deployer tests: ${skip}`);

const HOSTS = 3;
// The simulated fleet's first 25 processes of a host hold kubelet and containerd (its catalog's order).
const PER_HOST = 25;

const deployment = (
  experimentId: string,
  variant: Variant,
  template: string,
  extra = {},
): VariantDeployment => {
  const rendered = renderVariant({
    experimentId,
    variant,
    template,
    params: { collectionIntervalSeconds: 2 },
    criticalProcesses: ['^kubelet$'],
    ...extra,
  });
  assert.ok(rendered.ok, JSON.stringify(rendered.ok ? [] : rendered.errors));
  return {
    experimentId,
    variant,
    template: rendered.template,
    params: rendered.params as Record<string, unknown>,
    config: rendered.config,
    namespace: 'phoenix-experiments',
    nodeSelector: {},
    hosts: HOSTS,
    criticalProcesses: ['^kubelet$'],
  };
};

const pidOf = (detail: Record<string, unknown>): number => detail.pid as number;

describe('the otelcol deployer (issue 17 §5)', { skip: skip || false }, () => {
  const bin = collector.bin as string;
  let dir: string;
  let stateDir: string;
  let sdDir: string;
  let prometheus: ManagedPrometheus;
  let deployer: OtelcolDeployer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phoenix-otelcol-deployer-'));
    stateDir = join(dir, 'otelcol');
    sdDir = join(dir, 'targets');
    prometheus = await ManagedPrometheus.start({
      bin: process.env.PHOENIX_PROMETHEUS_BIN ?? 'prometheus',
      dir: join(dir, 'prometheus'),
      sdDir,
      scrapeIntervalSeconds: 2,
    });
    deployer = new OtelcolDeployer({ bin, stateDir, sdDir, processesPerHost: PER_HOST });
  });

  after(async () => {
    await deployer?.close();
    // Whatever a failed assertion left: no collector of this test outlives it.
    for (const { pid } of await processesWithArgument(`--config=${stateDir}/`)) killQuietly(pid);
    await prometheus?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const query = async (
    promql: string,
  ): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
    const url = `${prometheus.url}/api/v1/query?query=${encodeURIComponent(promql)}`;
    const body = (await fetch(url).then((r) => r.json())) as {
      data: { result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    return body.data.result;
  };

  const waitFor = async <T>(what: string, probe: () => Promise<T | undefined>, ms = 90_000): Promise<T> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = await probe();
      if (found !== undefined) return found;
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  };

  it('deploys a baseline and a candidate that Prometheus sees, with every host, and the analyzer measures', async () => {
    const id = 'otelcol-ab';
    const start = new Date();
    const baseline = await deployer.deploy(deployment(id, 'baseline', 'process-baseline-v1'));
    const candidate = await deployer.deploy(
      deployment(id, 'candidate', 'process-topk-v1', { keepList: ['containerd'] }),
    );
    assert.ok(baseline.ok && candidate.ok, JSON.stringify({ baseline, candidate }));
    assert.equal(baseline.detail.dataPlane, 'otelcol');
    assert.notEqual(pidOf(baseline.detail), pidOf(candidate.detail));
    assert.deepEqual(await deployer.deployedVariants(id), ['baseline', 'candidate']);
    // Recorded with its namespace: the saga's sweep finds it there, and only there.
    assert.ok((await deployer.heldExperiments('phoenix-experiments')).includes(id));
    assert.ok(!(await deployer.heldExperiments('elsewhere')).includes(id));
    // Deploying the same again is a no-op: the same process, no duplicate.
    const again = await deployer.deploy(deployment(id, 'baseline', 'process-baseline-v1'));
    assert.ok(again.ok);
    assert.equal(pidOf(again.detail), pidOf(baseline.detail));

    // Both variants' process series, each simulated host under its own identity.
    const hosts = await waitFor('every host of both variants in Prometheus', async () => {
      const rows = await query(
        `count by (variant, k8s_node_name, host_name) (process_memory_usage_bytes{experiment_id="${id}"})`,
      );
      return rows.length === 2 * HOSTS ? rows : undefined;
    });
    for (const variant of ['baseline', 'candidate']) {
      const mine = hosts.filter((r) => r.metric.variant === variant);
      assert.deepEqual(mine.map((r) => r.metric.k8s_node_name).sort(), [
        'node-0001',
        'node-0002',
        'node-0003',
      ]);
      assert.ok(mine.every((r) => r.metric.host_name === r.metric.k8s_node_name));
    }
    const perHost = Object.fromEntries(
      hosts.map((r) => [`${r.metric.variant}/${r.metric.k8s_node_name}`, Number(r.value[1])]),
    );
    assert.equal(perHost['baseline/node-0001'], PER_HOST);
    assert.ok((perHost['candidate/node-0001'] ?? 0) < PER_HOST);

    // The collectors' own process metrics, under the names v0.165 exports, labelled by the targets.
    await waitFor('two rates of otelcol_process_cpu_seconds', async () => {
      const rows = await query(`rate(otelcol_process_cpu_seconds{experiment_id="${id}"}[20s])`);
      return rows.length === 2 ? rows : undefined;
    });
    const rss = await query(`otelcol_process_memory_rss{experiment_id="${id}"}`);
    assert.deepEqual(rss.map((r) => r.metric.variant).sort(), ['baseline', 'candidate']);
    assert.ok(rss.every((r) => Number(r.value[1]) > 10 * 1024 * 1024));

    // The analyzer's PromQL finds every figure on what the real collectors export.
    const analyzer = new PrometheusAnalyzer({ url: prometheus.url, warmupSeconds: 0 });
    const measured = await waitFor('every figure of both variants', async () => {
      const m = await analyzer.measure({
        experimentId: id,
        spec: { criticalProcesses: ['^kubelet$'] } as never,
        window: { start, end: new Date() },
      });
      const figures = [m.baseline, m.candidate].flatMap((v) => [
        v.series,
        v.datapointsPerMinute,
        v.collectorCpuCores,
        v.collectorMemoryBytes,
      ]);
      return figures.every((f) => f !== null && f > 0) ? m : undefined;
    });
    assert.equal(measured.baseline.series, HOSTS * PER_HOST * 7);
    assert.equal(measured.candidate.series, HOSTS * 2 * 7, 'kubelet and containerd on every host');
    assert.deepEqual(measured.criticalInBaseline, [
      'node-0001/kubelet',
      'node-0002/kubelet',
      'node-0003/kubelet',
    ]);
    assert.deepEqual(measured.missingCriticalProcesses, []);
    const queries = (measured.evidence as { queries: { figure: string; variant: string; query: string }[] })
      .queries;
    const queryOf = (figure: string) =>
      queries.find((q) => q.figure === figure && q.variant === 'baseline')?.query ?? '';
    assert.match(queryOf('collectorCpuCores'), /otelcol_process_cpu_seconds/);
    // Per host: the process series carry the node, the sharded collectors' own telemetry does not.
    const sampledHosts = new Set((measured.samples ?? []).map((s) => s.host));
    assert.deepEqual([...sampledHosts].sort(), ['node-0001', 'node-0002', 'node-0003']);
    assert.ok((measured.samples ?? []).every((s) => s.collectorCpuCores === null));

    // Teardown: no process, no folder, no target left.
    const pids = [pidOf(baseline.detail), pidOf(candidate.detail)];
    assert.deepEqual((await deployer.teardown(id, 'phoenix-experiments')).variants, [
      'baseline',
      'candidate',
    ]);
    for (const pid of pids)
      assert.equal(
        await isOurProcess(pid, `--config=${join(stateDir, id, 'baseline', 'config.yaml')}`),
        false,
      );
    assert.deepEqual(await processesWithArgument(`--config=${join(stateDir, id)}/`), []);
    assert.equal(existsSync(join(stateDir, id)), false);
    assert.deepEqual(
      readdirSync(sdDir).filter((f) => f.startsWith(id)),
      [],
    );
    assert.deepEqual(await deployer.deployedVariants(id), []);
    assert.deepEqual(
      (await deployer.teardown(id, 'phoenix-experiments')).variants,
      [],
      'removing what is gone succeeds',
    );
  });

  it('refuses a config the collector refuses, and leaves nothing behind', async () => {
    const d = deployment('otelcol-bad', 'baseline', 'process-baseline-v1');
    const config = structuredClone(d.config);
    config.processors['filter/broken'] = { metric_conditions: ['this is not OTTL'] };
    config.service.pipelines.metrics?.processors.push('filter/broken');
    const outcome = await deployer.deploy({ ...d, config });
    assert.equal(outcome.ok, false);
    assert.match(outcome.ok ? '' : outcome.reason, /exited/);
    assert.deepEqual(await processesWithArgument(`--config=${join(stateDir, 'otelcol-bad')}/`), []);
    assert.equal(existsSync(join(stateDir, 'otelcol-bad', 'baseline')), false);
  });

  it('a new deployer adopts the collectors a killed Phoenix left running, and cleans up the dead ones', async () => {
    const id = 'otelcol-restart';
    const runChild = (d: VariantDeployment) =>
      new Promise<{
        child: ReturnType<typeof spawn>;
        outcome: { ok: boolean; detail: Record<string, unknown> };
      }>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          [
            '--import',
            'tsx',
            join(import.meta.dirname, 'support', 'otelcol-deployer-child.ts'),
            JSON.stringify(d),
            stateDir,
            sdDir,
            bin,
          ],
          { stdio: ['ignore', 'pipe', 'inherit'] },
        );
        let out = '';
        child.stdout?.on('data', (b: Buffer) => {
          out += b.toString();
          if (out.includes('\n')) resolve({ child, outcome: JSON.parse(out.split('\n')[0] as string) });
        });
        child.once('exit', (code) => reject(new Error(`the deployer child exited with ${code}: ${out}`)));
      });
    const first = await runChild(deployment(id, 'baseline', 'process-baseline-v1'));
    const second = await runChild(deployment(id, 'candidate', 'process-baseline-v1'));
    assert.ok(first.outcome.ok && second.outcome.ok);
    const baselinePid = pidOf(first.outcome.detail);
    const candidatePid = pidOf(second.outcome.detail);
    // The Phoenix side dies without a word; its collectors run on.
    for (const { child } of [first, second]) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    }
    const baselineMarker = `--config=${join(stateDir, id, 'baseline', 'config.yaml')}`;
    const candidateMarker = `--config=${join(stateDir, id, 'candidate', 'config.yaml')}`;
    assert.equal(await isOurProcess(baselinePid, baselineMarker), true);
    // And one of them dies too while no Phoenix watches.
    process.kill(candidatePid, 'SIGKILL');
    await waitFor('the candidate collector to be gone', async () =>
      (await isOurProcess(candidatePid, candidateMarker)) ? undefined : true,
    );

    const restarted = new OtelcolDeployer({ bin, stateDir, sdDir, processesPerHost: PER_HOST });
    try {
      const found = await restarted.recover();
      assert.deepEqual(found.adopted, [`${id}/baseline`]);
      assert.deepEqual(found.cleaned, [`${id}/candidate`]);
      assert.deepEqual(await restarted.deployedVariants(id), ['baseline']);
      assert.equal(existsSync(join(stateDir, id, 'candidate')), false);
      assert.deepEqual(
        readdirSync(sdDir).filter((f) => f.startsWith(id)),
        [`${id}-baseline.json`],
      );
      // No duplicate: the one baseline collector is the one that was running.
      assert.deepEqual(
        (await processesWithArgument(baselineMarker)).map((p) => p.pid),
        [baselinePid],
      );
      // Fed again by the new simulator: the collector keeps accepting points after the adoption.
      const accepted = async () =>
        Number(
          (
            await query(
              `sum(otelcol_receiver_accepted_metric_points{experiment_id="${id}",variant="baseline"})`,
            )
          )[0]?.value[1] ?? 0,
        );
      const before = await waitFor('the adopted collector scraped', async () =>
        (await accepted()) > 0 ? await accepted() : undefined,
      );
      await waitFor('points accepted after the adoption', async () =>
        (await accepted()) > before ? true : undefined,
      );
      // Deploying the adopted variant again converges on it.
      const again = await restarted.deploy(deployment(id, 'baseline', 'process-baseline-v1'));
      assert.ok(again.ok);
      assert.equal(pidOf(again.detail), baselinePid);
      // A second recover finds the same, adopts nothing twice.
      assert.deepEqual((await restarted.recover()).adopted, [`${id}/baseline`]);
      assert.deepEqual(
        (await processesWithArgument(baselineMarker)).map((p) => p.pid),
        [baselinePid],
      );
    } finally {
      await restarted.teardown(id);
      await restarted.close();
    }
    assert.equal(await isOurProcess(baselinePid, baselineMarker), false);
  });

  it('a managed Prometheus a killed Phoenix left running is replaced at the next start, not duplicated', async () => {
    const options = {
      bin: process.env.PHOENIX_PROMETHEUS_BIN ?? 'prometheus',
      dir: join(dir, 'prometheus-restart'),
      sdDir,
    };
    const marker = `--config.file=${join(options.dir, 'prometheus.yml')}`;
    const first = await ManagedPrometheus.start(options);
    const [old] = await processesWithArgument(marker);
    assert.ok(old);
    const second = await ManagedPrometheus.start(options);
    try {
      assert.equal(await isOurProcess(old.pid, marker), false);
      assert.equal((await processesWithArgument(marker)).length, 1);
      assert.equal((await fetch(`${second.url}/-/ready`)).status, 200);
    } finally {
      await second.stop();
      await first.stop();
    }
    assert.deepEqual(await processesWithArgument(marker), []);
  });

  it('starts a collector again on new ports when one of its ports was taken before it bound it', async () => {
    // The race seen in CI: a port picked free is taken by someone else before the collector binds it.
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    const taken = (squatter.address() as AddressInfo).port;
    let handedOut = 0;
    const warnings: string[] = [];
    const racing = new OtelcolDeployer({
      bin,
      stateDir: join(dir, 'otelcol-race'),
      sdDir,
      processesPerHost: PER_HOST,
      // The first port handed out is the taken one; every later pick is the kernel's.
      allocatePort: async () => (handedOut++ === 0 ? taken : freePort()),
      logger: { info: () => {}, warn: (_obj, msg) => warnings.push(msg) },
    });
    const id = 'otelcol-port-race';
    try {
      const outcome = await racing.deploy(deployment(id, 'baseline', 'process-baseline-v1'));
      assert.ok(outcome.ok, JSON.stringify(outcome));
      assert.notEqual(outcome.detail.otlpEndpoint, `127.0.0.1:${taken}`);
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      assert.match(warnings[0] as string, /port was taken/);
      const health = await fetch(String(outcome.detail.endpoint));
      assert.equal(health.status, 200);
    } finally {
      await racing.teardown(id);
      await racing.close();
      await new Promise((resolve) => squatter.close(resolve));
    }
  });
});

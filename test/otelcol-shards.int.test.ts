import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { processesWithArgument } from '../src/adapters/child-processes.js';
import { OtelcolDeployer } from '../src/adapters/otelcol-deployer.js';
import { PrometheusAnalyzer } from '../src/adapters/prometheus-analyzer.js';
import { ManagedPrometheus } from '../src/adapters/prometheus-server.js';
import type { VariantDeployment } from '../src/application/ports/deployer.js';
import type { Variant } from '../src/domain/experiment-spec.js';
import { renderVariant } from '../src/domain/pipelines/index.js';
import type { Measurements } from '../src/domain/verdict.js';
import { findCollector } from './support/otelcol.js';
import { prometheusSkipReason } from './support/prometheus.js';

/**
 * Issue 17 §5, more collectors when one cannot keep up: with a per-collector limit of 50 simulated
 * processes, a variant of 4 hosts × 25 processes runs as 2 collectors, each sent 2 whole hosts. The same
 * fleet shape through one collector (the default limit) is the reference: Prometheus sees every host
 * once, the analyzer's figures agree with the one-collector figures (collector overhead summed over the
 * shards), teardown leaves nothing, and a new deployer adopts both shards of each variant.
 */

const collector = findCollector();
const skip = collector.skip || prometheusSkipReason();
if (skip) console.log(`# skipping the otelcol shards test: ${skip}`);

const HOSTS = 4;
// The simulated fleet's first 25 processes of a host hold kubelet and containerd, none of which churn.
const PER_HOST = 25;

const deployment = (experimentId: string, variant: Variant, template: string): VariantDeployment => {
  const rendered = renderVariant({
    experimentId,
    variant,
    template,
    params: { collectionIntervalSeconds: 2 },
    criticalProcesses: ['^kubelet$'],
    keepList: ['containerd'],
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

describe('the otelcol deployer runs a variant as shards (issue 17 §5)', { skip: skip || false }, () => {
  const bin = collector.bin as string;
  let dir: string;
  let sdDir: string;
  let prometheus: ManagedPrometheus;
  // Closed after the test whatever happened: a deployer's simulators keep the process alive otherwise.
  const deployers: OtelcolDeployer[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phoenix-otelcol-shards-'));
    sdDir = join(dir, 'targets');
    prometheus = await ManagedPrometheus.start({
      bin: process.env.PHOENIX_PROMETHEUS_BIN ?? 'prometheus',
      dir: join(dir, 'prometheus'),
      sdDir,
      scrapeIntervalSeconds: 2,
    });
  });

  after(async () => {
    for (const deployer of deployers) await deployer.close().catch(() => undefined);
    // Whatever a failed assertion left: no collector of this test outlives it.
    for (const { pid } of await processesWithArgument(`--config=${dir}/`)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await prometheus?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const query = async (promql: string) => {
    const url = `${prometheus.url}/api/v1/query?query=${encodeURIComponent(promql)}`;
    const body = (await fetch(url).then((r) => r.json())) as {
      data: { result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    return body.data.result;
  };

  const waitFor = async <T>(what: string, probe: () => Promise<T | undefined>, ms = 60_000): Promise<T> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = await probe();
      if (found !== undefined) return found;
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  };

  it('2 shards: every host once, the one-collector figures, teardown to nothing, adoption of both shards', async () => {
    const stateOne = join(dir, 'one');
    const stateTwo = join(dir, 'two');
    const one = new OtelcolDeployer({ bin, stateDir: stateOne, sdDir, processesPerHost: PER_HOST });
    const two = new OtelcolDeployer({
      bin,
      stateDir: stateTwo,
      sdDir,
      processesPerHost: PER_HOST,
      maxProcessesPerCollector: 50,
    });
    deployers.push(one, two);
    const start = new Date();
    const outcomes = await Promise.all([
      one.deploy(deployment('shards-one', 'baseline', 'process-baseline-v1')),
      one.deploy(deployment('shards-one', 'candidate', 'process-topk-v1')),
      two.deploy(deployment('shards-two', 'baseline', 'process-baseline-v1')),
      two.deploy(deployment('shards-two', 'candidate', 'process-topk-v1')),
    ]);
    for (const o of outcomes) assert.ok(o.ok, JSON.stringify(o));
    const shardsOf = (o: (typeof outcomes)[number]) =>
      (o.ok ? o.detail.shards : []) as { shard: number; hosts: number; pid: number }[];
    assert.deepEqual(
      shardsOf(outcomes[0] as (typeof outcomes)[number]).map((s) => s.hosts),
      [4],
    );
    const baselineShards = shardsOf(outcomes[2] as (typeof outcomes)[number]);
    assert.deepEqual(
      baselineShards.map((s) => [s.shard, s.hosts]),
      [
        [0, 2],
        [1, 2],
      ],
    );
    assert.equal(new Set(baselineShards.map((s) => s.pid)).size, 2);
    assert.deepEqual(await two.deployedVariants('shards-two'), ['baseline', 'candidate']);

    // Every host once: each node's 25 processes through exactly one shard, hosts split 2 + 2.
    const rows = await waitFor('every host of the sharded baseline in Prometheus', async () => {
      const found = await query(
        `count by (k8s_node_name, shard) (process_memory_usage_bytes{experiment_id="shards-two",variant="baseline"})`,
      );
      return found.length === HOSTS ? found : undefined;
    });
    assert.deepEqual(rows.map((r) => [r.metric.k8s_node_name, r.metric.shard, Number(r.value[1])]).sort(), [
      ['node-0001', '0', PER_HOST],
      ['node-0002', '0', PER_HOST],
      ['node-0003', '1', PER_HOST],
      ['node-0004', '1', PER_HOST],
    ]);

    // The analyzer over the shards gives the one collector's figures.
    const analyzer = new PrometheusAnalyzer({ url: prometheus.url, warmupSeconds: 0 });
    const measure = (experimentId: string) =>
      analyzer.measure({
        experimentId,
        spec: { criticalProcesses: ['^kubelet$'] } as never,
        window: { start, end: new Date() },
      });
    const complete = (m: Measurements) =>
      [m.baseline, m.candidate].every((v) =>
        [v.series, v.datapointsPerMinute, v.collectorCpuCores, v.collectorMemoryBytes].every(
          (f) => f !== null && f > 0,
        ),
      );
    // A rate needs two samples of every shard's counter in the range: until the second shard's second
    // scrape, the shards' points per minute are one shard's. So wait for the figures to settle, and say
    // what they were if they never do (a query that dropped a shard would stay at half).
    let last: Measurements[] = [];
    const pointsAgree = ([one, two]: Measurements[]) =>
      (['baseline', 'candidate'] as const).every((v) => {
        const [a, b] = [two![v].datapointsPerMinute ?? 0, one![v].datapointsPerMinute ?? 0];
        return Math.abs(a - b) <= 0.25 * b;
      });
    const [single, sharded] = await waitFor(
      "every figure of both experiments, the shards' points per minute within 25 % of one collector's",
      async () => {
        last = await Promise.all([measure('shards-one'), measure('shards-two')]);
        return last.every(complete) && pointsAgree(last) ? (last as [Measurements, Measurements]) : undefined;
      },
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; last figures: ${JSON.stringify(last)}`);
    });
    for (const variant of ['baseline', 'candidate'] as const) {
      assert.equal(sharded[variant].series, single[variant].series, `${variant} series`);
      const [a, b] = [sharded[variant].datapointsPerMinute ?? 0, single[variant].datapointsPerMinute ?? 0];
      assert.ok(Math.abs(a - b) <= 0.25 * b, `${variant} data points per minute: ${a} against ${b}`);
      // Two collectors' resident memory, summed: about twice one's (each holds its runtime).
      const [m2, m1] = [
        sharded[variant].collectorMemoryBytes ?? 0,
        single[variant].collectorMemoryBytes ?? 0,
      ];
      assert.ok(m2 > 1.5 * m1, `${variant} memory of 2 shards ${m2} against one collector's ${m1}`);
    }
    const figures = (m: Measurements) =>
      JSON.stringify(
        [m.baseline, m.candidate].map((v) => Object.values(v).map((f) => Number((f ?? 0).toPrecision(3)))),
      );
    console.log(
      `# series, points/min, cores, RSS (baseline, candidate): one ${figures(single)}, 2 shards ${figures(sharded)}`,
    );
    assert.equal(sharded.baseline.series, HOSTS * PER_HOST * 7);
    assert.deepEqual(sharded.criticalInBaseline, single.criticalInBaseline);
    assert.deepEqual(sharded.criticalInBaseline, [
      'node-0001/kubelet',
      'node-0002/kubelet',
      'node-0003/kubelet',
      'node-0004/kubelet',
    ]);
    assert.deepEqual(sharded.missingCriticalProcesses, single.missingCriticalProcesses);

    // A restart of Phoenix: its simulators stop, the collectors run on, a new deployer adopts both shards.
    await two.close();
    const markers = async (variant: Variant) =>
      (await processesWithArgument(`--config=${join(stateTwo, 'shards-two', variant)}/`))
        .map((p) => p.pid)
        .sort();
    const pidsBefore = await markers('baseline');
    assert.deepEqual(pidsBefore, baselineShards.map((s) => s.pid).sort());
    const restarted = new OtelcolDeployer({
      bin,
      stateDir: stateTwo,
      sdDir,
      processesPerHost: PER_HOST,
      maxProcessesPerCollector: 50,
    });
    deployers.push(restarted);
    try {
      assert.deepEqual(await restarted.recover(), {
        adopted: ['shards-two/baseline', 'shards-two/candidate'],
        cleaned: [],
      });
      assert.deepEqual(await markers('baseline'), pidsBefore, 'no duplicate');
      // Both shards fed again by the new simulator.
      const accepted = async () =>
        Object.fromEntries(
          (
            await query(
              `sum by (shard) (otelcol_receiver_accepted_metric_points{experiment_id="shards-two",variant="baseline"})`,
            )
          ).map((r) => [r.metric.shard, Number(r.value[1])]),
        );
      const then = await accepted();
      await waitFor('points accepted by both shards after the adoption', async () => {
        const now = await accepted();
        return ['0', '1'].every((s) => (now[s] ?? 0) > (then[s] ?? 0)) ? true : undefined;
      });
      // The same deploy again converges on the adopted shards.
      const again = await restarted.deploy(deployment('shards-two', 'baseline', 'process-baseline-v1'));
      assert.deepEqual(
        shardsOf(again)
          .map((s) => s.pid)
          .sort(),
        pidsBefore,
      );

      // Teardown: no process, folder or target of either shard left.
      assert.deepEqual((await restarted.teardown('shards-two')).variants, ['baseline', 'candidate']);
      assert.deepEqual(await processesWithArgument(`--config=${stateTwo}/`), []);
      assert.equal(existsSync(join(stateTwo, 'shards-two')), false);
      assert.deepEqual(
        readdirSync(sdDir).filter((f) => f.startsWith('shards-two')),
        [],
      );
      assert.deepEqual(await restarted.deployedVariants('shards-two'), []);
    } finally {
      await restarted.teardown('shards-two');
      await restarted.close();
      await one.teardown('shards-one');
      await one.close();
    }
    assert.deepEqual(await processesWithArgument(`--config=${dir}/`), []);
  });
});

/**
 * Issue 18 §3: the Kubernetes deployer against the test cluster (scripts/cluster.sh: kube-apiserver,
 * controller manager, scheduler, KWOK nodes, the OpenTelemetry Operator when it runs) at 10, 100 and
 * 1,000 nodes. Per node count and mode (`daemonset`, and `operator` when the operator answers):
 *
 * - one experiment's two variants deployed at once over every node (pool=otel-agents) with the
 *   KubernetesDeployer itself, timed from the first call to both ready (the median of
 *   BENCH_K8S_REPEATS), then torn down and timed until the garbage collector has removed every pod;
 * - API requests per experiment, from the API server's own `apiserver_request_total` (every client:
 *   Phoenix, the controllers, the scheduler, KWOK), read before and after one experiment's deploy and
 *   teardown, less an idle window of the same length measured right after at the same node count
 *   (node leases and status updates go on all the time and grow with the nodes); in total and for
 *   configmaps, daemonsets, opentelemetrycollectors and pods.
 *
 * Ratios are to the smallest node count, measured in the same run. A cluster that is up is used and
 * left up (its nodes back at 10); otherwise one is started and stopped after. Other users of a shared
 * cluster add to the request counts: the idle window takes out only what is steady.
 *
 *   npx tsx bench/kubernetes.bench.ts    (or `npm run bench -- kubernetes`)
 *   BENCH_K8S_REPEATS (3), BENCH_K8S_NODES (10,100,1000), BENCH_K8S_MODES (daemonset,operator)
 */
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { AppsV1Api, CoreV1Api, KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import { KubernetesDeployer } from '../src/adapters/kubernetes-deployer.js';
import type { VariantDeployment } from '../src/application/ports/deployer.js';
import { type KubernetesMode, renderVariant, type TemplateName } from '../src/domain/pipelines/index.js';
import { clusterSkipReason, type TestCluster, useCluster } from '../test/support/cluster.js';
import { median } from './support.js';

const REPEATS = Number(process.env.BENCH_K8S_REPEATS ?? 3);
const SIZES = (process.env.BENCH_K8S_NODES ?? '10,100,1000').split(',').map(Number);
const MODES = (process.env.BENCH_K8S_MODES ?? 'daemonset,operator').split(',') as KubernetesMode[];
if (!Number.isInteger(REPEATS) || REPEATS < 1)
  throw new Error('BENCH_K8S_REPEATS must be a positive integer');
if (SIZES.some((n) => !Number.isInteger(n) || n < 1 || n > 1000))
  throw new Error('BENCH_K8S_NODES must be node counts from 1 to 1000, comma-separated');
if (MODES.some((m) => m !== 'daemonset' && m !== 'operator'))
  throw new Error('BENCH_K8S_MODES must be daemonset and/or operator');

/** The operator's health endpoint as scripts/cluster.sh starts it. */
const OPERATOR_READYZ = 'http://127.0.0.1:18381/readyz';
const RESOURCES = ['configmaps', 'daemonsets', 'opentelemetrycollectors', 'pods'] as const;
const TEMPLATES: Record<'baseline' | 'candidate', TemplateName> = {
  baseline: 'process-baseline-v1',
  candidate: 'process-minimal-v1',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Requests so far: in total and by resource, summed over every series of apiserver_request_total. */
type Counts = Record<'total' | (typeof RESOURCES)[number], number>;
const requestCounts = (metrics: string): Counts => {
  const counts: Counts = { total: 0, configmaps: 0, daemonsets: 0, opentelemetrycollectors: 0, pods: 0 };
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (!Number.isFinite(value)) continue;
    counts.total += value;
    const resource = /[{,]resource="([^"]*)"/.exec(line)?.[1];
    if (resource && resource in counts) counts[resource as keyof Counts] += value;
  }
  return counts;
};
const minus = (a: Counts, b: Counts): Counts =>
  Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - b[k as keyof Counts]])) as Counts;
/** A counter that went down: the API server restarted in the window (its counters start again). */
const reset = (d: Counts) => Object.values(d).some((v) => v < 0);

const deployment = (
  experimentId: string,
  variant: 'baseline' | 'candidate',
  namespace: string,
  nodes: number,
): VariantDeployment => {
  const template = TEMPLATES[variant];
  const rendered = renderVariant({ experimentId, variant, template, criticalProcesses: ['^kubelet$'] });
  if (!rendered.ok) throw new Error(`${template}: ${JSON.stringify(rendered.errors)}`);
  return {
    experimentId,
    variant,
    template,
    params: rendered.params as Record<string, unknown>,
    config: rendered.config,
    namespace,
    nodeSelector: { pool: 'otel-agents' },
    hosts: nodes,
    criticalProcesses: ['^kubelet$'],
  };
};

interface Repeat {
  readonly readyMs: number;
  readonly goneMs: number;
  readonly windowMs: number;
  readonly requests: Counts | undefined;
}

interface Figures {
  readonly mode: KubernetesMode;
  readonly nodes: number;
  readonly readyMs: number;
  readonly goneMs: number;
  /** Per experiment, idle subtracted; undefined when the API server restarted in every window. */
  readonly requests: Counts | undefined;
  readonly idle: Counts | undefined;
}

/** Runs the benchmark and prints a table; used by the bench index. */
export async function run(): Promise<string> {
  const skip = clusterSkipReason();
  if (skip) {
    console.log(`kubernetes bench skipped: ${skip}`);
    return `skipped: ${skip}`;
  }
  const cluster: TestCluster = await useCluster(Math.min(...SIZES));
  const kc = new KubeConfig();
  kc.loadFromFile(cluster.kubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const operatorUp = await fetch(OPERATOR_READYZ, { signal: AbortSignal.timeout(2_000) })
    .then((r) => r.ok)
    .catch(() => false);
  const modes = MODES.filter((m) => m !== 'operator' || operatorUp);
  const namespace = `phx-bench-${randomBytes(3).toString('hex')}`;
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  const deployers = new Map<KubernetesMode, KubernetesDeployer>(
    modes.map((mode) => [mode, new KubernetesDeployer(kc, { mode, readinessTimeoutMs: 600_000 })]),
  );
  console.log(
    `test cluster (${cluster.owned ? 'started for this run' : 'already up, shared'}): ${SIZES.join(', ')} nodes; modes ${modes.join(', ')}${modes.includes('operator') ? '' : ` (operator ${MODES.includes('operator') ? 'not running' : 'not asked for'})`}; ${REPEATS} repeats, medians; both variants over every node (pool=otel-agents)`,
  );

  /** Nothing of the bench left in its namespace: no DaemonSet, pod, collector resource or its ConfigMaps. */
  const empty = async (): Promise<boolean> => {
    const [ds, pods, cms, collectors] = await Promise.all([
      apps.listNamespacedDaemonSet({ namespace }),
      core.listNamespacedPod({ namespace }),
      core.listNamespacedConfigMap({ namespace }),
      objects
        .list('opentelemetry.io/v1beta1', 'OpenTelemetryCollector', namespace)
        .then((l) => l.items)
        .catch(() => []),
    ]);
    const ownConfigMaps = cms.items.filter((c) => c.metadata?.name !== 'kube-root-ca.crt');
    return ds.items.length + pods.items.length + ownConfigMaps.length + collectors.length === 0;
  };
  const untilEmpty = async (deadlineMs: number) => {
    const until = Date.now() + deadlineMs;
    while (!(await empty())) {
      if (Date.now() > until)
        throw new Error(`${namespace} still holds the bench's objects after ${s(deadlineMs)}`);
      await sleep(200);
    }
  };

  const figures: Figures[] = [];
  try {
    for (const nodes of SIZES) {
      await cluster.nodes(nodes);
      for (const mode of modes) {
        const deployer = deployers.get(mode) as KubernetesDeployer;
        const repeats: Repeat[] = [];
        for (let r = 0; r < REPEATS; r++) {
          const experimentId = `bench-${randomBytes(3).toString('hex')}`;
          const before = requestCounts(await cluster.apiServerMetrics());
          const t0 = performance.now();
          const outcomes = await Promise.all(
            (['baseline', 'candidate'] as const).map((v) =>
              deployer.deploy(deployment(experimentId, v, namespace, nodes)),
            ),
          );
          const readyMs = performance.now() - t0;
          for (const o of outcomes) if (!o.ok) throw new Error(`${mode} at ${nodes} nodes: ${o.reason}`);
          const t1 = performance.now();
          await deployer.teardown(experimentId, namespace);
          await untilEmpty(600_000);
          const goneMs = performance.now() - t1;
          const delta = minus(requestCounts(await cluster.apiServerMetrics()), before);
          const windowMs = performance.now() - t0;
          repeats.push({ readyMs, goneMs, windowMs, requests: reset(delta) ? undefined : delta });
          console.log(
            `  ${mode} ${nodes} nodes, repeat ${r + 1}: both ready ${s(readyMs)}, torn down ${s(goneMs)}, ${reset(delta) ? 'API server restarted in the window: requests not counted' : `${delta.total} requests in ${s(windowMs)}`}`,
          );
        }
        // The idle window: as long as a typical experiment's, nothing of ours in it.
        const windowMs = median(repeats.map((r) => r.windowMs));
        const idleBefore = requestCounts(await cluster.apiServerMetrics());
        await sleep(windowMs);
        const idleDelta = minus(requestCounts(await cluster.apiServerMetrics()), idleBefore);
        const idle = reset(idleDelta) ? undefined : idleDelta;
        const counted = repeats.flatMap((r) => (r.requests ? [r.requests] : []));
        const requests =
          idle && counted.length > 0
            ? (Object.fromEntries(
                Object.keys(idle).map((k) => [
                  k,
                  median(counted.map((c) => c[k as keyof Counts])) - idle[k as keyof Counts],
                ]),
              ) as Counts)
            : undefined;
        figures.push({
          mode,
          nodes,
          readyMs: median(repeats.map((r) => r.readyMs)),
          goneMs: median(repeats.map((r) => r.goneMs)),
          requests,
          idle,
        });
      }
    }
  } finally {
    await Promise.all([...deployers.values()].map((d) => d.close()));
    await core.deleteNamespace({ name: namespace }).catch(() => undefined);
    await cluster.nodes(10).catch((err) => console.error(`could not put the nodes back to 10: ${err}`));
    await cluster.release();
  }

  const widths = [10, 6, 10, 10, 10, 9, 11, 10, 8, 9];
  const row = (cells: (string | number)[]) =>
    cells.map((c, i) => String(c).padStart(widths[i] as number)).join(' ');
  console.log(
    `\n${row(['mode', 'nodes', 'ready', 'torn down', 'requests', 'daemonsets', 'configmaps', 'otelcols', 'pods', 'idle'])}`,
  );
  const n = (x: number | undefined) => (x === undefined ? 'n/a' : Math.round(x));
  for (const f of figures)
    console.log(
      row([
        f.mode,
        f.nodes,
        s(f.readyMs),
        s(f.goneMs),
        n(f.requests?.total),
        n(f.requests?.daemonsets),
        n(f.requests?.configmaps),
        n(f.requests?.opentelemetrycollectors),
        n(f.requests?.pods),
        n(f.idle?.total),
      ]),
    );
  console.log('(requests: per experiment, both variants deployed and torn down, idle window subtracted)');
  const smallest = Math.min(...SIZES);
  const largest = Math.max(...SIZES);
  const summary = modes.map((mode) => {
    const lo = figures.find((f) => f.mode === mode && f.nodes === smallest);
    const hi = figures.find((f) => f.mode === mode && f.nodes === largest);
    if (!lo || !hi) return `${mode}: no figures`;
    const requestRatio =
      lo.requests && hi.requests && lo.requests.total > 0
        ? `, requests ${n(lo.requests.total)} → ${n(hi.requests.total)} (${(hi.requests.total / lo.requests.total).toFixed(1)}×)`
        : '';
    return `${mode}: both ready ${s(lo.readyMs)} at ${smallest} nodes → ${s(hi.readyMs)} at ${largest} (${(hi.readyMs / lo.readyMs).toFixed(1)}×)${requestRatio}`;
  });
  for (const line of summary) console.log(line);
  return summary.join(' | ');
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) await run();

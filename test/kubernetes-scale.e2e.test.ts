import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { AppsV1Api, CoreV1Api, KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import { clusterSkipReason, type TestCluster, useCluster } from './support/cluster.js';
import { type RunningServer, startServer } from './support/server.js';
import { validSpec } from './support/system.js';

/**
 * Issue 18 §3, end to end: the whole Phoenix server with PHOENIX_DEPLOYER=kubernetes (analysis from
 * the local analyzer, which sees nothing of the cluster: the verdicts do not matter here) against the
 * test cluster at 1,000 KWOK nodes.
 *
 * - Scale: 100 experiments started at once, each over its own node group of 10 (node-group=g0…g99):
 *   2,000 collector pods; then one experiment over all 1,000 nodes: 2,000 pods. Every variant rolls
 *   out, becomes ready, is torn down, and nothing with the experiment label is left. (100 experiments
 *   over 1,000 nodes each would be 200,000 pods, beyond a 2-core machine; the two loads run one after
 *   the other, so the 1,000-node figure is its own and not the sum of both.) The wall times are
 *   printed as `# ` lines.
 * - Fault: the API server restarted while eight ten-node experiments roll out (more deploys than the
 *   deployer worker's slots, so some are under way and some wait): the deploys resume and complete,
 *   with exactly one DaemonSet per variant and one pod per node.
 *
 * The cluster is shared with the other Kubernetes suites: each test has namespaces of its own, and the
 * nodes go back to 10 at the end.
 */

const skip = clusterSkipReason();
if (skip) console.log(`# skipping the Kubernetes scale suite: ${skip}`);

const NODES = 1000;
const GROUPS = 100;
const LABEL = 'phoenix.io/experiment-id';

interface ApiEvent {
  readonly type: string;
  readonly data: Record<string, unknown> & { readonly at?: string; readonly variant?: string };
  readonly metadata: { readonly occurredAt: string };
}

interface Experiment {
  readonly id: string;
  readonly state: string;
  readonly statusReason?: string;
}

const TERMINAL = ['completed', 'failed', 'cancelled'];

const spec = (name: string, namespace: string, nodeSelector: Record<string, string>, hosts: number) =>
  validSpec({
    name,
    // Neither template needs tuning from the baseline's usage (there is no usage source here).
    baseline: { template: 'process-baseline-v1', params: {} },
    candidate: { template: 'process-minimal-v1', params: {} },
    target: { namespace, nodeSelector, hosts },
    durationSeconds: 1,
    criticalProcesses: ['^kubelet$'],
  });

const id = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Polls until `check` holds; fails with `what` after `timeoutMs` (a deadline, not a speed claim). */
const eventually = async <T>(
  what: string | (() => string),
  check: () => Promise<T | undefined>,
  timeoutMs: number,
  pauseMs = 500,
): Promise<T> => {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const found = await check();
    if (found !== undefined) return found;
    if (Date.now() > until)
      assert.fail(`${typeof what === 'string' ? what : what()}: still not so after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, pauseMs));
  }
};

describe('Phoenix with PHOENIX_DEPLOYER=kubernetes at 1,000 KWOK nodes (issue 18 §3)', {
  skip: skip || false,
}, () => {
  let cluster: TestCluster;
  let server: RunningServer;
  let operator: string;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let objects: KubernetesObjectApi;
  const namespaces: string[] = [];

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${operator}`,
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    if (res.status >= 400) assert.fail(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  };
  const create = async (body: unknown): Promise<string> =>
    (await api('POST', '/api/v1/experiments', body)).id;
  const events = async (experimentId: string): Promise<ApiEvent[]> =>
    (await api('GET', `/api/v1/experiments/${experimentId}/events?limit=1000`)).items;
  /** Every experiment of this server (it has no others), by id. */
  const experiments = async (): Promise<Map<string, Experiment>> => {
    const all = new Map<string, Experiment>();
    let cursor: string | undefined;
    do {
      const page = await api(
        'GET',
        `/api/v1/experiments?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      );
      for (const e of page.items as Experiment[]) all.set(e.id, e);
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    return all;
  };
  /** Once every one of `ids` has ended and both its variants are recorded torn down: their events. */
  const waitForTornDown = async (ids: readonly string[], timeoutMs: number) => {
    let progress = '';
    return eventually(
      () => `every experiment ended and torn down (${progress})`,
      async () => {
        const states = await experiments();
        const open = ids.filter((i) => !TERMINAL.includes(states.get(i)?.state ?? ''));
        if (open.length > 0) {
          const by = new Map<string, number>();
          for (const i of open)
            by.set(states.get(i)?.state ?? '?', (by.get(states.get(i)?.state ?? '?') ?? 0) + 1);
          progress = `not ended: ${[...by].map(([s, n]) => `${n} ${s}`).join(', ')}`;
          return undefined;
        }
        const all = new Map<string, ApiEvent[]>();
        for (const i of ids) {
          const evs = await events(i);
          if (evs.filter((e) => e.type === 'VariantTornDown').length < 2) {
            progress = `${i} ${states.get(i)?.state} (${states.get(i)?.statusReason ?? ''}) has not both variants torn down: ${evs.map((e) => e.type).join(', ')}`;
            return undefined;
          }
          all.set(i, evs);
        }
        return all;
      },
      timeoutMs,
      1_000,
    );
  };

  const newNamespace = async (prefix: string): Promise<string> => {
    const name = id(prefix);
    await core.createNamespace({ body: { metadata: { name } } });
    namespaces.push(name);
    return name;
  };

  /** What carries the experiment label in the namespace, by kind (`experimentId` narrows it to one). */
  const leftIn = async (namespace: string, experimentId?: string) => {
    const labelSelector = experimentId ? `${LABEL}=${experimentId}` : LABEL;
    const [daemonSets, configMaps, pods, collectors] = await Promise.all([
      apps.listNamespacedDaemonSet({ namespace, labelSelector }),
      core.listNamespacedConfigMap({ namespace, labelSelector }),
      core.listNamespacedPod({ namespace, labelSelector }),
      objects
        .list(
          'opentelemetry.io/v1beta1',
          'OpenTelemetryCollector',
          namespace,
          undefined,
          undefined,
          undefined,
          undefined,
          labelSelector,
        )
        .then((l) => l.items)
        .catch(() => []), // the operator's CRD is not installed
    ]);
    return { daemonSets: daemonSets.items, configMaps: configMaps.items, pods: pods.items, collectors };
  };
  const waitForNothingLeft = (namespace: string) =>
    eventually(
      `nothing labelled ${LABEL} left in ${namespace}`,
      async () => {
        const left = await leftIn(namespace);
        const counts = {
          daemonSets: left.daemonSets.length,
          configMaps: left.configMaps.length,
          pods: left.pods.length,
          collectors: left.collectors.length,
        };
        return Object.values(counts).every((n) => n === 0) ? counts : undefined;
      },
      300_000,
      1_000,
    );

  /** The one VariantDeployed of each variant (asserted), and the later of the two times. */
  const deployedOf = (experimentId: string, evs: readonly ApiEvent[]) => {
    const deployed = evs.filter((e) => e.type === 'VariantDeployed');
    const failed = evs.filter((e) => e.type === 'VariantDeploymentFailed' || e.type === 'ExperimentFailed');
    assert.deepEqual(
      deployed.map((e) => e.data.variant).sort(),
      ['baseline', 'candidate'],
      `${experimentId}: each variant deployed once: ${evs.map((e) => e.type).join(', ')}; ${failed.map((e) => JSON.stringify(e.data)).join('; ')}`,
    );
    assert.equal(
      evs.filter((e) => e.type === 'VariantDeploymentFailed').length,
      0,
      `${experimentId}: no deployment failed: ${failed.map((e) => JSON.stringify(e.data)).join('; ')}`,
    );
    assert.ok(
      evs.some((e) => e.type === 'ExperimentRunStarted'),
      `${experimentId}: the run started on both variants`,
    );
    return {
      details: deployed.map((e) => e.data.detail as Record<string, unknown>),
      readyAt: Math.max(...deployed.map((e) => Date.parse(e.metadata.occurredAt))),
    };
  };

  before(async () => {
    cluster = await useCluster(NODES);
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
    objects = KubernetesObjectApi.makeApiClient(kc);
    server = await startServer({
      PHOENIX_DEPLOYER: 'kubernetes',
      PHOENIX_ANALYZER: 'local',
      KUBECONFIG: cluster.kubeconfig,
      // The operator's path is the deployer suite's; here the DaemonSets are Phoenix's own, so what
      // is counted and torn down is what Phoenix made.
      PHOENIX_KUBERNETES_MODE: 'daemonset',
      // Deadlines, not speed claims: 2,000 pods on a shared 2-core machine took up to 296 s here.
      PHOENIX_KUBERNETES_READINESS_TIMEOUT_SECONDS: '480',
      PHOENIX_KUBERNETES_RETRY_SECONDS: '120',
      // The test polls a hundred experiments; the API's default limit is for people.
      PHOENIX_RATE_LIMIT_PER_MINUTE: '1000000',
    });
    operator = await server.token('operator', 'kubernetes-scale');
  });
  after(async () => {
    await server?.dispose();
    for (const name of namespaces) await core?.deleteNamespace({ name }).catch(() => undefined);
    // Other suites share the cluster and expect its usual 10 nodes.
    if (cluster) await cluster.nodes(10);
    await cluster?.release();
  });

  // Each test's timeout is the sum of its waits plus a margin: a stuck run fails in a wait, saying
  // what it waited for and how far it got, rather than as a bare test timeout.

  /**
   * Creates the experiments, starts them all at once, and waits until every one has ended, both its
   * variants are recorded torn down and nothing of them is left in the namespace. Asserts that each
   * variant was deployed once, ready on exactly `nodes` nodes; returns when that happened.
   */
  const runAll = async (
    namespace: string,
    specs: readonly { readonly body: unknown; readonly nodes: number }[],
    timeoutMs: number,
  ) => {
    const ids: string[] = [];
    for (const { body } of specs) ids.push(await create(body));
    const startedAt = Date.now();
    await Promise.all(ids.map((i) => api('POST', `/api/v1/experiments/${i}/start`)));
    const ended = await waitForTornDown(ids, timeoutMs);
    const left = await waitForNothingLeft(namespace);
    const goneAt = Date.now();
    assert.deepEqual(left, { daemonSets: 0, configMaps: 0, pods: 0, collectors: 0 });

    const states = await experiments();
    const readyAt: number[] = [];
    const tornDownAt: number[] = [];
    const outcomes = new Map<string, number>();
    for (const [index, i] of ids.entries()) {
      const evs = ended.get(i) ?? [];
      const state = states.get(i)?.state ?? '?';
      assert.ok(TERMINAL.includes(state), `${i} ended`);
      outcomes.set(state, (outcomes.get(state) ?? 0) + 1);
      const deployed = deployedOf(i, evs);
      const nodes = specs[index]?.nodes;
      for (const detail of deployed.details) {
        assert.equal(detail.numberReady, nodes, `${i}: ready on every selected node`);
        assert.equal(detail.desiredNumberScheduled, nodes, `${i}: scheduled on the selected nodes only`);
      }
      const tornDown = evs.filter((e) => e.type === 'VariantTornDown');
      assert.deepEqual(tornDown.map((e) => e.data.variant).sort(), ['baseline', 'candidate']);
      readyAt.push(deployed.readyAt - startedAt);
      tornDownAt.push(Math.max(...tornDown.map((e) => Date.parse(e.metadata.occurredAt))) - startedAt);
    }
    readyAt.sort((a, b) => a - b);
    return {
      outcomes: [...outcomes].map(([state, n]) => `${n} ${state}`).join(', '),
      medianReadyMs: readyAt[readyAt.length >> 1] ?? Number.NaN,
      allReadyMs: Math.max(...readyAt),
      allTornDownMs: Math.max(...tornDownAt),
      goneMs: goneAt - startedAt,
    };
  };

  it(`${GROUPS} experiments started at once, each on its own 10 nodes: every variant rolls out, becomes ready and is torn down; nothing is left`, {
    timeout: 1_200_000,
  }, async () => {
    const namespace = await newNamespace('phx-scale');
    const figures = await runAll(
      namespace,
      Array.from({ length: GROUPS }, (_, g) => ({
        body: spec(`group g${g}`, namespace, { 'node-group': `g${g}` }, 10),
        nodes: 10,
      })),
      780_000,
    );
    console.log(
      `# ${GROUPS} experiments × 10 nodes (${GROUPS * 20} pods), started at once: ${figures.outcomes}`,
    );
    console.log(
      `# all ${GROUPS} ready (both variants): ${seconds(figures.allReadyMs)} after the starts (median experiment ${seconds(figures.medianReadyMs)})`,
    );
    console.log(
      `# all ${GROUPS} torn down: ${seconds(figures.allTornDownMs)} (recorded); no pod or object left: ${seconds(figures.goneMs)}`,
    );
  });

  it(`one experiment over all ${NODES} nodes: both variants ready on every node, torn down, nothing left`, {
    timeout: 900_000,
  }, async () => {
    const namespace = await newNamespace('phx-pool');
    const figures = await runAll(
      namespace,
      [{ body: spec('the whole pool', namespace, { pool: 'otel-agents' }, NODES), nodes: NODES }],
      480_000,
    );
    console.log(
      `# 1 experiment × ${NODES} nodes (${NODES * 2} pods): ${figures.outcomes}; both variants ready ${seconds(figures.allReadyMs)} after the start; torn down ${seconds(figures.allTornDownMs)}; no pod or object left ${seconds(figures.goneMs)}`,
    );
  });

  it('the API server restarted mid-rollout: the deploys resume and complete, one DaemonSet per variant and one pod per node, nothing left after teardown', {
    timeout: 1_000_000,
  }, async () => {
    const namespace = await newNamespace('phx-restart');
    // Ten-node groups: more deploys than the worker's slots, so some wait while the API server is away.
    const groups = Array.from({ length: 8 }, (_, g) => `g${g}`);
    const ids: string[] = [];
    for (const group of groups)
      ids.push(
        await create({
          ...spec(`restart ${group}`, namespace, { 'node-group': group }, 10),
          // Long enough to look at each experiment's objects while it runs.
          durationSeconds: 20,
        }),
      );
    await Promise.all(ids.map((i) => api('POST', `/api/v1/experiments/${i}/start`)));
    // The rollout has begun: Phoenix's first DaemonSet is there.
    await eventually(
      'a DaemonSet of the experiments',
      async () => ((await leftIn(namespace)).daemonSets.length > 0 ? true : undefined),
      120_000,
      100,
    );
    const restartBegan = Date.now();
    await cluster.restartApiServer();

    // While each runs: its two DaemonSets, and one pod of each on every node of its group.
    const seen = new Map<string, { daemonSets: number; pods: number; perNode: number }>();
    await eventually(
      'each experiment seen running',
      async () => {
        const states = await experiments();
        for (const [index, i] of ids.entries()) {
          if (seen.has(i)) continue;
          const state = states.get(i)?.state;
          if (state !== 'running') {
            assert.ok(
              state === 'pending' || state === 'initializing',
              `${i} is ${state}: its run ended before it was seen running`,
            );
            continue;
          }
          const left = await leftIn(namespace, i);
          const perNode = new Map<string, number>();
          for (const p of left.pods) {
            const key = `${p.spec?.nodeName}/${p.metadata?.labels?.['phoenix.io/variant']}`;
            perNode.set(key, (perNode.get(key) ?? 0) + 1);
          }
          seen.set(i, {
            daemonSets: left.daemonSets.length,
            pods: left.pods.length,
            perNode: Math.max(...perNode.values()),
          });
          assert.equal(left.daemonSets.length, 2, `${groups[index]}: one DaemonSet per variant`);
        }
        return seen.size === ids.length ? true : undefined;
      },
      240_000,
      200,
    );
    for (const [index, i] of ids.entries())
      assert.deepEqual(
        seen.get(i),
        { daemonSets: 2, pods: 20, perNode: 1 },
        `${groups[index]}: two DaemonSets' worth of pods, none twice`,
      );

    const ended = await waitForTornDown(ids, 240_000);
    const readyTimes: number[] = [];
    for (const i of ids) readyTimes.push(deployedOf(i, ended.get(i) ?? []).readyAt);
    assert.ok(
      readyTimes.some((t) => t >= restartBegan),
      'a deploy was still under way when the API server went away (else this test tests nothing)',
    );
    console.log(
      `# API server restart mid-rollout: all ${ids.length} experiments ready ${seconds(Math.max(...readyTimes) - restartBegan)} after the restart began`,
    );
    assert.deepEqual(await waitForNothingLeft(namespace), {
      daemonSets: 0,
      configMaps: 0,
      pods: 0,
      collectors: 0,
    });
  });
});

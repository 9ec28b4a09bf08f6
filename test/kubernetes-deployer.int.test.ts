import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type V1DaemonSet,
} from '@kubernetes/client-node';
import { KubernetesDeployer, type KubernetesDeployerOptions } from '../src/adapters/kubernetes-deployer.js';
import type { VariantDeployment } from '../src/application/ports/deployer.js';
import { renderVariant, type TemplateName } from '../src/domain/pipelines/index.js';
import { clusterSkipReason, operatorAvailable, type TestCluster, useCluster } from './support/cluster.js';
import { TcpProxy } from './support/tcp-proxy.js';

/**
 * The Kubernetes deployer against a real control plane (scripts/cluster.sh: kube-apiserver v1.37.2,
 * controller manager and scheduler, KWOK nodes, the OpenTelemetry Operator v0.140.0 with its real CRD):
 * both modes, readiness from the API, the API's refusals, and an API server that goes away.
 */

const skip = clusterSkipReason();
if (skip) console.log(`# skipping the Kubernetes deployer suite: ${skip}`);

const deployment = (
  experimentId: string,
  variant: 'baseline' | 'candidate',
  namespace: string,
  over: Partial<VariantDeployment> = {},
): VariantDeployment => {
  const template: TemplateName = variant === 'baseline' ? 'process-baseline-v1' : 'process-topk-v1';
  const rendered = renderVariant({ experimentId, variant, template, criticalProcesses: ['^sshd$'] });
  assert.ok(rendered.ok);
  return {
    experimentId,
    variant,
    template,
    params: rendered.params as Record<string, unknown>,
    config: rendered.config,
    namespace,
    // KWOK nodes kwok-node-0…9 (scripts/cluster.sh labels them node-group=g0).
    nodeSelector: { 'node-group': 'g0' },
    hosts: 10,
    criticalProcesses: ['^sshd$'],
    ...over,
  };
};

const sorted = (ids: readonly string[]) => [...ids].sort();

const id = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

/** Polls the API until `check` holds (for what the garbage collector does after a delete). */
const eventually = async (what: string, check: () => Promise<boolean>, timeoutMs = 60_000) => {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`${what}: still not so after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
};

describe('Kubernetes deployer against a real API server (KWOK nodes)', { skip: skip || false }, () => {
  let cluster: TestCluster;
  let kc: KubeConfig;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  const namespaces: string[] = [];
  const deployers: KubernetesDeployer[] = [];

  const newNamespace = async (): Promise<string> => {
    const name = id('phx-test');
    await core.createNamespace({ body: { metadata: { name } } });
    namespaces.push(name);
    return name;
  };
  const deployer = (options: KubernetesDeployerOptions = {}, config = kc) => {
    const d = new KubernetesDeployer(config, { readinessTimeoutMs: 120_000, ...options });
    deployers.push(d);
    return d;
  };
  /** Everything in the namespace that carries the experiment's label, by kind. */
  const leftOf = async (namespace: string, experimentId: string) => {
    const labelSelector = `phoenix.io/experiment-id=${experimentId}`;
    const [ds, cm, pods] = await Promise.all([
      apps.listNamespacedDaemonSet({ namespace, labelSelector }),
      core.listNamespacedConfigMap({ namespace, labelSelector }),
      core.listNamespacedPod({ namespace, labelSelector }),
    ]);
    return { daemonSets: ds.items.length, configMaps: cm.items.length, pods: pods.items.length };
  };

  before(async () => {
    cluster = await useCluster(10);
    kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
  });
  after(async () => {
    await Promise.all(deployers.map((d) => d.close()));
    for (const name of namespaces) await core?.deleteNamespace({ name }).catch(() => undefined);
    await cluster?.release();
  });

  it('ConfigMap + DaemonSet mode: both variants roll out on the selected nodes, ready from the watch, with labels and owners; teardown leaves nothing and is repeatable', async () => {
    const namespace = await newNamespace();
    const d = deployer({ mode: 'daemonset' });
    const experimentId = id('exp');
    const [baseline, candidate] = await Promise.all([
      d.deploy(deployment(experimentId, 'baseline', namespace)),
      d.deploy(deployment(experimentId, 'candidate', namespace)),
    ]);
    for (const outcome of [baseline, candidate]) {
      assert.ok(outcome.ok, !outcome.ok ? outcome.reason : '');
      assert.equal(outcome.detail.mode, 'daemonset');
      assert.equal(outcome.detail.numberReady, 10);
      assert.equal(outcome.detail.desiredNumberScheduled, 10);
    }
    const ds = (await apps.readNamespacedDaemonSet({
      name: `phx-${experimentId}-baseline`,
      namespace,
    })) as V1DaemonSet;
    assert.equal(ds.status?.numberReady, 10);
    assert.equal(ds.metadata?.labels?.['phoenix.io/experiment-id'], experimentId);
    assert.ok(
      ds.metadata?.managedFields?.some((f) => f.manager === 'phoenix' && f.operation === 'Apply'),
      'applied server-side under the phoenix field manager',
    );
    // The pods run only on the selected nodes, every one of them.
    const pods = await core.listNamespacedPod({
      namespace,
      labelSelector: `phoenix.io/experiment-id=${experimentId},phoenix.io/variant=baseline`,
    });
    assert.equal(pods.items.length, 10);
    assert.deepEqual(
      [...new Set(pods.items.map((p) => p.spec?.nodeName))].sort(),
      Array.from({ length: 10 }, (_, i) => `kwok-node-${i}`).sort(),
    );
    // The ConfigMap is the DaemonSet's dependent.
    const cm = await core.readNamespacedConfigMap({ name: `phx-${experimentId}-baseline-config`, namespace });
    assert.deepEqual(
      cm.metadata?.ownerReferences?.map((o) => [o.kind, o.name, o.uid]),
      [['DaemonSet', ds.metadata?.name, ds.metadata?.uid]],
    );
    assert.deepEqual(await d.deployedVariants(experimentId, namespace), ['baseline', 'candidate']);

    // Applying again (a redelivered command) converges: same object, same generation, ready at once.
    const again = await d.deploy(deployment(experimentId, 'baseline', namespace));
    assert.ok(again.ok);
    const same = await apps.readNamespacedDaemonSet({ name: `phx-${experimentId}-baseline`, namespace });
    assert.equal(same.metadata?.uid, ds.metadata?.uid);
    assert.equal(same.metadata?.generation, ds.metadata?.generation);

    assert.deepEqual((await d.teardown(experimentId, namespace)).variants, ['baseline', 'candidate']);
    await eventually('every object and pod of the experiment removed', async () => {
      const left = await leftOf(namespace, experimentId);
      return left.daemonSets + left.configMaps + left.pods === 0;
    });
    assert.deepEqual(
      (await d.teardown(experimentId, namespace)).variants,
      [],
      'a second teardown is a no-op',
    );
    assert.deepEqual(await d.deployedVariants(experimentId, namespace), []);
  });

  it('operator mode: the real OpenTelemetryCollector CRD accepts the resource, the operator makes the DaemonSet, and it is ready', {
    skip: operatorAvailable() ? false : 'the OpenTelemetry Operator binary is not built',
  }, async () => {
    const namespace = await newNamespace();
    const d = deployer();
    assert.equal(await d.mode(namespace), 'operator', 'auto mode sees the served CRD');
    const experimentId = id('exp-op');
    const outcome = await d.deploy(deployment(experimentId, 'candidate', namespace));
    assert.ok(outcome.ok, !outcome.ok ? outcome.reason : '');
    assert.equal(outcome.detail.daemonSet, `phx-${experimentId}-candidate-collector`);
    assert.equal(outcome.detail.numberReady, 10);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const cr = (await custom.getNamespacedCustomObject({
      group: 'opentelemetry.io',
      version: 'v1beta1',
      namespace,
      plural: 'opentelemetrycollectors',
      name: `phx-${experimentId}-candidate`,
    })) as { metadata: { uid: string } };
    const ds = await apps.readNamespacedDaemonSet({
      name: `phx-${experimentId}-candidate-collector`,
      namespace,
    });
    assert.equal(
      ds.metadata?.ownerReferences?.[0]?.uid,
      cr.metadata.uid,
      "the operator's DaemonSet is the resource's",
    );
    assert.deepEqual(await d.deployedVariants(experimentId, namespace), ['candidate']);
    assert.deepEqual(await d.heldExperiments(namespace), [experimentId], 'the sweep sees the resource');
    assert.deepEqual((await d.teardown(experimentId, namespace)).variants, ['candidate']);
    await eventually('the operator’s DaemonSet and its pods removed with the resource', async () => {
      const left = await apps.listNamespacedDaemonSet({ namespace });
      const pods = await core.listNamespacedPod({ namespace });
      return left.items.length === 0 && pods.items.length === 0;
    });
  });

  it("fails with the API's own words when it refuses an object (a cluster policy: 422), without retrying", async () => {
    const namespace = await newNamespace();
    // A ValidatingAdmissionPolicy, as a cluster might have: images only from the internal registry.
    const policy = `phx-test-registry-${namespace}`;
    await cluster.kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'admissionregistration.k8s.io/v1',
            kind: 'ValidatingAdmissionPolicy',
            metadata: { name: policy },
            spec: {
              failurePolicy: 'Fail',
              matchConstraints: {
                resourceRules: [
                  {
                    apiGroups: ['apps'],
                    apiVersions: ['v1'],
                    operations: ['CREATE', 'UPDATE'],
                    resources: ['daemonsets'],
                  },
                ],
              },
              validations: [
                {
                  expression:
                    "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.internal/'))",
                  message: 'images must come from registry.internal',
                },
              ],
            },
          },
          {
            apiVersion: 'admissionregistration.k8s.io/v1',
            kind: 'ValidatingAdmissionPolicyBinding',
            metadata: { name: policy },
            spec: {
              policyName: policy,
              validationActions: ['Deny'],
              matchResources: {
                namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': namespace } },
              },
            },
          },
        ],
      }),
    );
    try {
      const probe = deployment(id('exp-probe'), 'baseline', namespace);
      await eventually('the policy is in force', async () => {
        try {
          await apps.createNamespacedDaemonSet({
            namespace,
            dryRun: 'All',
            body: {
              metadata: { name: 'probe' },
              spec: {
                selector: { matchLabels: { a: 'b' } },
                template: {
                  metadata: { labels: { a: 'b' } },
                  spec: { containers: [{ name: 'c', image: 'otel/x:1' }] },
                },
              },
            },
          });
          return false;
        } catch {
          return true;
        }
      });
      const outcome = await deployer({ mode: 'daemonset' }).deploy(
        deployment(id('exp-bad'), 'baseline', namespace),
      );
      assert.equal(outcome.ok, false);
      if (!outcome.ok) {
        assert.match(
          outcome.reason,
          /^apply DaemonSet\/phx-exp-bad-[0-9a-f]+-baseline in phx-test-[0-9a-f]+: Invalid: /,
        );
        assert.match(outcome.reason, /denied request: images must come from registry\.internal/);
      }
      assert.equal(
        (await apps.listNamespacedDaemonSet({ namespace })).items.length,
        0,
        'nothing was created',
      );
      void probe;
    } finally {
      await cluster.kubectl([
        'delete',
        'validatingadmissionpolicybinding,validatingadmissionpolicy',
        policy,
        '--ignore-not-found',
      ]);
    }
  });

  it('refuses an image reference the API server would accept on the DaemonSet but refuse on every pod, before applying', async () => {
    const namespace = await newNamespace();
    const outcome = await deployer({
      mode: 'daemonset',
      image: ' otel/opentelemetry-collector-contrib:0.165.0 ',
    }).deploy(deployment(id('exp-img'), 'baseline', namespace));
    assert.equal(outcome.ok, false);
    if (!outcome.ok) assert.match(outcome.reason, /^invalid objects: image: /);
    assert.equal((await apps.listNamespacedDaemonSet({ namespace })).items.length, 0);
  });

  it('a promotion rollout replaces the running config: the DaemonSet rolls its pods, and the rollout waits for the new generation', async () => {
    const namespace = await newNamespace();
    const d = deployer({ mode: 'daemonset' });
    const rollout = (variant: 'baseline' | 'candidate', commit: string) => {
      const v = deployment(id('exp-promo'), variant, namespace);
      return d.rollout({ ...v, commit });
    };
    const first = await rollout('baseline', 'a'.repeat(40));
    assert.ok(first.ok, !first.ok ? first.reason : '');
    const name = first.detail.daemonSet as string;
    const before = await apps.readNamespacedDaemonSet({ name, namespace });
    const second = await rollout('candidate', 'b'.repeat(40));
    assert.ok(second.ok, !second.ok ? second.reason : '');
    assert.equal(second.detail.daemonSet, name, 'the same target object, replaced in place');
    const after = await apps.readNamespacedDaemonSet({ name, namespace });
    assert.ok((after.metadata?.generation ?? 0) > (before.metadata?.generation ?? 0), 'a new pod template');
    assert.equal(after.status?.updatedNumberScheduled, 10);
    assert.equal(after.status?.numberReady, 10);
    const digest = after.spec?.template.metadata?.annotations?.['phoenix.io/config-digest'];
    assert.notEqual(digest, before.spec?.template.metadata?.annotations?.['phoenix.io/config-digest']);
    await eventually('every pod runs the new config', async () => {
      const pods = await core.listNamespacedPod({ namespace });
      const current = pods.items.filter((p) => !p.metadata?.deletionTimestamp);
      return (
        current.length === 10 &&
        current.every((p) => p.metadata?.annotations?.['phoenix.io/config-digest'] === digest)
      );
    });
  });

  it('fails when the namespace does not exist, as the API words it', async () => {
    const outcome = await deployer({ mode: 'daemonset' }).deploy(
      deployment(id('exp-ns'), 'baseline', 'phoenix-no-such-namespace'),
    );
    assert.equal(outcome.ok, false);
    if (!outcome.ok)
      assert.match(outcome.reason, /NotFound: namespaces "phoenix-no-such-namespace" not found/);
  });

  it('fails at once when no node matches the node selector', async () => {
    const namespace = await newNamespace();
    const outcome = await deployer({ mode: 'daemonset' }).deploy(
      deployment(id('exp-none'), 'baseline', namespace, { nodeSelector: { 'node-group': 'nowhere' } }),
    );
    assert.equal(outcome.ok, false);
    if (!outcome.ok)
      assert.match(
        outcome.reason,
        /scheduled on no node: nothing matches the node selector \{"node-group":"nowhere"\}/,
      );
  });

  it('fails a variant that never gets ready at its deadline, with the reason the API gave', async () => {
    const namespace = await newNamespace();
    // A quota of 3 pods: the DaemonSet controller cannot make the other 7, and says why in events.
    await core.createNamespacedResourceQuota({
      namespace,
      body: { metadata: { name: 'pods' }, spec: { hard: { pods: '3' } } },
    });
    await eventually('the quota is in force', async () => {
      const q = await core.readNamespacedResourceQuota({ name: 'pods', namespace });
      return q.status?.hard?.pods === '3';
    });
    const outcome = await deployer({ mode: 'daemonset', readinessTimeoutMs: 15_000 }).deploy(
      deployment(id('exp-quota'), 'baseline', namespace),
    );
    assert.equal(outcome.ok, false);
    if (!outcome.ok) {
      assert.match(outcome.reason, /not ready after 15 s: 3\/10 ready/);
      assert.match(outcome.reason, /FailedCreate: .*exceeded quota: pods/);
    }
  });

  it('rides out an API server that goes away mid-deploy (retries with backoff behind a circuit breaker), and gives up with the reason when it stays away', async () => {
    const namespace = await newNamespace();
    const server = new URL(kc.getCurrentCluster()?.server ?? '');
    const proxy = new TcpProxy(server.hostname, Number(server.port));
    await proxy.up();
    try {
      const viaProxy = new KubeConfig();
      viaProxy.loadFromFile(cluster.kubeconfig);
      const current = viaProxy.getCurrentCluster();
      assert.ok(current);
      viaProxy.clusters = viaProxy.clusters.map((c) =>
        c.name === current.name ? { ...c, server: `https://127.0.0.1:${proxy.port}` } : c,
      );
      const d = deployer(
        { mode: 'daemonset', retryBudgetMs: 30_000, backoff: { initialMs: 100, maxMs: 1_000 } },
        viaProxy,
      );
      const experimentId = id('exp-cut');
      await proxy.down();
      let settled = false;
      const pending = d.deploy(deployment(experimentId, 'baseline', namespace)).finally(() => {
        settled = true;
      });
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal(settled, false, 'the deployer keeps trying while the API is away');
      await proxy.up();
      const outcome = await pending;
      assert.ok(outcome.ok, !outcome.ok ? outcome.reason : '');
      const all = await apps.listNamespacedDaemonSet({ namespace });
      assert.equal(all.items.length, 1, 'nothing duplicated');

      // Away for longer than the budget: the deploy fails and says why.
      const warnings: string[] = [];
      const brief = deployer(
        {
          mode: 'daemonset',
          retryBudgetMs: 3_000,
          backoff: { initialMs: 100, maxMs: 500 },
          logger: {
            info: () => undefined,
            warn: (_o: unknown, msg?: string) => void warnings.push(msg ?? ''),
          },
        },
        viaProxy,
      );
      await proxy.down();
      const outcome2 = await brief.deploy(deployment(id('exp-gone'), 'baseline', namespace));
      assert.equal(outcome2.ok, false);
      if (!outcome2.ok)
        assert.match(
          outcome2.reason,
          /the Kubernetes API did not answer apply DaemonSet\/.* within 3 s: .*ECONNREFUSED/,
        );
      assert.ok(
        warnings.some((w) => /circuit open/.test(w)),
        `the breaker opened: ${JSON.stringify(warnings)}`,
      );
    } finally {
      await proxy.down();
    }
  });

  it('the API server restarted mid-rollout: both variants resume and complete, nothing duplicated', async () => {
    const namespace = await newNamespace();
    const d = deployer({
      mode: 'daemonset',
      retryBudgetMs: 120_000,
      backoff: { initialMs: 200, maxMs: 2_000 },
    });
    const experimentId = id('exp-restart');
    const deploys = Promise.all([
      d.deploy(deployment(experimentId, 'baseline', namespace)),
      d.deploy(deployment(experimentId, 'candidate', namespace)),
    ]);
    await cluster.restartApiServer();
    for (const outcome of await deploys) assert.ok(outcome.ok, !outcome.ok ? outcome.reason : '');
    const all = await apps.listNamespacedDaemonSet({ namespace });
    assert.deepEqual(all.items.map((x) => x.metadata?.name).sort(), [
      `phx-${experimentId}-baseline`,
      `phx-${experimentId}-candidate`,
    ]);
    const pods = await core.listNamespacedPod({ namespace });
    assert.equal(pods.items.length, 20, 'one pod per node and variant, none twice');
    // The watch came back by itself: a later deploy on the same deployer sees readiness again.
    const later = await d.deploy(deployment(id('exp-after'), 'baseline', namespace));
    assert.ok(later.ok, !later.ok ? later.reason : '');
  });

  it('heldExperiments (the saga’s start-up sweep) lists each experiment with objects there once, never a promotion’s target objects', async () => {
    const [here, there] = [await newNamespace(), await newNamespace()];
    const d = deployer({ mode: 'daemonset' });
    assert.deepEqual(await d.heldExperiments(here), []);
    const [a, b, c] = [id('exp-a'), id('exp-b'), id('exp-c')];
    const outcomes = await Promise.all([
      d.deploy(deployment(a, 'baseline', here)),
      d.deploy(deployment(a, 'candidate', here)),
      d.deploy(deployment(b, 'candidate', here)),
      d.deploy(deployment(c, 'baseline', there)),
      // A promotion's rollout over the same namespace: the target's collector, no experiment's.
      d.rollout({ ...deployment(id('exp-promoted'), 'candidate', here), commit: 'a'.repeat(40) }),
    ]);
    for (const o of outcomes) assert.ok(o.ok, !o.ok ? o.reason : '');

    assert.deepEqual(sorted(await d.heldExperiments(here)), sorted([a, b]));
    assert.deepEqual(await d.heldExperiments(there), [c]);

    await d.teardown(a, here);
    await eventually('the torn-down experiment no longer held', async () => {
      return JSON.stringify(await d.heldExperiments(here)) === JSON.stringify([b]);
    });
  });
});

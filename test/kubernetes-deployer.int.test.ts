import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { KubernetesDeployer } from '../src/adapters/kubernetes-deployer.js';
import type { VariantDeployment } from '../src/application/ports/deployer.js';
import { renderVariant, type TemplateName } from '../src/domain/pipelines/index.js';
import { KubeApiStub } from './support/kube-stub.js';

/**
 * The client library is loaded when a suite starts, so that a library that cannot load on this Node
 * fails the suite with the reason instead of crashing the file.
 */
const loadClient = async () => {
  try {
    const [k8s, adapter] = await Promise.all([
      import('@kubernetes/client-node'),
      import('../src/adapters/kubernetes-deployer.js'),
    ]);
    return { k8s, KubernetesDeployer: adapter.KubernetesDeployer };
  } catch (err) {
    throw new Error(
      `@kubernetes/client-node does not load on Node ${process.version} (${(err as Error).message}); its v2 needs undici 8, which needs Node >= 22.19: pin @kubernetes/client-node ^1.4 or run Node 22`,
    );
  }
};
type Client = Awaited<ReturnType<typeof loadClient>>;

const deployment = (
  experimentId: string,
  variant: 'baseline' | 'candidate' = 'baseline',
  over: Partial<VariantDeployment> = {},
): VariantDeployment => {
  const template: TemplateName = 'process-baseline-v1';
  const rendered = renderVariant({ experimentId, variant, template, criticalProcesses: ['^sshd$'] });
  assert.ok(rendered.ok);
  return {
    experimentId,
    variant,
    template,
    params: rendered.params as Record<string, unknown>,
    config: rendered.config,
    namespace: 'phoenix-experiments',
    nodeSelector: { pool: 'a' },
    hosts: 3,
    criticalProcesses: ['^sshd$'],
    ...over,
  };
};

describe('Kubernetes deployer against a recorded-contract stub of the API server (no cluster runs here)', () => {
  let stub: KubeApiStub;
  let client: Client;
  before(async () => {
    client = await loadClient();
    stub = await new KubeApiStub().start();
  });
  after(async () => {
    await stub?.stop();
  });
  const deployer = (options: ConstructorParameters<typeof KubernetesDeployer>[1] = {}) => {
    const kc = new client.k8s.KubeConfig();
    kc.loadFromOptions(stub.kubeConfigOptions());
    return new client.KubernetesDeployer(kc, { pollMs: 20, readinessTimeoutMs: 2_000, ...options });
  };

  it('applies a ConfigMap and a DaemonSet by server-side apply when the operator is absent, and waits until ready', async () => {
    stub.operatorInstalled = false;
    stub.requests.length = 0;
    const outcome = await deployer().deploy(deployment('exp-k8s-1'));
    assert.ok(outcome.ok, !outcome.ok ? outcome.reason : '');
    assert.equal(outcome.detail.mode, 'daemonset');
    assert.equal(outcome.detail.daemonSet, 'phx-exp-k8s-1-baseline');
    assert.equal(outcome.detail.numberReady, 3);
    const applies = stub.requests.filter((r) => r.method === 'PATCH');
    assert.deepEqual(
      applies.map((r) => r.path),
      [
        '/api/v1/namespaces/phoenix-experiments/configmaps/phx-exp-k8s-1-baseline-config',
        '/apis/apps/v1/namespaces/phoenix-experiments/daemonsets/phx-exp-k8s-1-baseline',
      ],
    );
    for (const r of applies) {
      assert.equal(r.contentType, 'application/apply-patch+yaml');
      assert.equal(r.query.fieldManager, 'phoenix');
      assert.equal(r.query.force, 'true');
    }
    const ds = stub.get('daemonsets', 'phoenix-experiments', 'phx-exp-k8s-1-baseline');
    assert.ok(ds);
    assert.equal(ds.metadata.labels?.['phoenix.io/experiment-id'], 'exp-k8s-1');
    assert.deepEqual(
      (ds.spec as { template: { spec: { nodeSelector: Record<string, string> } } }).template.spec
        .nodeSelector,
      { 'kubernetes.io/os': 'linux', pool: 'a' },
    );
  });

  it('is idempotent: applying the same variant again changes nothing and is ready at once', async () => {
    const before = stub.get('daemonsets', 'phoenix-experiments', 'phx-exp-k8s-1-baseline');
    const generation = before?.metadata.generation;
    const outcome = await deployer({ mode: 'daemonset' }).deploy(deployment('exp-k8s-1'));
    assert.ok(outcome.ok);
    const after = stub.get('daemonsets', 'phoenix-experiments', 'phx-exp-k8s-1-baseline');
    assert.equal(after?.metadata.generation, generation);
    assert.equal(after?.metadata.uid, before?.metadata.uid);
    assert.equal(stub.list('daemonsets', 'phoenix-experiments').length, 1);
  });

  it('applies an OpenTelemetryCollector when the operator is installed and waits for the DaemonSet it makes', async () => {
    stub.operatorInstalled = true;
    const outcome = await deployer().deploy(deployment('exp-k8s-op', 'candidate'));
    assert.ok(outcome.ok, !outcome.ok ? outcome.reason : '');
    assert.equal(outcome.detail.mode, 'operator');
    assert.equal(outcome.detail.daemonSet, 'phx-exp-k8s-op-candidate-collector');
    assert.deepEqual(outcome.detail.objects, ['OpenTelemetryCollector/phx-exp-k8s-op-candidate']);
    assert.ok(stub.get('opentelemetrycollectors', 'phoenix-experiments', 'phx-exp-k8s-op-candidate'));
    stub.operatorInstalled = false;
  });

  it("reports the API's refusal with its reason and message, without retrying", async () => {
    stub.failures.push({
      method: 'PATCH',
      pathIncludes: '/daemonsets/',
      code: 422,
      times: 1,
      body: {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message:
          'DaemonSet.apps "phx-exp-k8s-bad-baseline" is invalid: spec.template.spec.containers[0].image: Required value',
        reason: 'Invalid',
        details: { name: 'phx-exp-k8s-bad-baseline', group: 'apps', kind: 'DaemonSet' },
        code: 422,
      },
    });
    const outcome = await deployer({ mode: 'daemonset' }).deploy(deployment('exp-k8s-bad'));
    assert.equal(outcome.ok, false);
    if (!outcome.ok)
      assert.equal(
        outcome.reason,
        'apply DaemonSet/phx-exp-k8s-bad-baseline in phoenix-experiments: Invalid: DaemonSet.apps "phx-exp-k8s-bad-baseline" is invalid: spec.template.spec.containers[0].image: Required value',
      );
  });

  it('reports a missing namespace as the API words it', async () => {
    const outcome = await deployer({ mode: 'daemonset' }).deploy(
      deployment('exp-k8s-ns', 'baseline', { namespace: 'nope' }),
    );
    assert.equal(outcome.ok, false);
    if (!outcome.ok) assert.match(outcome.reason, /NotFound: namespaces "nope" not found/);
  });

  it('throws on a transient API failure (503), for the worker to retry', async () => {
    stub.failures.push({
      method: 'PATCH',
      pathIncludes: '/configmaps/',
      code: 503,
      times: 1,
      body: {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'etcdserver: leader changed',
        reason: 'ServiceUnavailable',
        code: 503,
      },
    });
    await assert.rejects(deployer({ mode: 'daemonset' }).deploy(deployment('exp-k8s-503')));
  });

  it('fails a variant that never gets ready, naming what its pods wait on', async () => {
    const saved = stub.autoReady;
    stub.autoReady = { afterReads: 1, state: { desiredNumberScheduled: 3, numberReady: 1 } };
    stub.pods = [
      {
        metadata: {
          name: 'phx-exp-k8s-slow-baseline-x7k2p',
          labels: { 'phoenix.io/experiment-id': 'exp-k8s-slow' },
        },
        status: {
          phase: 'Pending',
          containerStatuses: [
            {
              name: 'otc-container',
              ready: false,
              state: {
                waiting: { reason: 'ImagePullBackOff', message: 'Back-off pulling image "otel/nope:1"' },
              },
            },
          ],
        },
      },
    ];
    try {
      const outcome = await deployer({ mode: 'daemonset', readinessTimeoutMs: 300 }).deploy(
        deployment('exp-k8s-slow'),
      );
      assert.equal(outcome.ok, false);
      if (!outcome.ok) {
        assert.match(outcome.reason, /not ready after 0 s: 1\/3 ready/);
        assert.match(outcome.reason, /ImagePullBackOff \(Back-off pulling image "otel\/nope:1"\)/);
      }
    } finally {
      stub.autoReady = saved;
      stub.pods = [];
    }
  });

  it('fails at once when no node matches the node selector', async () => {
    const saved = stub.autoReady;
    stub.autoReady = { afterReads: 1, state: { desiredNumberScheduled: 0, numberReady: 0 } };
    try {
      const outcome = await deployer({ mode: 'daemonset' }).deploy(deployment('exp-k8s-nonodes'));
      assert.equal(outcome.ok, false);
      if (!outcome.ok) assert.match(outcome.reason, /scheduled on no node.*"pool":"a"/);
    } finally {
      stub.autoReady = saved;
    }
  });

  it('lists the variants of an experiment it holds, for reconciliation: present adopted, missing named', async () => {
    const d = deployer({ mode: 'daemonset' });
    assert.deepEqual(await d.deployedVariants('exp-k8s-held', 'phoenix-experiments'), []);
    assert.ok((await d.deploy(deployment('exp-k8s-held', 'candidate'))).ok);
    assert.deepEqual(await d.deployedVariants('exp-k8s-held', 'phoenix-experiments'), ['candidate']);
    assert.ok((await d.deploy(deployment('exp-k8s-held', 'baseline'))).ok);
    assert.deepEqual(await d.deployedVariants('exp-k8s-held', 'phoenix-experiments'), [
      'baseline',
      'candidate',
    ]);
    await d.teardown('exp-k8s-held', 'phoenix-experiments');
    assert.deepEqual(await d.deployedVariants('exp-k8s-held', 'phoenix-experiments'), []);
  });

  it("tears an experiment down by label, leaving other experiments' objects alone", async () => {
    const d = deployer({ mode: 'daemonset' });
    assert.ok((await d.deploy(deployment('exp-k8s-td', 'baseline'))).ok);
    assert.ok((await d.deploy(deployment('exp-k8s-td', 'candidate'))).ok);
    assert.equal(await d.isDeployed('exp-k8s-td', 'candidate', 'phoenix-experiments'), true);
    stub.requests.length = 0;
    const first = await d.teardown('exp-k8s-td', 'phoenix-experiments');
    assert.deepEqual(first.variants, ['baseline', 'candidate']);
    const lists = stub.requests.filter((r) => r.method === 'GET' && r.query.labelSelector);
    assert.ok(lists.every((r) => r.query.labelSelector === 'phoenix.io/experiment-id=exp-k8s-td'));
    assert.equal(stub.requests.filter((r) => r.method === 'DELETE').length, 4);
    assert.equal(await d.isDeployed('exp-k8s-td', 'candidate', 'phoenix-experiments'), false);
    assert.ok(
      stub.get('daemonsets', 'phoenix-experiments', 'phx-exp-k8s-1-baseline'),
      'other experiments stay',
    );
    const again = await d.teardown('exp-k8s-td', 'phoenix-experiments');
    assert.deepEqual(again.variants, []);
  });
});

/**
 * The same deployer against a real cluster. It needs the collector image pulled and a node to run on,
 * so it is opt-in: it runs when KUBECONFIG is set.
 */
const clusterSkip = process.env.KUBECONFIG
  ? undefined
  : 'KUBECONFIG is not set: no Kubernetes cluster to test against (set it to run this suite)';

describe('Kubernetes deployer against a real cluster', { skip: clusterSkip }, () => {
  if (clusterSkip) {
    it(`skipped: ${clusterSkip}`, { skip: clusterSkip }, () => {});
    return;
  }
  const namespace = `phoenix-test-${randomBytes(4).toString('hex')}`;
  let client: Client;
  let kc: InstanceType<Client['k8s']['KubeConfig']>;
  before(async () => {
    client = await loadClient();
    kc = new client.k8s.KubeConfig();
    kc.loadFromDefault();
    await kc.makeApiClient(client.k8s.CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } });
  });
  after(async () => {
    await kc
      ?.makeApiClient(client.k8s.CoreV1Api)
      .deleteNamespace({ name: namespace })
      .catch(() => undefined);
  });

  it('deploys a baseline collector, reports it ready, and tears it down', { timeout: 420_000 }, async () => {
    const d = new client.KubernetesDeployer(kc, { mode: 'daemonset', readinessTimeoutMs: 360_000 });
    const experimentId = `exp-${randomBytes(4).toString('hex')}`;
    const outcome = await d.deploy(deployment(experimentId, 'baseline', { namespace, nodeSelector: {} }));
    assert.ok(outcome.ok, !outcome.ok ? outcome.reason : '');
    assert.ok((outcome.detail.numberReady as number) >= 1);
    assert.equal(await d.isDeployed(experimentId, 'baseline', namespace), true);
    const again = await d.deploy(deployment(experimentId, 'baseline', { namespace, nodeSelector: {} }));
    assert.ok(again.ok, 'a second apply converges');
    assert.deepEqual((await d.teardown(experimentId, namespace)).variants, ['baseline']);
    assert.equal(await d.isDeployed(experimentId, 'baseline', namespace), false);
  });
});

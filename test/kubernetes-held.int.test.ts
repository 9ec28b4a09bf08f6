import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { KubernetesDeployer, type KubernetesDeployerOptions } from '../src/adapters/kubernetes-deployer.js';
import type { VariantDeployment } from '../src/application/ports/deployer.js';
import { renderVariant } from '../src/domain/pipelines/index.js';
import { clusterSkipReason, operatorAvailable, type TestCluster, useCluster } from './support/cluster.js';

/**
 * What the saga's sweep asks the Kubernetes deployer at start: which experiments have objects in a
 * namespace. Against the real test cluster (scripts/cluster.sh), so the label selectors are the API
 * server's own reading.
 */

const skip = clusterSkipReason();
if (skip) console.log(`# skipping the Kubernetes sweep suite: ${skip}`);

const deployment = (
  experimentId: string,
  variant: 'baseline' | 'candidate',
  namespace: string,
): VariantDeployment => {
  const rendered = renderVariant({
    experimentId,
    variant,
    template: 'process-baseline-v1',
    criticalProcesses: ['^sshd$'],
  });
  assert.ok(rendered.ok);
  return {
    experimentId,
    variant,
    template: 'process-baseline-v1',
    params: rendered.params as Record<string, unknown>,
    config: rendered.config,
    namespace,
    // KWOK nodes kwok-node-0…9 (scripts/cluster.sh labels them node-group=g0).
    nodeSelector: { 'node-group': 'g0' },
    hosts: 10,
    criticalProcesses: ['^sshd$'],
  };
};

const id = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

/** Polls the API until `check` holds (what the garbage collector does after a delete). */
const eventually = async (what: string, check: () => Promise<boolean>, timeoutMs = 60_000) => {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`${what}: still not so after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
};

const sorted = (ids: readonly string[]) => [...ids].sort();

describe('Kubernetes deployer: the experiments held in a namespace, for the sweep', {
  skip: skip || false,
}, () => {
  let cluster: TestCluster;
  let kc: KubeConfig;
  let core: CoreV1Api;
  const namespaces: string[] = [];
  const deployers: KubernetesDeployer[] = [];

  const newNamespace = async (): Promise<string> => {
    const name = id('phx-held');
    await core.createNamespace({ body: { metadata: { name } } });
    namespaces.push(name);
    return name;
  };
  const deployer = (options: KubernetesDeployerOptions = {}) => {
    const d = new KubernetesDeployer(kc, { readinessTimeoutMs: 120_000, ...options });
    deployers.push(d);
    return d;
  };

  before(async () => {
    cluster = await useCluster(10);
    kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
  });
  after(async () => {
    await Promise.all(deployers.map((d) => d.close()));
    for (const name of namespaces) await core?.deleteNamespace({ name }).catch(() => undefined);
    await cluster?.release();
  });

  it('lists each experiment with objects there once, never a promotion’s target objects', async () => {
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

  it('operator mode: the experiment’s OpenTelemetryCollector is listed', {
    skip: operatorAvailable() ? false : 'the OpenTelemetry Operator binary is not built',
  }, async () => {
    const namespace = await newNamespace();
    const d = deployer();
    assert.equal(await d.mode(namespace), 'operator');
    const experimentId = id('exp-op');
    const outcome = await d.deploy(deployment(experimentId, 'candidate', namespace));
    assert.ok(outcome.ok, !outcome.ok ? outcome.reason : '');
    assert.deepEqual(await d.heldExperiments(namespace), [experimentId]);
  });
});

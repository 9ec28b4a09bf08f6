import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildKubernetesObjects,
  collectorName,
  LABEL_KEYS,
  renderVariant,
} from '../src/domain/pipelines/index.js';

const rendered = renderVariant({
  experimentId: '3f2b7c1e-8d4a-4c2b-9e1f-0a1b2c3d4e5f',
  variant: 'baseline',
  template: 'process-baseline-v1',
});
if (!rendered.ok) throw new Error('render failed');

const build = (extra: Partial<Parameters<typeof buildKubernetesObjects>[0]> = {}) =>
  buildKubernetesObjects({
    experimentId: '3f2b7c1e-8d4a-4c2b-9e1f-0a1b2c3d4e5f',
    variant: 'baseline',
    template: 'process-baseline-v1',
    config: rendered.config,
    nodeSelector: { pool: 'a' },
    ...extra,
  });

describe('buildKubernetesObjects', () => {
  it('builds an OpenTelemetryCollector in daemonset mode with env, hostfs, labels and the target node selector', () => {
    const { objects, errors } = build({ namespace: 'exp' });
    assert.deepEqual(errors, []);
    assert.equal(objects.length, 1);
    const cr = objects[0] as {
      apiVersion: string;
      kind: string;
      metadata: { namespace: string; labels: Record<string, string> };
      spec: {
        mode: string;
        config: unknown;
        env: { name: string; valueFrom?: { fieldRef: { fieldPath: string } } }[];
        nodeSelector: Record<string, string>;
        volumes: { hostPath?: { path: string } }[];
      };
    };
    assert.equal(cr.apiVersion, 'opentelemetry.io/v1beta1');
    assert.equal(cr.kind, 'OpenTelemetryCollector');
    assert.equal(cr.metadata.namespace, 'exp');
    assert.equal(cr.spec.mode, 'daemonset');
    assert.deepEqual(cr.spec.config, rendered.config);
    assert.equal(
      cr.spec.env.find((e) => e.name === 'K8S_NODE_NAME')?.valueFrom?.fieldRef.fieldPath,
      'spec.nodeName',
    );
    assert.deepEqual(cr.spec.nodeSelector, { 'kubernetes.io/os': 'linux', pool: 'a' });
    assert.equal(cr.spec.volumes[0]?.hostPath?.path, '/');
    assert.equal(cr.metadata.labels[LABEL_KEYS.variant], 'baseline');
    assert.equal(cr.metadata.labels[LABEL_KEYS.template], 'process-baseline-v1');
  });

  it('builds a ConfigMap and a DaemonSet that pass the Kubernetes schema', () => {
    const { objects, errors, yaml } = build({ mode: 'daemonset' });
    assert.deepEqual(errors, []);
    assert.deepEqual(
      objects.map((o) => o.kind),
      ['ConfigMap', 'DaemonSet'],
    );
    assert.equal(yaml.split(/^---$/m).length, 2);
  });

  it('reports invalid label keys and values from the node selector', () => {
    const { errors } = build({
      nodeSelector: { 'bad key!': 'x', pool: 'not valid value' },
      mode: 'daemonset',
    });
    assert.deepEqual(
      errors.map((e) => e.path),
      ['nodeSelector.bad key!', 'nodeSelector.pool'],
    );
  });

  it('reports a config that does not pass the collector checks', () => {
    const broken = structuredClone(rendered.config);
    broken.processors = {};
    const { errors } = build({ config: broken });
    assert.ok(errors.some((e) => e.path.startsWith('config.') && /not defined/.test(e.message)));
  });

  it("keeps names short enough for the operator's suffix and unique per experiment", () => {
    const long = collectorName(
      'an-experiment-id-that-is-much-longer-than-the-kubernetes-limit-allows',
      'candidate',
    );
    const other = collectorName(
      'an-experiment-id-that-is-much-longer-than-the-kubernetes-limit-allows-too',
      'candidate',
    );
    assert.ok(long.length <= 53, long);
    assert.match(long, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    assert.notEqual(long, other);
    assert.equal(collectorName('Exp_1', 'baseline'), 'phx-exp-1-baseline');
  });
});

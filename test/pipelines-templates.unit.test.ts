import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import {
  buildKubernetesObjects,
  type CollectorConfig,
  compileCollectorRegex,
  parseOttlCondition,
  type RenderVariantInput,
  renderVariant,
  TEMPLATE_NAMES,
  type TemplateName,
  validateCollectorConfig,
  walkValues,
} from '../src/domain/pipelines/index.js';

const CRITICAL = ['^postgres$', '^kubelet$'];

/** The input each golden file is rendered from; keep-list templates get a fixed keep-list. */
const goldenInput = (template: TemplateName): RenderVariantInput => ({
  experimentId: 'golden-exp',
  variant: template === 'process-baseline-v1' ? 'baseline' : 'candidate',
  template,
  criticalProcesses: CRITICAL,
  ...(template === 'process-topk-v1' || template === 'process-intelligent-v1'
    ? { keepList: ['java', 'python3', 'php-fpm8.2'] }
    : {}),
});

const goldenPath = (name: string) => new URL(`./golden/${name}`, import.meta.url);

/** Compares with the golden file; `UPDATE_GOLDEN=1` rewrites it (then review the diff). */
const assertGolden = (name: string, actual: string) => {
  if (process.env.UPDATE_GOLDEN === '1') writeFileSync(goldenPath(name), actual);
  assert.equal(actual, readFileSync(goldenPath(name), 'utf8'), `${name} differs from its golden file`);
};

const pipelineOf = (config: CollectorConfig) =>
  config.service.pipelines.metrics as { processors: string[]; exporters: string[] };

describe('templates render valid collector configs', () => {
  for (const template of TEMPLATE_NAMES) {
    describe(template, () => {
      const rendered = renderVariant(goldenInput(template));

      it('renders with no errors and passes the checks', () => {
        assert.equal(rendered.ok, true, JSON.stringify(rendered.errors));
        if (!rendered.ok) return;
        assert.deepEqual(validateCollectorConfig(rendered.config), []);
        // Adaptive renders its parameter thresholds until the baseline has reported.
        assert.equal(rendered.pendingTuning, template === 'process-adaptive-v1');
      });

      it('round-trips through YAML', () => {
        if (!rendered.ok) assert.fail('not rendered');
        assert.deepEqual(parse(rendered.yaml), rendered.config);
      });

      it('matches its golden file', () => {
        if (!rendered.ok) assert.fail('not rendered');
        assertGolden(`${template}.yaml`, rendered.yaml);
      });

      it('puts memory_limiter first, stamps the experiment, batches last and converts resources to labels', () => {
        if (!rendered.ok) assert.fail('not rendered');
        const { processors, exporters } = pipelineOf(rendered.config);
        assert.equal(processors[0], 'memory_limiter');
        assert.equal(processors[1], 'resource/experiment');
        assert.equal(processors.at(-1), 'batch');
        assert.deepEqual(exporters, ['prometheus', 'otlp']);
        const prom = rendered.config.exporters.prometheus as {
          resource_to_telemetry_conversion: { enabled: boolean };
        };
        assert.equal(prom.resource_to_telemetry_conversion.enabled, true);
        const attributes = (
          rendered.config.processors['resource/experiment'] as {
            attributes: { key: string; value: string }[];
          }
        ).attributes;
        assert.deepEqual(
          attributes.map((a) => [a.key, a.value]),
          [
            ['experiment.id', 'golden-exp'],
            ['experiment.variant', goldenInput(template).variant],
            // biome-ignore lint/suspicious/noTemplateCurlyInString: a collector config variable, literally
            ['k8s.node.name', '${env:K8S_NODE_NAME}'],
          ],
        );
        const telemetry = rendered.config.service.telemetry as { metrics: { level: string } };
        assert.equal(telemetry.metrics.level, 'detailed');
      });

      it('names every critical pattern in its processors unless it keeps everything', () => {
        if (!rendered.ok) assert.fail('not rendered');
        const processors = JSON.stringify(rendered.config.processors);
        if (template === 'process-baseline-v1') return;
        for (const pattern of CRITICAL)
          assert.ok(processors.includes(`(?:${pattern})`), `${pattern} missing`);
      });
    });
  }

  it('renders a bootstrap, flagged as pending, for templates tuned from the baseline', () => {
    for (const template of ['process-topk-v1', 'process-intelligent-v1', 'process-adaptive-v1'] as const) {
      const rendered = renderVariant({
        experimentId: 'e',
        variant: 'candidate',
        template,
        criticalProcesses: CRITICAL,
      });
      assert.equal(rendered.ok, true);
      if (rendered.ok) assert.equal(rendered.pendingTuning, true, template);
    }
  });

  it('changes the rendered filter when the keep-list changes', () => {
    const a = renderVariant({ ...goldenInput('process-topk-v1'), keepList: ['java'] });
    const b = renderVariant({ ...goldenInput('process-topk-v1'), keepList: ['java', 'node'] });
    assert.ok(a.ok && b.ok);
    assert.notDeepEqual(a.config.processors['filter/topk'], b.config.processors['filter/topk']);
    assert.match(JSON.stringify(b.config.processors['filter/topk']), /java\|node/);
  });

  it('escapes keep-list names that contain regex metacharacters', () => {
    const rendered = renderVariant({ ...goldenInput('process-topk-v1'), keepList: ['php-fpm8.2', 'a+b'] });
    assert.ok(rendered.ok);
    const condition = (rendered.config.processors['filter/topk'] as { metrics: { metric: string[] } }).metrics
      .metric[0];
    const patterns = [...walkValues(parseOttlCondition(condition ?? ''))].flatMap((v) =>
      v.kind === 'call' && v.name === 'IsMatch' && v.args[1]?.kind === 'string' ? [v.args[1].value] : [],
    );
    assert.equal(patterns.length, 1);
    const check = compileCollectorRegex(patterns[0] as string, 65_536);
    assert.ok(check.ok);
    for (const kept of ['php-fpm8.2', 'a+b', 'postgres', 'kubelet']) assert.ok(check.regex.test(kept), kept);
    for (const dropped of ['php-fpm8x2', 'aab', 'postgres2', 'java'])
      assert.ok(!check.regex.test(dropped), dropped);
  });

  it('keeps each critical pattern’s flags to itself in the filter it renders', () => {
    const rendered = renderVariant({
      ...goldenInput('process-topk-v1'),
      criticalProcesses: ['(?i)^nginx$', '^postgres$', 'a(?i)b$'],
      keepList: ['java'],
    });
    assert.ok(rendered.ok, JSON.stringify(!rendered.ok && rendered.errors));
    const condition = (rendered.config.processors['filter/topk'] as { metrics: { metric: string[] } }).metrics
      .metric[0];
    const patterns = [...walkValues(parseOttlCondition(condition ?? ''))].flatMap((v) =>
      v.kind === 'call' && v.name === 'IsMatch' && v.args[1]?.kind === 'string' ? [v.args[1].value] : [],
    );
    assert.equal(patterns.length, 1);
    const check = compileCollectorRegex(patterns[0] as string, 65_536);
    assert.ok(check.ok, !check.ok ? check.message : '');
    for (const kept of ['NGINX', 'nginx', 'postgres', 'aB', 'java']) assert.ok(check.regex.test(kept), kept);
    for (const dropped of ['POSTGRES', 'AB', 'JAVA']) assert.ok(!check.regex.test(dropped), dropped);
  });

  it('takes the collection interval from the parameters', () => {
    const rendered = renderVariant({
      ...goldenInput('process-minimal-v1'),
      params: { collectionIntervalSeconds: 15 },
    });
    assert.ok(rendered.ok);
    assert.equal(
      (rendered.config.receivers.hostmetrics as { collection_interval: string }).collection_interval,
      '15s',
    );
  });

  it('refuses invalid inputs with paths the API can return as a 400', () => {
    const rendered = renderVariant({
      experimentId: 'has spaces',
      variant: 'candidate',
      template: 'process-topk-v1',
      params: { k: 0 },
      criticalProcesses: ['(?<=x)y'],
    });
    assert.equal(rendered.ok, false);
    assert.deepEqual(
      rendered.errors.map((e) => e.path),
      ['experimentId', 'criticalProcesses.0', 'params.k'],
    );
  });

  it('renders with no critical processes at all', () => {
    for (const template of TEMPLATE_NAMES) {
      const rendered = renderVariant({
        experimentId: 'e',
        variant: 'candidate',
        template,
        keepList: ['java'],
      });
      assert.equal(rendered.ok, true, `${template}: ${JSON.stringify(rendered.errors)}`);
    }
  });
});

describe('Kubernetes objects golden files', () => {
  const rendered = renderVariant(goldenInput('process-aggregated-v1'));
  if (!rendered.ok) throw new Error('golden render failed');
  for (const mode of ['operator', 'daemonset'] as const) {
    it(`${mode} objects match their golden file`, () => {
      const objects = buildKubernetesObjects({
        experimentId: 'golden-exp',
        variant: 'candidate',
        template: 'process-aggregated-v1',
        config: rendered.config,
        mode,
        nodeSelector: { 'phoenix.io/pool': 'a' },
      });
      assert.deepEqual(objects.errors, []);
      assertGolden(`process-aggregated-v1.k8s-${mode}.yaml`, objects.yaml);
      const docs = objects.yaml.split(/^---$/m).map((d) => parse(d));
      assert.deepEqual(docs, objects.objects);
    });
  }
});

describe('process-aggregated-v1 aggregation names', () => {
  // The collector knows sum, mean, min, max, median and count; it refused the "avg" Phoenix used to render.
  for (const [aggregation, fn] of [
    ['sum', 'sum'],
    ['avg', 'mean'],
    ['max', 'max'],
  ] as const) {
    it(`renders aggregation ${aggregation} as aggregate_on_attributes("${fn}")`, () => {
      const rendered = renderVariant({
        ...goldenInput('process-aggregated-v1'),
        params: { aggregation },
      });
      assert.ok(rendered.ok, JSON.stringify(rendered.errors));
      assert.match(rendered.yaml, new RegExp(`aggregate_on_attributes\\("${fn}", `));
    });
  }
});

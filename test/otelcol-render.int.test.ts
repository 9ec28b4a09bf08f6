import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import {
  buildKubernetesObjects,
  DEFAULT_COLLECTOR_IMAGE,
  type KubernetesMode,
  listTemplates,
  NODE_NAME_ENV,
  type RenderVariantInput,
  renderVariant,
  TEMPLATE_NAMES,
  type TemplateName,
  toYaml,
} from '../src/domain/pipelines/index.js';
import { collectorValidate, findCollector, MANIFEST, mapLimit } from './support/otelcol.js';

/**
 * The real collector (issue 17 §2) validates every config Phoenix renders: every template, with default
 * and edge-case parameters, in every render target (the plain config, the ConfigMap of the DaemonSet
 * mode, the OpenTelemetryCollector resource of the operator mode), through `<collector> validate`.
 */

const collector = findCollector();
if (collector.skip) console.log(`# skipped: ${collector.skip}`);

/** One rendering input and what it exercises. */
interface Case {
  readonly name: string;
  readonly input: RenderVariantInput;
}

const NASTY_NAMES = [
  'php-fpm8.2',
  'a+b',
  'x(y)',
  'back\\slash',
  'dollar$sign',
  'quote"d',
  "single'quoted",
  'br[ack]ets',
  'cur{ly}',
  'pipe|d',
  'star*q?',
  'caret^',
  'with space',
  '日本語',
  'émoji😀',
  'n'.repeat(255),
];
const NASTY_PATTERNS = [
  '(?i)^java$',
  '^python[0-9.]*$',
  '\\d+\\.worker',
  '[[:alpha:]]+-srv',
  '\\p{Greek}+',
  'quote"d',
  'back\\\\slash',
  '^(a|b|c){1,1000}$',
  '\\Qliteral.+*\\E',
  '^$',
];

const input = (template: TemplateName, extra: Partial<RenderVariantInput> = {}): RenderVariantInput => ({
  experimentId: 'otelcol-exp',
  variant: template === 'process-baseline-v1' ? 'baseline' : 'candidate',
  template,
  ...extra,
});

/** Parameters at their edges, per template; every template also runs with defaults and nasty inputs. */
const EDGE_PARAMS: Record<TemplateName, readonly Record<string, unknown>[]> = {
  'process-baseline-v1': [{ collectionIntervalSeconds: 1 }, { collectionIntervalSeconds: 3600 }],
  'process-priority-filter-v1': [
    { priorityPatterns: [], lowPriorityMetrics: [] },
    {
      priorityPatterns: NASTY_PATTERNS,
      lowPriorityMetrics: [
        'process.cpu.time',
        'process.memory.usage',
        'process.memory.virtual',
        'process.disk.io',
      ],
    },
    { lowPriorityMetrics: ['process.disk.io'] },
  ],
  'process-topk-v1': [
    { k: 1, rankBy: 'memory' },
    { k: 500, rankBy: 'combined' },
  ],
  'process-aggregated-v1': [
    { aggregation: 'avg', keepCpuStates: false },
    { aggregation: 'max', keepCpuStates: true },
    { aggregation: 'sum', keepCpuStates: false, collectionIntervalSeconds: 1 },
  ],
  'process-adaptive-v1': [
    { cpuUtilizationThreshold: 0, memoryThresholdMiB: 0 },
    { cpuUtilizationThreshold: 1, memoryThresholdMiB: 1_048_576, adaptPercentile: 99 },
    { cpuUtilizationThreshold: 0.000001, memoryThresholdMiB: 0.5 },
  ],
  'process-intelligent-v1': [
    { seriesBudgetPct: 0.001, anomalyWeight: 0 },
    { seriesBudgetPct: 100, anomalyWeight: 10 },
  ],
  'process-minimal-v1': [{ rollupOthers: false }, { rollupOthers: true, collectionIntervalSeconds: 3600 }],
};

const CASES: Case[] = TEMPLATE_NAMES.flatMap((template): Case[] => {
  const tunedByKeepList = template === 'process-topk-v1' || template === 'process-intelligent-v1';
  const cases: Case[] = [
    { name: `${template} defaults`, input: input(template) },
    {
      name: `${template} defaults, baseline variant, long id`,
      input: input(template, { variant: 'baseline', experimentId: `a.b_c-${'x'.repeat(56)}` }),
    },
    {
      name: `${template} nasty critical patterns and a custom OTLP endpoint`,
      input: input(template, { criticalProcesses: NASTY_PATTERNS, otlpEndpoint: 'gateway.example:14317' }),
    },
    ...EDGE_PARAMS[template].map((params) => ({
      name: `${template} ${JSON.stringify(params).slice(0, 80)}`,
      input: input(template, { params, criticalProcesses: ['^postgres$'] }),
    })),
  ];
  if (tunedByKeepList) {
    cases.push(
      { name: `${template} empty keep-list`, input: input(template, { keepList: [] }) },
      {
        name: `${template} keep-list of metacharacter names`,
        input: input(template, { keepList: NASTY_NAMES, criticalProcesses: ['^postgres$'] }),
      },
      {
        name: `${template} keep-list of 2000 names`,
        input: input(template, { keepList: Array.from({ length: 2000 }, (_, i) => `proc-${i}.bin`) }),
      },
    );
  }
  if (template === 'process-adaptive-v1') {
    cases.push(
      {
        name: `${template} tuned to zero`,
        input: input(template, { thresholds: { cpuUtilization: 0, memoryBytes: 0 } }),
      },
      {
        name: `${template} tuned to tiny and huge`,
        input: input(template, { thresholds: { cpuUtilization: 1e-9, memoryBytes: 2 ** 53 - 1 } }),
      },
    );
  }
  return cases;
});

/** What the pod's environment holds: the env list of the rendered container, fieldRefs filled in. */
const podEnv = (env: unknown): Record<string, string> => {
  assert.ok(Array.isArray(env), 'the collector container has an env list');
  const out: Record<string, string> = {};
  for (const entry of env as { name: string; value?: string; valueFrom?: unknown }[]) {
    out[entry.name] = entry.value ?? 'node-from-field-ref';
  }
  return out;
};

/**
 * The pod mounts the host's root at /hostfs; `validate` checks that root_path exists on the machine it
 * runs on, so the local check points it at `/`. Nothing else of the rendered text is touched.
 */
const forThisMachine = (yaml: string): string => {
  const lines = yaml.split('\n');
  const at = lines.flatMap((line, i) => (/^ {4}root_path: \/hostfs$/.test(line) ? [i] : []));
  assert.equal(at.length, 1, 'one hostmetrics root_path: /hostfs line');
  lines[at[0] as number] = '    root_path: /';
  return lines.join('\n');
};

/** A parsed Kubernetes object: plain YAML data, read by path. */
// biome-ignore lint/suspicious/noExplicitAny: parsed YAML read by path
type KubeDoc = any;

interface Target {
  readonly label: string;
  readonly yaml: string;
  readonly env: Record<string, string>;
}

const targetsOf = (c: Case): Target[] => {
  const rendered = renderVariant(c.input);
  assert.ok(rendered.ok, `${c.name}: ${JSON.stringify(rendered.errors)}`);
  const targets: Target[] = [
    // A plain collector outside Kubernetes must be given the node name the DaemonSet fills from spec.nodeName.
    { label: 'plain config', yaml: rendered.yaml, env: { [NODE_NAME_ENV]: 'node-a' } },
  ];
  for (const mode of ['daemonset', 'operator'] as const satisfies readonly KubernetesMode[]) {
    const built = buildKubernetesObjects({
      experimentId: c.input.experimentId,
      variant: c.input.variant,
      template: c.input.template,
      config: rendered.config,
      mode,
    });
    assert.deepEqual(built.errors, [], `${c.name} ${mode}`);
    const docs = built.yaml.split(/^---$/m).map((d) => parse(d) as KubeDoc);
    if (mode === 'daemonset') {
      const configMap = docs.find((d) => d.kind === 'ConfigMap');
      const daemonSet = docs.find((d) => d.kind === 'DaemonSet');
      const container = daemonSet?.spec.template.spec.containers[0];
      assert.deepEqual(container?.args, ['--config=/conf/collector.yaml']);
      targets.push({
        label: 'ConfigMap of the DaemonSet',
        yaml: configMap?.data['collector.yaml'],
        env: podEnv(container?.env),
      });
    } else {
      const resource = docs.find((d) => d.kind === 'OpenTelemetryCollector');
      targets.push({
        label: 'OpenTelemetryCollector resource',
        yaml: toYaml(resource?.spec.config),
        env: podEnv(resource?.spec.env),
      });
    }
  }
  return targets;
};

it('deploys the collector release the configs are validated against', () => {
  // The manifest pins otlpreceiver (core) and the contrib modules to one v0.N.0; the default image must be it.
  const manifest = readFileSync(MANIFEST, 'utf8');
  const versions = new Set([...manifest.matchAll(/gomod: \S+ v(0\.\d+\.\d+)/g)].map((m) => m[1]));
  assert.equal(versions.size, 1, `one core/contrib version in the manifest, got ${[...versions].join(', ')}`);
  assert.equal(DEFAULT_COLLECTOR_IMAGE, `otel/opentelemetry-collector-contrib:${[...versions][0]}`);
});

describe('the real collector validates every rendered config', { skip: collector.skip }, () => {
  const bin = collector.bin as string;

  it('covers every template of listTemplates', () => {
    assert.deepEqual(
      [...new Set(CASES.map((c) => c.input.template))].sort(),
      listTemplates()
        .map((t) => t.name)
        .sort(),
    );
  });

  it('accepts every template × parameters × render target', { timeout: 20 * 60_000 }, async () => {
    const jobs = CASES.flatMap((c) => targetsOf(c).map((t) => ({ c, t })));
    const verdicts = await mapLimit(jobs, 2, ({ t }) =>
      collectorValidate(bin, forThisMachine(t.yaml), t.env),
    );
    const refused = jobs
      .map(({ c, t }, i) => ({ what: `${c.name} (${t.label})`, verdict: verdicts[i] }))
      .filter((r) => !r.verdict?.ok)
      .map((r) => `${r.what}:\n  ${r.verdict?.output.replace(/\n/g, '\n  ')}`);
    assert.deepEqual(refused, [], `the collector refused ${refused.length} of ${jobs.length} configs`);
  });

  it('accepts every template × parameters rendered for simulation (an otlp receiver in place of hostmetrics)', {
    timeout: 20 * 60_000,
  }, async () => {
    // Issue 17 §3: the config a simulated data plane runs. Only the receiver differs from the plain one.
    const jobs = CASES.map((c) => {
      const rendered = renderVariant({ ...c.input, simulation: { otlpEndpoint: '127.0.0.1:14318' } });
      assert.ok(rendered.ok, `${c.name}: ${JSON.stringify(rendered.errors)}`);
      return { c, yaml: rendered.yaml };
    });
    const verdicts = await mapLimit(jobs, 2, ({ yaml }) =>
      collectorValidate(bin, yaml, { [NODE_NAME_ENV]: 'collector-node' }),
    );
    const refused = jobs
      .map(({ c }, i) => ({ what: c.name, verdict: verdicts[i] }))
      .filter((r) => !r.verdict?.ok)
      .map((r) => `${r.what}:\n  ${r.verdict?.output.replace(/\n/g, '\n  ')}`);
    assert.deepEqual(refused, [], `the collector refused ${refused.length} of ${jobs.length} configs`);
  });

  it('refuses the config without the node name the pod gets from spec.nodeName', async () => {
    // Why the plain target above sets K8S_NODE_NAME: `${env:K8S_NODE_NAME}` expands to "" and the
    // resource processor refuses an insert without a value. Deployers outside Kubernetes must set it.
    const rendered = renderVariant(input('process-baseline-v1'));
    assert.ok(rendered.ok);
    const verdict = await collectorValidate(bin, forThisMachine(rendered.yaml));
    assert.equal(verdict.ok, false);
    assert.match(verdict.output, /k8s\.node\.name/);
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import {
  type CollectorConfig,
  NODE_NAME_ENV,
  renderVariant,
  STOCK_COMPONENTS,
  type TemplateName,
  toYaml,
  validateCollectorConfig,
} from '../src/domain/pipelines/index.js';
import { collectorValidate, findCollector, mapLimit } from './support/otelcol.js';

/**
 * Phoenix's hand-written validator (src/domain/pipelines/validate.ts) against the real collector's
 * `validate` (issue 17 §2): over the golden set and a corpus of broken configs, it accepts nothing the
 * collector refuses and refuses nothing the collector accepts, except for the deliberate differences
 * listed with their reasons below (Phoenix's own deployment rules, which the collector cannot know).
 */

const collector = findCollector();
if (collector.skip) console.log(`# skipped: ${collector.skip}`);

/** The pod's environment: the DaemonSet and the operator fill K8S_NODE_NAME from spec.nodeName. */
const ENV = { [NODE_NAME_ENV]: 'node-a' };

const base = (template: TemplateName = 'process-aggregated-v1'): CollectorConfig => {
  const rendered = renderVariant({
    experimentId: 'parity-exp',
    variant: 'candidate',
    template,
    criticalProcesses: ['^postgres$'],
    ...(template === 'process-topk-v1' ? { keepList: ['java', 'node'] } : {}),
  });
  if (!rendered.ok) throw new Error(JSON.stringify(rendered.errors));
  return structuredClone(rendered.config);
};

/** The collector checks that root_path exists here; the pod has /hostfs, this machine has `/`. */
const forThisMachine = (config: unknown): string => {
  const copy = structuredClone(config) as { receivers?: Record<string, Record<string, unknown>> };
  for (const receiver of Object.values(copy.receivers ?? {})) {
    if (receiver !== null && typeof receiver === 'object' && receiver.root_path === '/hostfs')
      receiver.root_path = '/';
  }
  return toYaml(copy);
};

/** Corpus cases reach anywhere into a config, which is plain YAML data; types would only get in the way. */
// biome-ignore lint/suspicious/noExplicitAny: mutations of arbitrary paths in plain config data
type Config = any;
const pipeline = (c: Config) => c.service.pipelines.metrics as Record<string, string[]>;
/** Adds a processor right after resource/experiment (so memory_limiter stays first and batch last). */
const addProcessor = (c: Config, id: string, config: unknown, define = true) => {
  if (define) c.processors[id] = config;
  pipeline(c).processors?.splice(2, 0, id);
};
const filterWith = (c: Config, context: 'metric' | 'datapoint', condition: string) =>
  addProcessor(c, 'filter/parity', { error_mode: 'ignore', metrics: { [context]: [condition] } });
const transformWith = (c: Config, context: string, statement: string) =>
  addProcessor(c, 'transform/parity', {
    error_mode: 'ignore',
    metric_statements: [{ context, statements: [statement] }],
  });
const NAME = 'resource.attributes["process.executable.name"]';

interface Case {
  readonly name: string;
  readonly template?: TemplateName;
  readonly mutate: (c: Config) => void;
  /**
   * A deliberate difference: the validator refuses what the collector accepts, for this reason. The test
   * checks that it still is one (if the collector starts refusing too, the note goes).
   */
  readonly deliberate?: string;
}

const CORPUS: readonly Case[] = [
  // Broken: both must refuse.
  {
    name: 'unknown receiver',
    mutate: (c) => {
      c.receivers.nosuchreceiver = {};
      pipeline(c).receivers?.push('nosuchreceiver');
    },
  },
  { name: 'unknown processor type', mutate: (c) => addProcessor(c, 'nosuchprocessor/x', {}) },
  {
    name: 'pipeline references an undefined processor',
    mutate: (c) => addProcessor(c, 'filter/missing', {}, false),
  },
  {
    name: 'pipeline references an undefined exporter',
    mutate: (c) => pipeline(c).exporters?.push('prometheus/missing'),
  },
  {
    name: 'processor listed twice',
    mutate: (c) => pipeline(c).processors?.splice(2, 0, 'resource/experiment'),
  },
  { name: 'unknown top-level section', mutate: (c) => Object.assign(c, { bogus: {} }) },
  {
    name: 'traces pipeline from hostmetrics',
    mutate: (c) => {
      c.service.pipelines = { traces: c.service.pipelines.metrics as never };
    },
  },
  { name: 'pipeline without exporters', mutate: (c) => Object.assign(pipeline(c), { exporters: [] }) },
  {
    name: 'service.extensions references an undefined extension',
    mutate: (c) => c.service.extensions.push('health_check/missing'),
  },
  {
    name: 'bad OTTL syntax in a transform',
    mutate: (c) => transformWith(c, 'resource', 'delete_key(attributes, '),
  },
  { name: 'unknown OTTL editor', mutate: (c) => transformWith(c, 'resource', 'no_such_editor(attributes)') },
  { name: 'unknown OTTL converter', mutate: (c) => filterWith(c, 'datapoint', `NoSuchConverter(${NAME})`) },
  {
    name: 'unknown OTTL context',
    mutate: (c) => transformWith(c, 'spanevent', 'delete_key(attributes, "x")'),
  },
  { name: 'path not in the metric context', mutate: (c) => filterWith(c, 'metric', 'metric.bogus == "x"') },
  {
    name: 'bad regex in IsMatch (unbalanced)',
    mutate: (c) => filterWith(c, 'datapoint', `IsMatch(${NAME}, "(")`),
  },
  {
    name: 'lookahead in IsMatch (not RE2)',
    mutate: (c) => filterWith(c, 'datapoint', `IsMatch(${NAME}, "a(?=b)")`),
  },
  {
    name: 'backreference in IsMatch',
    mutate: (c) => filterWith(c, 'datapoint', `IsMatch(${NAME}, "(a)\\\\1")`),
  },
  { name: 'IsMatch with one argument', mutate: (c) => filterWith(c, 'datapoint', `IsMatch(${NAME})`) },
  {
    name: 'aggregate_on_attributes in the datapoint context',
    mutate: (c) => transformWith(c, 'datapoint', 'aggregate_on_attributes("sum", [])'),
  },
  {
    name: 'aggregate_on_attributes("avg")',
    mutate: (c) => transformWith(c, 'metric', 'aggregate_on_attributes("avg", [])'),
  },
  {
    name: 'error_mode out of range',
    mutate: (c) =>
      addProcessor(c, 'filter/parity', { error_mode: 'loud', metrics: { metric: ['name == "x"'] } }),
  },
  {
    name: 'memory_limiter limit_percentage 0',
    mutate: (c) =>
      Object.assign(c.processors.memory_limiter as object, {
        limit_percentage: 0,
        spike_limit_percentage: 0,
      }),
  },
  {
    name: 'memory_limiter limit_percentage above 100',
    mutate: (c) => Object.assign(c.processors.memory_limiter as object, { limit_percentage: 101 }),
  },
  {
    name: 'memory_limiter spike equal to limit',
    mutate: (c) => Object.assign(c.processors.memory_limiter as object, { spike_limit_percentage: 80 }),
  },
  {
    name: 'memory_limiter check_interval 0s',
    mutate: (c) => Object.assign(c.processors.memory_limiter as object, { check_interval: '0s' }),
  },
  {
    name: 'memory_limiter without a limit',
    mutate: (c) => {
      c.processors.memory_limiter = { check_interval: '1s' };
    },
  },
  {
    name: 'batch max size below batch size',
    mutate: (c) =>
      Object.assign(c.processors.batch as object, { send_batch_size: 100, send_batch_max_size: 10 }),
  },
  {
    name: 'batch timeout not a duration',
    mutate: (c) => Object.assign(c.processors.batch as object, { timeout: 'soon' }),
  },
  {
    name: 'collection_interval 0s',
    mutate: (c) => Object.assign(c.receivers.hostmetrics as object, { collection_interval: '0s' }),
  },
  {
    name: 'collection_interval not a duration',
    mutate: (c) => Object.assign(c.receivers.hostmetrics as object, { collection_interval: 'often' }),
  },
  {
    name: 'unknown process scraper setting',
    mutate: (c) => Object.assign(c.receivers.hostmetrics.scrapers.process, { bogus: true }),
  },
  {
    name: 'unknown process metric',
    mutate: (c) =>
      Object.assign(c.receivers.hostmetrics.scrapers.process.metrics, { 'process.bogus': { enabled: true } }),
  },
  {
    name: 'resource processor: unknown action',
    mutate: (c) => c.processors['resource/experiment'].attributes.push({ key: 'x', action: 'bogus' }),
  },
  {
    name: 'resource processor: upsert without a value',
    mutate: (c) => c.processors['resource/experiment'].attributes.push({ key: 'x', action: 'upsert' }),
  },
  {
    name: 'groupbyattrs keys not a list',
    mutate: (c) => {
      c.processors['groupbyattrs/merge'] = { keys: 'process.pid' };
    },
  },
  {
    name: 'otlp exporter without an endpoint',
    mutate: (c) => {
      delete c.exporters.otlp.endpoint;
    },
  },
  {
    name: 'processor defined but unused',
    mutate: (c) => {
      c.processors['filter/unused'] = { metrics: { metric: ['name == "x"'] } };
    },
    deliberate:
      'a template that defines a processor and forgets to list it silently filters nothing; the collector ignores it',
  },
  {
    name: 'exporter defined but unused',
    mutate: (c) => {
      c.exporters.debug = {};
    },
    deliberate:
      'an exporter Phoenix defines but does not wire is a rendering mistake; the collector ignores it',
  },

  // Fine: both must accept.
  { name: 'valid: the rendered config', mutate: () => {} },
  {
    name: 'valid: 1m30s interval',
    mutate: (c) => Object.assign(c.receivers.hostmetrics as object, { collection_interval: '1m30s' }),
  },
  {
    name: 'valid: memory_limiter in MiB',
    mutate: (c) => {
      c.processors.memory_limiter = { check_interval: '1s', limit_mib: 400, spike_limit_mib: 100 };
    },
  },
  {
    name: 'valid: case-insensitive RE2 in IsMatch',
    mutate: (c) => filterWith(c, 'datapoint', `IsMatch(${NAME}, "(?i)^java$")`),
  },
  {
    name: 'valid: error_mode propagate',
    mutate: (c) =>
      addProcessor(c, 'filter/parity', { error_mode: 'propagate', metrics: { metric: ['name == "x"'] } }),
  },
  {
    name: 'valid: aggregate_on_attributes("mean")',
    mutate: (c) => transformWith(c, 'metric', 'aggregate_on_attributes("mean", [])'),
  },
  {
    name: 'valid: debug exporter in the pipeline',
    mutate: (c) => {
      c.exporters.debug = {};
      pipeline(c).exporters?.push('debug');
    },
  },

  // Deliberate: Phoenix's deployment rules, which the collector has no reason to enforce.
  {
    name: 'memory_limiter not first',
    mutate: (c) => pipeline(c).processors?.push(pipeline(c).processors?.shift() as string),
    deliberate:
      'memory_limiter must see data before anything else buffers it (collector docs); a config is valid without it',
  },
  {
    name: 'no batch processor',
    mutate: (c) => {
      delete c.processors.batch;
      Object.assign(pipeline(c), { processors: pipeline(c).processors?.filter((p) => p !== 'batch') });
    },
    deliberate:
      'without batch the exporters get one request per scrape; Phoenix measures the overhead of batched pipelines',
  },
  {
    name: 'no resource processor stamps k8s.node.name',
    mutate: (c) => {
      c.processors['resource/experiment'].attributes = c.processors['resource/experiment'].attributes.filter(
        (a: { key: string }) => a.key !== 'k8s.node.name',
      );
    },
    deliberate: 'the analyzer tells nodes and variants apart by these resource attributes',
  },
  {
    name: "collector's own metrics off",
    mutate: (c) => {
      c.service.telemetry.metrics = { level: 'none' };
    },
    deliberate: "the analyzer reads the collector's own metrics for the overhead criterion",
  },
  {
    name: 'resource_to_telemetry_conversion off',
    mutate: (c) => {
      c.exporters.prometheus.resource_to_telemetry_conversion = { enabled: false };
    },
    deliberate: 'without it per-process labels collapse into target_info and processes overwrite one series',
  },
  {
    name: 'hostmetrics without the process scraper',
    mutate: (c) => {
      c.receivers.hostmetrics.scrapers = { cpu: {} };
    },
    deliberate: 'process experiments need the process scraper',
  },
  {
    name: 'OTTL string literal with an env:HOME config variable',
    mutate: (c) => filterWith(c, 'datapoint', `${NAME} == "\${env:HOME}"`),
    deliberate:
      'the collector expands config variables before OTTL sees the text, so the condition silently compares with another string',
  },
  {
    name: 'extension defined but not enabled',
    mutate: (c) => {
      c.extensions['health_check/extra'] = { endpoint: '0.0.0.0:13134' };
    },
    deliberate: 'a defined but unused extension is a config mistake worth naming; the collector ignores it',
  },
];

/** Golden files of plain configs, and the collector configs inside the Kubernetes ones. */
const goldenConfigs = (): { name: string; config: unknown }[] => {
  const dir = new URL('./golden/', import.meta.url);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((file) => {
      const text = readFileSync(new URL(file, dir), 'utf8');
      if (!file.includes('.k8s-')) return [{ name: file, config: parse(text) }];
      return text
        .split(/^---$/m)
        .map((d) => parse(d) as Config)
        .flatMap((doc) =>
          doc.kind === 'ConfigMap'
            ? [{ name: `${file} ConfigMap`, config: parse(doc.data['collector.yaml']) }]
            : doc.kind === 'OpenTelemetryCollector'
              ? [{ name: `${file} OpenTelemetryCollector`, config: doc.spec.config }]
              : [],
        );
    });
};

describe('the hand-written validator agrees with the real collector', { skip: collector.skip }, () => {
  const bin = collector.bin as string;

  it("knows the components the collector has, under the collector's names", () => {
    // `components` lists the current type names; Phoenix renders the aliases v0.128 and v0.165 both take.
    const ALIASES: Record<string, string> = { hostmetrics: 'host_metrics', otlp_exporters: 'otlp_grpc' };
    const listed = parse(execFileSync(bin, ['components'], { encoding: 'utf8' })) as Record<
      string,
      { name: string }[]
    >;
    for (const kind of Object.keys(STOCK_COMPONENTS) as (keyof typeof STOCK_COMPONENTS)[]) {
      const theirs = (listed[kind] ?? []).map((c) => c.name).sort();
      const ours = STOCK_COMPONENTS[kind]
        .map((type) => ALIASES[`${type}_${kind}`] ?? ALIASES[type] ?? type)
        .sort();
      if (collector.skip === false && collector.source === 'built') assert.deepEqual(ours, theirs, kind);
      else for (const type of ours) assert.ok(theirs.includes(type), `${kind}: ${type} missing in ${bin}`);
    }
  });

  it('both accept every golden config', { timeout: 10 * 60_000 }, async () => {
    const goldens = goldenConfigs();
    assert.ok(goldens.length >= 9, `golden configs found: ${goldens.length}`);
    const verdicts = await mapLimit(goldens, 2, (g) => collectorValidate(bin, forThisMachine(g.config), ENV));
    goldens.forEach((g, i) => {
      assert.deepEqual(validateCollectorConfig(g.config), [], `${g.name}: validator`);
      assert.equal(verdicts[i]?.ok, true, `${g.name}: collector says ${verdicts[i]?.output}`);
    });
  });

  it('refuses exactly what the collector refuses over the broken corpus', {
    timeout: 10 * 60_000,
  }, async () => {
    const runs = CORPUS.map((c) => {
      const config: Config = base(c.template);
      c.mutate(config);
      return { c, config };
    });
    const verdicts = await mapLimit(runs, 2, ({ config }) =>
      collectorValidate(bin, forThisMachine(config), ENV),
    );
    const disagreements: string[] = [];
    runs.forEach(({ c, config }, i) => {
      const ours = validateCollectorConfig(config);
      const theirs = verdicts[i];
      const collectorRefuses = theirs?.ok === false;
      const weRefuse = ours.length > 0;
      const expectWe = c.deliberate !== undefined ? true : collectorRefuses;
      const expectCollector = c.deliberate !== undefined ? false : collectorRefuses;
      if (weRefuse !== expectWe || collectorRefuses !== expectCollector) {
        disagreements.push(
          `${c.name}${c.deliberate ? ' (listed as deliberate)' : ''}: collector ${collectorRefuses ? 'refuses' : 'accepts'}` +
            `${theirs?.output ? ` (${theirs.output.split('\n')[0]})` : ''}; validator ${
              weRefuse ? `refuses (${ours.map((e) => `${e.path}: ${e.message}`).join('; ')})` : 'accepts'
            }`,
        );
      }
    });
    assert.deepEqual(disagreements, []);
  });
});

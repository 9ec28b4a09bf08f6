import {
  OTTL_AGGREGATIONS,
  OTTL_CONVERTERS,
  OTTL_EDITORS,
  type OttlCondition,
  OttlSyntaxError,
  type OttlValue,
  parseOttlCondition,
  parseOttlStatement,
  walkValues,
} from './ottl.js';
import type { ValidationIssue } from './params.js';
import {
  OPTIONAL_PROCESS_RESOURCE_ATTRIBUTES,
  PROCESS_METRIC_NAMES,
  PROCESS_RESOURCE_ATTRIBUTES,
} from './process-scraper.js';
import { compileCollectorRegex, MAX_RENDERED_PATTERN_LENGTH } from './regex.js';

/**
 * The components Phoenix deploys: exactly those of its pinned collector (otelcol/builder-config.yaml),
 * which are in otelcol-contrib too. `hostmetrics` and the `otlp` exporter are the names both v0.128 and
 * v0.165 accept (v0.165 calls them host_metrics and otlp_grpc); the otlp receiver is for simulation, the
 * debug exporter for tests. Anything else would pass here and fail on the collector Phoenix validates with.
 */
export const STOCK_COMPONENTS = {
  receivers: ['hostmetrics', 'otlp'],
  processors: ['memory_limiter', 'batch', 'resource', 'filter', 'transform', 'groupbyattrs'],
  exporters: ['prometheus', 'otlp', 'debug'],
  extensions: ['health_check'],
} as const;

type Kind = keyof typeof STOCK_COMPONENTS;

/** Processors after which data points are combined; `batch` must come after all of them. */
const AGGREGATING_PROCESSORS = new Set(['groupbyattrs']);

/** The resource attributes every variant must stamp so the analyzer can tell variants and nodes apart. */
export const REQUIRED_RESOURCE_ATTRIBUTES = ['experiment.id', 'experiment.variant', 'k8s.node.name'] as const;

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringArray = (v: unknown): v is string[] =>
  Array.isArray(v) && v.every((s) => typeof s === 'string');

/** `type` and optional `/name` of a component id, or undefined when the id is malformed. */
export const componentType = (id: string): string | undefined => {
  const m = /^([a-z][a-z0-9_]*)(?:\/[^/\s]+)?$/.exec(id);
  return m?.[1];
};

const DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;

/** Go's time.ParseDuration subset the collector accepts, in seconds; undefined when it does not parse. */
export const parseDurationSeconds = (text: string): number | undefined => {
  if (!DURATION.test(text)) return undefined;
  const factor: Record<string, number> = { ns: 1e-9, us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };
  let total = 0;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g))
    total += Number(m[1]) * (factor[m[2] as string] ?? 0);
  return total;
};

type OttlContext = 'resource' | 'scope' | 'metric' | 'datapoint';

const CONTEXT_ROOTS: Record<OttlContext, readonly string[]> = {
  resource: ['attributes', 'dropped_attributes_count', 'cache', 'resource'],
  scope: ['name', 'version', 'attributes', 'resource', 'instrumentation_scope', 'cache'],
  metric: [
    'name',
    'description',
    'unit',
    'type',
    'aggregation_temporality',
    'is_monotonic',
    'data_points',
    'metric',
    'resource',
    'instrumentation_scope',
    'cache',
  ],
  datapoint: [
    'attributes',
    'value_double',
    'value_int',
    'start_time_unix_nano',
    'time_unix_nano',
    'flags',
    'count',
    'sum',
    'metric',
    'resource',
    'instrumentation_scope',
    'cache',
  ],
};

/** The fields under `metric.` (any context) that OTTL's metric context knows. */
const METRIC_FIELDS: readonly string[] = [
  'name',
  'description',
  'unit',
  'type',
  'aggregation_temporality',
  'is_monotonic',
  'data_points',
];

/** Checks a parsed OTTL expression's paths, functions and regexes; returns messages. */
const checkOttlValues = (node: OttlCondition | OttlValue, context: OttlContext): string[] => {
  const problems: string[] = [];
  for (const value of walkValues(node)) {
    if (value.kind === 'path') {
      const [root, second] = value.segments;
      if (!CONTEXT_ROOTS[context].includes(root ?? '')) {
        problems.push(`path "${value.segments.join('.')}" is not available in the ${context} context`);
      } else if (
        root === 'resource' &&
        context !== 'resource' &&
        second !== 'attributes' &&
        second !== 'dropped_attributes_count'
      ) {
        problems.push(`path "${value.segments.join('.')}" is not a resource field`);
      } else if (root === 'metric' && second === undefined) {
        problems.push('path "metric" needs a field, e.g. metric.name');
      } else if (root === 'metric' && !METRIC_FIELDS.includes(second ?? '')) {
        // The collector refuses these when it parses the statement ("is not a valid path").
        problems.push(`path "${value.segments.join('.')}" is not a metric field`);
      }
    } else if (value.kind === 'call') {
      const arity = OTTL_CONVERTERS[value.name];
      if (arity === undefined) problems.push(`unknown converter "${value.name}"`);
      else if (value.args.length < arity[0] || value.args.length > arity[1]) {
        problems.push(`${value.name} takes ${arity[0]}–${arity[1]} arguments, got ${value.args.length}`);
      }
      if (value.name === 'IsMatch') {
        const pattern = value.args[1];
        if (pattern?.kind !== 'string') problems.push('IsMatch needs a string literal pattern');
        else {
          const check = compileCollectorRegex(pattern.value, MAX_RENDERED_PATTERN_LENGTH);
          if (!check.ok) problems.push(`IsMatch pattern ${JSON.stringify(pattern.value)}: ${check.message}`);
        }
      }
    } else if (value.kind === 'string' && (value.value.includes('${') || value.value.includes('$$'))) {
      problems.push(
        'string literal contains "${" or "$$", which the collector expands as configuration variables',
      );
    }
  }
  return problems;
};

const checkCondition = (text: unknown, context: OttlContext, path: string, out: ValidationIssue[]): void => {
  if (typeof text !== 'string') {
    out.push({ path, message: 'an OTTL condition must be a string' });
    return;
  }
  try {
    for (const message of checkOttlValues(parseOttlCondition(text), context)) out.push({ path, message });
  } catch (err) {
    out.push({ path, message: err instanceof OttlSyntaxError ? `OTTL syntax: ${err.message}` : String(err) });
  }
};

/** True when the statement list of a transform contains an aggregation, which makes batch ordering matter. */
const transformAggregates = (config: unknown): boolean =>
  isRecord(config) &&
  ['metric_statements'].some(
    (key) =>
      Array.isArray(config[key]) &&
      (config[key] as unknown[]).some(
        (group) =>
          isRecord(group) &&
          isStringArray(group.statements) &&
          group.statements.some((s) => s.trimStart().startsWith('aggregate_on_attributes')),
      ),
  );

const checkTransform = (config: unknown, path: string, out: ValidationIssue[]): void => {
  if (!isRecord(config)) {
    out.push({ path, message: 'transform needs a configuration' });
    return;
  }
  for (const key of Object.keys(config)) {
    if (!['error_mode', 'metric_statements'].includes(key)) {
      out.push({
        path: `${path}.${key}`,
        message: `unsupported transform setting "${key}" for a metrics pipeline`,
      });
    }
  }
  checkErrorMode(config.error_mode, `${path}.error_mode`, out);
  const groups = config.metric_statements;
  if (!Array.isArray(groups) || groups.length === 0) {
    out.push({ path: `${path}.metric_statements`, message: 'needs at least one statement group' });
    return;
  }
  groups.forEach((group, gi) => {
    const gpath = `${path}.metric_statements.${gi}`;
    if (!isRecord(group) || typeof group.context !== 'string' || !isStringArray(group.statements)) {
      out.push({ path: gpath, message: 'expected { context, statements: [string] }' });
      return;
    }
    const context = group.context as OttlContext;
    if (!(context in CONTEXT_ROOTS)) {
      out.push({ path: `${gpath}.context`, message: `unknown OTTL context "${group.context}"` });
      return;
    }
    if (group.statements.length === 0) out.push({ path: `${gpath}.statements`, message: 'no statements' });
    group.statements.forEach((text, si) => {
      const spath = `${gpath}.statements.${si}`;
      try {
        const stmt = parseOttlStatement(text);
        const arity = OTTL_EDITORS[stmt.editor.name];
        if (arity === undefined) out.push({ path: spath, message: `unknown editor "${stmt.editor.name}"` });
        else if (stmt.editor.args.length < arity[0] || stmt.editor.args.length > arity[1]) {
          out.push({
            path: spath,
            message: `${stmt.editor.name} takes ${arity[0]}–${arity[1]} arguments, got ${stmt.editor.args.length}`,
          });
        }
        if (stmt.editor.name === 'aggregate_on_attributes') {
          const fn = stmt.editor.args[0];
          if (context !== 'metric')
            out.push({ path: spath, message: 'aggregate_on_attributes only works in the metric context' });
          if (fn?.kind !== 'string' || !(OTTL_AGGREGATIONS as readonly string[]).includes(fn.value)) {
            out.push({
              path: spath,
              message: `aggregate_on_attributes function must be one of ${OTTL_AGGREGATIONS.join(', ')}`,
            });
          }
          const keys = stmt.editor.args[1];
          if (keys !== undefined && (keys.kind !== 'list' || keys.items.some((i) => i.kind !== 'string'))) {
            out.push({
              path: spath,
              message: 'aggregate_on_attributes attributes must be a list of strings',
            });
          }
        }
        const problems = stmt.editor.args.flatMap((arg) => checkOttlValues(arg, context));
        if (stmt.where) problems.push(...checkOttlValues(stmt.where, context));
        for (const message of problems) out.push({ path: spath, message });
      } catch (err) {
        out.push({
          path: spath,
          message: err instanceof OttlSyntaxError ? `OTTL syntax: ${err.message}` : String(err),
        });
      }
    });
  });
};

const checkErrorMode = (mode: unknown, path: string, out: ValidationIssue[]): void => {
  if (mode !== undefined && mode !== 'ignore' && mode !== 'silent' && mode !== 'propagate') {
    out.push({ path, message: 'error_mode must be ignore, silent or propagate' });
  }
};

const checkFilter = (config: unknown, path: string, out: ValidationIssue[]): void => {
  if (!isRecord(config) || !isRecord(config.metrics)) {
    out.push({ path: `${path}.metrics`, message: 'filter needs metrics conditions' });
    return;
  }
  checkErrorMode(config.error_mode, `${path}.error_mode`, out);
  const metrics = config.metrics;
  let count = 0;
  for (const [key, list] of Object.entries(metrics)) {
    const context: OttlContext | undefined =
      key === 'metric' ? 'metric' : key === 'datapoint' ? 'datapoint' : undefined;
    if (context === undefined) {
      out.push({
        path: `${path}.metrics.${key}`,
        message: `unsupported filter section "${key}"; use metric or datapoint`,
      });
      continue;
    }
    if (!Array.isArray(list)) {
      out.push({ path: `${path}.metrics.${key}`, message: 'expected a list of OTTL conditions' });
      continue;
    }
    list.forEach((cond, i) => {
      checkCondition(cond, context, `${path}.metrics.${key}.${i}`, out);
    });
    count += list.length;
  }
  if (count === 0) out.push({ path: `${path}.metrics`, message: 'filter has no conditions' });
};

const checkNameFilter = (config: unknown, path: string, out: ValidationIssue[]): void => {
  if (!isRecord(config)) {
    out.push({ path, message: 'expected { names, match_type }' });
    return;
  }
  if (config.match_type !== 'strict' && config.match_type !== 'regexp') {
    out.push({ path: `${path}.match_type`, message: 'match_type must be strict or regexp' });
  }
  if (!isStringArray(config.names) || config.names.length === 0) {
    out.push({ path: `${path}.names`, message: 'names must be a non-empty list of strings' });
    return;
  }
  if (config.match_type === 'regexp') {
    config.names.forEach((pattern, i) => {
      const check = compileCollectorRegex(pattern);
      if (!check.ok) out.push({ path: `${path}.names.${i}`, message: check.message });
    });
  }
};

const checkHostmetrics = (config: unknown, path: string, out: ValidationIssue[]): void => {
  if (!isRecord(config)) {
    out.push({ path, message: 'hostmetrics needs a configuration' });
    return;
  }
  const interval = config.collection_interval;
  if (interval !== undefined) {
    const seconds = typeof interval === 'string' ? parseDurationSeconds(interval) : undefined;
    if (seconds === undefined || seconds <= 0) {
      out.push({ path: `${path}.collection_interval`, message: 'must be a positive duration such as 60s' });
    }
  }
  const scrapers = config.scrapers;
  if (!isRecord(scrapers) || Object.keys(scrapers).length === 0) {
    out.push({ path: `${path}.scrapers`, message: 'needs at least one scraper' });
    return;
  }
  const process = scrapers.process;
  if (process === undefined) {
    out.push({
      path: `${path}.scrapers.process`,
      message: 'the process scraper is required for process experiments',
    });
    return;
  }
  const ppath = `${path}.scrapers.process`;
  if (process === null) return;
  if (!isRecord(process)) {
    out.push({ path: ppath, message: 'expected a mapping' });
    return;
  }
  for (const key of Object.keys(process)) {
    if (
      ![
        'metrics',
        'resource_attributes',
        'include',
        'exclude',
        'mute_process_name_error',
        'mute_process_exe_error',
        'mute_process_io_error',
        'mute_process_user_error',
        'mute_process_cgroup_error',
        'mute_process_all_errors',
        'scrape_process_delay',
      ].includes(key)
    ) {
      out.push({ path: `${ppath}.${key}`, message: `unknown process scraper setting "${key}"` });
    }
  }
  const toggles = (section: 'metrics' | 'resource_attributes', known: readonly string[]) => {
    const value = process[section];
    if (value === undefined) return;
    if (!isRecord(value)) {
      out.push({ path: `${ppath}.${section}`, message: 'expected a mapping' });
      return;
    }
    for (const [name, setting] of Object.entries(value)) {
      if (!known.includes(name))
        out.push({
          path: `${ppath}.${section}.${name}`,
          message: `unknown ${section === 'metrics' ? 'metric' : 'resource attribute'} "${name}"`,
        });
      else if (!isRecord(setting) || typeof setting.enabled !== 'boolean') {
        out.push({ path: `${ppath}.${section}.${name}`, message: 'expected { enabled: true|false }' });
      }
    }
  };
  toggles('metrics', PROCESS_METRIC_NAMES);
  toggles('resource_attributes', [...PROCESS_RESOURCE_ATTRIBUTES, ...OPTIONAL_PROCESS_RESOURCE_ATTRIBUTES]);
  if (process.include !== undefined) checkNameFilter(process.include, `${ppath}.include`, out);
  if (process.exclude !== undefined) checkNameFilter(process.exclude, `${ppath}.exclude`, out);
  const attrs = isRecord(process.resource_attributes) ? process.resource_attributes : {};
  const nameSetting = attrs['process.executable.name'];
  if (isRecord(nameSetting) && nameSetting.enabled === false) {
    out.push({
      path: `${ppath}.resource_attributes.process.executable.name`,
      message: 'process.executable.name must stay enabled: critical processes are identified by it',
    });
  }
};

const checkResource = (config: unknown, path: string, out: ValidationIssue[]): void => {
  if (!isRecord(config) || !Array.isArray(config.attributes) || config.attributes.length === 0) {
    out.push({ path: `${path}.attributes`, message: 'resource needs a list of attribute actions' });
    return;
  }
  config.attributes.forEach((action, i) => {
    const apath = `${path}.attributes.${i}`;
    if (!isRecord(action) || typeof action.key !== 'string' || action.key === '') {
      out.push({ path: apath, message: 'expected { key, action, value }' });
      return;
    }
    const verb = action.action;
    if (!['insert', 'update', 'upsert', 'delete', 'hash', 'extract', 'convert'].includes(String(verb))) {
      out.push({ path: `${apath}.action`, message: `unknown action "${String(verb)}"` });
    }
    if (
      ['insert', 'update', 'upsert'].includes(String(verb)) &&
      action.value === undefined &&
      action.from_attribute === undefined
    ) {
      out.push({ path: apath, message: `${String(verb)} needs a value or from_attribute` });
    }
  });
};

const checkMemoryLimiter = (config: unknown, path: string, out: ValidationIssue[]): void => {
  if (!isRecord(config)) {
    out.push({ path, message: 'memory_limiter needs check_interval and a limit' });
    return;
  }
  const interval =
    typeof config.check_interval === 'string' ? parseDurationSeconds(config.check_interval) : undefined;
  if (interval === undefined || interval <= 0)
    out.push({ path: `${path}.check_interval`, message: 'must be a positive duration' });
  const pct = config.limit_percentage;
  const mib = config.limit_mib;
  if (typeof pct !== 'number' && typeof mib !== 'number') {
    out.push({ path, message: 'memory_limiter needs limit_mib or limit_percentage' });
  }
  if (typeof pct === 'number' && (pct <= 0 || pct > 100))
    out.push({ path: `${path}.limit_percentage`, message: 'must be in (0, 100]' });
  const spike = config.spike_limit_percentage;
  if (typeof pct === 'number' && typeof spike === 'number' && spike >= pct) {
    out.push({ path: `${path}.spike_limit_percentage`, message: 'must be below limit_percentage' });
  }
};

const checkBatch = (config: unknown, path: string, out: ValidationIssue[]): void => {
  if (config === null || config === undefined) return;
  if (!isRecord(config)) {
    out.push({ path, message: 'expected a mapping' });
    return;
  }
  if (config.timeout !== undefined) {
    const seconds = typeof config.timeout === 'string' ? parseDurationSeconds(config.timeout) : undefined;
    if (seconds === undefined)
      out.push({ path: `${path}.timeout`, message: 'must be a duration such as 10s' });
  }
  const size = config.send_batch_size;
  const max = config.send_batch_max_size;
  for (const [key, value] of [
    ['send_batch_size', size],
    ['send_batch_max_size', max],
  ] as const) {
    if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 0))
      out.push({ path: `${path}.${key}`, message: 'must be a whole number ≥ 0' });
  }
  // The collector's rule: a max of 0 means no limit; otherwise it must hold a whole batch.
  if (typeof max === 'number' && max > 0 && typeof size === 'number' && max < size) {
    out.push({
      path: `${path}.send_batch_max_size`,
      message: 'must be greater than or equal to send_batch_size (or 0 for no limit)',
    });
  }
};

const HOST_PORT = /^[^:\s]*:\d{1,5}$/;

const checkExporter = (type: string, config: unknown, path: string, out: ValidationIssue[]): void => {
  if (type === 'prometheus') {
    if (!isRecord(config) || typeof config.endpoint !== 'string' || !HOST_PORT.test(config.endpoint)) {
      out.push({ path: `${path}.endpoint`, message: 'prometheus exporter needs endpoint host:port' });
    }
    const conversion = isRecord(config) ? config.resource_to_telemetry_conversion : undefined;
    if (!isRecord(conversion) || conversion.enabled !== true) {
      out.push({
        path: `${path}.resource_to_telemetry_conversion.enabled`,
        message: 'must be true, or per-process labels collapse into target_info',
      });
    }
  }
  if (type === 'otlp') {
    if (!isRecord(config) || typeof config.endpoint !== 'string' || config.endpoint === '') {
      out.push({ path: `${path}.endpoint`, message: `${type} exporter needs an endpoint` });
    }
  }
};

/** Checks one component's own settings by type; unknown-but-stock types pass through unchecked. */
const checkComponent = (
  kind: Kind,
  id: string,
  type: string,
  config: unknown,
  out: ValidationIssue[],
): void => {
  const path = `${kind}.${id}`;
  if (kind === 'receivers' && type === 'hostmetrics') checkHostmetrics(config, path, out);
  if (kind === 'processors') {
    if (type === 'filter') checkFilter(config, path, out);
    if (type === 'transform') checkTransform(config, path, out);
    if (type === 'resource') checkResource(config, path, out);
    if (type === 'memory_limiter') checkMemoryLimiter(config, path, out);
    if (type === 'batch') checkBatch(config, path, out);
    // The collector decodes a lone string as a list of one key, so that is accepted too.
    if (
      type === 'groupbyattrs' &&
      isRecord(config) &&
      config.keys !== undefined &&
      typeof config.keys !== 'string' &&
      !isStringArray(config.keys)
    ) {
      out.push({ path: `${path}.keys`, message: 'keys must be a list of strings' });
    }
  }
  if (kind === 'exporters') checkExporter(type, config, path, out);
};

const checkProcessorOrder = (
  pipeline: string,
  processors: readonly string[],
  defined: Record<string, unknown>,
  out: ValidationIssue[],
): void => {
  const path = `service.pipelines.${pipeline}.processors`;
  const types = processors.map((id) => componentType(id) ?? '');
  if (types[0] !== 'memory_limiter')
    out.push({ path, message: 'memory_limiter must be the first processor' });
  if (types.filter((t) => t === 'memory_limiter').length > 1)
    out.push({ path, message: 'memory_limiter appears more than once' });
  const batchAt = types.indexOf('batch');
  if (batchAt < 0) out.push({ path, message: 'a batch processor is required' });
  if (types.filter((t) => t === 'batch').length > 1)
    out.push({ path, message: 'batch appears more than once' });
  processors.forEach((id, i) => {
    const type = types[i];
    const aggregates =
      AGGREGATING_PROCESSORS.has(type ?? '') || (type === 'transform' && transformAggregates(defined[id]));
    if (aggregates && batchAt >= 0 && i > batchAt) {
      out.push({ path: `${path}.${i}`, message: `${id} aggregates data points and must come before batch` });
    }
  });
  const stamped = new Set<string>();
  for (const id of processors) {
    const config = defined[id];
    if (componentType(id) === 'resource' && isRecord(config) && Array.isArray(config.attributes)) {
      for (const action of config.attributes) {
        if (
          isRecord(action) &&
          typeof action.key === 'string' &&
          ['insert', 'upsert'].includes(String(action.action))
        ) {
          stamped.add(action.key);
        }
      }
    }
  }
  for (const key of REQUIRED_RESOURCE_ATTRIBUTES) {
    if (!stamped.has(key)) out.push({ path, message: `no resource processor sets ${key}` });
  }
};

/**
 * Checks a rendered collector config before it is deployed: the collector itself would reject (or
 * crash-loop on) most of these, and the operator does not look inside `config`. Returns every problem
 * found as `{ path, message }`, an empty list when the config is fit to deploy.
 */
export const validateCollectorConfig = (config: unknown): ValidationIssue[] => {
  const out: ValidationIssue[] = [];
  if (!isRecord(config)) return [{ path: '', message: 'a collector config must be a mapping' }];
  for (const key of Object.keys(config)) {
    if (!['receivers', 'processors', 'exporters', 'extensions', 'connectors', 'service'].includes(key)) {
      out.push({ path: key, message: `unknown top-level section "${key}"` });
    }
  }
  const sections = {} as Record<Kind, Record<string, unknown>>;
  for (const kind of Object.keys(STOCK_COMPONENTS) as Kind[]) {
    const section = config[kind] ?? {};
    if (!isRecord(section)) {
      out.push({ path: kind, message: 'expected a mapping of component ids' });
      sections[kind] = {};
      continue;
    }
    sections[kind] = section;
    for (const [id, componentConfig] of Object.entries(section)) {
      const type = componentType(id);
      if (type === undefined) {
        out.push({ path: `${kind}.${id}`, message: 'component ids are type[/name]' });
        continue;
      }
      if (!(STOCK_COMPONENTS[kind] as readonly string[]).includes(type)) {
        out.push({
          path: `${kind}.${id}`,
          message: `"${type}" is not a ${kind.slice(0, -1)} of the collector Phoenix deploys (otelcol/builder-config.yaml)`,
        });
        continue;
      }
      checkComponent(kind, id, type, componentConfig, out);
    }
  }
  if (Object.keys(sections.receivers).length === 0)
    out.push({ path: 'receivers', message: 'no receivers defined' });
  if (Object.keys(sections.exporters).length === 0)
    out.push({ path: 'exporters', message: 'no exporters defined' });

  const service = config.service;
  if (!isRecord(service)) {
    out.push({ path: 'service', message: 'service section is required' });
    return out;
  }
  const used: Record<'receivers' | 'processors' | 'exporters', Set<string>> = {
    receivers: new Set(),
    processors: new Set(),
    exporters: new Set(),
  };
  const pipelines = service.pipelines;
  if (!isRecord(pipelines) || Object.keys(pipelines).length === 0) {
    out.push({ path: 'service.pipelines', message: 'at least one pipeline is required' });
  } else {
    for (const [name, pipeline] of Object.entries(pipelines)) {
      const ppath = `service.pipelines.${name}`;
      if (!/^(metrics|traces|logs)(\/[^/\s]+)?$/.test(name)) {
        out.push({ path: ppath, message: 'pipeline ids are metrics|traces|logs[/name]' });
      } else if (!name.startsWith('metrics')) {
        out.push({ path: ppath, message: 'process experiments only run metrics pipelines' });
      }
      if (!isRecord(pipeline)) {
        out.push({ path: ppath, message: 'expected { receivers, processors, exporters }' });
        continue;
      }
      for (const kind of ['receivers', 'processors', 'exporters'] as const) {
        const list = pipeline[kind] ?? [];
        if (!isStringArray(list)) {
          out.push({ path: `${ppath}.${kind}`, message: 'expected a list of component ids' });
          continue;
        }
        if (kind !== 'processors' && list.length === 0)
          out.push({ path: `${ppath}.${kind}`, message: `a pipeline needs ${kind}` });
        const seen = new Set<string>();
        list.forEach((id, i) => {
          if (seen.has(id)) out.push({ path: `${ppath}.${kind}.${i}`, message: `${id} is listed twice` });
          seen.add(id);
          used[kind].add(id);
          if (!(id in sections[kind]))
            out.push({ path: `${ppath}.${kind}.${i}`, message: `${id} is not defined under ${kind}` });
        });
        if (kind === 'processors') checkProcessorOrder(name, list, sections.processors, out);
      }
    }
  }
  for (const kind of ['receivers', 'processors', 'exporters'] as const) {
    for (const id of Object.keys(sections[kind])) {
      if (!used[kind].has(id))
        out.push({ path: `${kind}.${id}`, message: `${id} is defined but not used in any pipeline` });
    }
  }
  const extensions = service.extensions ?? [];
  if (!isStringArray(extensions))
    out.push({ path: 'service.extensions', message: 'expected a list of extension ids' });
  else {
    extensions.forEach((id, i) => {
      if (!(id in sections.extensions))
        out.push({ path: `service.extensions.${i}`, message: `${id} is not defined under extensions` });
    });
    for (const id of Object.keys(sections.extensions)) {
      if (!extensions.includes(id))
        out.push({
          path: `extensions.${id}`,
          message: `${id} is defined but not enabled in service.extensions`,
        });
    }
  }
  const telemetry = service.telemetry;
  const metrics = isRecord(telemetry) ? telemetry.metrics : undefined;
  if (!isRecord(metrics) || metrics.level === 'none') {
    out.push({
      path: 'service.telemetry.metrics',
      message: "the collector's own metrics must be enabled: the analyzer reads them",
    });
  } else if (
    metrics.level !== undefined &&
    !['basic', 'normal', 'detailed'].includes(String(metrics.level))
  ) {
    out.push({
      path: 'service.telemetry.metrics.level',
      message: 'level must be none, basic, normal or detailed',
    });
  }
  return out;
};

/**
 * Runs a rendered collector config over a simulated fleet's samples: what the hostmetrics process
 * scraper would emit, then each processor of the metrics pipeline in order, then what the exporters
 * send. It interprets the config itself (enabled metrics and resource attributes, include/exclude,
 * filter conditions, transform statements, groupbyattrs compaction, the collection interval), so a change
 * to a template changes the numbers. Components or OTTL it cannot interpret are refused with
 * {@link EmulationError} rather than approximated.
 *
 * Data layout: one row per process resource in struct-of-arrays form; each row carries a 32-bit mask of
 * live data points ("slots": one per metric × attribute value, plus a collapsed slot per metric for
 * aggregation over no attributes) and their values. Merged resources (groupbyattrs) share a group id;
 * aggregation folds a group's data points into its leader row.
 *
 * Why it is trusted: emulator-differential.int.test.ts sends the same simulated fleet, churn included,
 * through the real collector (each of the 7 templates rendered for simulation, fed over OTLP by
 * otlp-fleet-sender.ts, plus the baseline with every scraper metric on) and through this emulator as
 * local-dataplane.ts drives it, and compares their Prometheus expositions series by series after each
 * scrape: names, types, label sets, values. There is no difference (the four it found, scope labels,
 * CPU utilization on a first scrape, memory utilization in percent and series kept until
 * metric_expiration, are fixed here and in local-dataplane.ts). Because of that test, Phoenix uses the
 * emulator where real collectors cannot go on one machine: 1,000 hosts × 500 processes
 * (bench/dataplane.bench.ts, the embedded default).
 */
import {
  type CollectorConfig,
  componentType,
  type OttlCondition,
  type OttlStatement,
  type OttlValue,
  PROCESS_METRICS,
  PROCESS_RESOURCE_ATTRIBUTES,
  type ProcessMetricInfo,
  parseDurationSeconds,
  parseOttlCondition,
  parseOttlStatement,
  pathText,
} from '../domain/pipelines/index.js';
import {
  type CollectorRegex,
  compileCollectorRegex,
  MAX_RENDERED_PATTERN_LENGTH,
} from '../domain/pipelines/regex.js';
import { CATALOG_NAMES, catalogEntry, type ProcessFleet } from './local-dataplane-fleet.js';

export class EmulationError extends Error {
  constructor(
    message: string,
    readonly path: string,
  ) {
    super(`${path}: ${message}`);
    this.name = 'EmulationError';
  }
}

/** Identity attributes a row may still carry; bit i ↔ IDENTITY_KEYS[i]. The executable name is tracked separately. */
const IDENTITY_KEYS = PROCESS_RESOURCE_ATTRIBUTES.filter((k) => k !== 'process.executable.name');
const BIT = Object.fromEntries(IDENTITY_KEYS.map((k, i) => [k, 1 << i])) as Record<string, number>;
/** Bit of each identity attribute in `ScrapeResult.rowAttributes`. */
export const IDENTITY_BIT: Readonly<Record<string, number>> = BIT;
const PID_BIT = BIT['process.pid'] as number;
const VARYING_BITS = (BIT['process.parent_pid'] as number) | (BIT['process.command_line'] as number);
const NAME_DERIVED_BITS =
  (BIT['process.executable.path'] as number) |
  (BIT['process.command'] as number) |
  (BIT['process.owner'] as number);

/** One data point position of a process: a metric and (optionally) one value of its attribute. */
export interface Slot {
  readonly metric: ProcessMetricInfo;
  readonly metricIndex: number;
  /** The attribute value, or undefined for metrics without one and for the collapsed slot. */
  readonly attributeValue: string | undefined;
  /** True for the slot that receives aggregation over no attributes. */
  readonly collapsed: boolean;
}

type Env = (host: number) => string;

interface ResourceLabel {
  readonly key: string;
  readonly value: Env;
  readonly constant: boolean;
}

type RowPredicate = (row: number, metric: number, slot: number) => boolean;

type Stage =
  | { readonly kind: 'noop'; readonly id: string; readonly costPerPoint: number }
  | { readonly kind: 'resource'; readonly id: string; readonly labels: readonly ResourceLabel[] }
  | {
      readonly kind: 'filter';
      readonly id: string;
      readonly metric: readonly CompiledCondition[];
      readonly datapoint: readonly CompiledCondition[];
    }
  | { readonly kind: 'transform'; readonly id: string; readonly groups: readonly CompiledGroup[] }
  | { readonly kind: 'merge'; readonly id: string };

interface CompiledCondition {
  readonly source: string;
  readonly ast: OttlCondition;
}

interface CompiledGroup {
  readonly context: 'resource' | 'metric';
  readonly statements: readonly OttlStatement[];
  readonly path: string;
}

export interface CompiledPipeline {
  readonly intervalSeconds: number;
  readonly slots: readonly Slot[];
  /** Slots the scraper fills (not the collapsed ones). */
  readonly scrapedMask: number;
  readonly initialAttributes: number;
  readonly include: ((name: string) => boolean) | undefined;
  readonly exclude: ((name: string) => boolean) | undefined;
  readonly stages: readonly Stage[];
  readonly exporters: readonly {
    readonly id: string;
    readonly type: string;
    readonly constLabels: Readonly<Record<string, string>>;
    readonly namespace: string | undefined;
    /**
     * The prometheus exporter's `metric_expiration` in seconds (5 minutes unless configured): how long it
     * keeps showing a series that stopped arriving, e.g. a process that exited.
     */
    readonly metricExpirationSeconds: number;
  }[];
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Compiled once per pattern by compileCollectorRegex's shared, bounded cache (keep-lists are long). */
const regexOf = (pattern: string, path: string): CollectorRegex => {
  const check = compileCollectorRegex(pattern, MAX_RENDERED_PATTERN_LENGTH);
  if (!check.ok) throw new EmulationError(check.message, path);
  return check.regex;
};

const nameMatcher = (config: unknown, path: string): ((name: string) => boolean) | undefined => {
  if (config === undefined) return undefined;
  if (!isRecord(config) || !Array.isArray(config.names))
    throw new EmulationError('expected { names, match_type }', path);
  const names = config.names.map(String);
  if (config.match_type === 'strict') {
    const set = new Set(names);
    return (name) => set.has(name);
  }
  const regexes = names.map((n, i) => regexOf(n, `${path}.names.${i}`));
  return (name) => regexes.some((r) => r.test(name));
};

const ENV_REF = /\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * The collector's `${env:X}` expansion with the variables a DaemonSet pod has. A value is constant across
 * hosts unless it reads a per-host variable (the node name), which matters for caching and merging.
 */
const envValue = (
  value: string,
  vars: Readonly<Record<string, Env | string>>,
): { value: Env; constant: boolean } => {
  const refs = [...value.matchAll(ENV_REF)].map((m) => m[1] as string);
  const constant = refs.every((name) => typeof vars[name] !== 'function');
  if (refs.length === 0) return { value: () => value, constant };
  return {
    value: (host: number) =>
      value.replace(ENV_REF, (_, name: string) => {
        const v = vars[name];
        return typeof v === 'function' ? v(host) : (v ?? '');
      }),
    constant,
  };
};

/**
 * Compiles the metrics pipeline of a config into stages the emulator can run. `vars` are the pod's
 * environment (the node name is per host).
 */
export const compilePipeline = (
  config: CollectorConfig,
  vars: Readonly<Record<string, Env | string>>,
): CompiledPipeline => {
  const pipelines = Object.entries(config.service?.pipelines ?? {}).filter(([name]) =>
    name.startsWith('metrics'),
  );
  if (pipelines.length !== 1)
    throw new EmulationError('exactly one metrics pipeline is supported', 'service.pipelines');
  const [pipelineName, pipeline] = pipelines[0] as [string, CollectorConfig['service']['pipelines'][string]];
  if (pipeline.receivers.length !== 1 || componentType(pipeline.receivers[0] as string) !== 'hostmetrics') {
    throw new EmulationError(
      'the pipeline must have the hostmetrics receiver only',
      `service.pipelines.${pipelineName}.receivers`,
    );
  }
  const receiverId = pipeline.receivers[0] as string;
  const receiver = config.receivers[receiverId];
  const rpath = `receivers.${receiverId}`;
  if (!isRecord(receiver) || !isRecord(receiver.scrapers) || !('process' in receiver.scrapers)) {
    throw new EmulationError('needs the process scraper', rpath);
  }
  const intervalText = receiver.collection_interval ?? '60s';
  const intervalSeconds = typeof intervalText === 'string' ? parseDurationSeconds(intervalText) : undefined;
  if (intervalSeconds === undefined || intervalSeconds <= 0)
    throw new EmulationError('bad collection_interval', rpath);
  const scraper = isRecord(receiver.scrapers.process) ? receiver.scrapers.process : {};
  const metricToggles = isRecord(scraper.metrics) ? scraper.metrics : {};
  const enabled = PROCESS_METRICS.filter((m) => {
    const t = metricToggles[m.name];
    return isRecord(t) && typeof t.enabled === 'boolean' ? t.enabled : m.defaultEnabled;
  });
  const slots: Slot[] = [];
  let scrapedMask = 0;
  enabled.forEach((metric, metricIndex) => {
    if (metric.attribute) {
      for (const value of metric.attribute.values) {
        scrapedMask |= 1 << slots.length;
        slots.push({ metric, metricIndex, attributeValue: value, collapsed: false });
      }
      slots.push({ metric, metricIndex, attributeValue: undefined, collapsed: true });
    } else {
      scrapedMask |= 1 << slots.length;
      slots.push({ metric, metricIndex, attributeValue: undefined, collapsed: false });
    }
  });
  if (slots.length > 32)
    throw new EmulationError(
      'too many enabled metrics for the emulator',
      `${rpath}.scrapers.process.metrics`,
    );
  const attrToggles = isRecord(scraper.resource_attributes) ? scraper.resource_attributes : {};
  let initialAttributes = 0;
  for (const key of IDENTITY_KEYS) {
    const t = attrToggles[key];
    if (!(isRecord(t) && t.enabled === false)) initialAttributes |= BIT[key] as number;
  }
  const nameToggle = attrToggles['process.executable.name'];
  if (isRecord(nameToggle) && nameToggle.enabled === false) {
    throw new EmulationError(
      'process.executable.name must stay enabled',
      `${rpath}.scrapers.process.resource_attributes`,
    );
  }

  const stages: Stage[] = pipeline.processors.map((id, index) => {
    const type = componentType(id);
    const cfg = config.processors[id];
    const path = `processors.${id}`;
    if (cfg === undefined) throw new EmulationError('not defined', path);
    switch (type) {
      case 'memory_limiter':
        return { kind: 'noop', id, costPerPoint: 0.05e-6 };
      case 'batch':
        return { kind: 'noop', id, costPerPoint: 0.2e-6 };
      case 'resource': {
        if (!isRecord(cfg) || !Array.isArray(cfg.attributes))
          throw new EmulationError('expected attributes', path);
        const labels = cfg.attributes.map((a, i) => {
          if (
            !isRecord(a) ||
            typeof a.key !== 'string' ||
            !['upsert', 'insert'].includes(String(a.action)) ||
            a.value === undefined
          ) {
            throw new EmulationError('only insert/upsert of a value is emulated', `${path}.attributes.${i}`);
          }
          if ((PROCESS_RESOURCE_ATTRIBUTES as readonly string[]).includes(a.key)) {
            throw new EmulationError(
              'overwriting process attributes is not emulated',
              `${path}.attributes.${i}`,
            );
          }
          const raw = String(a.value);
          return { key: a.key, ...envValue(raw, vars) };
        });
        return { kind: 'resource', id, labels };
      }
      case 'filter': {
        if (!isRecord(cfg) || !isRecord(cfg.metrics))
          throw new EmulationError('expected metrics conditions', path);
        const parse = (list: unknown, section: string): CompiledCondition[] => {
          if (list === undefined) return [];
          if (!Array.isArray(list)) throw new EmulationError('expected a list', `${path}.metrics.${section}`);
          return list.map((source, i) => {
            try {
              return { source: String(source), ast: parseOttlCondition(String(source)) };
            } catch (err) {
              throw new EmulationError(String((err as Error).message), `${path}.metrics.${section}.${i}`);
            }
          });
        };
        for (const key of Object.keys(cfg.metrics)) {
          if (key !== 'metric' && key !== 'datapoint')
            throw new EmulationError(`filter section ${key} is not emulated`, path);
        }
        return {
          kind: 'filter',
          id,
          metric: parse(cfg.metrics.metric, 'metric'),
          datapoint: parse(cfg.metrics.datapoint, 'datapoint'),
        };
      }
      case 'transform': {
        if (!isRecord(cfg) || !Array.isArray(cfg.metric_statements))
          throw new EmulationError('expected metric_statements', path);
        const groups = cfg.metric_statements.map((g, gi) => {
          const gpath = `${path}.metric_statements.${gi}`;
          if (
            !isRecord(g) ||
            (g.context !== 'resource' && g.context !== 'metric') ||
            !Array.isArray(g.statements)
          ) {
            throw new EmulationError('only resource and metric contexts are emulated', gpath);
          }
          return {
            context: g.context,
            path: gpath,
            statements: g.statements.map((s, si) => {
              try {
                return parseOttlStatement(String(s));
              } catch (err) {
                throw new EmulationError(String((err as Error).message), `${gpath}.statements.${si}`);
              }
            }),
          } satisfies CompiledGroup;
        });
        return { kind: 'transform', id, groups };
      }
      case 'groupbyattrs': {
        if (isRecord(cfg) && Array.isArray(cfg.keys) && cfg.keys.length > 0) {
          throw new EmulationError('only compaction (no keys) is emulated', path);
        }
        return { kind: 'merge', id };
      }
      default:
        throw new EmulationError(
          `processor type ${type ?? '?'} is not emulated`,
          `service.pipelines.${pipelineName}.processors.${index}`,
        );
    }
  });
  const exporters = pipeline.exporters.map((id) => {
    const type = componentType(id) ?? '';
    const cfg = config.exporters[id];
    if (type !== 'prometheus' && type !== 'otlp' && type !== 'otlphttp' && type !== 'debug') {
      throw new EmulationError(`exporter type ${type} is not emulated`, `exporters.${id}`);
    }
    const constLabels =
      isRecord(cfg) && isRecord(cfg.const_labels)
        ? Object.fromEntries(Object.entries(cfg.const_labels).map(([k, v]) => [k, String(v)]))
        : {};
    const namespace = isRecord(cfg) && typeof cfg.namespace === 'string' ? cfg.namespace : undefined;
    const expiration = isRecord(cfg) ? (cfg.metric_expiration ?? '5m') : '5m';
    const metricExpirationSeconds =
      typeof expiration === 'string' ? parseDurationSeconds(expiration) : undefined;
    if (metricExpirationSeconds === undefined || metricExpirationSeconds <= 0)
      throw new EmulationError('bad metric_expiration', `exporters.${id}.metric_expiration`);
    return { id, type, constLabels, namespace, metricExpirationSeconds };
  });
  return {
    intervalSeconds,
    slots,
    scrapedMask,
    initialAttributes,
    include: nameMatcher(scraper.include, `${rpath}.scrapers.process.include`),
    exclude: nameMatcher(scraper.exclude, `${rpath}.scrapers.process.exclude`),
    stages,
    exporters,
  };
};

export const popcount = (x: number): number => {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
};

/** What one variant exported in one scrape, column-wise; one output row per exported resource. */
export interface ScrapeResult {
  readonly time: number;
  readonly intervalSeconds: number;
  /** Data points the receiver produced and the exporters sent (per exporter). */
  readonly receivedPoints: number;
  readonly exportedPoints: number;
  /** Distinct series (resource × metric × attributes) exported. */
  readonly series: number;
  readonly names: readonly string[];
  readonly rows: number;
  readonly rowHost: Uint32Array;
  readonly rowName: Int32Array;
  readonly rowAttributes: Uint8Array;
  readonly rowPid: Int32Array;
  readonly rowPpid: Int32Array;
  /** Catalog name of the process the row came from (path, owner, command derive from it). */
  readonly rowOrigin: Uint16Array;
  readonly rowArgv: Uint8Array;
  /** The fleet slot of the process the row came from (of the group's leader for merged rows). */
  readonly rowSlot: Uint32Array;
  readonly rowMask: Uint32Array;
  /** Data point values, `rowValues[row * slots.length + slot]`. */
  readonly rowValues: Float64Array;
  /** CPU share of the host and resident bytes of a per-process row, as the control plane would read them. */
  readonly rowCpu: Float32Array;
  readonly rowMemory: Float32Array;
  readonly slots: readonly Slot[];
  readonly resourceLabels: readonly ResourceLabel[];
  readonly exporters: CompiledPipeline['exporters'];
  /** Per host: processes seen by the scraper, exported points and series, and the collector's CPU seconds for this scrape. */
  readonly hostScraped: Uint32Array;
  readonly hostReceived: Uint32Array;
  readonly hostPoints: Uint32Array;
  readonly hostSeries: Uint32Array;
  readonly hostCpuSeconds: Float64Array;
}

/**
 * Cost model of a collector's own CPU work in seconds: listing /proc and reading each included process's
 * stat/status/io dominates (≈0.1–0.2 s per scrape of 500 processes), then per-point processing and
 * export. Dropping a process in a processor therefore saves far less CPU than not scraping it.
 */
const COST = {
  scrapeBase: 0.004,
  perProcessListed: 60e-6,
  perProcessRead: 120e-6,
  perPointFilter: 0.8e-6,
  perPointTransform: 1.2e-6,
  perPointMerge: 0.6e-6,
  perPointExport: 1.5e-6,
} as const;

/**
 * Runs the compiled pipeline over the fleet's current state (one scrape of every host).
 *
 * `seenPids` is the scraper's memory between scrapes: the pid each fleet slot had at this collector's
 * previous scrape (-1: none), updated in place. As the real scraper does, a process scraped for the first
 * time has no `process.cpu.utilization` (it takes two scrapes' CPU times). Without it, every process
 * counts as seen before.
 */
export const emulateScrape = (
  fleet: ProcessFleet,
  pipeline: CompiledPipeline,
  seenPids?: Int32Array,
): ScrapeResult => {
  const S = pipeline.slots.length;
  const slots = pipeline.slots;
  let utilizationMask = 0;
  slots.forEach((s, i) => {
    if (s.metric.name === 'process.cpu.utilization' && !s.collapsed) utilizationMask |= 1 << i;
  });
  if (seenPids !== undefined && seenPids.length !== fleet.size)
    throw new RangeError(`seenPids has ${seenPids.length} slots for ${fleet.size} processes`);
  const names: string[] = [...CATALOG_NAMES];
  const nameIndex = new Map<string, number>(names.map((n, i) => [n, i]));
  const intern = (name: string): number => {
    let id = nameIndex.get(name);
    if (id === undefined) {
      id = names.length;
      names.push(name);
      nameIndex.set(name, id);
    }
    return id;
  };

  // Scraper: processes whose name passes include/exclude become rows.
  const passName = new Int8Array(CATALOG_NAMES.length).fill(-1);
  const cap = fleet.size;
  const host = new Uint32Array(cap);
  const origin = new Uint32Array(cap);
  const name = new Int32Array(cap);
  const attrs = new Uint8Array(cap);
  const live = new Uint32Array(cap);
  const values = new Float64Array(cap * S);
  const group = new Int32Array(cap);
  const hostScraped = new Uint32Array(fleet.hosts);
  const hostReceived = new Uint32Array(fleet.hosts);
  const hostCpu = new Float64Array(fleet.hosts);
  let rows = 0;
  for (let h = 0; h < fleet.hosts; h++) {
    const base = h * fleet.perHost;
    const cpus = fleet.hostCpus[h] as number;
    const memTotal = fleet.hostMemoryBytes[h] as number;
    let read = 0;
    let received = 0;
    for (let i = base; i < base + fleet.perHost; i++) {
      const id = fleet.name[i] as number;
      let pass = passName[id] as number;
      if (pass < 0) {
        const n = CATALOG_NAMES[id] as string;
        pass =
          (pipeline.include === undefined || pipeline.include(n)) && !(pipeline.exclude?.(n) ?? false)
            ? 1
            : 0;
        passName[id] = pass;
      }
      const firstScrape = seenPids !== undefined && seenPids[i] !== fleet.pid[i];
      if (seenPids !== undefined) seenPids[i] = fleet.pid[i] as number;
      if (pass === 0) continue;
      const r = rows++;
      read++;
      host[r] = h;
      origin[r] = i;
      name[r] = id;
      attrs[r] = pipeline.initialAttributes;
      live[r] = firstScrape ? pipeline.scrapedMask & ~utilizationMask : pipeline.scrapedMask;
      received += popcount(live[r] as number);
      group[r] = r;
      const cpuNow = fleet.cpuNow[i] as number;
      const user = fleet.userShare[i] as number;
      const uptime = fleet.time - (fleet.startTime[i] as number);
      const base2 = r * S;
      for (let s = 0; s < S; s++) {
        const slot = slots[s] as Slot;
        if (slot.collapsed) continue;
        values[base2 + s] = sampleValue(fleet, i, slot, cpuNow, user, cpus, memTotal, uptime);
      }
    }
    hostScraped[h] = fleet.perHost;
    hostReceived[h] = received;
    hostCpu[h] =
      COST.scrapeBase +
      COST.perProcessListed * fleet.perHost +
      COST.perProcessRead * read * (1 + 0.1 * (S - 1));
  }
  const receivedPoints = countPoints(live, rows);

  const ctx: EvalContext = { fleet, names, name, attrs, origin, host, live, values, S, slots, labels: [] };
  for (const stage of pipeline.stages) {
    const pointsIn = countPointsPerHost(live, host, rows, fleet.hosts);
    let perPoint = 0;
    switch (stage.kind) {
      case 'noop':
        perPoint = stage.costPerPoint;
        break;
      case 'resource':
        ctx.labels = [
          ...ctx.labels.filter((l) => !stage.labels.some((n) => n.key === l.key)),
          ...stage.labels,
        ];
        perPoint = 0.1e-6;
        break;
      case 'filter':
        runFilter(ctx, stage, rows);
        perPoint = COST.perPointFilter;
        break;
      case 'transform':
        runTransform(ctx, stage, rows, group, intern);
        perPoint = COST.perPointTransform;
        break;
      case 'merge':
        runMerge(ctx, rows, group, names.length);
        perPoint = COST.perPointMerge;
        break;
      default: {
        const _never: never = stage;
        throw new Error(`unknown stage ${String(_never)}`);
      }
    }
    for (let h = 0; h < fleet.hosts; h++)
      hostCpu[h] = (hostCpu[h] as number) + perPoint * (pointsIn[h] as number);
  }

  // Exporters: every live data point is sent; series are distinct (group, slot) pairs.
  const groupMask = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) {
    const m = live[r] as number;
    if (m !== 0) groupMask[group[r] as number] = (groupMask[group[r] as number] as number) | m;
  }
  const hostPoints = countPointsPerHost(live, host, rows, fleet.hosts);
  const hostSeries = new Uint32Array(fleet.hosts);
  let series = 0;
  let out = 0;
  for (let r = 0; r < rows; r++) {
    const m = groupMask[r] as number;
    if (m === 0) continue;
    const c = popcount(m);
    series += c;
    hostSeries[host[r] as number] = (hostSeries[host[r] as number] as number) + c;
    out++;
  }
  let exportedPoints = 0;
  for (let h = 0; h < fleet.hosts; h++) {
    exportedPoints += hostPoints[h] as number;
    hostCpu[h] =
      (hostCpu[h] as number) + COST.perPointExport * (hostPoints[h] as number) * pipeline.exporters.length;
  }

  // Compact the exported resources (group leaders) for exposition and for tuning.
  const cpuSlots = slots.flatMap((s, i) =>
    s.metric.name === 'process.cpu.time' || s.metric.name === 'process.cpu.utilization' ? [i] : [],
  );
  const memSlot = slots.findIndex((s) => s.metric.name === 'process.memory.usage');
  const result = {
    rowHost: new Uint32Array(out),
    rowName: new Int32Array(out),
    rowAttributes: new Uint8Array(out),
    rowPid: new Int32Array(out),
    rowPpid: new Int32Array(out),
    rowOrigin: new Uint16Array(out),
    rowArgv: new Uint8Array(out),
    rowSlot: new Uint32Array(out),
    rowMask: new Uint32Array(out),
    rowValues: new Float64Array(out * S),
    rowCpu: new Float32Array(out),
    rowMemory: new Float32Array(out),
  };
  let o = 0;
  for (let r = 0; r < rows; r++) {
    const m = groupMask[r] as number;
    if (m === 0) continue;
    const i = origin[r] as number;
    result.rowHost[o] = host[r] as number;
    result.rowName[o] = name[r] as number;
    result.rowAttributes[o] = attrs[r] as number;
    result.rowPid[o] = fleet.pid[i] as number;
    result.rowPpid[o] = fleet.ppid[i] as number;
    result.rowOrigin[o] = fleet.name[i] as number;
    result.rowArgv[o] = fleet.argv[i] as number;
    result.rowSlot[o] = i;
    result.rowMask[o] = m;
    result.rowValues.set(values.subarray(r * S, r * S + S), o * S);
    const perProcess = ((attrs[r] as number) & PID_BIT) !== 0;
    const cpuKept = cpuSlots.some((s) => (m & (1 << s)) !== 0);
    result.rowCpu[o] =
      perProcess && cpuKept ? (fleet.cpuNow[i] as number) / (fleet.hostCpus[host[r] as number] as number) : 0;
    result.rowMemory[o] =
      perProcess && memSlot >= 0 && (m & (1 << memSlot)) !== 0 ? (fleet.memNow[i] as number) : 0;
    o++;
  }
  return {
    time: fleet.time,
    intervalSeconds: pipeline.intervalSeconds,
    receivedPoints,
    exportedPoints,
    series,
    names,
    rows: out,
    ...result,
    slots,
    resourceLabels: ctx.labels,
    exporters: pipeline.exporters,
    hostScraped,
    hostReceived,
    hostPoints,
    hostSeries,
    hostCpuSeconds: hostCpu,
  };
};

const sampleValue = (
  fleet: ProcessFleet,
  i: number,
  slot: Slot,
  cpuNow: number,
  user: number,
  cpus: number,
  memTotal: number,
  uptime: number,
): number => {
  const share = slot.attributeValue === 'user' ? user : slot.attributeValue === 'system' ? 0.97 - user : 0.03;
  switch (slot.metric.name) {
    case 'process.cpu.time':
      return fleet.cpuTime[
        3 * i + (slot.attributeValue === 'user' ? 0 : slot.attributeValue === 'system' ? 1 : 2)
      ] as number;
    case 'process.cpu.utilization':
      return (cpuNow * share) / cpus;
    case 'process.memory.usage':
      return Math.round(fleet.memNow[i] as number);
    case 'process.memory.virtual':
      return Math.round((fleet.memNow[i] as number) * catalogEntry(fleet.name[i] as number).virtual);
    case 'process.memory.utilization':
      // A percentage (0–100), as gopsutil's MemoryPercent gives the scraper, not a fraction.
      return (100 * (fleet.memNow[i] as number)) / memTotal;
    case 'process.disk.io':
      return Math.round(fleet.diskBytes[2 * i + (slot.attributeValue === 'read' ? 0 : 1)] as number);
    case 'process.disk.operations':
      return Math.round(
        (fleet.diskBytes[2 * i + (slot.attributeValue === 'read' ? 0 : 1)] as number) / 16_384,
      );
    case 'process.threads':
      return fleet.threads[i] as number;
    case 'process.open_file_descriptors':
      return 8 + 3 * (fleet.threads[i] as number);
    case 'process.context_switches': {
      const cpuTotal = (fleet.cpuTime[3 * i] as number) + (fleet.cpuTime[3 * i + 1] as number);
      return Math.round(slot.attributeValue === 'voluntary' ? uptime * 2 + cpuTotal * 900 : cpuTotal * 150);
    }
    case 'process.paging.faults':
      return Math.round(
        slot.attributeValue === 'major' ? uptime * 0.001 : (fleet.memNow[i] as number) / 4096 + uptime * 0.5,
      );
    case 'process.signals_pending':
      return 0;
    case 'process.uptime':
      return uptime;
    default:
      return 0;
  }
};

const countPoints = (live: Uint32Array, rows: number): number => {
  let n = 0;
  for (let r = 0; r < rows; r++) if (live[r] !== 0) n += popcount(live[r] as number);
  return n;
};

const countPointsPerHost = (
  live: Uint32Array,
  host: Uint32Array,
  rows: number,
  hosts: number,
): Uint32Array => {
  const out = new Uint32Array(hosts);
  for (let r = 0; r < rows; r++) {
    const m = live[r] as number;
    if (m !== 0) out[host[r] as number] = (out[host[r] as number] as number) + popcount(m);
  }
  return out;
};

interface EvalContext {
  readonly fleet: ProcessFleet;
  readonly names: string[];
  readonly name: Int32Array;
  readonly attrs: Uint8Array;
  readonly origin: Uint32Array;
  readonly host: Uint32Array;
  readonly live: Uint32Array;
  readonly values: Float64Array;
  readonly S: number;
  readonly slots: readonly Slot[];
  labels: ResourceLabel[];
}

/** What a compiled expression reads; decides how much of its result can be cached. */
interface Deps {
  /** Reads resource attributes other than the executable name and host-constant labels. */
  row: boolean;
  /** Reads the metric (name etc.). */
  metric: boolean;
  /** Reads a data point (value, attributes). */
  point: boolean;
}

type Getter = (row: number, metric: number, slot: number) => unknown;

type Context = 'metric' | 'datapoint' | 'resource';

/** Resource attribute `key` of row r, as the collector would see it at this point of the pipeline. */
const resourceGetter = (ctx: EvalContext, key: string, deps: Deps): Getter => {
  if (key === 'process.executable.name') {
    return (r) => {
      const id = ctx.name[r] as number;
      return id < 0 ? undefined : ctx.names[id];
    };
  }
  const bit = BIT[key];
  if (bit !== undefined) {
    deps.row = true;
    const { fleet } = ctx;
    const read = (r: number): unknown => {
      const i = ctx.origin[r] as number;
      switch (key) {
        case 'process.pid':
          return fleet.pid[i];
        case 'process.parent_pid':
          return fleet.ppid[i];
        case 'process.executable.path':
          return catalogEntry(fleet.name[i] as number).path;
        case 'process.command':
          return catalogEntry(fleet.name[i] as number).path;
        case 'process.command_line':
          return fleet.commandLine(i);
        case 'process.owner':
          return catalogEntry(fleet.name[i] as number).owner;
        default:
          return undefined;
      }
    };
    return (r) => (((ctx.attrs[r] as number) & bit) !== 0 ? read(r) : undefined);
  }
  const label = ctx.labels.find((l) => l.key === key);
  if (label === undefined) return () => undefined;
  if (!label.constant) deps.row = true;
  return (r) => label.value(ctx.host[r] as number);
};

const compileValue = (
  ctx: EvalContext,
  node: OttlValue,
  context: Context,
  deps: Deps,
  path: string,
): Getter => {
  switch (node.kind) {
    case 'string':
    case 'number':
    case 'bool': {
      const v = node.value;
      return () => v;
    }
    case 'nil':
      return () => undefined;
    case 'path': {
      const [root, second] = node.segments;
      const key = node.keys[0];
      const text = pathText(node);
      if (
        (context !== 'resource' &&
          root === 'resource' &&
          second === 'attributes' &&
          key !== undefined &&
          node.keys.length === 1) ||
        (context === 'resource' && root === 'attributes' && key !== undefined && node.keys.length === 1)
      ) {
        return resourceGetter(ctx, key as string, deps);
      }
      if (
        (context === 'metric' && (text === 'name' || text === 'metric.name')) ||
        (context === 'datapoint' && text === 'metric.name')
      ) {
        deps.metric = true;
        const metricNames: string[] = [];
        for (const slot of ctx.slots) metricNames[slot.metricIndex] = slot.metric.name;
        return (_r, m) => metricNames[m];
      }
      if (context === 'datapoint' && root === 'attributes' && key !== undefined) {
        deps.point = true;
        return (_r, _m, s) => {
          const slot = ctx.slots[s] as Slot;
          return slot.metric.attribute?.key === key ? slot.attributeValue : undefined;
        };
      }
      if (context === 'datapoint' && (text === 'value_double' || text === 'value_int')) {
        deps.point = true;
        const want = text === 'value_double' ? 'double' : 'int';
        return (r, _m, s) =>
          (ctx.slots[s] as Slot).metric.valueType === want
            ? ctx.values[r * ctx.S + s]
            : want === 'int'
              ? 0
              : 0.0;
      }
      throw new EmulationError(`path ${text} is not emulated in the ${context} context`, path);
    }
    case 'call': {
      if (node.name !== 'IsMatch') throw new EmulationError(`converter ${node.name} is not emulated`, path);
      const target = compileValue(ctx, node.args[0] as OttlValue, context, deps, path);
      const pattern = node.args[1];
      if (pattern?.kind !== 'string') throw new EmulationError('IsMatch needs a literal pattern', path);
      const re = regexOf(pattern.value, path);
      const memo = new Map<unknown, boolean>();
      return (r, m, s) => {
        const v = target(r, m, s);
        if (v === undefined) return false;
        let hit = memo.get(v);
        if (hit === undefined) {
          hit = re.test(String(v));
          memo.set(v, hit);
        }
        return hit;
      };
    }
    case 'enum':
    case 'list':
      throw new EmulationError(`${node.kind} values are not emulated here`, path);
    default: {
      const _never: never = node;
      throw new Error(String(_never));
    }
  }
};

const compare = (op: string, a: unknown, b: unknown): boolean => {
  switch (op) {
    case '==':
      return a === b;
    case '!=':
      return a !== b;
    default:
      if (typeof a !== 'number' || typeof b !== 'number') return false;
      return op === '<' ? a < b : op === '<=' ? a <= b : op === '>' ? a > b : a >= b;
  }
};

const compileCondition = (
  ctx: EvalContext,
  node: OttlCondition,
  context: Context,
  deps: Deps,
  path: string,
): RowPredicate => {
  switch (node.kind) {
    case 'or': {
      const l = compileCondition(ctx, node.left, context, deps, path);
      const r = compileCondition(ctx, node.right, context, deps, path);
      return (a, b, c) => l(a, b, c) || r(a, b, c);
    }
    case 'and': {
      const l = compileCondition(ctx, node.left, context, deps, path);
      const r = compileCondition(ctx, node.right, context, deps, path);
      return (a, b, c) => l(a, b, c) && r(a, b, c);
    }
    case 'not': {
      const inner = compileCondition(ctx, node.operand, context, deps, path);
      return (a, b, c) => !inner(a, b, c);
    }
    case 'compare': {
      const l = compileValue(ctx, node.left, context, deps, path);
      const r = compileValue(ctx, node.right, context, deps, path);
      const op = node.op;
      return (a, b, c) => compare(op, l(a, b, c), r(a, b, c));
    }
    case 'value': {
      const v = compileValue(ctx, node.value, context, deps, path);
      return (a, b, c) => v(a, b, c) === true;
    }
    default: {
      const _never: never = node;
      throw new Error(String(_never));
    }
  }
};

/**
 * A condition evaluated per row and metric, cached per (executable name, metric) when it reads nothing
 * else: with interned names, the 500 processes of a node cost a table lookup each.
 */
const cachedRowMetric = (
  ctx: EvalContext,
  predicate: RowPredicate,
  deps: Deps,
  metrics: number,
): RowPredicate => {
  if (deps.row || deps.point) return predicate;
  // Not an LRU's job: it lives for one filter stage of one evaluation and holds one entry per distinct
  // executable name of the fleet (an interned id), so it is bounded by the data it is computed from.
  const cache = new Map<number, Int8Array>();
  return (r, m, s) => {
    const id = ctx.name[r] as number;
    let byMetric = cache.get(id);
    if (byMetric === undefined) {
      byMetric = new Int8Array(Math.max(1, metrics)).fill(-1);
      cache.set(id, byMetric);
    }
    const key = deps.metric ? m : 0;
    let hit = byMetric[key] as number;
    if (hit < 0) {
      hit = predicate(r, m, s) ? 1 : 0;
      byMetric[key] = hit;
    }
    return hit === 1;
  };
};

const metricCount = (ctx: EvalContext) =>
  ctx.slots.length === 0 ? 0 : (ctx.slots[ctx.slots.length - 1] as Slot).metricIndex + 1;

/** Masks of each metric's slots (all of them, collapsed included). */
const metricMasks = (ctx: EvalContext): Uint32Array => {
  const masks = new Uint32Array(metricCount(ctx));
  ctx.slots.forEach((s, i) => {
    masks[s.metricIndex] = (masks[s.metricIndex] as number) | (1 << i);
  });
  return masks;
};

const runFilter = (ctx: EvalContext, stage: Extract<Stage, { kind: 'filter' }>, rows: number): void => {
  const masks = metricMasks(ctx);
  const metrics = masks.length;
  const metricConds = stage.metric.map((c, i) => {
    const deps: Deps = { row: false, metric: false, point: false };
    const p = compileCondition(ctx, c.ast, 'metric', deps, `processors.${stage.id}.metrics.metric.${i}`);
    return cachedRowMetric(ctx, p, deps, metrics);
  });
  const pointConds = stage.datapoint.map((c, i) => {
    const deps: Deps = { row: false, metric: false, point: false };
    return compileCondition(ctx, c.ast, 'datapoint', deps, `processors.${stage.id}.metrics.datapoint.${i}`);
  });
  const { live } = ctx;
  for (let r = 0; r < rows; r++) {
    let m = live[r] as number;
    if (m === 0) continue;
    if (metricConds.length > 0) {
      for (let k = 0; k < metrics; k++) {
        if ((m & (masks[k] as number)) === 0) continue;
        for (const p of metricConds) {
          if (p(r, k, -1)) {
            m &= ~(masks[k] as number);
            break;
          }
        }
      }
    }
    if (pointConds.length > 0 && m !== 0) {
      for (let s = 0; s < ctx.S; s++) {
        const bit = 1 << s;
        if ((m & bit) === 0) continue;
        const metric = (ctx.slots[s] as Slot).metricIndex;
        for (const p of pointConds) {
          if (p(r, metric, s)) {
            m &= ~bit;
            break;
          }
        }
      }
    }
    live[r] = m;
  }
};

const stringArg = (v: OttlValue | undefined, path: string): string => {
  if (v?.kind !== 'string') throw new EmulationError('expected a string literal argument', path);
  return v.value;
};

const runTransform = (
  ctx: EvalContext,
  stage: Extract<Stage, { kind: 'transform' }>,
  rows: number,
  group: Int32Array,
  intern: (name: string) => number,
): void => {
  for (const g of stage.groups) {
    g.statements.forEach((stmt, si) => {
      const path = `${g.path}.statements.${si}`;
      const deps: Deps = { row: false, metric: false, point: false };
      const where = stmt.where ? compileCondition(ctx, stmt.where, g.context, deps, path) : () => true;
      if (g.context === 'resource') runResourceStatement(ctx, stmt, where, deps, rows, intern, path);
      else runMetricStatement(ctx, stmt, where, deps, rows, group, path);
    });
  }
};

const runResourceStatement = (
  ctx: EvalContext,
  stmt: OttlStatement,
  whereRaw: RowPredicate,
  deps: Deps,
  rows: number,
  intern: (name: string) => number,
  path: string,
): void => {
  const where = cachedRowMetric(ctx, whereRaw, deps, 1);
  const [target, arg] = stmt.editor.args;
  const isAttributes = (v: OttlValue | undefined) =>
    v?.kind === 'path' && v.segments.join('.') === 'attributes' && v.keys.length === 0;
  let apply: (r: number) => void;
  const clearKey = (key: string): ((r: number) => void) => {
    if (key === 'process.executable.name') {
      return (r) => {
        ctx.name[r] = -1;
      };
    }
    const bit = BIT[key];
    if (bit !== undefined) {
      return (r) => {
        ctx.attrs[r] = (ctx.attrs[r] as number) & ~bit;
      };
    }
    if (ctx.labels.some((l) => l.key === key))
      throw new EmulationError(`deleting ${key} per resource is not emulated`, path);
    return () => {};
  };
  switch (stmt.editor.name) {
    case 'delete_key': {
      if (!isAttributes(target)) throw new EmulationError('delete_key needs attributes as its target', path);
      apply = clearKey(stringArg(arg, path));
      break;
    }
    case 'delete_matching_keys': {
      if (!isAttributes(target))
        throw new EmulationError('delete_matching_keys needs attributes as its target', path);
      const re = regexOf(stringArg(arg, path), path);
      const clears = [...PROCESS_RESOURCE_ATTRIBUTES].filter((k) => re.test(k)).map(clearKey);
      apply = (r) => {
        for (const c of clears) c(r);
      };
      break;
    }
    case 'keep_keys': {
      if (!isAttributes(target) || arg?.kind !== 'list')
        throw new EmulationError('keep_keys needs attributes and a list', path);
      const keep = new Set(arg.items.map((i) => stringArg(i, path)));
      const clears = [...PROCESS_RESOURCE_ATTRIBUTES].filter((k) => !keep.has(k)).map(clearKey);
      apply = (r) => {
        for (const c of clears) c(r);
      };
      break;
    }
    case 'set': {
      if (
        target?.kind !== 'path' ||
        target.segments.join('.') !== 'attributes' ||
        target.keys[0] !== 'process.executable.name'
      ) {
        throw new EmulationError('only set(attributes["process.executable.name"], "…") is emulated', path);
      }
      const id = intern(stringArg(arg, path));
      apply = (r) => {
        ctx.name[r] = id;
      };
      break;
    }
    default:
      throw new EmulationError(`editor ${stmt.editor.name} is not emulated in the resource context`, path);
  }
  // Decide every row first: OTTL evaluates each resource's condition before its own edit, and a
  // cached decision must not see another row's edit.
  const selected = new Uint8Array(rows);
  for (let r = 0; r < rows; r++) if (ctx.live[r] !== 0 && where(r, 0, -1)) selected[r] = 1;
  for (let r = 0; r < rows; r++) if (selected[r] === 1) apply(r);
};

const AGG = {
  sum: (acc: number, v: number) => acc + v,
  min: (acc: number, v: number) => Math.min(acc, v),
  max: (acc: number, v: number) => Math.max(acc, v),
} as const;

const runMetricStatement = (
  ctx: EvalContext,
  stmt: OttlStatement,
  whereRaw: RowPredicate,
  deps: Deps,
  rows: number,
  group: Int32Array,
  path: string,
): void => {
  if (stmt.editor.name !== 'aggregate_on_attributes') {
    throw new EmulationError(`editor ${stmt.editor.name} is not emulated in the metric context`, path);
  }
  const fn = stringArg(stmt.editor.args[0], path);
  if (!['sum', 'mean', 'min', 'max', 'count'].includes(fn))
    throw new EmulationError(`aggregation ${fn} is not emulated`, path);
  const keysArg = stmt.editor.args[1];
  const keys =
    keysArg === undefined
      ? []
      : keysArg.kind === 'list'
        ? keysArg.items.map((i) => stringArg(i, path))
        : undefined;
  if (keys === undefined) throw new EmulationError('attributes must be a list', path);
  const masks = metricMasks(ctx);
  const where = cachedRowMetric(ctx, whereRaw, deps, masks.length);
  const { live, values, S, slots } = ctx;
  // For each metric: which slots are the inputs and where each input's aggregate goes.
  const plans = [...masks].map((_, metric) => {
    const inputs = slots.flatMap((s, i) => (s.metricIndex === metric && !s.collapsed ? [i] : []));
    const collapsed = slots.findIndex((s) => s.metricIndex === metric && s.collapsed);
    const attributeKey = slots[inputs[0] ?? 0]?.metric.attribute?.key;
    const keepAttribute = attributeKey !== undefined && keys.includes(attributeKey);
    const sources = collapsed >= 0 ? [...inputs, collapsed] : inputs;
    return {
      inputs,
      sources,
      target: (s: number) => (keepAttribute || collapsed < 0 ? s : collapsed),
      collapsed,
    };
  });
  const acc = new Float64Array(S);
  const cnt = new Uint32Array(S);
  // Members of each group as linked lists through `next`, headed by the leader (no per-group arrays).
  const head = new Int32Array(rows).fill(-1);
  const next = new Int32Array(rows);
  for (let r = rows - 1; r >= 0; r--) {
    if (live[r] === 0) continue;
    const leader = group[r] as number;
    next[r] = head[leader] as number;
    head[leader] = r;
  }
  const identityWhenAlone = plans.map(
    (plan) => fn !== 'count' && plan.inputs.every((s) => plan.target(s) === s),
  );
  for (let leader = 0; leader < rows; leader++) {
    const first = head[leader] as number;
    if (first < 0) continue;
    const alone = next[first] === -1;
    for (let metric = 0; metric < plans.length; metric++) {
      const plan = plans[metric] as (typeof plans)[number];
      const mask = masks[metric] as number;
      if (alone && identityWhenAlone[metric]) continue;
      let any = false;
      for (let r = first; r >= 0; r = next[r] as number) {
        if (((live[r] as number) & mask) !== 0) {
          any = true;
          break;
        }
      }
      if (!any || !where(leader, metric, -1)) continue;
      acc.fill(0);
      cnt.fill(0);
      for (let r = first; r >= 0; r = next[r] as number) {
        const m = live[r] as number;
        if ((m & mask) === 0) continue;
        for (const s of plan.sources) {
          if ((m & (1 << s)) === 0) continue;
          const t = s === plan.collapsed ? s : plan.target(s);
          const v = values[r * S + s] as number;
          if (cnt[t] === 0) acc[t] = fn === 'count' ? 1 : v;
          else if (fn === 'sum' || fn === 'mean') acc[t] = (acc[t] as number) + v;
          else if (fn === 'count') acc[t] = (acc[t] as number) + 1;
          else acc[t] = AGG[fn as 'min' | 'max'](acc[t] as number, v);
          cnt[t] = (cnt[t] as number) + 1;
        }
        live[r] = m & ~mask;
      }
      let leaderMask = live[leader] as number;
      for (let t = 0; t < S; t++) {
        if ((mask & (1 << t)) === 0 || cnt[t] === 0) continue;
        values[leader * S + t] = fn === 'mean' ? (acc[t] as number) / (cnt[t] as number) : (acc[t] as number);
        leaderMask |= 1 << t;
      }
      live[leader] = leaderMask;
    }
  }
};

/**
 * groupbyattrs without keys: resources whose attributes are now identical become one resource. A row
 * that still has its pid is unique; otherwise the key is host, name and whatever identity is left.
 */
const runMerge = (ctx: EvalContext, rows: number, group: Int32Array, nameCount: number): void => {
  const { fleet } = ctx;
  const hostLabelsVary = ctx.labels.some((l) => !l.constant);
  const fast = new Int32Array(fleet.hosts * nameCount).fill(-1);
  const slow = new Map<string, number>();
  for (let r = 0; r < rows; r++) {
    if (ctx.live[r] === 0) continue;
    const a = ctx.attrs[r] as number;
    if ((a & PID_BIT) !== 0) {
      group[r] = r;
      continue;
    }
    const id = ctx.name[r] as number;
    const h = ctx.host[r] as number;
    // Host labels (k8s.node.name) make rows of different hosts differ; constant labels do not.
    const hostKey = hostLabelsVary ? h : 0;
    if ((a & (VARYING_BITS | NAME_DERIVED_BITS)) === 0 && id >= 0) {
      const k = hostKey * nameCount + id;
      const leader = fast[k] as number;
      if (leader < 0) {
        fast[k] = r;
        group[r] = r;
      } else group[r] = leader;
      continue;
    }
    const i = ctx.origin[r] as number;
    const parts = [hostKey, id, a];
    if (a & (BIT['process.parent_pid'] as number)) parts.push(fleet.ppid[i] as number);
    if (a & (BIT['process.command_line'] as number)) parts.push(fleet.commandLine(i) as unknown as number);
    if (a & NAME_DERIVED_BITS) parts.push(fleet.name[i] as number);
    const key = parts.join('\u0000');
    const leader = slow.get(key);
    if (leader === undefined) {
      slow.set(key, r);
      group[r] = r;
    } else group[r] = leader;
  }
};

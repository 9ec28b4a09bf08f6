import type { AnyTemplateParams, TemplateParams } from './params.js';
import { compileCollectorRegex } from './regex.js';
import { TEMPLATE_DEFINITIONS, type Tuning } from './templates.js';

/**
 * Per-process usage observed by the baseline, column-wise so that a 1,000 × 500 fleet is a handful of
 * typed arrays rather than half a million objects. Index i describes one process.
 */
export interface ProcessUsageTable {
  readonly length: number;
  /** Node index of process i (any dense numbering). */
  readonly node: ArrayLike<number>;
  /** Index into {@link names} of process i's executable name. */
  readonly name: ArrayLike<number>;
  readonly names: readonly string[];
  /** CPU as process.cpu.utilization reports it: a share of the host's CPU, 0–1. */
  readonly cpu: ArrayLike<number>;
  /** Resident memory in bytes (process.memory.usage). */
  readonly memory: ArrayLike<number>;
  /** Series process i produced in the baseline; 7 (the scraper's defaults) when absent. */
  readonly series?: ArrayLike<number>;
}

const DEFAULT_SERIES_PER_PROCESS = 7;

/** Which name indices match any critical pattern; computed once per distinct name. */
const criticalNames = (names: readonly string[], patterns: readonly string[]): Uint8Array => {
  const regexes = patterns.flatMap((p) => {
    const check = compileCollectorRegex(p);
    return check.ok ? [check.regex] : [];
  });
  const out = new Uint8Array(names.length);
  names.forEach((name, i) => {
    if (regexes.some((r) => r.test(name))) out[i] = 1;
  });
  return out;
};

/** Process indices grouped by a key (counting sort): `order[start[k] .. start[k+1])` belong to key k. */
const groupBy = (
  length: number,
  key: (i: number) => number,
  keys: number,
): { order: Uint32Array; start: Uint32Array } => {
  const start = new Uint32Array(keys + 1);
  for (let i = 0; i < length; i++) (start[key(i) + 1] as number)++;
  for (let k = 0; k < keys; k++) start[k + 1] = (start[k + 1] as number) + (start[k] as number);
  const fill = start.slice(0, keys);
  const order = new Uint32Array(length);
  for (let i = 0; i < length; i++) {
    const k = key(i);
    order[fill[k] as number] = i;
    fill[k] = (fill[k] as number) + 1;
  }
  return { order, start };
};

const maxOf = (values: ArrayLike<number>): number => {
  let max = -1;
  for (let i = 0; i < values.length; i++) if ((values[i] as number) > max) max = values[i] as number;
  return max;
};

/**
 * Top-k keep-list (stands in for the top-k processor contrib does not have). Each node's k heaviest
 * non-critical processes vote for their executable name. A collector config is per variant, not per
 * node, so the filter can only keep names: names are taken by votes (ties: total score, then name) while
 * the processes they keep stay within k per node on average over the fleet, which makes `k` mean what it
 * says even when a popular name runs many instances (a name that would overrun the budget is skipped).
 */
export const computeKeepList = (
  usage: ProcessUsageTable,
  params: Pick<TemplateParams<'process-topk-v1'>, 'k' | 'rankBy'>,
  criticalProcesses: readonly string[],
): string[] => {
  const critical = criticalNames(usage.names, criticalProcesses);
  const nodes = maxOf(usage.node) + 1;
  const score = new Float64Array(usage.length);
  const nodeCpu = new Float64Array(nodes);
  const nodeMem = new Float64Array(nodes);
  const instances = new Float64Array(usage.names.length);
  for (let i = 0; i < usage.length; i++) {
    const n = usage.node[i] as number;
    nodeCpu[n] = (nodeCpu[n] as number) + (usage.cpu[i] as number);
    nodeMem[n] = (nodeMem[n] as number) + (usage.memory[i] as number);
    instances[usage.name[i] as number] = (instances[usage.name[i] as number] as number) + 1;
  }
  for (let i = 0; i < usage.length; i++) {
    const n = usage.node[i] as number;
    const cpuShare = (usage.cpu[i] as number) / ((nodeCpu[n] as number) || 1);
    const memShare = (usage.memory[i] as number) / ((nodeMem[n] as number) || 1);
    score[i] =
      params.rankBy === 'cpu' ? cpuShare : params.rankBy === 'memory' ? memShare : cpuShare + memShare;
  }
  const { order, start } = groupBy(usage.length, (i) => usage.node[i] as number, nodes);
  const votes = new Float64Array(usage.names.length);
  const weight = new Float64Array(usage.names.length);
  const votedThisNode = new Int32Array(usage.names.length).fill(-1);
  for (let n = 0; n < nodes; n++) {
    const members = Array.from(order.subarray(start[n], start[n + 1])).filter(
      (i) => critical[usage.name[i] as number] === 0,
    );
    members.sort((a, b) => (score[b] as number) - (score[a] as number) || a - b);
    for (const i of members.slice(0, params.k)) {
      const name = usage.name[i] as number;
      weight[name] = (weight[name] as number) + (score[i] as number);
      if (votedThisNode[name] !== n) {
        votedThisNode[name] = n;
        votes[name] = (votes[name] as number) + 1;
      }
    }
  }
  let budget = params.k * nodes;
  const keep: string[] = [];
  for (const n of rankIndices(usage.names, votes, weight)) {
    const cost = instances[n] as number;
    if (cost <= budget) {
      keep.push(usage.names[n] as string);
      budget -= cost;
    }
  }
  return keep.sort();
};

/** Name indices with a positive primary score, best first (ties: secondary, then name, for determinism). */
const rankIndices = (names: readonly string[], primary: Float64Array, secondary: Float64Array): number[] =>
  names
    .map((name, i) => ({ name, i, p: primary[i] as number, s: secondary[i] as number }))
    .filter((e) => e.p > 0)
    .sort((a, b) => b.p - a.p || b.s - a.s || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((e) => e.i);

/**
 * The "intelligent" keep-list: an explainable model in place of the ML processor no collector has.
 * Value of an executable = its share of CPU + its share of memory + anomalyWeight × its outlier share
 * (CPU a process uses beyond 4× its executable's median: the hot process someone will ask about).
 * Cost = the series it produced in the baseline. Names are taken greedily by value per series until the
 * budget (seriesBudgetPct of the baseline's series, critical processes' series counted first) is spent.
 */
export const computeIntelligentKeepList = (
  usage: ProcessUsageTable,
  params: Pick<TemplateParams<'process-intelligent-v1'>, 'seriesBudgetPct' | 'anomalyWeight'>,
  criticalProcesses: readonly string[],
): string[] => {
  const critical = criticalNames(usage.names, criticalProcesses);
  const names = usage.names.length;
  const cost = new Float64Array(names);
  const cpu = new Float64Array(names);
  const mem = new Float64Array(names);
  let totalSeries = 0;
  let criticalSeries = 0;
  let totalCpu = 0;
  let totalMem = 0;
  for (let i = 0; i < usage.length; i++) {
    const name = usage.name[i] as number;
    const series = usage.series ? (usage.series[i] as number) : DEFAULT_SERIES_PER_PROCESS;
    totalSeries += series;
    if (critical[name] === 1) {
      criticalSeries += series;
      continue;
    }
    cost[name] = (cost[name] as number) + series;
    cpu[name] = (cpu[name] as number) + (usage.cpu[i] as number);
    mem[name] = (mem[name] as number) + (usage.memory[i] as number);
    totalCpu += usage.cpu[i] as number;
    totalMem += usage.memory[i] as number;
  }
  const { order, start } = groupBy(usage.length, (i) => usage.name[i] as number, names);
  const outlier = new Float64Array(names);
  for (let n = 0; n < names; n++) {
    if (critical[n] === 1 || start[n] === start[n + 1]) continue;
    const members = order.subarray(start[n], start[n + 1]);
    const values = Float64Array.from(members, (i) => usage.cpu[i] as number).sort();
    const median = values[values.length >> 1] as number;
    let excess = 0;
    for (const v of values) if (v > 4 * median) excess += v - 4 * median;
    outlier[n] = excess;
  }
  const value = new Float64Array(names);
  const density = new Float64Array(names);
  for (let n = 0; n < names; n++) {
    if ((cost[n] as number) === 0) continue;
    value[n] =
      (cpu[n] as number) / (totalCpu || 1) +
      (mem[n] as number) / (totalMem || 1) +
      (params.anomalyWeight * (outlier[n] as number)) / (totalCpu || 1);
    density[n] = (value[n] as number) / (cost[n] as number);
  }
  let budget = (params.seriesBudgetPct / 100) * totalSeries - criticalSeries;
  const keep: string[] = [];
  for (const n of rankIndices(usage.names, density, value)) {
    const c = cost[n] as number;
    if (c <= budget) {
      keep.push(usage.names[n] as string);
      budget -= c;
    }
  }
  return keep.sort();
};

/** The p-th percentile (nearest rank) of the values whose mask is set. */
const percentile = (values: ArrayLike<number>, include: (i: number) => boolean, p: number): number => {
  const picked: number[] = [];
  for (let i = 0; i < values.length; i++) if (include(i)) picked.push(values[i] as number);
  if (picked.length === 0) return 0;
  const sorted = Float64Array.from(picked).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
};

/**
 * Adaptive thresholds: the `adaptPercentile` of the baseline's non-critical CPU and memory, so that about
 * that share of the idle tail is dropped whatever the fleet's workload looks like.
 */
export const computeAdaptiveThresholds = (
  usage: ProcessUsageTable,
  params: Pick<TemplateParams<'process-adaptive-v1'>, 'adaptPercentile'>,
  criticalProcesses: readonly string[],
): NonNullable<Tuning['thresholds']> => {
  const critical = criticalNames(usage.names, criticalProcesses);
  const nonCritical = (i: number) => critical[usage.name[i] as number] === 0;
  return {
    cpuUtilization: percentile(usage.cpu, nonCritical, params.adaptPercentile),
    memoryBytes: Math.round(percentile(usage.memory, nonCritical, params.adaptPercentile)),
  };
};

/**
 * The tuning a template needs from the baseline's data, or undefined for templates that need none. The
 * deployer calls this after the baseline's first scrape and re-renders the candidate with the result.
 */
export const computeTuning = (
  templateParams: AnyTemplateParams,
  usage: ProcessUsageTable,
  experimentCritical: readonly string[],
): Tuning | undefined => {
  const critical = [...experimentCritical, ...templateParams.params.criticalProcesses];
  switch (templateParams.template) {
    case 'process-topk-v1':
      return { keepList: computeKeepList(usage, templateParams.params, critical) };
    case 'process-intelligent-v1':
      return { keepList: computeIntelligentKeepList(usage, templateParams.params, critical) };
    case 'process-adaptive-v1':
      return { thresholds: computeAdaptiveThresholds(usage, templateParams.params, critical) };
    case 'process-baseline-v1':
    case 'process-priority-filter-v1':
    case 'process-aggregated-v1':
    case 'process-minimal-v1':
      return undefined;
    default: {
      const _never: never = templateParams;
      return _never;
    }
  }
};

/** Whether a template's candidate must be re-rendered from baseline data before it is measured. */
export const needsTuning = (template: keyof typeof TEMPLATE_DEFINITIONS): boolean =>
  TEMPLATE_DEFINITIONS[template].tuning !== 'none';

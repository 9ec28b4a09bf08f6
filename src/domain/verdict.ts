import { z } from 'zod';
import type {
  Analysis,
  CompatibilityQuery,
  CriterionCheck,
  FigureName,
  HostFigures,
  HostSummary,
  MeasuredFigures,
  PairedComparison,
  SuccessCriteria,
  Variant,
} from './experiment-spec.js';
import {
  BOOTSTRAP_RESAMPLES,
  BOOTSTRAP_SEED,
  type HostPair,
  pairedComparison,
  RANK_BISERIAL,
  WILCOXON,
} from './statistics.js';

/**
 * The verdict of an experiment from what the analyzer measured: a pure function of the measurements
 * and the experiment's success criteria.
 *
 * - No data is never a pass: a variant without figures, a baseline without series, critical patterns
 *   that match nothing in the baseline, or collector CPU that was not measured make the result
 *   inconclusive (the Kayenta "no data" class, distinct from failure).
 * - A criterion that is measured and missed is a failure, whatever else is missing: losing critical
 *   processes beyond `maxCriticalProcessLossPct` fails the experiment even when other figures are absent.
 * - Percentages are rounded to two decimals before they are compared, so what the result shows is
 *   what was judged.
 * - Collector CPU overhead is the candidate's collector CPU relative to the baseline's:
 *   100 × (candidate − baseline) / baseline; negative when the candidate is cheaper.
 *
 * With per-host samples (issue 20), the cardinality and CPU criteria are judged on the paired
 * statistics (domain/statistics.ts) with this rule, the usual one for a confidence interval against a
 * margin (as in non-inferiority and equivalence testing):
 * - pass when the whole interval lies on the passing side of the threshold (a reduction whose lower
 *   bound is at least the required %, an overhead whose upper bound is at most the allowed %);
 * - fail when the whole interval lies on the failing side;
 * - inconclusive (outcome `no_data`: not enough evidence to decide) when it straddles the threshold —
 *   more hosts or a longer run would decide. A point estimate alone never passes: with few hosts the
 *   interval is wide and the verdict says so.
 * The Wilcoxon test and the effect size are reported beside it (with three hosts no two-sided test can
 * reach p < 0.25, so a p-value threshold would make small fleets undecidable; the interval carries the
 * size of the change, which is what the criteria are about).
 * The preconditions come first: too few hosts with enough paired samples (`sampleSize`), collectors that
 * did not receive the same input (`inputParity`, a sample-ratio-mismatch check) are inconclusive; an
 * unhealthy candidate collector (`collectorHealth`: restarts, dropped points) fails. Each compatibility
 * query is a criterion `query:<name>`. Criteria named in `successCriteria.dryRun` are evaluated and
 * reported with `dryRun: true` and never decide.
 *
 * What the verdict is computed from is stored in the analysis (`hosts`, `evidence.figures`,
 * `evidence.criticalInBaseline`, `missingCriticalProcesses`, `evidence.collectorHealth`,
 * `evidence.queryResults`), and judge itself computes from that stored form: `rejudge` applies other
 * criteria to it and gets the same statistics, bit for bit. Bounded: at most MAX_STORED_HOSTS hosts
 * (a larger fleet is judged on a fixed pseudo-random subset, the number left out recorded) and
 * MAX_TIMELINE_POINTS timeline points; top executables are ten.
 */

/** One variant's figures over the window; null where the analyzer found no data. */
export interface VariantMeasurement {
  /** Process series the variant exported. */
  readonly series: number | null;
  readonly datapointsPerMinute: number | null;
  /** The collector's own CPU, in cores per node. */
  readonly collectorCpuCores: number | null;
  /** The collector's resident memory per node, in bytes (evidence only). */
  readonly collectorMemoryBytes: number | null;
}

type CollectorHealth = Readonly<
  Record<Variant, { readonly restarts: number | null; readonly droppedPoints: number | null }>
>;

interface QueryResult {
  readonly name: string;
  readonly query: string;
  readonly baseline: number | null;
  readonly candidate: number | null;
  readonly error?: string | undefined;
}

export interface Measurements {
  readonly baseline: VariantMeasurement;
  readonly candidate: VariantMeasurement;
  /**
   * Critical (node, executable) pairs present in the baseline, as `node/executable`; null when the
   * analyzer could not tell.
   */
  readonly criticalInBaseline: readonly string[] | null;
  /** Of those, the pairs missing from the candidate, as `node/executable`. */
  readonly missingCriticalProcesses: readonly string[];
  /**
   * What the figures were measured with, kept in the evidence: `source`, `window`, and `queries` as
   * `[{ figure, variant, query, samples }]` (the PromQL or the scrape behind each figure).
   */
  readonly evidence: Readonly<Record<string, unknown>>;
  // Added for the paired statistics (an analyzer that cannot give them leaves them out):
  /** Every host's figures per variant per sample time over the window (warm-up excluded). */
  readonly samples?: readonly HostSample[] | undefined;
  /** Series per executable (summed over hosts) at the end of the window. */
  readonly seriesByExecutable?: Readonly<Record<Variant, Readonly<Record<string, number>>>> | undefined;
  /** Collector health over the window: restarts and points dropped or failed to export; null = unknown. */
  readonly collectorHealth?: CollectorHealth | undefined;
  /** The spec's compatibility queries, run against each variant over the window. */
  readonly queryResults?: readonly QueryResult[] | undefined;
}

/** One host's figures for one variant at one sample time. */
export interface HostSample extends MeasuredFigures {
  readonly at: string;
  readonly host: string;
  readonly variant: Variant;
  /** Points the collector received (its receiver's accepted points) per minute: the parity check's input. */
  readonly inputPointsPerMinute: number | null;
  /**
   * Processes the collector's process scraper saw on the host (scraper-based collectors only; absent
   * otherwise). Where the collector scrapes the host itself, its receiver's accepted points depend on
   * the config's own metric selection and interval (a candidate that disables metrics in the scraper
   * accepts fewer points by design), so input parity is then a matter of the processes seen.
   */
  readonly inputProcesses?: number | null | undefined;
}

export interface VerdictInput {
  readonly criteria: SuccessCriteria;
  /** The experiment's critical-process patterns (an empty list makes the critical check vacuous). */
  readonly criticalProcesses: readonly string[];
  readonly measurements: Measurements;
  /** The spec's compatibility queries: each is a criterion `query:<name>`. */
  readonly compatibilityQueries?: readonly CompatibilityQuery[] | undefined;
}

export type { CheckOutcome } from './experiment-spec.js';
export type Check = CriterionCheck;

export const DEFAULT_MIN_HOSTS = 1;
export const DEFAULT_MIN_SAMPLES_PER_HOST = 1;
export const DEFAULT_CONFIDENCE = 0.95;
export const DEFAULT_MAX_INPUT_MISMATCH_PCT = 5;
export const MAX_STORED_HOSTS = 1000;
export const MAX_TIMELINE_POINTS = 360;
export const TOP_EXECUTABLES = 10;

/** The criteria names a dry-run list may hold besides `query:<name>`. */
export const CRITERION_NAMES = [
  'sampleSize',
  'inputParity',
  'collectorHealth',
  'maxCriticalProcessLossPct',
  'minCardinalityReductionPct',
  'maxCollectorCpuOverheadPct',
] as const;

const round2 = (v: number): number => Math.round(v * 100) / 100;
const round6 = (v: number): number => Math.round(v * 1e6) / 1e6;

/** 100 × (before − after) / before, rounded; null when either side is missing or before is 0. */
export const reductionPct = (before: number | null, after: number | null): number | null =>
  before === null || after === null || before <= 0 ? null : round2((100 * (before - after)) / before);

const fmt = (v: number): string => String(round2(v));
const pct = (confidence: number): string => `${round2(confidence * 100)}%`;

// ---------------------------------------------------------------------------------------------
// The stored evidence

/** What the verdict is a function of (besides the criteria), as the analysis stores it. */
export interface JudgeEvidence {
  readonly figures: { readonly baseline: VariantMeasurement; readonly candidate: VariantMeasurement };
  /** How many critical (node, executable) pairs the baseline had; null when unknown. */
  readonly criticalInBaseline: number | null;
  readonly missingCriticalProcesses: readonly string[];
  /** Per-host means; undefined when the analyzer gave no samples (the single-figure rules apply). */
  readonly hosts?: readonly HostSummary[] | undefined;
  readonly hostsOmitted?: number | undefined;
  readonly collectorHealth?: CollectorHealth | undefined;
  readonly queryResults?: readonly QueryResult[] | undefined;
}

const FIGURES: readonly FigureName[] = [
  'series',
  'datapointsPerMinute',
  'collectorCpuCores',
  'collectorMemoryBytes',
];

/** FNV-1a: a stable pseudo-random order of host names for the subset kept from a large fleet. */
const fnv1a = (s: string): number => {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
};

const meanOf = (values: readonly (number | null)[]): number | null => {
  const known = values.filter((v): v is number => v !== null && Number.isFinite(v));
  return known.length === 0 ? null : round6(known.reduce((a, b) => a + b, 0) / known.length);
};

const figuresOf = (samples: readonly HostSample[]): HostFigures => ({
  series: meanOf(samples.map((s) => s.series)),
  datapointsPerMinute: meanOf(samples.map((s) => s.datapointsPerMinute)),
  collectorCpuCores: meanOf(samples.map((s) => s.collectorCpuCores)),
  collectorMemoryBytes: meanOf(samples.map((s) => s.collectorMemoryBytes)),
  inputPointsPerMinute: meanOf(samples.map((s) => s.inputPointsPerMinute)),
  inputProcesses: meanOf(samples.map((s) => s.inputProcesses ?? null)),
});

/**
 * Per host, the means over its paired samples: the sample times (`at`, exactly) both variants were
 * sampled on that host. Hosts sorted by name; beyond MAX_STORED_HOSTS a fixed pseudo-random subset.
 */
export const hostSummaries = (
  samples: readonly HostSample[],
): { readonly hosts: HostSummary[]; readonly omitted: number } => {
  const byHost = new Map<string, Map<string, { baseline?: HostSample; candidate?: HostSample }>>();
  for (const s of samples) {
    let times = byHost.get(s.host);
    if (!times) {
      times = new Map();
      byHost.set(s.host, times);
    }
    const slot = times.get(s.at) ?? {};
    slot[s.variant] = s;
    times.set(s.at, slot);
  }
  let names = [...byHost.keys()];
  const omitted = Math.max(0, names.length - MAX_STORED_HOSTS);
  if (omitted > 0)
    names = names.sort((a, b) => fnv1a(a) - fnv1a(b) || (a < b ? -1 : 1)).slice(0, MAX_STORED_HOSTS);
  names.sort();
  const hosts = names.map((host): HostSummary => {
    const paired = [...(byHost.get(host)?.values() ?? [])].filter((p) => p.baseline && p.candidate);
    const baseline = figuresOf(paired.map((p) => p.baseline as HostSample));
    const candidate = figuresOf(paired.map((p) => p.candidate as HostSample));
    return {
      host,
      samples: paired.length,
      baseline,
      candidate,
      seriesReductionPct: reductionPct(baseline.series, candidate.series),
    };
  });
  return { hosts, omitted };
};

type Totals = { -readonly [K in FigureName]: number | null };

/** Fleet totals per sample time, at most MAX_TIMELINE_POINTS (evenly spaced) of them. */
const timelineOf = (samples: readonly HostSample[]): NonNullable<Analysis['timeline']> => {
  const byTime = new Map<string, Record<Variant, Totals>>();
  const empty = (): Totals => ({
    series: null,
    datapointsPerMinute: null,
    collectorCpuCores: null,
    collectorMemoryBytes: null,
  });
  for (const s of samples) {
    let point = byTime.get(s.at);
    if (!point) {
      point = { baseline: empty(), candidate: empty() };
      byTime.set(s.at, point);
    }
    const totals = point[s.variant];
    for (const f of FIGURES) {
      const v = s[f];
      if (v !== null && Number.isFinite(v)) totals[f] = (totals[f] ?? 0) + v;
    }
  }
  const times = [...byTime.keys()].sort((a, b) => Date.parse(a) - Date.parse(b) || (a < b ? -1 : 1));
  const kept =
    times.length <= MAX_TIMELINE_POINTS
      ? times
      : Array.from(
          { length: MAX_TIMELINE_POINTS },
          (_, i) => times[Math.round((i * (times.length - 1)) / (MAX_TIMELINE_POINTS - 1))] as string,
        );
  const rounded = (t: Totals): MeasuredFigures => ({
    series: t.series === null ? null : round6(t.series),
    datapointsPerMinute: t.datapointsPerMinute === null ? null : round6(t.datapointsPerMinute),
    collectorCpuCores: t.collectorCpuCores === null ? null : round6(t.collectorCpuCores),
    collectorMemoryBytes: t.collectorMemoryBytes === null ? null : round6(t.collectorMemoryBytes),
  });
  return kept.map((at) => {
    const point = byTime.get(at) as Record<Variant, Totals>;
    return { at, baseline: rounded(point.baseline), candidate: rounded(point.candidate) };
  });
};

const topExecutablesOf = (
  byExecutable: Readonly<Record<Variant, Readonly<Record<string, number>>>>,
): NonNullable<Analysis['topExecutables']> =>
  Object.entries(byExecutable.baseline)
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : 1))
    .slice(0, TOP_EXECUTABLES)
    .map(([executable, baselineSeries]) => ({
      executable,
      baselineSeries,
      candidateSeries: byExecutable.candidate[executable] ?? 0,
    }));

const nullableNumber = z.number().nullable();
const variantMeasurementSchema = z.object({
  series: nullableNumber,
  datapointsPerMinute: nullableNumber,
  collectorCpuCores: nullableNumber,
  collectorMemoryBytes: nullableNumber,
});
const health = z.object({ restarts: nullableNumber, droppedPoints: nullableNumber });
const storedEvidenceSchema = z.object({
  figures: z.object({ baseline: variantMeasurementSchema, candidate: variantMeasurementSchema }),
  criticalInBaseline: nullableNumber,
  hostsOmitted: z.number().optional(),
  collectorHealth: z.object({ baseline: health, candidate: health }).optional(),
  queryResults: z
    .array(
      z.object({
        name: z.string(),
        query: z.string(),
        baseline: nullableNumber,
        candidate: nullableNumber,
        error: z.string().optional(),
      }),
    )
    .optional(),
});

/**
 * The evidence an analysis stores, read back for re-judging; undefined when it has none (an analysis
 * recorded before the evidence was kept, or by something else than `judge`).
 */
export const evidenceOf = (analysis: Analysis): JudgeEvidence | undefined => {
  const parsed = storedEvidenceSchema.safeParse(analysis.evidence ?? {});
  if (!parsed.success) return undefined;
  const e = parsed.data;
  return {
    figures: e.figures,
    criticalInBaseline: e.criticalInBaseline,
    missingCriticalProcesses: analysis.missingCriticalProcesses,
    hosts: analysis.hosts,
    hostsOmitted: e.hostsOmitted,
    collectorHealth: e.collectorHealth,
    queryResults: e.queryResults,
  };
};

// ---------------------------------------------------------------------------------------------
// The checks

type Draft = Omit<CriterionCheck, 'dryRun'>;

const statLine = (s: PairedComparison): string => {
  const parts = [`${s.hosts} host${s.hosts === 1 ? '' : 's'}`];
  if (s.test) {
    parts.push(
      `Wilcoxon p = ${s.test.pValue === null ? 'n/a' : String(Number(s.test.pValue.toPrecision(3)))}`,
    );
    if (s.test.effectSize) parts.push(`rank-biserial ${s.test.effectSize.value.toFixed(2)}`);
  }
  return parts.join(', ');
};

const ci = (low: number, high: number, confidence: number): string =>
  `${pct(confidence)} CI ${fmt(low)}% to ${fmt(high)}%`;

const cardinalityCheck = (
  criteria: SuccessCriteria,
  e: JudgeEvidence,
  stat: PairedComparison | undefined,
): Draft => {
  const threshold = criteria.minCardinalityReductionPct;
  const base = { criterion: 'minCardinalityReductionPct', threshold };
  if (stat) {
    const value = round2(-stat.relativeChangePct);
    const interval = stat.interval && {
      low: round2(-stat.interval.high),
      high: round2(-stat.interval.low),
      confidence: stat.interval.confidence,
    };
    const shown = interval
      ? `cardinality reduced by ${fmt(value)}% (${ci(interval.low, interval.high, interval.confidence)}; ${statLine(stat)})`
      : `cardinality reduced by ${fmt(value)}% (${statLine(stat)})`;
    const judged = { ...base, value, test: WILCOXON, ...(interval ? { interval } : {}) };
    const low = interval?.low ?? value;
    const high = interval?.high ?? value;
    if (low >= threshold)
      return { ...judged, outcome: 'pass', reason: `${shown}, at least ${fmt(threshold)}% required` };
    if (high < threshold)
      return { ...judged, outcome: 'fail', reason: `${shown}, below the required ${fmt(threshold)}%` };
    return {
      ...judged,
      outcome: 'no_data',
      reason: `${shown}: the interval straddles the required ${fmt(threshold)}%, inconclusive (more hosts or a longer run would decide)`,
    };
  }
  const m = e.figures;
  if (m.baseline.series === null)
    return { ...base, value: null, outcome: 'no_data', reason: 'no data for the baseline series' };
  if (m.candidate.series === null)
    return { ...base, value: null, outcome: 'no_data', reason: 'no data for the candidate series' };
  const reduction = reductionPct(m.baseline.series, m.candidate.series);
  if (reduction === null)
    return {
      ...base,
      value: null,
      outcome: 'no_data',
      reason: 'the baseline exported no process series: nothing to reduce',
    };
  return reduction >= threshold
    ? {
        ...base,
        value: reduction,
        outcome: 'pass',
        reason: `cardinality reduced by ${fmt(reduction)}% (at least ${fmt(threshold)}% required)`,
      }
    : {
        ...base,
        value: reduction,
        outcome: 'fail',
        reason: `cardinality reduced by ${fmt(reduction)}%, below the required ${fmt(threshold)}%`,
      };
};

const criticalCheck = (
  criteria: SuccessCriteria,
  e: JudgeEvidence,
  criticalProcesses: readonly string[],
): Draft => {
  const threshold = criteria.maxCriticalProcessLossPct;
  const base = { criterion: 'maxCriticalProcessLossPct', threshold };
  if (criticalProcesses.length === 0)
    return { ...base, value: 0, outcome: 'pass', reason: 'no critical processes named' };
  if (
    e.figures.baseline.series === null ||
    e.figures.candidate.series === null ||
    e.criticalInBaseline === null
  )
    return {
      ...base,
      value: null,
      outcome: 'no_data',
      reason: 'critical processes could not be compared: a variant has no data',
    };
  if (e.criticalInBaseline === 0)
    return {
      ...base,
      value: null,
      outcome: 'no_data',
      reason: `no baseline process matched the critical patterns ${criticalProcesses.join(', ')}: the check could not be made`,
    };
  const lost = e.missingCriticalProcesses.length;
  const loss = round2((100 * lost) / e.criticalInBaseline);
  const counted = `${lost} of ${e.criticalInBaseline} critical processes`;
  if (loss > threshold) {
    const sample = e.missingCriticalProcesses.slice(0, 5).join(', ');
    const more = lost > 5 ? ` and ${lost - 5} more` : '';
    return {
      ...base,
      value: loss,
      outcome: 'fail',
      reason: `${counted} lost (${fmt(loss)}%, at most ${fmt(threshold)}% allowed): ${sample}${more}`,
    };
  }
  return {
    ...base,
    value: loss,
    outcome: 'pass',
    reason: `${counted} lost (${fmt(loss)}%, at most ${fmt(threshold)}% allowed)`,
  };
};

const cpuCheck = (criteria: SuccessCriteria, e: JudgeEvidence, stat: PairedComparison | undefined): Draft => {
  const threshold = criteria.maxCollectorCpuOverheadPct;
  const base = { criterion: 'maxCollectorCpuOverheadPct', threshold };
  const said = (v: number): string => (v <= 0 ? `${fmt(-v)}% below` : `${fmt(v)}% above`);
  if (stat) {
    const value = stat.relativeChangePct;
    const interval = stat.interval ?? undefined;
    const shown = interval
      ? `collector CPU ${said(value)} the baseline's (${ci(interval.low, interval.high, interval.confidence)}; ${statLine(stat)})`
      : `collector CPU ${said(value)} the baseline's (${statLine(stat)})`;
    const judged = { ...base, value, test: WILCOXON, ...(interval ? { interval } : {}) };
    const low = interval?.low ?? value;
    const high = interval?.high ?? value;
    if (high <= threshold)
      return { ...judged, outcome: 'pass', reason: `${shown}, at most +${fmt(threshold)}% allowed` };
    if (low > threshold)
      return { ...judged, outcome: 'fail', reason: `${shown}, more than the allowed ${fmt(threshold)}%` };
    return {
      ...judged,
      outcome: 'no_data',
      reason: `${shown}: the interval straddles the allowed +${fmt(threshold)}%, inconclusive (more hosts or a longer run would decide)`,
    };
  }
  const b = e.figures.baseline.collectorCpuCores;
  const c = e.figures.candidate.collectorCpuCores;
  if (b === null || c === null || b <= 0)
    return {
      ...base,
      value: null,
      outcome: 'no_data',
      reason: `no collector CPU data for the ${b === null || b <= 0 ? 'baseline' : 'candidate'}`,
    };
  const overhead = round2((100 * (c - b)) / b);
  return overhead <= threshold
    ? {
        ...base,
        value: overhead,
        outcome: 'pass',
        reason: `collector CPU ${said(overhead)} the baseline's (at most +${fmt(threshold)}% allowed)`,
      }
    : {
        ...base,
        value: overhead,
        outcome: 'fail',
        reason: `collector CPU ${fmt(overhead)}% above the baseline's, more than the allowed ${fmt(threshold)}%`,
      };
};

const sampleSizeCheck = (
  hosts: readonly HostSummary[],
  counted: readonly HostSummary[],
  minHosts: number,
  minSamples: number,
  omitted: number,
): Draft => {
  const base = { criterion: 'sampleSize', threshold: minHosts, value: counted.length };
  const short = hosts.length - counted.length;
  const shortNote = short > 0 ? `; ${short} more had fewer` : '';
  const omittedNote =
    omitted > 0 ? `; a fixed subset of ${hosts.length} of ${hosts.length + omitted} hosts is kept` : '';
  const what = `${counted.length} host${counted.length === 1 ? '' : 's'} with at least ${minSamples} paired sample${minSamples === 1 ? '' : 's'}`;
  return counted.length >= minHosts
    ? {
        ...base,
        outcome: 'pass',
        reason: `${what} (at least ${minHosts} required${shortNote}${omittedNote})`,
      }
    : {
        ...base,
        outcome: 'no_data',
        reason: `only ${what} (${minHosts} required${shortNote}): too little evidence to judge`,
      };
};

const parityOf = (
  counted: readonly HostSummary[],
  maxMismatchPct: number,
): NonNullable<Analysis['parity']> => {
  const both = counted.filter(
    (h) =>
      typeof h.baseline.inputPointsPerMinute === 'number' &&
      typeof h.candidate.inputPointsPerMinute === 'number',
  );
  if (both.length === 0)
    return {
      ok: null,
      baselineInputPointsPerMinute: null,
      candidateInputPointsPerMinute: null,
      mismatchPct: null,
      maxMismatchPct,
      reason: 'the collectors’ received points were not measured: input parity unknown',
    };
  const points = {
    baselineInputPointsPerMinute: round6(
      both.reduce((a, h) => a + (h.baseline.inputPointsPerMinute as number), 0),
    ),
    candidateInputPointsPerMinute: round6(
      both.reduce((a, h) => a + (h.candidate.inputPointsPerMinute as number), 0),
    ),
  };
  // A collector that scrapes its host itself accepts only the points its own metric selection keeps
  // (the minimal template turns most metrics off): there the input is the processes its scraper saw.
  const byProcesses = both.every(
    (h) => typeof h.baseline.inputProcesses === 'number' && typeof h.candidate.inputProcesses === 'number',
  );
  const processes = byProcesses
    ? {
        baselineInputProcesses: round6(both.reduce((a, h) => a + (h.baseline.inputProcesses as number), 0)),
        candidateInputProcesses: round6(both.reduce((a, h) => a + (h.candidate.inputProcesses as number), 0)),
      }
    : {};
  const b = byProcesses ? (processes.baselineInputProcesses as number) : points.baselineInputPointsPerMinute;
  const c = byProcesses
    ? (processes.candidateInputProcesses as number)
    : points.candidateInputPointsPerMinute;
  const unit = byProcesses ? 'processes seen by the scrapers' : 'points/min received';
  const base = {
    ...points,
    basis: byProcesses ? ('processes' as const) : ('points' as const),
    ...processes,
    maxMismatchPct,
  };
  if (b <= 0)
    return {
      ...base,
      ok: c <= 0 ? null : false,
      mismatchPct: null,
      reason:
        c <= 0
          ? `neither collector's input had any ${unit}`
          : `the baseline collector's input had no ${unit}`,
    };
  const mismatchPct = round2((100 * Math.abs(c - b)) / b);
  const figures = `baseline ${fmt(b)}, candidate ${fmt(c)} ${unit}`;
  return mismatchPct <= maxMismatchPct
    ? {
        ...base,
        ok: true,
        mismatchPct,
        reason: `input parity: ${figures} (${fmt(mismatchPct)}% apart, at most ${fmt(maxMismatchPct)}% allowed)`,
      }
    : {
        ...base,
        ok: false,
        mismatchPct,
        reason: `input mismatch: ${figures} (${fmt(mismatchPct)}% apart, more than ${fmt(maxMismatchPct)}%): the collectors did not see the same input, the experiment is broken`,
      };
};

const parityCheck = (parity: NonNullable<Analysis['parity']>): Draft => ({
  criterion: 'inputParity',
  threshold: parity.maxMismatchPct,
  value: parity.mismatchPct,
  outcome: parity.ok === true ? 'pass' : 'no_data',
  reason: parity.reason,
});

const healthCheck = (h: CollectorHealth): Draft => {
  const base = { criterion: 'collectorHealth', threshold: 0 };
  const { candidate: c, baseline: b } = h;
  const trouble = (x: { restarts: number | null; droppedPoints: number | null }): string[] => [
    ...(x.restarts !== null && x.restarts > 0 ? [`${x.restarts} restart${x.restarts === 1 ? '' : 's'}`] : []),
    ...(x.droppedPoints !== null && x.droppedPoints > 0 ? [`${x.droppedPoints} points dropped`] : []),
  ];
  const candidateTrouble = trouble(c);
  const value = c.restarts === null || c.droppedPoints === null ? null : c.restarts + c.droppedPoints;
  if (candidateTrouble.length > 0)
    return {
      ...base,
      value,
      outcome: 'fail',
      reason: `the candidate collector is unhealthy: ${candidateTrouble.join(', ')}`,
    };
  const baselineTrouble = trouble(b);
  if (baselineTrouble.length > 0)
    return {
      ...base,
      value,
      outcome: 'no_data',
      reason: `the baseline collector was unhealthy (${baselineTrouble.join(', ')}): the comparison is not sound`,
    };
  if (value === null || b.restarts === null || b.droppedPoints === null)
    return {
      ...base,
      value,
      outcome: 'no_data',
      reason: 'collector health (restarts, dropped points) was not measured',
    };
  return {
    ...base,
    value,
    outcome: 'pass',
    reason: 'both collectors healthy: no restarts, no points dropped',
  };
};

const queryCheck = (q: CompatibilityQuery, result: QueryResult | undefined): Draft => {
  const threshold = q.maxDivergencePct ?? null;
  const base = { criterion: `query:${q.name}`, threshold };
  if (!result)
    return {
      ...base,
      value: null,
      outcome: 'no_data',
      reason: `query ${q.name} was not run: the analyzer runs compatibility queries only against Prometheus`,
    };
  if (result.error !== undefined)
    return { ...base, value: null, outcome: 'no_data', reason: `query ${q.name} failed: ${result.error}` };
  if (result.candidate === null)
    return {
      ...base,
      value: null,
      outcome: 'fail',
      reason: `query ${q.name} returns nothing on the candidate${result.baseline === null ? '' : ` (baseline: ${fmt(result.baseline)})`}`,
    };
  if (result.baseline === null)
    return {
      ...base,
      value: null,
      outcome: 'no_data',
      reason: `query ${q.name} returns nothing on the baseline either: nothing to compare`,
    };
  const divergence =
    result.baseline === 0
      ? result.candidate === 0
        ? 0
        : 100
      : round2((100 * Math.abs(result.candidate - result.baseline)) / Math.abs(result.baseline));
  const figures = `baseline ${fmt(result.baseline)}, candidate ${fmt(result.candidate)}`;
  if (threshold !== null && divergence > threshold)
    return {
      ...base,
      value: divergence,
      outcome: 'fail',
      reason: `query ${q.name} diverges by ${fmt(divergence)}% (${figures}), more than ${fmt(threshold)}%`,
    };
  return {
    ...base,
    value: divergence,
    outcome: 'pass',
    reason: `query ${q.name} answers on the candidate (${figures}${threshold === null ? '' : `, ${fmt(divergence)}% apart, at most ${fmt(threshold)}%`})`,
  };
};

// ---------------------------------------------------------------------------------------------
// The verdict

/** The paired comparison of every figure over the hosts with enough paired samples. */
const statisticsOf = (
  counted: readonly HostSummary[],
  confidence: number,
): Partial<Record<FigureName, PairedComparison>> => {
  const out: Partial<Record<FigureName, PairedComparison>> = {};
  for (const f of FIGURES) {
    const used = counted.filter((h) => h.baseline[f] !== null && h.candidate[f] !== null);
    const pairs: HostPair[] = used.map((h) => ({
      baseline: h.baseline[f] as number,
      candidate: h.candidate[f] as number,
    }));
    const samples = used.reduce((a, h) => a + h.samples, 0);
    const comparison = pairedComparison(pairs, samples, confidence);
    if (comparison) out[f] = comparison;
  }
  return out;
};

interface Extras {
  readonly evidence: Readonly<Record<string, unknown>>;
  readonly timeline?: Analysis['timeline'];
  readonly topExecutables?: Analysis['topExecutables'];
  readonly cost?: Analysis['cost'];
}

/** The analysis of stored evidence under the given criteria: judge and rejudge both end here. */
const assemble = (
  e: JudgeEvidence,
  criteria: SuccessCriteria,
  criticalProcesses: readonly string[],
  compatibilityQueries: readonly CompatibilityQuery[] | undefined,
  extras: Extras,
): Analysis => {
  const minHosts = criteria.minHosts ?? DEFAULT_MIN_HOSTS;
  const minSamples = criteria.minSamplesPerHost ?? DEFAULT_MIN_SAMPLES_PER_HOST;
  const confidence = criteria.confidence ?? DEFAULT_CONFIDENCE;
  const maxMismatch = criteria.maxInputMismatchPct ?? DEFAULT_MAX_INPUT_MISMATCH_PCT;

  const drafts: Draft[] = [];
  let statistics: Partial<Record<FigureName, PairedComparison>> | undefined;
  let parity: Analysis['parity'];
  if (e.hosts) {
    const counted = e.hosts.filter((h) => h.samples >= minSamples);
    statistics = statisticsOf(counted, confidence);
    parity = parityOf(counted, maxMismatch);
    drafts.push(
      sampleSizeCheck(e.hosts, counted, minHosts, minSamples, e.hostsOmitted ?? 0),
      parityCheck(parity),
    );
  }
  if (e.collectorHealth) drafts.push(healthCheck(e.collectorHealth));
  const critical = criticalCheck(criteria, e, criticalProcesses);
  const cardinality = cardinalityCheck(criteria, e, statistics?.series);
  const cpu = cpuCheck(criteria, e, statistics?.collectorCpuCores);
  drafts.push(critical, cardinality, cpu);
  const queries =
    compatibilityQueries ?? e.queryResults?.map((r) => ({ name: r.name, query: r.query })) ?? [];
  for (const q of queries)
    drafts.push(
      queryCheck(
        q,
        e.queryResults?.find((r) => r.name === q.name),
      ),
    );

  const dryRun = new Set(criteria.dryRun ?? []);
  const checks: CriterionCheck[] = drafts.map((d) => ({ ...d, dryRun: dryRun.has(d.criterion) }));
  const deciding = checks.filter((c) => !c.dryRun);
  const verdict = deciding.some((c) => c.outcome === 'fail')
    ? 'fail'
    : deciding.some((c) => c.outcome === 'no_data')
      ? 'inconclusive'
      : 'pass';
  // Reasons lead with what decided the verdict; dry-run criteria come last, marked.
  const order = { fail: 0, no_data: 1, pass: 2 } as const;
  const reasons = [
    ...[...deciding].sort((a, b) => order[a.outcome] - order[b.outcome]).map((c) => c.reason),
    ...checks.filter((c) => c.dryRun).map((c) => `dry run (${c.outcome.replace('_', ' ')}): ${c.reason}`),
  ];
  const f = e.figures;
  const datapoints = statistics?.datapointsPerMinute;
  return {
    verdict,
    reasons,
    baseline: {
      series: f.baseline.series ?? 0,
      datapointsPerMinute: round2(f.baseline.datapointsPerMinute ?? 0),
    },
    candidate: {
      series: f.candidate.series ?? 0,
      datapointsPerMinute: round2(f.candidate.datapointsPerMinute ?? 0),
    },
    // What was judged: the paired estimate when there is one, the fleet figures otherwise.
    cardinalityReductionPct: statistics?.series
      ? round2(-statistics.series.relativeChangePct)
      : reductionPct(f.baseline.series, f.candidate.series),
    datapointReductionPct: datapoints
      ? round2(-datapoints.relativeChangePct)
      : reductionPct(f.baseline.datapointsPerMinute, f.candidate.datapointsPerMinute),
    criticalProcessLossPct: critical.value,
    missingCriticalProcesses: [...e.missingCriticalProcesses],
    evidence: {
      ...extras.evidence,
      criteria,
      criticalProcesses: [...criticalProcesses],
      ...(compatibilityQueries ? { compatibilityQueries } : {}),
      figures: f,
      criticalInBaseline: e.criticalInBaseline,
      collectorCpuOverheadPct: cpu.value,
      ...(e.collectorHealth ? { collectorHealth: e.collectorHealth } : {}),
      ...(e.queryResults ? { queryResults: e.queryResults } : {}),
      ...(e.hostsOmitted ? { hostsOmitted: e.hostsOmitted } : {}),
      ...(e.hosts
        ? {
            statisticsMethod: {
              unit: 'host (mean over its paired samples)',
              test: WILCOXON,
              effectSize: RANK_BISERIAL,
              interval: 'percentile bootstrap over hosts of the relative change of the sums',
              resamples: BOOTSTRAP_RESAMPLES,
              seed: BOOTSTRAP_SEED,
              confidence,
              minHosts,
              minSamplesPerHost: minSamples,
            },
          }
        : {}),
    },
    checks,
    ...(statistics ? { statistics } : {}),
    ...(extras.timeline ? { timeline: extras.timeline } : {}),
    ...(e.hosts ? { hosts: e.hosts } : {}),
    ...(extras.topExecutables ? { topExecutables: extras.topExecutables } : {}),
    ...(parity ? { parity } : {}),
    ...(extras.cost ? { cost: extras.cost } : {}),
  };
};

/** Applies the success criteria to the measurements: the `analysis` the experiment records. */
export const judge = (input: VerdictInput): Analysis => {
  const m = input.measurements;
  const summaries = m.samples ? hostSummaries(m.samples) : undefined;
  const evidence: JudgeEvidence = {
    figures: { baseline: { ...m.baseline }, candidate: { ...m.candidate } },
    criticalInBaseline: m.criticalInBaseline === null ? null : m.criticalInBaseline.length,
    missingCriticalProcesses: m.missingCriticalProcesses,
    hosts: summaries?.hosts,
    hostsOmitted: summaries?.omitted,
    collectorHealth: m.collectorHealth,
    queryResults: m.queryResults,
  };
  return assemble(evidence, input.criteria, input.criticalProcesses, input.compatibilityQueries, {
    evidence: m.evidence,
    ...(m.samples ? { timeline: timelineOf(m.samples) } : {}),
    ...(m.seriesByExecutable ? { topExecutables: topExecutablesOf(m.seriesByExecutable) } : {}),
  });
};

/** The keys `assemble` writes into the evidence: a re-judge writes them afresh. */
const JUDGED_KEYS = new Set([
  'criteria',
  'criticalProcesses',
  'compatibilityQueries',
  'collectorCpuOverheadPct',
  'statisticsMethod',
  'checks',
]);

/**
 * New criteria applied to an analysis's stored evidence, without measuring again: the same figures,
 * per-host means, health and query results, judged under `criteria`. Undefined when the analysis holds
 * no evidence to re-judge. The cost estimate, timeline and top executables are carried over as they
 * were (they do not depend on the criteria).
 */
export const rejudge = (
  analysis: Analysis,
  criteria: SuccessCriteria,
  criticalProcesses: readonly string[],
  compatibilityQueries?: readonly CompatibilityQuery[],
): Analysis | undefined => {
  const evidence = evidenceOf(analysis);
  if (!evidence) return undefined;
  const kept = Object.fromEntries(
    Object.entries(analysis.evidence ?? {}).filter(([k]) => !JUDGED_KEYS.has(k)),
  );
  return assemble(evidence, criteria, criticalProcesses, compatibilityQueries, {
    evidence: kept,
    timeline: analysis.timeline,
    topExecutables: analysis.topExecutables,
    cost: analysis.cost,
  });
};

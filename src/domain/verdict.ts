import type { Analysis, MeasuredFigures, SuccessCriteria, Variant } from './experiment-spec.js';

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
  readonly collectorHealth?:
    | Readonly<Record<Variant, { readonly restarts: number | null; readonly droppedPoints: number | null }>>
    | undefined;
  /** The spec's compatibility queries, run against each variant over the window. */
  readonly queryResults?:
    | readonly {
        readonly name: string;
        readonly query: string;
        readonly baseline: number | null;
        readonly candidate: number | null;
        readonly error?: string | undefined;
      }[]
    | undefined;
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
}

export type CheckOutcome = 'pass' | 'fail' | 'no_data';

export interface Check {
  readonly criterion: keyof SuccessCriteria;
  readonly threshold: number;
  readonly value: number | null;
  readonly outcome: CheckOutcome;
  readonly reason: string;
}

const round2 = (v: number): number => Math.round(v * 100) / 100;

/** 100 × (before − after) / before, rounded; null when either side is missing or before is 0. */
export const reductionPct = (before: number | null, after: number | null): number | null =>
  before === null || after === null || before <= 0 ? null : round2((100 * (before - after)) / before);

const fmt = (v: number): string => String(round2(v));

const cardinalityCheck = (criteria: SuccessCriteria, m: Measurements, reduction: number | null): Check => {
  const threshold = criteria.minCardinalityReductionPct;
  const base = { criterion: 'minCardinalityReductionPct' as const, threshold };
  if (m.baseline.series === null)
    return { ...base, value: null, outcome: 'no_data', reason: 'no data for the baseline series' };
  if (m.candidate.series === null)
    return { ...base, value: null, outcome: 'no_data', reason: 'no data for the candidate series' };
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

const criticalCheck = (input: VerdictInput): Check => {
  const { criteria, measurements: m, criticalProcesses } = input;
  const threshold = criteria.maxCriticalProcessLossPct;
  const base = { criterion: 'maxCriticalProcessLossPct' as const, threshold };
  if (criticalProcesses.length === 0)
    return { ...base, value: 0, outcome: 'pass', reason: 'no critical processes named' };
  if (m.baseline.series === null || m.candidate.series === null || m.criticalInBaseline === null)
    return {
      ...base,
      value: null,
      outcome: 'no_data',
      reason: 'critical processes could not be compared: a variant has no data',
    };
  if (m.criticalInBaseline.length === 0)
    return {
      ...base,
      value: null,
      outcome: 'no_data',
      reason: `no baseline process matched the critical patterns ${criticalProcesses.join(', ')}: the check could not be made`,
    };
  const lost = m.missingCriticalProcesses.length;
  const loss = round2((100 * lost) / m.criticalInBaseline.length);
  const counted = `${lost} of ${m.criticalInBaseline.length} critical processes`;
  if (loss > threshold) {
    const sample = m.missingCriticalProcesses.slice(0, 5).join(', ');
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

const cpuCheck = (criteria: SuccessCriteria, m: Measurements): Check => {
  const threshold = criteria.maxCollectorCpuOverheadPct;
  const base = { criterion: 'maxCollectorCpuOverheadPct' as const, threshold };
  const b = m.baseline.collectorCpuCores;
  const c = m.candidate.collectorCpuCores;
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
        reason: `collector CPU ${overhead <= 0 ? `${fmt(-overhead)}% below` : `${fmt(overhead)}% above`} the baseline's (at most +${fmt(threshold)}% allowed)`,
      }
    : {
        ...base,
        value: overhead,
        outcome: 'fail',
        reason: `collector CPU ${fmt(overhead)}% above the baseline's, more than the allowed ${fmt(threshold)}%`,
      };
};

/** Applies the success criteria to the measurements: the `analysis` the experiment records. */
export const judge = (input: VerdictInput): Analysis => {
  const m = input.measurements;
  const cardinalityReductionPct = reductionPct(m.baseline.series, m.candidate.series);
  const datapointReductionPct = reductionPct(m.baseline.datapointsPerMinute, m.candidate.datapointsPerMinute);
  const checks = [
    criticalCheck(input),
    cardinalityCheck(input.criteria, m, cardinalityReductionPct),
    cpuCheck(input.criteria, m),
  ];
  const verdict = checks.some((c) => c.outcome === 'fail')
    ? 'fail'
    : checks.some((c) => c.outcome === 'no_data')
      ? 'inconclusive'
      : 'pass';
  // Reasons lead with what decided the verdict.
  const order: Record<CheckOutcome, number> = { fail: 0, no_data: 1, pass: 2 };
  const reasons = [...checks].sort((a, b) => order[a.outcome] - order[b.outcome]).map((c) => c.reason);
  const critical = checks[0] as Check;
  const cpu = checks[2] as Check;
  return {
    verdict,
    reasons,
    baseline: {
      series: m.baseline.series ?? 0,
      datapointsPerMinute: round2(m.baseline.datapointsPerMinute ?? 0),
    },
    candidate: {
      series: m.candidate.series ?? 0,
      datapointsPerMinute: round2(m.candidate.datapointsPerMinute ?? 0),
    },
    cardinalityReductionPct,
    datapointReductionPct,
    criticalProcessLossPct: critical.value,
    missingCriticalProcesses: [...m.missingCriticalProcesses],
    evidence: {
      ...m.evidence,
      criteria: input.criteria,
      criticalProcesses: [...input.criticalProcesses],
      figures: { baseline: m.baseline, candidate: m.candidate },
      criticalInBaseline: m.criticalInBaseline === null ? null : m.criticalInBaseline.length,
      collectorCpuOverheadPct: cpu.value,
      checks,
    },
  };
};

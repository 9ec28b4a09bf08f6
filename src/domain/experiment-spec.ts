/**
 * What a user asks for when creating an experiment (the create body of the public contract).
 * Shapes are checked at the boundary (zod, in the handlers); the domain trusts them.
 */
export interface VariantSpec {
  readonly template: string;
  readonly params: Readonly<Record<string, unknown>>;
}

export interface TargetSpec {
  readonly namespace: string;
  readonly nodeSelector: Readonly<Record<string, string>>;
  readonly hosts: number;
}

export interface SuccessCriteria {
  readonly minCardinalityReductionPct: number;
  readonly maxCriticalProcessLossPct: number;
  readonly maxCollectorCpuOverheadPct: number;
  /**
   * Criteria (by name: a key above, or `query:<name>`) evaluated and reported but never deciding the
   * verdict (Argo Rollouts' dry-run metrics).
   */
  readonly dryRun?: readonly string[] | undefined;
  /** Below this many hosts with paired samples the verdict is inconclusive (default 1: any paired evidence; set 3 or more for a statistical verdict). */
  readonly minHosts?: number | undefined;
  /** Below this many paired samples per host the host does not count (default 1). */
  readonly minSamplesPerHost?: number | undefined;
  /** Confidence of the intervals (default 0.95). */
  readonly confidence?: number | undefined;
  /** Input parity: the most the two collectors' received points may differ, in % (default 5). */
  readonly maxInputMismatchPct?: number | undefined;
  /** Early abort: how long a critical process may be missing from the candidate while it runs (default 120). */
  readonly criticalGraceSeconds?: number | undefined;
}

/**
 * A PromQL query a user's alerts or dashboards depend on: with the Prometheus analyzer it runs against
 * both variants over the run window; nothing (or a divergence beyond `maxDivergencePct`) on the
 * candidate fails the criterion `query:<name>`.
 */
export interface CompatibilityQuery {
  readonly name: string;
  readonly query: string;
  readonly maxDivergencePct?: number | undefined;
}

export interface ExperimentSpec {
  readonly name: string;
  readonly description?: string | undefined;
  readonly baseline: VariantSpec;
  readonly candidate: VariantSpec;
  readonly target: TargetSpec;
  readonly durationSeconds: number;
  readonly criticalProcesses: readonly string[];
  readonly successCriteria: SuccessCriteria;
  readonly compatibilityQueries?: readonly CompatibilityQuery[] | undefined;
  /** The pricing profile the savings are computed with (configuration names them; default `default`). */
  readonly pricingProfile?: string | undefined;
}

export const VARIANTS = ['baseline', 'candidate'] as const;
export type Variant = (typeof VARIANTS)[number];

export interface VariantFigures {
  readonly series: number;
  readonly datapointsPerMinute: number;
}

/** One variant's figures where any may be unknown (null): a sample, a mean or a fleet total. */
export interface MeasuredFigures {
  readonly series: number | null;
  readonly datapointsPerMinute: number | null;
  /** The collector's CPU in cores (per node for a host, summed for the fleet). */
  readonly collectorCpuCores: number | null;
  readonly collectorMemoryBytes: number | null;
}

/** A host's means for one variant; `inputPointsPerMinute` is the parity check's input (added by issue 20). */
export interface HostFigures extends MeasuredFigures {
  readonly inputPointsPerMinute?: number | null | undefined;
  /** Processes the collector's own scraper saw (a collector that scrapes its host itself). */
  readonly inputProcesses?: number | null | undefined;
}

/** One host of the analysis: means over its paired samples (sample times both variants have). */
export interface HostSummary {
  readonly host: string;
  /** Paired sample times. */
  readonly samples: number;
  readonly baseline: HostFigures;
  readonly candidate: HostFigures;
  readonly seriesReductionPct: number | null;
}

export type CheckOutcome = 'pass' | 'fail' | 'no_data';

/** A confidence interval. */
export interface Interval {
  readonly low: number;
  readonly high: number;
  readonly confidence: number;
}

/** One criterion as judged: the criteria table of the report. */
export interface CriterionCheck {
  /** A SuccessCriteria key, `query:<name>`, `inputParity`, `sampleSize` or `collectorHealth`. */
  readonly criterion: string;
  readonly threshold: number | null;
  readonly value: number | null;
  readonly outcome: CheckOutcome;
  /** In words, e.g. "cardinality reduced by 72.4% (95% CI 70.1–74.0), at least 50% required". */
  readonly reason: string;
  /** Evaluated and reported, never deciding the verdict. */
  readonly dryRun: boolean;
  readonly interval?: Interval | undefined;
  /** Name of the statistic the value and interval come from, e.g. `wilcoxon-signed-rank`. */
  readonly test?: string | undefined;
}

/** A paired (per-host) comparison of one figure between the variants. */
export interface PairedComparison {
  readonly hosts: number;
  readonly samples: number;
  readonly baselineMean: number;
  readonly candidateMean: number;
  /** 100 × (candidate − baseline) / baseline of the per-host means' sums; negative = fewer. */
  readonly relativeChangePct: number;
  /** Interval of relativeChangePct. */
  readonly interval: Interval | null;
  readonly test: {
    readonly name: string;
    readonly statistic: number;
    readonly pValue: number | null;
    /** Effect size with its name (e.g. rank-biserial correlation). */
    readonly effectSize: { readonly name: string; readonly value: number } | null;
  } | null;
}

export type FigureName = keyof MeasuredFigures;

/** The money: the reduction as a monthly figure, minus the candidate collector's extra cost. */
export interface CostEstimate {
  readonly profile: string;
  readonly currency: string;
  /** Monthly net saving for the experiment's target (its hosts) and for the whole fleet. */
  readonly monthly: {
    readonly target: { readonly saving: number; readonly low: number | null; readonly high: number | null };
    readonly fleet: { readonly saving: number; readonly low: number | null; readonly high: number | null };
  };
  /** The parts: series, datapoints and ingest savings; collector CPU and memory extra cost (target, monthly). */
  readonly breakdown: Readonly<Record<string, number>>;
  readonly assumptions: Readonly<Record<string, number | string>>;
}

/** The analyzer's verdict and the evidence behind it, as the contract shows it under `analysis`. */
export interface Analysis {
  readonly verdict: 'pass' | 'fail' | 'inconclusive';
  readonly reasons: readonly string[];
  readonly baseline: VariantFigures;
  readonly candidate: VariantFigures;
  readonly cardinalityReductionPct: number | null;
  readonly datapointReductionPct: number | null;
  readonly criticalProcessLossPct: number | null;
  readonly missingCriticalProcesses: readonly string[];
  /** Free-form evidence (resolved queries, overhead figures, window) kept for the audit. */
  readonly evidence?: Readonly<Record<string, unknown>>;
  // Added for the report and re-judging (absent on analyses recorded before they existed):
  /** Every criterion as judged, dry-run ones included, in the order of the criteria table. */
  readonly checks?: readonly CriterionCheck[] | undefined;
  /** Paired comparisons by figure. */
  readonly statistics?: Readonly<Partial<Record<FigureName, PairedComparison>>> | undefined;
  /** Fleet totals per sample time (the charts). */
  readonly timeline?:
    | readonly {
        readonly at: string;
        readonly baseline: MeasuredFigures;
        readonly candidate: MeasuredFigures;
      }[]
    | undefined;
  /**
   * Per host: means over its paired samples, and the reduction of its series. Also the stored evidence
   * the statistics are re-computed from when the experiment is re-judged.
   */
  readonly hosts?: readonly HostSummary[] | undefined;
  /** The executables contributing the most baseline series, with their candidate series. */
  readonly topExecutables?:
    | readonly {
        readonly executable: string;
        readonly baselineSeries: number;
        readonly candidateSeries: number;
      }[]
    | undefined;
  /** Input parity: both collectors must have received about the same input. */
  readonly parity?:
    | {
        readonly ok: boolean | null;
        readonly baselineInputPointsPerMinute: number | null;
        readonly candidateInputPointsPerMinute: number | null;
        /**
         * What was compared: the processes each collector's own scraper saw when both report them (its
         * accepted points depend on its own metric selection), else the points each received.
         */
        readonly basis?: 'processes' | 'points' | undefined;
        readonly baselineInputProcesses?: number | null | undefined;
        readonly candidateInputProcesses?: number | null | undefined;
        readonly mismatchPct: number | null;
        readonly maxMismatchPct: number;
        readonly reason: string;
      }
    | undefined;
  readonly cost?: CostEstimate | undefined;
}

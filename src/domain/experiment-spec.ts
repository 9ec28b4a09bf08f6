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
}

export const VARIANTS = ['baseline', 'candidate'] as const;
export type Variant = (typeof VARIANTS)[number];

export interface VariantFigures {
  readonly series: number;
  readonly datapointsPerMinute: number;
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
}

import type { ExperimentSpec } from '../../domain/experiment-spec.js';
import type { Measurements } from '../../domain/verdict.js';

/**
 * What the analyzer worker needs to measure an experiment: both variants over the same window. The
 * verdict is not the analyzer's: the worker applies `judge` (domain/verdict.ts) to what it measured.
 */
export interface AnalysisRequest {
  readonly experimentId: string;
  readonly spec: ExperimentSpec;
  /** The run's window; the analyzer excludes its warm-up from the start. */
  readonly window: { readonly start: Date; readonly end: Date };
}

export interface Analyzer {
  /**
   * Measures both variants. Missing data is reported as nulls (the verdict makes it inconclusive), not
   * thrown; a throw means the measuring itself failed (backend unreachable) and may be retried.
   */
  measure(request: AnalysisRequest): Promise<Measurements>;
}

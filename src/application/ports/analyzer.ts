import type { ProbeFindings } from '../../domain/early-abort.js';
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

/** A look at a running experiment: what is wrong with it now (see domain/early-abort.ts). */
export interface ProbeRequest {
  readonly experimentId: string;
  readonly spec: ExperimentSpec;
  /** When the run started: collector health counts restarts and drops since then. */
  readonly runStartedAt: Date;
}

export interface Analyzer {
  /**
   * Measures both variants. Missing data is reported as nulls (the verdict makes it inconclusive), not
   * thrown; a throw means the measuring itself failed (backend unreachable) and may be retried.
   */
  measure(request: AnalysisRequest): Promise<Measurements>;
  /**
   * Cheap look at a running experiment: the critical processes the candidate is missing now, and the
   * collectors' restarts and dropped points since the run started. Unknowns are nulls, never guesses;
   * a throw means the backend could not be asked (the next probe asks again).
   */
  probe(request: ProbeRequest): Promise<ProbeFindings>;
}

/**
 * The part of a run's window that is measured: the warm-up (at most a quarter of the window) excluded
 * from its start, the end clamped to now; null when less than a second is left.
 */
export const measuredRange = (
  window: AnalysisRequest['window'],
  warmupSeconds: number,
  now: Date,
): { start: Date; end: Date; warmupSeconds: number } | null => {
  const length = (window.end.getTime() - window.start.getTime()) / 1000;
  const warmup = Math.max(0, Math.min(warmupSeconds, Math.floor(length / 4)));
  const start = new Date(window.start.getTime() + warmup * 1000);
  const end = new Date(Math.min(window.end.getTime(), now.getTime()));
  return end.getTime() - start.getTime() < 1000 ? null : { start, end, warmupSeconds: warmup };
};

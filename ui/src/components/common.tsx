import type { ReactNode } from 'react';
import { ApiError } from '../api';
import type { Analysis, CriterionCheck, State } from '../types';

export function StateBadge({ state }: { state: State }) {
  return <span className={`badge state-${state}`}>{state}</span>;
}

export function VerdictBadge({ verdict }: { verdict: Analysis['verdict'] | undefined }) {
  if (!verdict) return <span className="muted">—</span>;
  return <span className={`badge verdict-${verdict}`}>{verdict}</span>;
}

export function OutcomeBadge({ outcome }: { outcome: CriterionCheck['outcome'] }) {
  const text = outcome === 'no_data' ? 'no data' : outcome;
  return <span className={`badge outcome-${outcome}`}>{text}</span>;
}

/** An error from the API (or anything else) in words, announced to screen readers. */
export function ErrorBox({ error, children }: { error: unknown; children?: ReactNode }) {
  if (!error) return null;
  const message =
    error instanceof ApiError
      ? `${error.problem.title} (${error.status}): ${error.problem.detail}`
      : error instanceof Error
        ? error.message
        : String(error);
  return (
    <div className="error-box" role="alert">
      <p>{message}</p>
      {children}
    </div>
  );
}

/** The checks of an analysis: the criteria table's rows (older analyses keep them in the evidence). */
export const checksOf = (analysis: Analysis | undefined): CriterionCheck[] => {
  if (!analysis) return [];
  if (analysis.checks) return analysis.checks;
  const fromEvidence = analysis.evidence?.checks;
  return Array.isArray(fromEvidence) ? (fromEvidence as CriterionCheck[]) : [];
};

/** The collector CPU change of an analysis, in %. */
export const cpuOverheadOf = (analysis: Analysis | undefined): number | null => {
  const check = checksOf(analysis).find((c) => c.criterion === 'maxCollectorCpuOverheadPct');
  if (check) return check.value;
  const v = analysis?.evidence?.collectorCpuOverheadPct;
  return typeof v === 'number' ? v : null;
};

/**
 * A table that may be wider than the screen (a phone): it scrolls sideways, so it is a named region a
 * keyboard can reach and scroll.
 */
export function TableWrap({ label, children }: { label: string; children: ReactNode }) {
  return (
    // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling region must be reachable by keyboard
    <section className="table-wrap" aria-label={label} tabIndex={0}>
      {children}
    </section>
  );
}

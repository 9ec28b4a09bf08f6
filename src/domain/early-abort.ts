import type { Variant } from './experiment-spec.js';

/**
 * Early abort: while an experiment runs, the saga probes it periodically (the analyzer's cheap
 * `probe`) and this pure function decides from what the probes found, and what earlier probes found,
 * whether the run must stop now:
 *
 * - a collector of either variant that restarted or dropped data since the run started makes the
 *   comparison worthless at once (no grace: its counters, and what it exported, are broken);
 * - a critical process missing from the candidate is tolerated for `criticalGraceSeconds` (a process
 *   that restarts, or a scrape that raced its start, is missing for a moment), counted from the first
 *   probe that found it missing and still finds it missing; it fails the run once it has been missing
 *   for that long.
 *
 * The history is the experiment's own: an `ExperimentProbed` event records since when each process has
 * been missing whenever that set changes (probes that change nothing record nothing), so the decision
 * survives restarts and does not depend on which process probes.
 */

export const DEFAULT_CRITICAL_GRACE_SECONDS = 120;

/** At most this many missing processes are remembered (the earliest); enough to decide and to show. */
export const MAX_TRACKED_MISSING = 500;

export interface CollectorHealth {
  /** Restarts since the run started; null = unknown. */
  readonly restarts: number | null;
  /** Points dropped, refused or failed to export since the run started; null = unknown. */
  readonly droppedPoints: number | null;
}

/** What one probe found. */
export interface ProbeFindings {
  /** When the data looked at was current. */
  readonly at: string;
  /** Critical `node/executable` pairs present in the baseline and missing from the candidate; null = could not tell. */
  readonly missingCriticalProcesses: readonly string[] | null;
  readonly collectorHealth: Readonly<Record<Variant, CollectorHealth>>;
  /** How the probe looked (source, queries), kept with the evidence. */
  readonly detail?: Readonly<Record<string, unknown>> | undefined;
}

/** A critical process missing from the candidate, and since when. */
export interface MissingSince {
  readonly process: string;
  readonly since: string;
}

/** The evidence an early abort carries (on ExperimentFailed, shown as `abort` on the resource). */
export interface AbortEvidence {
  readonly kind: 'critical_process_missing' | 'collector_unhealthy';
  readonly at: string;
  readonly graceSeconds: number;
  /** The processes missing longer than the grace, with since when (at most 50 listed). */
  readonly missingCriticalProcesses: readonly (MissingSince & { readonly seconds: number })[];
  /** The variants whose collector restarted or dropped data, with the counts. */
  readonly unhealthyCollectors: readonly ({ readonly variant: Variant } & CollectorHealth)[];
  /** The probe that decided. */
  readonly probe: ProbeFindings;
}

export type ProbeAssessment =
  | { readonly action: 'none' }
  /** The set of missing processes changed: record it (an ExperimentProbed event). */
  | { readonly action: 'record'; readonly missing: readonly MissingSince[] }
  | { readonly action: 'abort'; readonly reason: string; readonly evidence: AbortEvidence };

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * Decides from the missing processes recorded so far (`tracked`, from earlier probes) and a new probe
 * whether to abort, record the change, or do nothing. Pure: time comes from the probe.
 */
export const assessProbe = (
  tracked: readonly MissingSince[],
  probe: ProbeFindings,
  graceSeconds: number = DEFAULT_CRITICAL_GRACE_SECONDS,
): ProbeAssessment => {
  const at = Date.parse(probe.at);
  const unhealthy = (['baseline', 'candidate'] as const).flatMap((variant) => {
    const h = probe.collectorHealth[variant];
    return (h.restarts ?? 0) > 0 || (h.droppedPoints ?? 0) > 0 ? [{ variant, ...h }] : [];
  });
  // Unknown (null) leaves what is tracked as it is: no evidence either way.
  let missing: MissingSince[] = [...tracked];
  if (probe.missingCriticalProcesses !== null) {
    const since = new Map(tracked.map((m) => [m.process, m.since]));
    missing = [...new Set(probe.missingCriticalProcesses)]
      .map((process) => ({ process, since: since.get(process) ?? probe.at }))
      .sort((a, b) => Date.parse(a.since) - Date.parse(b.since) || (a.process < b.process ? -1 : 1))
      .slice(0, MAX_TRACKED_MISSING);
  }
  const overdue = missing
    .map((m) => ({ ...m, seconds: Math.round((at - Date.parse(m.since)) / 1000) }))
    .filter((m) => at - Date.parse(m.since) >= graceSeconds * 1000);
  if (unhealthy.length > 0 || overdue.length > 0) {
    const parts: string[] = [];
    for (const u of unhealthy) {
      const what = [
        (u.restarts ?? 0) > 0 ? `restarted ${plural(u.restarts ?? 0, 'time')}` : '',
        (u.droppedPoints ?? 0) > 0 ? `dropped ${plural(u.droppedPoints ?? 0, 'point')}` : '',
      ].filter(Boolean);
      parts.push(`the ${u.variant} collector ${what.join(' and ')} since the run started`);
    }
    if (overdue.length > 0) {
      const named = overdue
        .slice(0, 5)
        .map((m) => m.process)
        .join(', ');
      const more = overdue.length > 5 ? ` and ${overdue.length - 5} more` : '';
      parts.push(
        `${plural(overdue.length, 'critical process')} missing from the candidate for more than ${graceSeconds} s: ${named}${more}`,
      );
    }
    return {
      action: 'abort',
      reason: `early abort: ${parts.join('; ')}`,
      evidence: {
        kind: unhealthy.length > 0 ? 'collector_unhealthy' : 'critical_process_missing',
        at: probe.at,
        graceSeconds,
        missingCriticalProcesses: overdue.slice(0, 50),
        unhealthyCollectors: unhealthy,
        probe: {
          ...probe,
          missingCriticalProcesses: probe.missingCriticalProcesses?.slice(0, 50) ?? null,
        },
      },
    };
  }
  const same =
    missing.length === tracked.length &&
    missing.every((m, i) => m.process === tracked[i]?.process && m.since === tracked[i]?.since);
  return same ? { action: 'none' } : { action: 'record', missing };
};

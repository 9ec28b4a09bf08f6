import type { StoredEvent } from '../application/ports/event-store.js';
import type { ExistingExperiment, ExperimentEvent } from '../domain/experiment.js';

/**
 * How an experiment's raw events and folded state are shown, the same at the API
 * (`/events`, `/state`) and at the CLI (`phoenix events`, `phoenix state`).
 */
export const eventView = (e: StoredEvent<ExperimentEvent>) => ({
  version: e.version,
  position: e.position,
  type: e.type,
  data: e.data,
  metadata: e.metadata,
});

/** The folded state up to the last of `upTo` (which must not be empty). */
export const stateView = (s: ExistingExperiment, upTo: readonly StoredEvent<ExperimentEvent>[]) => {
  const last = upTo[upTo.length - 1]!;
  return {
    id: s.id,
    state: s.status,
    ...s.spec,
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    ...(s.startedAt ? { startedAt: s.startedAt } : {}),
    ...(s.runStartedAt ? { runStartedAt: s.runStartedAt } : {}),
    ...(s.runEndsAt ? { runEndsAt: s.runEndsAt } : {}),
    ...(s.endedAt ? { endedAt: s.endedAt } : {}),
    ...(s.statusReason ? { statusReason: s.statusReason } : {}),
    deployments: s.deployments,
    ...(s.analysis ? { analysis: s.analysis } : {}),
    ...(s.promotion ? { promotion: s.promotion } : {}),
    ...(s.rejudgements ? { rejudgements: s.rejudgements } : {}),
    ...(s.abort ? { abort: s.abort } : {}),
    ...(s.probeMissing && s.probeMissing.length > 0 ? { probeMissing: s.probeMissing } : {}),
    version: upTo.length,
    position: last.position,
    at: last.metadata.occurredAt,
  };
};

/** Time travel: the events up to version N, or those that occurred at or before `at`. */
export function eventsUpTo(
  events: readonly StoredEvent<ExperimentEvent>[],
  point: { version?: number | undefined; at?: string | undefined },
): StoredEvent<ExperimentEvent>[] {
  if (point.version !== undefined) return events.filter((e) => e.version <= point.version!);
  if (point.at !== undefined) {
    const at = Date.parse(point.at);
    return events.filter((e) => Date.parse(e.metadata.occurredAt) <= at);
  }
  return [...events];
}

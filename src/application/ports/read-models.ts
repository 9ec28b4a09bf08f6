import type { ExperimentStatus, Promotion, Rejudgement } from '../../domain/experiment.js';
import type { Analysis, ExperimentSpec, Variant } from '../../domain/experiment-spec.js';
import type { Position } from './event-store.js';

/**
 * The read side as the API, the CLI and the sagas see it: answers from PostgreSQL read models that
 * projections build from the events. Eventually consistent; `waitFor` gives read-your-writes.
 */

export interface DeploymentView {
  readonly status: 'deployed' | 'failed' | 'torn_down';
  readonly at: string;
  readonly reason?: string;
  readonly detail?: Readonly<Record<string, unknown>>;
}

/** An experiment as `GET /api/v1/experiments/{id}` returns it: the create body plus its state. */
export interface ExperimentView extends ExperimentSpec {
  readonly id: string;
  readonly state: ExperimentStatus;
  readonly version: number;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly startedAt?: string;
  readonly runEndsAt?: string;
  readonly endedAt?: string;
  readonly statusReason?: string;
  readonly deployments?: Readonly<Partial<Record<Variant, DeploymentView>>>;
  readonly analysis?: Analysis;
  readonly promotion?: Promotion;
  /** Other criteria applied to the stored evidence, oldest first (issue 20 §3); `analysis` stays the verdict. */
  readonly rejudgements?: readonly Rejudgement[];
}

export interface HistoryEntry {
  readonly from: ExperimentStatus | null;
  readonly to: ExperimentStatus;
  readonly reason: string;
  readonly actor: string;
  readonly at: string;
  /** Time spent in `from` (null for creation). */
  readonly durationMs: number | null;
}

export interface AuditEntry extends HistoryEntry {
  readonly experimentId: string;
  readonly experimentName: string;
  readonly correlationId: string;
}

export interface AuditFilter {
  readonly experimentId?: string;
  readonly actor?: string;
  readonly fromState?: ExperimentStatus;
  readonly toState?: ExperimentStatus;
  readonly since?: Date;
  readonly until?: Date;
}

export interface Page<T> {
  readonly items: readonly T[];
  readonly nextCursor: string | null;
}

export interface ReadModels {
  getExperiment(id: string): Promise<ExperimentView | undefined>;
  /** Newest first. @throws InvalidCursorError */
  listExperiments(query: {
    state?: ExperimentStatus;
    limit: number;
    cursor?: string;
  }): Promise<Page<ExperimentView>>;
  /** The experiment's transitions in order; undefined when the experiment is unknown. */
  getHistory(id: string): Promise<readonly HistoryEntry[] | undefined>;
  /** Oldest first. @throws InvalidCursorError */
  queryAudit(filter: AuditFilter, page: { limit: number; cursor?: string }): Promise<Page<AuditEntry>>;
  /** Every matching entry, oldest first, read in pages (for CSV and CLI export). */
  streamAudit(filter: AuditFilter): AsyncIterable<AuditEntry>;
  countByState(): Promise<Readonly<Record<ExperimentStatus, number>>>;
  /** The global position the read models have applied, START if none. */
  appliedPosition(): Promise<Position>;
  /** Resolves true once the read models have applied `position`; false after `timeoutMs`. */
  waitFor(position: Position, timeoutMs: number): Promise<boolean>;
}

/** A pagination cursor that this service did not hand out (or that no longer parses). */
export class InvalidCursorError extends Error {
  readonly code = 'invalid_cursor';
}

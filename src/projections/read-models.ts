import type { EventEmitter } from 'node:events';
import { type Kysely, type SelectQueryBuilder, sql } from 'kysely';
import type { Db, PhoenixTables } from '../application/ports/database.js';
import { type Position, START } from '../application/ports/event-store.js';
import {
  type AuditEntry,
  type AuditFilter,
  type ExperimentView,
  type HistoryEntry,
  InvalidCursorError,
  type Page,
  type ReadModels,
} from '../application/ports/read-models.js';
import { type ExperimentStatus, STATUSES } from '../domain/experiment.js';
import type { Analysis, ExperimentSpec } from '../domain/experiment-spec.js';
import { type CursorCodec, cursorCodec } from './cursor.js';
import type { ExperimentRow } from './experiment-read-models.js';
import { readCheckpoint } from './runner.js';

/**
 * The ReadModels port on the live read-model tables (migrations/002), through Kysely. Reads only;
 * the projection runner writes. `waitFor` polls the checkpoint (cheap: one primary-key row), and is
 * woken at once when a runner in this process applies a batch.
 */

interface StateRow {
  experiment_id: string;
  version: number;
  state: ExperimentStatus;
  previous_state: ExperimentStatus | null;
  transition_reason: string;
  duration_ms: string | number | null;
  metadata: unknown;
  created_at: Date;
  created_by: string;
}

interface TransitionRow {
  experiment_id: string;
  version: number;
  experiment_name: string;
  from_state: ExperimentStatus | null;
  to_state: ExperimentStatus;
  actor: string;
  reason: string;
  duration_ms: string | number | null;
  correlation_id: string;
  success: boolean;
  error_message: string | null;
  metadata: unknown;
  created_at: Date;
}

/** The read-model tables this module queries through Kysely's builder (besides the shared ones). */
export type ReadModelTables = {
  experiments: ExperimentRow;
  experiment_states: StateRow;
  state_transitions: TransitionRow;
  experiment_state_counts: { state: ExperimentStatus; count: string | number };
};
export type ReadModelSchema = PhoenixTables & ReadModelTables;

export interface ReadModelQueryOptions {
  /** The checkpoint whose position `appliedPosition` reports. */
  readonly checkpoint: string;
  /** Signs pagination cursors; without it cursors are checked against a fixed key (tamper-evident only). */
  readonly cursorSecret?: string | undefined;
  /** Emits `applied` when a runner of this process commits a batch: wakes waitFor at once. */
  readonly applied?: EventEmitter | undefined;
  /** Poll interval of waitFor when nothing wakes it (default 25 ms). */
  readonly pollMs?: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const AUDIT_PAGE = 1_000;

const num = (v: string | number | null): number | null => (v === null ? null : Number(v));

export const experimentView = (row: ExperimentRow): ExperimentView => {
  const spec: ExperimentSpec = row.spec;
  const deployments = row.deployments;
  return {
    ...spec,
    id: row.id,
    state: row.state,
    version: row.version,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    ...(row.started_at ? { startedAt: row.started_at.toISOString() } : {}),
    ...(row.run_ends_at ? { runEndsAt: row.run_ends_at.toISOString() } : {}),
    ...(row.ended_at ? { endedAt: row.ended_at.toISOString() } : {}),
    ...(row.status_reason !== null ? { statusReason: row.status_reason } : {}),
    ...(Object.keys(deployments).length > 0
      ? { deployments: deployments as ExperimentView['deployments'] }
      : {}),
    ...(row.analysis ? { analysis: row.analysis as Analysis } : {}),
    ...(row.promotion ? { promotion: row.promotion } : {}),
    ...(row.rejudgements && row.rejudgements.length > 0 ? { rejudgements: row.rejudgements } : {}),
  };
};

const auditEntry = (r: TransitionRow): AuditEntry => ({
  experimentId: r.experiment_id,
  experimentName: r.experiment_name,
  from: r.from_state,
  to: r.to_state,
  actor: r.actor,
  reason: r.reason,
  at: r.created_at.toISOString(),
  durationMs: num(r.duration_ms),
  correlationId: r.correlation_id,
});

/** The filter as cursors see it (dates as ISO, so that equal filters digest equally). */
const filterKey = (f: AuditFilter) => [
  f.experimentId ?? null,
  f.actor ?? null,
  f.fromState ?? null,
  f.toState ?? null,
  f.since?.toISOString() ?? null,
  f.until?.toISOString() ?? null,
];

export interface AuditAfter {
  readonly at: string;
  readonly experimentId: string;
  readonly version: number;
}

/**
 * The audit query, oldest first on (created_at, experiment_id, version); `since` inclusive, `until`
 * inclusive. Exported so the partition/index test can EXPLAIN exactly what queryAudit runs.
 */
export function auditQuery(
  db: Kysely<ReadModelSchema>,
  filter: AuditFilter,
  after: AuditAfter | undefined,
  limit: number,
): SelectQueryBuilder<ReadModelSchema, 'state_transitions', TransitionRow> {
  let q = db.selectFrom('state_transitions').selectAll();
  if (filter.experimentId !== undefined) {
    if (!UUID.test(filter.experimentId)) q = q.where(sql<boolean>`false`);
    else q = q.where('experiment_id', '=', filter.experimentId);
  }
  if (filter.actor !== undefined) q = q.where('actor', '=', filter.actor);
  if (filter.fromState !== undefined) q = q.where('from_state', '=', filter.fromState);
  if (filter.toState !== undefined) q = q.where('to_state', '=', filter.toState);
  if (filter.since !== undefined) q = q.where('created_at', '>=', filter.since);
  if (filter.until !== undefined) q = q.where('created_at', '<=', filter.until);
  if (after) {
    q = q.where(
      sql<boolean>`(created_at, experiment_id, version) > (${after.at}::timestamptz, ${after.experimentId}::uuid, ${after.version}::int)`,
    );
  }
  return q.orderBy('created_at').orderBy('experiment_id').orderBy('version').limit(limit);
}

export class PostgresReadModels implements ReadModels {
  readonly #db: Kysely<ReadModelSchema>;
  readonly #shared: Db;
  readonly #checkpoint: string;
  readonly #cursors: CursorCodec;
  readonly #applied: EventEmitter | undefined;
  readonly #pollMs: number;

  constructor(db: Db, options: ReadModelQueryOptions) {
    this.#db = db.withTables<ReadModelTables>();
    this.#shared = db;
    this.#checkpoint = options.checkpoint;
    this.#cursors = cursorCodec(options.cursorSecret ?? 'phoenix read-model cursors');
    this.#applied = options.applied;
    this.#pollMs = options.pollMs ?? 25;
  }

  async getExperiment(id: string): Promise<ExperimentView | undefined> {
    if (!UUID.test(id)) return undefined;
    const row = await this.#db.selectFrom('experiments').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? experimentView(row) : undefined;
  }

  async listExperiments(query: {
    state?: ExperimentStatus;
    limit: number;
    cursor?: string;
  }): Promise<Page<ExperimentView>> {
    const filter = query.state ?? null;
    let q = this.#db.selectFrom('experiments').selectAll();
    if (query.state !== undefined) q = q.where('state', '=', query.state);
    if (query.cursor !== undefined) {
      const key = this.#cursors.decode('experiments', filter, query.cursor);
      const [at, id] = key;
      if (
        typeof at !== 'string' ||
        typeof id !== 'string' ||
        !UUID.test(id) ||
        Number.isNaN(Date.parse(at))
      ) {
        throw new InvalidCursorError('malformed cursor');
      }
      q = q.where(sql<boolean>`(created_at, id) < (${at}::timestamptz, ${id}::uuid)`);
    }
    const rows = await q
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(query.limit + 1)
      .execute();
    const page = rows.slice(0, query.limit);
    const last = page[page.length - 1];
    return {
      items: page.map(experimentView),
      nextCursor:
        rows.length > query.limit && last
          ? this.#cursors.encode('experiments', filter, [last.created_at.toISOString(), last.id])
          : null,
    };
  }

  async getHistory(id: string): Promise<readonly HistoryEntry[] | undefined> {
    if (!UUID.test(id)) return undefined;
    const rows = await this.#db
      .selectFrom('experiment_states')
      .selectAll()
      .where('experiment_id', '=', id)
      .orderBy('version')
      .execute();
    if (rows.length === 0) return undefined;
    return rows.map((r) => ({
      from: r.previous_state,
      to: r.state,
      reason: r.transition_reason,
      actor: r.created_by,
      at: r.created_at.toISOString(),
      durationMs: num(r.duration_ms),
    }));
  }

  async queryAudit(filter: AuditFilter, page: { limit: number; cursor?: string }): Promise<Page<AuditEntry>> {
    let after: AuditAfter | undefined;
    if (page.cursor !== undefined) {
      const [at, experimentId, version] = this.#cursors.decode('audit', filterKey(filter), page.cursor);
      if (
        typeof at !== 'string' ||
        Number.isNaN(Date.parse(at)) ||
        typeof experimentId !== 'string' ||
        !UUID.test(experimentId) ||
        typeof version !== 'number' ||
        !Number.isInteger(version)
      ) {
        throw new InvalidCursorError('malformed cursor');
      }
      after = { at, experimentId, version };
    }
    const rows = await auditQuery(this.#db, filter, after, page.limit + 1).execute();
    const items = rows.slice(0, page.limit);
    const last = items[items.length - 1];
    return {
      items: items.map(auditEntry),
      nextCursor:
        rows.length > page.limit && last
          ? this.#cursors.encode('audit', filterKey(filter), [
              last.created_at.toISOString(),
              last.experiment_id,
              last.version,
            ])
          : null,
    };
  }

  async *streamAudit(filter: AuditFilter): AsyncIterable<AuditEntry> {
    let after: AuditAfter | undefined;
    for (;;) {
      const rows = await auditQuery(this.#db, filter, after, AUDIT_PAGE).execute();
      for (const r of rows) yield auditEntry(r);
      const last = rows[rows.length - 1];
      if (rows.length < AUDIT_PAGE || !last) return;
      after = { at: last.created_at.toISOString(), experimentId: last.experiment_id, version: last.version };
    }
  }

  async countByState(): Promise<Readonly<Record<ExperimentStatus, number>>> {
    const rows = await this.#db.selectFrom('experiment_state_counts').selectAll().execute();
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<ExperimentStatus, number>;
    for (const r of rows) if (r.state in counts) counts[r.state] = Number(r.count);
    return counts;
  }

  appliedPosition(): Promise<Position> {
    return readCheckpoint(this.#shared, this.#checkpoint);
  }

  async waitFor(position: Position, timeoutMs: number): Promise<boolean> {
    if (position === START) return true;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if ((await this.appliedPosition()) >= position) return true;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#applied?.off('applied', onApplied);
          resolve();
        };
        const onApplied = (p: Position) => {
          if (p >= position) done();
        };
        const timer = setTimeout(done, Math.min(this.#pollMs, left));
        this.#applied?.on('applied', onApplied);
      });
    }
  }
}

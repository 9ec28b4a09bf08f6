import { sql } from 'kysely';
import {
  type ExistingExperiment,
  type Experiment,
  type ExperimentEvent,
  type ExperimentStatus,
  evolve,
  initialState,
  reasonOf,
  statusAfter,
} from '../domain/experiment.js';
import type { ExperimentSpec } from '../domain/experiment-spec.js';
import { experimentIdOf, STREAM_PREFIX } from '../handlers/experiment-commands.js';
import type { Position, StoredEvent } from '../handlers/ports/event-store.js';
import type { Db, ProjectionHandler, Tx } from './runner.js';

/**
 * The experiment read models, all four written from one fold of each batch (migrations/002):
 * - `experiments`: what is each experiment now? (GET /experiments[/{id}])
 * - `experiment_states`: how did it get there? (GET /experiments/{id}/history)
 * - `state_transitions`: who moved what, when? (GET /audit), partitioned by month
 * - `experiment_state_counts`: how many are in each state? (phoenix_experiments_by_state)
 *
 * The current state is folded with the domain's own `evolve`, so the read model can never disagree
 * with the aggregate. Idempotent on its own too: an event at or below a row's version changes nothing,
 * and one that skips a version is an error (never silently applied out of order).
 */

export const READ_MODELS = 'read-models';
/** The live set of tables and the one a rebuild fills (see migrations/002). */
export const LIVE_SUFFIX = '';
export const NEXT_SUFFIX = '__next';

export const tableNames = (suffix: string) => ({
  experiments: `experiments${suffix}`,
  states: `experiment_states${suffix}`,
  transitions: `state_transitions${suffix}`,
  counts: `experiment_state_counts${suffix}`,
});

export interface ExperimentReadModelOptions {
  /** Which set of tables to write: LIVE_SUFFIX (default) or NEXT_SUFFIX. */
  readonly suffix?: string;
  /**
   * Keep up to this many experiments' folded state between batches instead of reading their rows
   * back (default 0). Only for a writer that fills empty tables alone, i.e. a rebuild: it then knows
   * which rows exist without asking. Such a writer cannot recover from a failed batch (reset() throws)
   * and the rebuild starts over instead.
   */
  readonly cacheSize?: number;
  /** Create partitions this many months ahead in maintain() (default 3). */
  readonly monthsAhead?: number;
  /**
   * Write `experiment_states` too (default true). A rebuild leaves it out while it bulk-loads and
   * fills it afterwards from `state_transitions` (fillHistory), which holds the same rows: one
   * server-side INSERT … SELECT instead of sending every transition twice.
   */
  readonly withHistory?: boolean;
}

/** The history rows (experiment_states) of the transition rows in `from` (state_transitions' columns). */
const historyFromTransitions = (states: string, from: ReturnType<typeof sql>) => sql`
  insert into ${sql.table(states)} (experiment_id, version, state, previous_state, transition_reason,
    duration_ms, metadata, created_at, created_by)
  select experiment_id, version, to_state, from_state, reason, duration_ms, metadata, created_at, actor
    from ${from}`;

/** Fills `experiment_states<suffix>` from `state_transitions<suffix>` (see `withHistory`). */
export async function fillHistory(db: Db | Tx, suffix: string): Promise<void> {
  const t = tableNames(suffix);
  await sql`${historyFromTransitions(t.states, sql.table(t.transitions))}`.execute(db);
}

interface Entry {
  state: Experiment;
  version: number;
  /** When the current state was entered (ISO). */
  enteredAt: string | undefined;
  position: Position;
  /** The row exists in the table (else this batch creates it). */
  stored: boolean;
}

interface ExperimentRowIn {
  id: string;
  name: string;
  state: ExperimentStatus;
  version: number;
  spec: ExperimentSpec | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  run_started_at: string | null;
  run_ends_at: string | null;
  ended_at: string | null;
  status_reason: string | null;
  deployments: unknown;
  analysis: unknown;
  analysis_attempts: number;
  state_entered_at: string;
  position: string;
}

interface TransitionRowIn {
  experiment_id: string;
  version: number;
  experiment_name: string;
  from_state: ExperimentStatus | null;
  to_state: ExperimentStatus;
  actor: string;
  reason: string;
  duration_ms: number | null;
  correlation_id: string;
  causation_id: string | null;
  event_id: string;
  event_type: string;
  position: string;
  created_at: string;
}

/** Row of `experiments` as read back (pg returns timestamps as Date). */
export interface ExperimentRow {
  id: string;
  name: string;
  state: ExperimentStatus;
  version: number;
  spec: ExperimentSpec;
  created_at: Date;
  updated_at: Date;
  started_at: Date | null;
  run_started_at: Date | null;
  run_ends_at: Date | null;
  ended_at: Date | null;
  status_reason: string | null;
  deployments: ExistingExperiment['deployments'];
  analysis: ExistingExperiment['analysis'] | null;
  analysis_attempts: number;
  state_entered_at: Date;
  position: string;
}

/** Every timestamp in the read models is the event's, normalised to UTC milliseconds. */
const iso = (at: string | Date): string => (at instanceof Date ? at : new Date(at)).toISOString();
const isoOrNull = (at: string | Date | null | undefined): string | null =>
  at === null || at === undefined ? null : iso(at);
const opt = (d: Date | null): string | undefined => (d === null ? undefined : d.toISOString());

export const experimentOfRow = (row: ExperimentRow): ExistingExperiment => ({
  status: row.state,
  id: row.id,
  spec: row.spec,
  createdAt: row.created_at.toISOString(),
  updatedAt: row.updated_at.toISOString(),
  startedAt: opt(row.started_at),
  runStartedAt: opt(row.run_started_at),
  runEndsAt: opt(row.run_ends_at),
  endedAt: opt(row.ended_at),
  deployments: row.deployments,
  analysis: row.analysis ?? undefined,
  analysisAttempts: row.analysis_attempts,
  statusReason: row.status_reason ?? undefined,
});

const EXPERIMENT_COLUMNS = sql.raw(`id uuid, name text, state text, version int, spec jsonb,
  created_at timestamptz, updated_at timestamptz, started_at timestamptz, run_started_at timestamptz,
  run_ends_at timestamptz, ended_at timestamptz, status_reason text, deployments jsonb, analysis jsonb,
  analysis_attempts int, state_entered_at timestamptz, position text`);

const monthOf = (isoAt: string): string => isoAt.slice(0, 7);

export function experimentReadModels(
  options: ExperimentReadModelOptions = {},
): ProjectionHandler<ExperimentEvent> & { readonly suffix: string } {
  const suffix = options.suffix ?? LIVE_SUFFIX;
  const t = tableNames(suffix);
  const cacheSize = options.cacheSize ?? 0;
  const monthsAhead = options.monthsAhead ?? 3;
  const withHistory = options.withHistory ?? true;
  const cache = new Map<string, Entry>();
  /** With the cache: ids whose rows were written and then dropped from the cache (read them back). */
  const evicted = new Set<string>();
  /** Months known to have a partition (a rolled-back batch may be wrong: reset() forgets them). */
  const months = new Set<string>();

  async function load(tx: Tx, ids: readonly string[], into: Map<string, Entry>): Promise<void> {
    const missing: string[] = [];
    for (const id of ids) {
      const hit = cache.get(id);
      if (hit) {
        into.set(id, hit);
        cache.delete(id); // re-inserted after the batch: most recently used last
      } else if (cacheSize === 0 || evicted.delete(id)) missing.push(id);
      // else: with the cache, an id never seen is an experiment this batch creates
    }
    if (missing.length === 0) return;
    const { rows } = await sql<ExperimentRow>`
      select * from ${sql.table(t.experiments)} where id = any(${missing}::uuid[])`.execute(tx);
    for (const row of rows) {
      into.set(row.id, {
        state: experimentOfRow(row),
        version: row.version,
        enteredAt: row.state_entered_at.toISOString(),
        position: row.position,
        stored: true,
      });
    }
  }

  async function ensurePartitions(tx: Tx | Db, ats: readonly string[]): Promise<void> {
    let min: string | undefined;
    let max: string | undefined;
    for (const at of ats) {
      if (months.has(monthOf(at))) continue;
      if (min === undefined || at < min) min = at;
      if (max === undefined || at > max) max = at;
    }
    if (min === undefined || max === undefined) return;
    await sql`select phoenix_ensure_transition_partitions(${suffix}, ${min}::timestamptz, ${max}::timestamptz)`.execute(
      tx,
    );
    for (
      let d = new Date(`${monthOf(min)}-01T00:00:00Z`);
      iso(d) <= max;
      d.setUTCMonth(d.getUTCMonth() + 1)
    ) {
      months.add(monthOf(iso(d)));
    }
  }

  return {
    name: READ_MODELS,
    suffix,
    sideEffects: false,

    async apply(tx: Tx, events: readonly StoredEvent<ExperimentEvent>[]): Promise<void> {
      const ids = new Set<string>();
      for (const e of events) if (e.streamId.startsWith(STREAM_PREFIX)) ids.add(experimentIdOf(e.streamId));
      if (ids.size === 0) return;
      const entries = new Map<string, Entry>();
      await load(tx, [...ids], entries);

      const transitions: TransitionRowIn[] = [];
      const deltas = new Map<ExperimentStatus, number>();
      const touched = new Set<string>();
      for (const e of events) {
        if (!e.streamId.startsWith(STREAM_PREFIX)) continue;
        const id = experimentIdOf(e.streamId);
        const entry = entries.get(id) ?? {
          state: initialState(),
          version: 0,
          enteredAt: undefined,
          position: '',
          stored: false,
        };
        if (e.version <= entry.version) continue; // applied already
        if (e.version !== entry.version + 1) {
          throw new Error(
            `${e.streamId}: event version ${e.version} follows version ${entry.version}; an event is missing`,
          );
        }
        const event = { type: e.type, data: e.data } as ExperimentEvent;
        const before = entry.state;
        const to = statusAfter(event, before);
        const after = evolve(before, event);
        if (after.status === 'empty') {
          throw new Error(`${e.streamId} version ${e.version}: ${e.type} before the experiment was created`);
        }
        let enteredAt = entry.enteredAt;
        if (to !== undefined) {
          const at = iso(e.data.at);
          const from = before.status === 'empty' ? null : before.status;
          transitions.push({
            experiment_id: id,
            version: e.version,
            experiment_name: after.spec.name,
            from_state: from,
            to_state: to,
            actor: e.metadata.actor,
            reason: reasonOf(event),
            duration_ms:
              from !== null && enteredAt !== undefined ? Date.parse(at) - Date.parse(enteredAt) : null,
            correlation_id: e.metadata.correlationId,
            causation_id: e.metadata.causationId,
            event_id: e.metadata.eventId,
            event_type: e.type,
            position: e.position,
            created_at: at,
          });
          if (from !== null) deltas.set(from, (deltas.get(from) ?? 0) - 1);
          deltas.set(to, (deltas.get(to) ?? 0) + 1);
          enteredAt = at;
        }
        entries.set(id, {
          state: after,
          version: e.version,
          enteredAt,
          position: e.position,
          stored: entry.stored,
        });
        touched.add(id);
      }
      if (touched.size === 0) return;

      const created: ExperimentRowIn[] = [];
      const changed: ExperimentRowIn[] = [];
      for (const id of touched) {
        const entry = entries.get(id)!;
        const s = entry.state as ExistingExperiment;
        (entry.stored ? changed : created).push({
          id,
          name: s.spec.name,
          state: s.status,
          version: entry.version,
          spec: entry.stored ? null : s.spec,
          created_at: iso(s.createdAt),
          updated_at: iso(s.updatedAt),
          started_at: isoOrNull(s.startedAt),
          run_started_at: isoOrNull(s.runStartedAt),
          run_ends_at: isoOrNull(s.runEndsAt),
          ended_at: isoOrNull(s.endedAt),
          status_reason: s.statusReason ?? null,
          deployments: s.deployments,
          analysis: s.analysis ?? null,
          analysis_attempts: s.analysisAttempts,
          state_entered_at: entry.enteredAt!,
          position: entry.position,
        });
      }
      const counts = [...deltas].filter(([, d]) => d !== 0).map(([state, delta]) => ({ state, delta }));
      await ensurePartitions(
        tx,
        transitions.map((r) => r.created_at),
      );

      // One statement, one round trip, for all four tables.
      await sql`
        with x_new as (
          insert into ${sql.table(t.experiments)} (id, name, state, version, spec, created_at, updated_at,
            started_at, run_started_at, run_ends_at, ended_at, status_reason, deployments, analysis,
            analysis_attempts, state_entered_at, position)
          select * from jsonb_to_recordset(${JSON.stringify(created)}::jsonb) as r(${EXPERIMENT_COLUMNS})
        ),
        x_changed as (
          -- the spec never changes after creation: updates leave it out (it is most of the payload)
          update ${sql.table(t.experiments)} as e set
            state = r.state, version = r.version, updated_at = r.updated_at, started_at = r.started_at,
            run_started_at = r.run_started_at, run_ends_at = r.run_ends_at, ended_at = r.ended_at,
            status_reason = r.status_reason, deployments = r.deployments, analysis = r.analysis,
            analysis_attempts = r.analysis_attempts, state_entered_at = r.state_entered_at, position = r.position
          from jsonb_to_recordset(${JSON.stringify(changed)}::jsonb) as r(${EXPERIMENT_COLUMNS})
          -- the id list lets the planner reach the rows by primary key whatever it thinks of the table
          where e.id = r.id and e.id = any(${changed.map((r) => r.id)}::uuid[])
        ),
        x_transitions as (
          select r.*, jsonb_build_object('eventId', r.event_id, 'type', r.event_type,
                   'correlationId', r.correlation_id, 'causationId', r.causation_id, 'position', r.position) as metadata
            from jsonb_to_recordset(${JSON.stringify(transitions)}::jsonb) as r(experiment_id uuid, version int,
              experiment_name text, from_state text, to_state text, actor text, reason text, duration_ms bigint,
              correlation_id text, causation_id text, event_id text, event_type text, position text,
              created_at timestamptz)
        ),
        ${withHistory ? sql`x_states as (${historyFromTransitions(t.states, sql`x_transitions`)}),` : sql``}
        x_audit as (
          insert into ${sql.table(t.transitions)} (experiment_id, version, experiment_name, from_state, to_state,
            actor, reason, duration_ms, correlation_id, success, error_message, metadata, created_at)
          select experiment_id, version, experiment_name, from_state, to_state, actor, reason, duration_ms,
                 correlation_id, to_state <> 'failed', case when to_state = 'failed' then reason end, metadata,
                 created_at
            from x_transitions
        ),
        x_counts as (
          update ${sql.table(t.counts)} as c set count = c.count + d.delta
            from jsonb_to_recordset(${JSON.stringify(counts)}::jsonb) as d(state text, delta bigint)
           where c.state = d.state
        )
        select 1`.execute(tx);

      if (cacheSize > 0) {
        for (const [id, entry] of entries) cache.set(id, { ...entry, stored: true });
        while (cache.size > cacheSize) {
          const oldest = cache.keys().next().value!;
          cache.delete(oldest);
          evicted.add(oldest);
        }
      }
    },

    /** Partitions for last month to `monthsAhead` months ahead, so live inserts never wait for DDL. */
    async maintain(db: Db): Promise<void> {
      const now = new Date();
      const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1)).toISOString();
      const to = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + monthsAhead, 1)).toISOString();
      await ensurePartitions(db, [from, to]);
    },

    reset(): void {
      if (cacheSize > 0) throw new Error('a cached read-model writer cannot resume after a failed batch');
      cache.clear();
      months.clear();
    },
  };
}

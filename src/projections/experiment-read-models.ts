import { sql } from 'kysely';
import { LRUCache } from 'lru-cache';
import { experimentIdOf, STREAM_PREFIX } from '../application/experiment-commands.js';
import type { Position, StoredEvent } from '../application/ports/event-store.js';
import {
  type ExistingExperiment,
  type Experiment,
  type ExperimentEvent,
  type ExperimentStatus,
  evolve,
  initialState,
  isPromotionEvent,
  reasonOf,
  statusAfter,
} from '../domain/experiment.js';
import type { ExperimentSpec } from '../domain/experiment-spec.js';
import type { ApplyContext, Db, MissingEvents, ProjectionHandler, Tx } from './runner.js';

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
 *
 * A runner applies each batch and moves its checkpoint in one statement (applyAndCheckpoint, through
 * phoenix_apply_read_models, migrations/050): one round trip and one transaction per batch.
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
   * Keep up to this many experiments' folded state between batches (default 10,000), so that a batch
   * is one round trip instead of two (one to read the rows back). Safe with any other writer: the
   * write checks every row is still at the version the cache had (phoenix_apply_read_models), and
   * when one is not, the batch is folded again from the rows read back.
   */
  readonly cacheSize?: number;
  /** Create partitions this many months ahead in maintain() (default 3). */
  readonly monthsAhead?: number;
}

/** What the projection knows of one experiment while it folds. */
export interface Entry {
  readonly state: Experiment;
  readonly version: number;
  /** When the current state was entered (ISO, and in ms since the epoch). */
  readonly enteredAt: string | undefined;
  readonly enteredMs: number;
  readonly position: Position;
  /** The version of its row in the table; 0 when there is no row (this batch creates it). */
  readonly stored: number;
}

export interface ExperimentRowIn {
  id: string;
  name: string;
  state: ExperimentStatus;
  version: number;
  /** Changed rows only: the version the row is at before this write. */
  from_version?: number;
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
  /** Only once there is one (migrations/060 writes it for the rows that carry it). */
  promotion?: ExistingExperiment['promotion'];
  /** Null when there are none (migrations/054). */
  rejudgements: unknown;
}

export interface TransitionRowIn {
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
  promotion?: ExistingExperiment['promotion'] | null;
  rejudgements: ExistingExperiment['rejudgements'] | null;
}

/** Every timestamp in the read models is the event's, normalised to UTC milliseconds. */
/** Already what toISOString() gives (a valid time, as the codec checks them): kept, not re-parsed. */
const CANONICAL_ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const iso = (at: string | Date): string =>
  typeof at === 'string' && CANONICAL_ISO.test(at)
    ? at
    : (at instanceof Date ? at : new Date(at)).toISOString();
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
  ...(row.promotion ? { promotion: row.promotion } : {}),
  ...(row.rejudgements ? { rejudgements: row.rejudgements } : {}),
});

const monthOf = (isoAt: string): string => isoAt.slice(0, 7);

/** The SQLSTATE phoenix_apply_read_models fails with when rows are not as the writer believed (050). */
export const STALE_ROWS = 'PH409';
const isStale = (err: unknown) => (err as { code?: unknown }).code === STALE_ROWS;

/** An event that does not follow the version the projection has of its experiment. */
export class VersionGapError extends Error implements MissingEvents {
  /** The versions the projection never got (the runner looks them up in the log when it stops). */
  readonly missing: MissingEvents['missing'];
  constructor(streamId: string, version: number, after: number) {
    super(`${streamId}: event version ${version} follows version ${after}; an event is missing`);
    this.missing = { streamId, fromVersion: after + 1, toVersion: version - 1 };
  }
}

/** What one batch changes: the rows to write and the count deltas. */
export interface Folded {
  readonly entries: Map<string, Entry>;
  readonly touched: ReadonlySet<string>;
  readonly transitions: TransitionRowIn[];
  readonly deltas: Map<ExperimentStatus, number>;
}

const NEW_EXPERIMENT: Entry = Object.freeze({
  state: initialState(),
  version: 0,
  enteredAt: undefined,
  enteredMs: Number.NaN,
  position: '',
  stored: 0,
});

/**
 * Folds `events` (in log order) into `entries`, keyed by stream id: a missing stream is an experiment
 * without a row yet. Replaces the entries it changes (never mutates one) and lists every transition.
 * Events at or below an entry's version are applied already and skipped.
 * @throws when an event skips a version or comes before its experiment was created
 */
export function foldEvents(
  events: readonly StoredEvent<ExperimentEvent>[],
  entries: Map<string, Entry>,
): Folded {
  const transitions: TransitionRowIn[] = [];
  const deltas = new Map<ExperimentStatus, number>();
  const touched = new Set<string>();
  for (const e of events) {
    const stream = e.streamId;
    if (!stream.startsWith(STREAM_PREFIX)) continue;
    const entry = entries.get(stream) ?? NEW_EXPERIMENT;
    if (e.version <= entry.version) continue; // applied already
    if (e.version !== entry.version + 1) throw new VersionGapError(e.streamId, e.version, entry.version);
    const event: ExperimentEvent = e;
    const before = entry.state;
    // A promotion's step leaves the experiment completed, and is a row of its history all the same
    // (from completed to completed): history and audit show every step with its actor.
    const step = isPromotionEvent(event) && before.status !== 'empty';
    const to = statusAfter(event, before) ?? (step ? (before as ExistingExperiment).status : undefined);
    const after = evolve(before, event);
    if (after.status === 'empty') {
      throw new Error(`${e.streamId} version ${e.version}: ${e.type} before the experiment was created`);
    }
    let enteredAt = entry.enteredAt;
    let enteredMs = entry.enteredMs;
    if (to !== undefined) {
      const at = iso(e.data.at);
      const atMs = Date.parse(at);
      const from = before.status === 'empty' ? null : before.status;
      transitions.push({
        experiment_id: experimentIdOf(stream),
        version: e.version,
        experiment_name: after.spec.name,
        from_state: from,
        to_state: to,
        actor: e.metadata.actor,
        reason: reasonOf(event),
        duration_ms: from !== null && enteredAt !== undefined && !step ? atMs - enteredMs : null,
        correlation_id: e.metadata.correlationId,
        causation_id: e.metadata.causationId,
        event_id: e.metadata.eventId,
        event_type: e.type,
        position: e.position,
        created_at: at,
      });
      if (!step) {
        if (from !== null) deltas.set(from, (deltas.get(from) ?? 0) - 1);
        deltas.set(to, (deltas.get(to) ?? 0) + 1);
        enteredAt = at;
        enteredMs = atMs;
      }
    }
    entries.set(stream, {
      state: after,
      version: e.version,
      enteredAt,
      enteredMs,
      position: e.position,
      stored: entry.stored,
    });
    touched.add(stream);
  }
  return { entries, touched, transitions, deltas };
}

/** The `experiments` row of a stream's entry (with the spec only when the row is new: it never changes). */
export function experimentRowOf(stream: string, entry: Entry, withSpec: boolean): ExperimentRowIn {
  const s = entry.state as ExistingExperiment;
  return {
    id: experimentIdOf(stream),
    name: s.spec.name,
    state: s.status,
    version: entry.version,
    ...(entry.stored > 0 ? { from_version: entry.stored } : {}),
    spec: withSpec ? s.spec : null,
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
    ...(s.promotion ? { promotion: s.promotion } : {}),
    rejudgements: s.rejudgements ?? null,
  };
}

/** The entry of a row read back from `experiments`. */
export const entryOfRow = (row: ExperimentRow): Entry => ({
  state: experimentOfRow(row),
  version: row.version,
  enteredAt: row.state_entered_at.toISOString(),
  enteredMs: row.state_entered_at.getTime(),
  position: row.position,
  stored: row.version,
});

/** Reads the rows of these experiment streams from `experiments<suffix>` into `into` (by stream id). */
export async function readEntries(
  db: Db | Tx,
  suffix: string,
  streams: readonly string[],
  into: Map<string, Entry>,
): Promise<void> {
  if (streams.length === 0) return;
  const ids = streams.map(experimentIdOf);
  const { rows } = await sql<ExperimentRow>`
    select * from ${sql.table(tableNames(suffix).experiments)} where id = any(${ids}::uuid[])`.execute(db);
  for (const row of rows) into.set(`${STREAM_PREFIX}${row.id}`, entryOfRow(row));
}

/** Where a batch leaves the checkpoint (phoenix_apply_read_models' p_checkpoint… arguments). */
export interface CheckpointMove {
  readonly name: string;
  readonly expected: Position;
  /** The new position; undefined leaves it where it is. */
  readonly position: Position | undefined;
}

/** Months of `state_transitions<suffix>` known to have a partition. */
export class PartitionMonths {
  readonly #known = new Set<string>();

  /** The range of these transition times (ISO) whose months are not known yet, if any. */
  missing(ats: Iterable<string>): [string, string] | undefined {
    let min: string | undefined;
    let max: string | undefined;
    for (const at of ats) {
      if (this.#known.has(monthOf(at))) continue;
      if (min === undefined || at < min) min = at;
      if (max === undefined || at > max) max = at;
    }
    return min === undefined || max === undefined ? undefined : [min, max];
  }

  /** Every month of `range` has a partition now. */
  add(range: readonly [string, string] | undefined): void {
    if (!range) return;
    for (
      let d = new Date(`${monthOf(range[0])}-01T00:00:00Z`);
      iso(d) <= range[1];
      d.setUTCMonth(d.getUTCMonth() + 1)
    ) {
      this.#known.add(monthOf(iso(d)));
    }
  }

  clear(): void {
    this.#known.clear();
  }
}

/** Adds these changes to the counts by state of `suffix` (a write of counts alone). */
export async function writeCountChanges(
  db: Db | Tx,
  suffix: string,
  changes: ReadonlyMap<ExperimentStatus, number>,
): Promise<void> {
  await writeReadModels(db, suffix, new PartitionMonths(), {
    created: [],
    changed: [],
    transitions: [],
    counts: [...changes].map(([state, delta]) => ({ state, delta })),
  });
}

/** An element of an array literal, quoted (so that no text is taken for NULL or a delimiter). */
const quoteElement = (s: string): string => (/["\\]/.test(s) ? `"${s.replace(/["\\]/g, '\\$&')}"` : `"${s}"`);

export interface ReadModelWrite {
  readonly created: readonly ExperimentRowIn[];
  readonly changed: readonly ExperimentRowIn[];
  readonly transitions: readonly TransitionRowIn[];
  readonly counts: readonly { state: ExperimentStatus; delta: number }[];
  /** Given: locked first, moved last, and nothing written unless it is at `expected`. */
  readonly checkpoint?: CheckpointMove | undefined;
}

/**
 * Writes rows to the read models of `suffix` (and their history), in one statement
 * (phoenix_apply_read_models, migrations/050), with the partitions the transitions need. Returns
 * the checkpoint's position before, when one is given.
 * @throws with code STALE_ROWS when a new row exists already or a changed one is not at `from_version`
 */
export async function writeReadModels(
  db: Db | Tx,
  suffix: string,
  months: PartitionMonths,
  write: ReadModelWrite,
): Promise<Position | undefined> {
  const { checkpoint } = write;
  const partitions = months.missing(write.transitions.map((r) => r.created_at));
  const t = write.transitions;
  /**
   * A column as an array literal, what node-postgres would make of it, for less (a rebuild sends
   * millions): `plain` columns are the ones made here of digits, letters, '-', ':' and '.' only.
   */
  const column = (key: keyof TransitionRowIn, plain: boolean): string => {
    const parts = new Array<string>(t.length);
    for (let i = 0; i < t.length; i++) {
      const v = t[i]![key];
      parts[i] = v === null ? 'NULL' : plain ? String(v) : quoteElement(String(v));
    }
    return `{${parts.join(',')}}`;
  };
  const { rows } = await sql<{ stored: string | null }>`
    select phoenix_apply_read_models(${suffix}, ${checkpoint?.name ?? null}, ${checkpoint?.expected ?? null},
      ${checkpoint?.position ?? null}, ${JSON.stringify(write.created)}::jsonb,
      ${JSON.stringify(write.changed)}::jsonb, ${column('experiment_id', false)}::uuid[],
      ${column('version', true)}::int[], ${column('experiment_name', false)}::text[],
      ${column('from_state', true)}::text[], ${column('to_state', true)}::text[], ${column('actor', false)}::text[],
      ${column('reason', false)}::text[], ${column('duration_ms', true)}::bigint[],
      ${column('correlation_id', false)}::text[], ${column('causation_id', false)}::text[],
      ${column('event_id', false)}::text[], ${column('event_type', true)}::text[], ${column('position', true)}::text[],
      ${column('created_at', true)}::timestamptz[],
      ${JSON.stringify(write.counts.filter((c) => c.delta !== 0))}::jsonb,
      ${partitions?.[0] ?? null}::timestamptz, ${partitions?.[1] ?? null}::timestamptz) as stored`.execute(
    db,
  );
  const stored = rows[0]?.stored ?? undefined;
  if (checkpoint === undefined || stored === checkpoint.expected) months.add(partitions);
  return stored;
}

export function experimentReadModels(
  options: ExperimentReadModelOptions = {},
): ProjectionHandler<ExperimentEvent> & { readonly suffix: string } {
  const suffix = options.suffix ?? LIVE_SUFFIX;
  const cacheSize = options.cacheSize ?? 10_000;
  const monthsAhead = options.monthsAhead ?? 3;
  /**
   * Folded experiments, the least recently written evicted first (reads peek: they do not refresh an
   * entry). Trusted only as far as the write checks it: phoenix_apply_read_models refuses (STALE_ROWS)
   * a batch whose rows are not as remembered. With cacheSize 0 nothing is remembered.
   */
  const cache = new LRUCache<string, Entry>({ max: Math.max(1, cacheSize) });
  /** Months known to have a partition (a rolled-back batch may be wrong: reset() forgets them). */
  const months = new PartitionMonths();

  /** Writes a folded batch (and moves the checkpoint, if given) in one statement; the stored position. */
  async function write(
    db: Db | Tx,
    folded: Folded | undefined,
    checkpoint: CheckpointMove | undefined,
  ): Promise<Position | undefined> {
    const created: ExperimentRowIn[] = [];
    const changed: ExperimentRowIn[] = [];
    for (const id of folded?.touched ?? []) {
      const entry = folded!.entries.get(id)!;
      if (entry.stored > 0) changed.push(experimentRowOf(id, entry, false));
      else created.push(experimentRowOf(id, entry, true));
    }
    const counts = [...(folded?.deltas ?? [])].map(([state, delta]) => ({ state, delta }));
    return writeReadModels(db, suffix, months, {
      created,
      changed,
      transitions: folded?.transitions ?? [],
      counts,
      checkpoint,
    });
  }

  function remember(folded: Folded): void {
    if (cacheSize === 0) return;
    for (const id of folded.touched) {
      const entry = folded.entries.get(id)!;
      cache.set(id, { ...entry, stored: entry.version });
    }
  }

  /** Each experiment stream of the batch, with the version of its first event in it. */
  const streamsOf = (events: readonly StoredEvent<ExperimentEvent>[]) => {
    const first = new Map<string, number>();
    for (const e of events) {
      if (e.streamId.startsWith(STREAM_PREFIX) && !first.has(e.streamId)) first.set(e.streamId, e.version);
    }
    return first;
  };

  return {
    name: READ_MODELS,
    suffix,
    sideEffects: false,

    /** Inside the caller's transaction: rows are read back (the cache is not trusted, nor filled). */
    async apply(tx: Tx, events: readonly StoredEvent<ExperimentEvent>[]): Promise<void> {
      const first = streamsOf(events);
      if (first.size === 0) return;
      const entries = new Map<string, Entry>();
      await readEntries(tx, suffix, [...first.keys()], entries);
      const folded = foldEvents(events, entries);
      // the transaction may yet roll back: forget what the cache held of these experiments
      for (const id of folded.touched) cache.delete(id);
      if (folded.touched.size > 0) await write(tx, folded, undefined);
    },

    /**
     * One round trip when every experiment of the batch is in the cache or new (its first event here is
     * version 1); else one more to read the others' rows. When the rows are not as the cache had them,
     * the statement writes nothing, and the batch is folded again from rows read back.
     */
    async applyAndCheckpoint(
      db: Db,
      events: readonly StoredEvent<ExperimentEvent>[],
      context: ApplyContext & { readonly expected: Position; readonly position: Position | undefined },
    ): Promise<Position> {
      const first = streamsOf(events);
      const checkpoint = { name: context.checkpoint, expected: context.expected, position: context.position };
      for (let attempt = 1; ; attempt++) {
        const entries = new Map<string, Entry>();
        const unknown: string[] = [];
        let assumed = false;
        for (const [id, version] of first) {
          const hit = attempt === 1 ? cache.peek(id) : undefined;
          if (hit) entries.set(id, hit);
          else if (attempt > 1 || version !== 1) unknown.push(id);
          if (hit || (attempt === 1 && version === 1)) assumed = true;
        }
        await readEntries(db, suffix, unknown, entries);
        let stored: Position | undefined;
        let folded: Folded | undefined;
        try {
          folded = first.size > 0 ? foldEvents(events, entries) : undefined;
          stored = await write(db, folded?.touched.size ? folded : undefined, checkpoint);
        } catch (err) {
          // a stale cache shows as refused rows, or as a gap in the versions: fold from the table
          if (!assumed || attempt > 1 || !(isStale(err) || err instanceof VersionGapError)) throw err;
          for (const id of first.keys()) cache.delete(id);
          continue;
        }
        if (stored === undefined) throw new Error('phoenix_apply_read_models returned nothing');
        if (stored === context.expected && folded) remember(folded);
        return stored;
      }
    },

    /** Partitions for last month to `monthsAhead` months ahead, so live inserts never wait for DDL. */
    async maintain(db: Db): Promise<void> {
      const now = new Date();
      const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1)).toISOString();
      const to = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + monthsAhead, 1)).toISOString();
      const range = months.missing([from, to]);
      if (!range) return;
      await sql`select phoenix_ensure_transition_partitions(${suffix}, ${range[0]}::timestamptz, ${range[1]}::timestamptz)`.execute(
        db,
      );
      months.add(range);
    },

    reset(): void {
      cache.clear();
      months.clear();
    },
  };
}

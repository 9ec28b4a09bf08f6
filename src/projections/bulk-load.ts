import { sql } from 'kysely';
import type { SqlDatabase } from '../application/ports/database.js';
import type { StoredEvent } from '../application/ports/event-store.js';
import type { ExperimentEvent, ExperimentStatus } from '../domain/experiment.js';
import {
  type Entry,
  type ExperimentRowIn,
  experimentRowOf,
  foldEvents,
  PartitionMonths,
  readEntries,
  type TransitionRowIn,
  tableNames,
  writeCountChanges,
  writeReadModels,
} from './experiment-read-models.js';
import type { Db } from './runner.js';

/** One write's new rows, as COPY text, and the months of state_transitions they need. */
interface CopyBatch {
  readonly experiments: string;
  readonly states: string;
  readonly transitions: string;
  readonly partitions: [string, string] | undefined;
}

/** A value as a field of COPY's text format: `\N` for NULL, and the format's four escapes. */
const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };
export const copyText = (value: string | number | boolean | null | undefined): string => {
  if (value === null || value === undefined) return '\\N';
  if (typeof value !== 'string') return String(value);
  return COPY_SPECIAL.test(value) ? value.replace(/[\\\t\n\r]/g, (c) => COPY_ESCAPES[c]!) : value;
};
/**
 * A jsonb field: SQL NULL for a missing value or JSON null (as jsonb_to_recordset makes of them).
 * JSON text has no raw tab, newline or carriage return (JSON.stringify escapes them), so a backslash
 * is the one character to escape.
 */
const copyJson = (value: unknown): string => {
  if (value === null || value === undefined) return '\\N';
  const json = JSON.stringify(value);
  return json.includes('\\') ? json.replaceAll('\\', '\\\\') : json;
};

const EXPERIMENT_COLUMNS = [
  'id',
  'name',
  'state',
  'version',
  'spec',
  'created_at',
  'updated_at',
  'started_at',
  'run_started_at',
  'run_ends_at',
  'ended_at',
  'status_reason',
  'deployments',
  'analysis',
  'analysis_attempts',
  'state_entered_at',
  'position',
  'promotion',
  'rejudgements',
] as const;

/** New `experiments` rows as COPY text (the columns of EXPERIMENT_COLUMNS). */
export function experimentsCopyText(rows: readonly ExperimentRowIn[]): string {
  let out = '';
  for (const r of rows) {
    out += `${copyText(r.id)}\t${copyText(r.name)}\t${r.state}\t${r.version}\t${copyJson(r.spec)}\t${r.created_at}\t${r.updated_at}\t${copyText(r.started_at)}\t${copyText(r.run_started_at)}\t${copyText(r.run_ends_at)}\t${copyText(r.ended_at)}\t${copyText(r.status_reason)}\t${copyJson(r.deployments)}\t${copyJson(r.analysis)}\t${r.analysis_attempts}\t${r.state_entered_at}\t${r.position}\t${copyJson(r.promotion)}\t${copyJson(r.rejudgements)}\n`;
  }
  return out;
}

/** The metadata both history tables keep of a transition's event (phoenix_apply_read_models' too). */
const transitionMetadata = (t: TransitionRowIn): string =>
  copyJson({
    eventId: t.event_id,
    type: t.event_type,
    correlationId: t.correlation_id,
    causationId: t.causation_id,
    position: t.position,
  });

/** `experiment_states` and `state_transitions` rows as COPY text (the columns of the statements below). */
export function transitionsCopyText(rows: readonly TransitionRowIn[]): {
  states: string;
  transitions: string;
} {
  let states = '';
  let transitions = '';
  for (const t of rows) {
    const metadata = transitionMetadata(t);
    const id = copyText(t.experiment_id);
    const reason = copyText(t.reason);
    const from = copyText(t.from_state);
    const duration = copyText(t.duration_ms);
    const actor = copyText(t.actor);
    const failed = t.to_state === 'failed';
    states += `${id}\t${t.version}\t${t.to_state}\t${from}\t${reason}\t${duration}\t${metadata}\t${t.created_at}\t${actor}\n`;
    transitions += `${id}\t${t.version}\t${copyText(t.experiment_name)}\t${from}\t${t.to_state}\t${actor}\t${reason}\t${duration}\t${copyText(t.correlation_id)}\t${failed ? 'f' : 't'}\t${failed ? reason : '\\N'}\t${metadata}\t${t.created_at}\n`;
  }
  return { states, transitions };
}

/**
 * The bulk phase of a rebuild: fills a set of read-model tables that nobody else reads or writes yet
 * (a rebuild's `__next` set), from position zero. Unlike a live batch it does not write each batch's
 * effects on every experiment: it keeps the experiments folded in memory and writes each one's row
 * once, when it leaves memory (the least recently changed, beyond `cacheSize`) or at the end. The
 * transitions (state_transitions and experiment_states) are appended as they come. One write is in
 * flight while the next pages are read and folded.
 *
 * The tables are consistent with the log only after `finish()`; until then a failure leaves them
 * half-filled, and the rebuild drops them and starts over.
 */
export class BulkLoader {
  readonly #db: Db;
  readonly #suffix: string;
  readonly #cacheSize: number;
  /** Folded experiments by stream id, least recently changed first. */
  readonly #entries = new Map<string, Entry>();
  /** Streams of experiments whose row is written (or being written) and no longer in memory. */
  readonly #written = new Set<string>();
  readonly #months = new PartitionMonths();
  readonly #counts = new Map<ExperimentStatus, number>();
  #rows: ExperimentRowIn[] = [];
  #changed: ExperimentRowIn[] = [];
  #transitions: TransitionRowIn[] = [];
  #inFlight: Promise<unknown> | undefined;

  readonly #copyFrom: SqlDatabase['copyFrom'];

  /** With `copyFrom` (PostgreSQL server), new rows go in by COPY, the three tables at once. */
  constructor(db: Db, suffix: string, cacheSize: number, copyFrom?: SqlDatabase['copyFrom']) {
    this.#db = db;
    this.#suffix = suffix;
    this.#cacheSize = Math.max(1, cacheSize);
    this.#copyFrom = copyFrom;
  }

  /** Rows and transitions waiting for the next write. */
  get pending(): number {
    return this.#rows.length + this.#changed.length + this.#transitions.length;
  }

  /** Folds the next events of the log (in order). */
  async add(events: readonly StoredEvent<ExperimentEvent>[]): Promise<void> {
    // An experiment written out and changed again: its row, once written, is read back.
    const back = new Set<string>();
    if (this.#written.size > 0) {
      for (const e of events) {
        if (!this.#entries.has(e.streamId) && this.#written.has(e.streamId)) back.add(e.streamId);
      }
    }
    if (back.size > 0) {
      await this.flush();
      await this.#inFlight;
      await readEntries(this.#db, this.#suffix, [...back], this.#entries);
      for (const stream of back) this.#written.delete(stream);
    }
    const folded = foldEvents(events, this.#entries);
    for (const t of folded.transitions) this.#transitions.push(t);
    for (const [state, delta] of folded.deltas)
      this.#counts.set(state, (this.#counts.get(state) ?? 0) + delta);
    for (const id of folded.touched) {
      const entry = this.#entries.get(id)!;
      this.#entries.delete(id); // re-inserted: most recently changed last
      this.#entries.set(id, entry);
    }
    while (this.#entries.size > this.#cacheSize) {
      const [id, entry] = this.#entries.entries().next().value!;
      this.#evict(id, entry);
    }
  }

  #evict(id: string, entry: Entry): void {
    this.#entries.delete(id);
    if (entry.stored > 0) this.#changed.push(experimentRowOf(id, entry, false));
    else this.#rows.push(experimentRowOf(id, entry, true));
    this.#written.add(id);
  }

  /** Sends what is pending, after the write in flight (if any) is done; does not wait for it. */
  async flush(): Promise<void> {
    if (this.pending === 0) return;
    const write = {
      created: this.#rows,
      changed: this.#changed,
      transitions: this.#transitions,
      counts: [],
    };
    this.#rows = [];
    this.#changed = [];
    this.#transitions = [];
    // encoded while the write before is still in flight
    const copy = this.#copyFrom ? this.#copyText(write.created, write.transitions) : undefined;
    await this.#inFlight;
    const sent = copy
      ? this.#copy(copy, write.changed)
      : writeReadModels(this.#db, this.#suffix, this.#months, write);
    sent.catch(() => undefined); // awaited (and thrown) by the next flush or by finish()
    this.#inFlight = sent;
  }

  #copyText(created: readonly ExperimentRowIn[], transitions: readonly TransitionRowIn[]): CopyBatch {
    return {
      experiments: experimentsCopyText(created),
      ...transitionsCopyText(transitions),
      partitions: this.#months.missing(transitions.map((t) => t.created_at)),
    };
  }

  /**
   * Writes by COPY, each table on a connection of its own (this write's rows are all new; a changed
   * experiment's row went in with an earlier write, which is done).
   */
  async #copy(copy: CopyBatch, changed: readonly ExperimentRowIn[]): Promise<void> {
    const copyFrom = this.#copyFrom!;
    const names = tableNames(this.#suffix);
    if (copy.partitions) {
      await sql`select phoenix_ensure_transition_partitions(${this.#suffix}, ${copy.partitions[0]}::timestamptz,
                  ${copy.partitions[1]}::timestamptz)`.execute(this.#db);
      this.#months.add(copy.partitions);
    }
    const writes: Promise<unknown>[] = [];
    if (copy.experiments) {
      writes.push(
        copyFrom(
          `COPY "${names.experiments}" (${EXPERIMENT_COLUMNS.join(', ')}) FROM STDIN`,
          copy.experiments,
        ),
      );
    }
    if (copy.states) {
      writes.push(
        copyFrom(
          `COPY "${names.states}" (experiment_id, version, state, previous_state, transition_reason, duration_ms,
             metadata, created_at, created_by) FROM STDIN`,
          copy.states,
        ),
        copyFrom(
          `COPY "${names.transitions}" (experiment_id, version, experiment_name, from_state, to_state, actor,
             reason, duration_ms, correlation_id, success, error_message, metadata, created_at) FROM STDIN`,
          copy.transitions,
        ),
      );
    }
    if (changed.length > 0) {
      writes.push(
        writeReadModels(this.#db, this.#suffix, this.#months, {
          created: [],
          changed,
          transitions: [],
          counts: [],
        }),
      );
    }
    // every write settles before this one does (a failure is reported once they all have)
    const settled = await Promise.allSettled(writes);
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Writes every experiment still in memory and, unless `writeCounts` is false, the counts: the
   * tables now hold the log so far. Returns the count changes (by state) it folded since the start.
   */
  async finish(writeCounts = true): Promise<Map<ExperimentStatus, number>> {
    for (const [id, entry] of [...this.#entries]) this.#evict(id, entry);
    await this.flush();
    await this.#inFlight;
    this.#inFlight = undefined;
    const folded = new Map(this.#counts);
    this.#counts.clear();
    if (writeCounts) await writeCountChanges(this.#db, this.#suffix, folded);
    return folded;
  }
}

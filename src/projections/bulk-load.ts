import type { ExperimentEvent, ExperimentStatus } from '../domain/experiment.js';
import type { StoredEvent } from '../handlers/ports/event-store.js';
import {
  type Entry,
  type ExperimentRowIn,
  experimentRowOf,
  foldEvents,
  PartitionMonths,
  readEntries,
  type TransitionRowIn,
  writeReadModels,
} from './experiment-read-models.js';
import type { Db } from './runner.js';

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

  constructor(db: Db, suffix: string, cacheSize: number) {
    this.#db = db;
    this.#suffix = suffix;
    this.#cacheSize = Math.max(1, cacheSize);
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
    await this.#inFlight;
    const sent = writeReadModels(this.#db, this.#suffix, this.#months, write);
    sent.catch(() => undefined); // awaited (and thrown) by the next flush or by finish()
    this.#inFlight = sent;
  }

  /** Writes every experiment still in memory and the counts: the tables now hold the log so far. */
  async finish(): Promise<void> {
    for (const [id, entry] of [...this.#entries]) this.#evict(id, entry);
    await this.flush();
    await this.#inFlight;
    this.#inFlight = undefined;
    const counts = [...this.#counts].map(([state, delta]) => ({ state, delta }));
    this.#counts.clear();
    await writeReadModels(this.#db, this.#suffix, this.#months, {
      created: [],
      changed: [],
      transitions: [],
      counts,
    });
  }
}

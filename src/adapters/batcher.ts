/**
 * Groups calls that arrive close together into batches, so that many callers share one round trip
 * (and, for writes, one commit). On this kind of machine the round trip's system calls cost more than
 * the statement: sixteen reads in one query take about what one does.
 *
 * - A batch is sent once per turn of the event loop, after every caller whose last call just finished
 *   has made its next one, so a batch takes all the callers there are instead of the first few.
 * - At most `maxInFlight` batches are out at once; what arrives meanwhile waits for the next one. The
 *   waiting items are shared between the free slots, so one batch's commit overlaps the next one's
 *   work.
 * - `admit` can keep an item out of a batch (it then waits for the next), e.g. a second append to a
 *   stream the batch already writes.
 *
 * Under light load every call is a batch of its own, a few microseconds after it was made.
 */
export interface BatcherOptions<T> {
  /** Batches out at once. */
  readonly maxInFlight: number;
  /** Most items in one batch. */
  readonly maxBatch: number;
  readonly admit?: (item: T, batch: readonly T[]) => boolean;
}

export class Batcher<T extends { reject(err: unknown): void }> {
  #pending: T[] = [];
  #inFlight = 0;
  #scheduled = false;

  constructor(
    private readonly send: (batch: T[]) => Promise<void>,
    private readonly options: BatcherOptions<T>,
  ) {}

  push(item: T): void {
    this.#pending.push(item);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    const { maxInFlight, maxBatch, admit } = this.options;
    while (this.#inFlight < maxInFlight && this.#pending.length > 0) {
      const size = Math.min(maxBatch, Math.ceil(this.#pending.length / (maxInFlight - this.#inFlight)));
      const batch: T[] = [];
      const waiting: T[] = [];
      for (const item of this.#pending) {
        if (batch.length < size && (admit === undefined || admit(item, batch))) batch.push(item);
        else waiting.push(item);
      }
      this.#pending = waiting;
      this.#inFlight++;
      // `send` settles its items itself; should it throw instead, its callers hear of it, not nobody.
      void this.send(batch)
        .catch((err: unknown) => {
          for (const item of batch) item.reject(err);
        })
        .finally(() => {
          this.#inFlight--;
          this.#schedule();
        });
    }
  }
}

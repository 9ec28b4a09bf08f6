import { setTimeout as delay } from 'node:timers/promises';
import type { AnyEvent, Position, StoredEvent } from '../application/ports/event-store.js';

/**
 * One reader of the head of the log for all of a process's caught-up subscribers.
 *
 * A server runs several subscribers (the read-model projection, the saga, the live feed). Reading the
 * log on their own, each woken subscriber ran its own query, decoded the same rows, and asked the
 * same "is anything held back?" question: three round trips where one does, on a machine where the
 * round trip costs more than the statement. A subscriber that has caught up joins the tail instead;
 * the tail reads each new page once and hands the decoded events to every member (members must not
 * change them).
 *
 * - Order and exactly-once: the tail reads after its own position and delivers whole pages in log
 *   order. A member joins at its checkpoint: events at or before it are dropped; if the tail has
 *   already passed the checkpoint, the member reads that gap itself (`gapThrough`) before it takes
 *   anything from its queue. The log below a position that a reader has been given never changes
 *   (readers stop below the oldest open transaction), so the gap read, bounded by that position and
 *   not by a horizon of its own, meets the tail without a gap or a duplicate.
 * - Bounded: a member whose queue grows past `maxQueued` events is let go (its queue dropped) and
 *   reads on its own from its last position until it catches up again; one slow subscriber neither
 *   holds up the others nor holds memory.
 * - Failures: when a read fails, every member is let go and reads on its own, where it meets the
 *   failure as it would have without the tail (an unavailable database is waited out, a corrupt
 *   event stops that subscriber naming it).
 */
export interface LogTailSource<E extends AnyEvent> {
  /** Events after `after`, in log order, at most `limit`, only those no open transaction can precede. */
  read(after: Position, limit: number): Promise<StoredEvent<E>[]>;
  /** Whether committed events after `after` are held back by an older open transaction. */
  heldBack(after: Position): Promise<boolean>;
  /**
   * True while a wake is sure to come: appends of this process are in flight, and each wakes the tail
   * when it ends, written or not. Until then "is anything held back?" need not be asked.
   */
  wakeComing(): boolean;
  /** Resolves at the next wake (an append here, a NOTIFY from elsewhere); `cancel` stops waiting. */
  nextWake(): { promise: Promise<void>; cancel(): void };
  /** True once the store is closed. */
  closed(): boolean;
}

export interface LogTailOptions {
  /** Longest wait between reads when nothing wakes the tail. */
  readonly idlePollMs: number;
  /** Most events read at once. */
  readonly pageSize?: number;
  /** Events a member may have waiting before it is let go. */
  readonly maxQueued?: number;
}

export class TailMember<E extends AnyEvent> {
  #queue: StoredEvent<E>[] = [];
  #waiter: (() => void) | undefined;
  #released = false;
  #failed = false;

  constructor(
    private readonly tail: LogTail<E>,
    readonly prefix: string | undefined,
    /** Events at or before this position are the member's already. */
    private readonly skipThrough: Position,
    /**
     * Set when the tail had passed the member's checkpoint at the join: the member reads the events
     * after its checkpoint up to here itself, before it takes from its queue.
     */
    readonly gapThrough: Position | undefined,
  ) {}

  /** Still fed by the tail (false once let go: read on your own from your last position). */
  get attached(): boolean {
    return !this.#released;
  }

  /** Let go because the tail's read failed (pause before joining again: it may fail again). */
  get failed(): boolean {
    return this.#failed;
  }

  /** Up to `max` waiting events, in log order; empty if none are waiting. */
  take(max: number): StoredEvent<E>[] {
    if (this.#queue.length <= max) {
      const all = this.#queue;
      this.#queue = [];
      return all;
    }
    return this.#queue.splice(0, max);
  }

  /** Resolves when events arrive, the member is let go, or `signal` aborts. */
  wait(signal: AbortSignal | undefined): Promise<void> {
    if (this.#queue.length > 0 || this.#released || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        this.#waiter = undefined;
        resolve();
      };
      this.#waiter = done;
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /** Leaves the tail (the subscriber stops, or it reads on its own from here). */
  leave(): void {
    this.tail.remove(this);
    this.release();
  }

  /** @internal by the tail: new events, in log order. */
  deliver(events: readonly StoredEvent<E>[], maxQueued: number): void {
    for (const e of events) {
      if (e.position <= this.skipThrough) continue;
      if (this.prefix !== undefined && !e.streamId.startsWith(this.prefix)) continue;
      this.#queue.push(e);
    }
    if (this.#queue.length > maxQueued) {
      this.tail.remove(this);
      this.release();
      return;
    }
    if (this.#queue.length > 0) this.#waiter?.();
  }

  /** @internal by the tail: let go; what is queued is dropped (the member reads it again). */
  release(failed = false): void {
    this.#released = true;
    this.#failed ||= failed;
    this.#queue = [];
    this.#waiter?.();
  }
}

export class LogTail<E extends AnyEvent> {
  #position: Position | undefined;
  readonly #members = new Set<TailMember<E>>();
  #running = false;
  readonly #pageSize: number;
  readonly #maxQueued: number;

  constructor(
    private readonly source: LogTailSource<E>,
    private readonly options: LogTailOptions,
  ) {
    this.#pageSize = options.pageSize ?? 1_000;
    this.#maxQueued = options.maxQueued ?? 10_000;
  }

  /** Members now fed by the tail. */
  get size(): number {
    return this.#members.size;
  }

  /** A subscriber that has everything up to `checkpoint` follows the head from here. */
  join(checkpoint: Position, prefix: string | undefined): TailMember<E> {
    if (!this.#running || this.#position === undefined) this.#position = checkpoint;
    const tailAt = this.#position;
    const behind = tailAt > checkpoint;
    const member = new TailMember<E>(this, prefix, behind ? tailAt : checkpoint, behind ? tailAt : undefined);
    this.#members.add(member);
    if (!this.#running) {
      this.#running = true;
      void this.#run();
    }
    return member;
  }

  /** @internal by members. */
  remove(member: TailMember<E>): void {
    this.#members.delete(member);
  }

  async #run(): Promise<void> {
    let backoff = 1;
    try {
      while (this.#members.size > 0 && !this.source.closed()) {
        const woken = this.source.nextWake();
        let page: StoredEvent<E>[];
        try {
          page = await this.source.read(this.#position!, this.#pageSize);
        } catch {
          woken.cancel();
          this.#releaseAll(true);
          return;
        }
        if (page.length > 0) {
          this.#position = page[page.length - 1]!.position;
          for (const member of [...this.#members]) member.deliver(page, this.#maxQueued);
          if (page.length === this.#pageSize) {
            woken.cancel();
            continue;
          }
        }
        if (this.#members.size === 0) {
          woken.cancel();
          break;
        }
        let wait = this.options.idlePollMs;
        if (!this.source.wakeComing() && (await this.source.heldBack(this.#position!).catch(() => false))) {
          // An older transaction is still open: poll soon, backing off while it stays open.
          wait = Math.min(backoff, 100);
          backoff = Math.min(backoff * 2, 100);
        } else {
          backoff = 1;
        }
        const poll = new AbortController();
        await Promise.race([woken.promise, delay(wait, undefined, { signal: poll.signal, ref: false })]);
        poll.abort(); // a wake came first: drop the timer (its rejection goes to the settled race)
        woken.cancel();
      }
      if (this.source.closed()) this.#releaseAll();
    } finally {
      this.#running = false;
    }
  }

  #releaseAll(failed = false): void {
    const members = [...this.#members];
    this.#members.clear();
    for (const m of members) m.release(failed);
  }
}

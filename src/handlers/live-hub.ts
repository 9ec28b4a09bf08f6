import type { Logger } from 'pino';
import { type Position, START, type StoredEvent } from '../application/ports/event-store.js';
import type { LogReader } from '../application/ports/log-reader.js';
import type { ExperimentEvent } from '../domain/experiment.js';

/**
 * Fans the event log out to many live-feed connections with one subscription. It keeps the most
 * recent events in memory; a connection catches up from the store in pages (up to the head of the
 * log when it attached, so its backlog is whole before it is told `live`), then switches to the hub in
 * the same tick (no await between taking the buffered events and registering), delivering only
 * positions after the last it delivered, so no event is lost or repeated across the switch.
 */
/** How long a new feed waits for committed events that are held back, before going live anyway. */
const BACKLOG_PATIENCE_MS = 2_000;

interface HubListener {
  /** Only events of streams with this prefix (all when undefined). */
  readonly prefix: string | undefined;
  /** Called synchronously with each new batch's matching events, in log order. */
  onEvents(events: readonly StoredEvent<ExperimentEvent>[]): void;
}

export class LiveHub {
  readonly #log: LogReader<ExperimentEvent>;
  readonly #logger: Logger;
  readonly #capacity: number;
  #buffer: StoredEvent<ExperimentEvent>[] = [];
  /** Every event after this position and up to `#position` is in the buffer. */
  #bufferAfter: Position = START;
  #position: Position = START;
  readonly #listeners = new Set<HubListener>();
  readonly #abort = new AbortController();
  #running: Promise<void> | undefined;
  #ready: Promise<void> | undefined;

  constructor(log: LogReader<ExperimentEvent>, logger: Logger, capacity = 10_000) {
    this.#log = log;
    this.#logger = logger;
    this.#capacity = capacity;
  }

  /** Starts following the log from its current head; resolves once following. */
  start(): Promise<void> {
    this.#ready ??= (async () => {
      const head = await this.#log.head();
      this.#bufferAfter = head;
      this.#position = head;
      this.#running = this.#follow(head);
    })();
    return this.#ready;
  }

  async #follow(from: Position): Promise<void> {
    let after = from;
    while (!this.#abort.signal.aborted) {
      try {
        for await (const message of this.#log.subscribe({
          after,
          signal: this.#abort.signal,
          batchSize: 1000,
        })) {
          if (message.kind !== 'events') continue;
          this.#accept(message.events);
          after = this.#position;
        }
      } catch (err) {
        if (this.#abort.signal.aborted) return;
        this.#logger.warn({ err }, 'live feed subscription failed; resubscribing');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  #accept(events: readonly StoredEvent<ExperimentEvent>[]): void {
    if (events.length === 0) return;
    this.#buffer.push(...events);
    this.#position = events[events.length - 1]!.position;
    const excess = this.#buffer.length - this.#capacity;
    if (excess > 0) {
      this.#bufferAfter = this.#buffer[excess - 1]!.position;
      this.#buffer = this.#buffer.slice(excess);
    }
    // One filtered array per prefix, handed to every listener with that prefix: the same array, so
    // a listener may cache what it derives from it (the live feed's frames) for the others.
    const matching = new Map<string | undefined, readonly StoredEvent<ExperimentEvent>[]>();
    for (const listener of this.#listeners) {
      let subset = matching.get(listener.prefix);
      if (subset === undefined) {
        const prefix = listener.prefix;
        subset = prefix === undefined ? events : events.filter((e) => e.streamId.startsWith(prefix));
        matching.set(listener.prefix, subset);
      }
      if (subset.length === 0) continue;
      try {
        listener.onEvents(subset);
      } catch (err) {
        // One connection's failure is its own: the others still get the batch.
        this.#logger.warn({ err }, 'live feed listener failed');
      }
    }
  }

  /** The head of the log now: where a feed without `from` starts. */
  head(): Promise<Position> {
    return this.#log.head();
  }

  /**
   * Delivers, through `deliver`, every event after `from` that `matches`, first the backlog from the
   * store, then from the hub, and keeps delivering live until the returned function is called.
   * Resolves once the backlog is delivered, with the position of the last event delivered (or `from`).
   */
  async attach(
    from: Position,
    streamPrefix: string | undefined,
    deliver: (events: readonly StoredEvent<ExperimentEvent>[]) => void,
    signal: AbortSignal,
  ): Promise<{ position: Position; detach: () => void }> {
    await this.start();
    let last = from;
    // Catch up from the store: every event committed before this call comes before `live`. Events
    // held back behind an older open transaction (PostgreSQL) are waited for, briefly: past the wait
    // they still come, after `live`, in order.
    const target = await this.#log.lastCommitted();
    const patience = Date.now() + BACKLOG_PATIENCE_MS;
    for (;;) {
      if (signal.aborted) return { position: last, detach: () => undefined };
      const headBefore = await this.#log.head();
      const page = await this.#log.readAll({
        after: last,
        limit: 500,
        ...(streamPrefix ? { streamPrefix } : {}),
      });
      if (page.length > 0) {
        deliver(page);
        last = page[page.length - 1]!.position;
      }
      if (page.length === 500) continue;
      // A short page holds every matching event up to the head at query time, at least `headBefore`.
      if (headBefore > last) last = headBefore;
      // The hub's buffer must cover everything after `last`, or the switch below would leave a gap.
      if (last < this.#bufferAfter) continue;
      if (last >= target || Date.now() > patience) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const matches = (e: StoredEvent<ExperimentEvent>) => !streamPrefix || e.streamId.startsWith(streamPrefix);
    // From here to `add`, nothing awaits: the buffer and the listener see the same events, once.
    const buffered = this.#buffer.filter((e) => e.position > last && matches(e));
    if (buffered.length > 0) {
      deliver(buffered);
      last = buffered[buffered.length - 1]!.position;
    }
    let sent = last;
    const listener: HubListener = {
      prefix: streamPrefix || undefined,
      onEvents: (events) => {
        // In log order: when the first is new, all are, and the shared array goes on as it is.
        const fresh = events[0]!.position > sent ? events : events.filter((e) => e.position > sent);
        if (fresh.length === 0) return;
        sent = fresh[fresh.length - 1]!.position;
        deliver(fresh);
      },
    };
    this.#listeners.add(listener);
    return { position: last, detach: () => this.#listeners.delete(listener) };
  }

  get connections(): number {
    return this.#listeners.size;
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    this.#listeners.clear();
    await this.#running;
  }
}

import type { Logger } from 'pino';
import type { ExperimentEvent } from '../domain/experiment.js';
import { type EventStore, type Position, START, type StoredEvent } from './ports/event-store.js';

/**
 * Fans the event log out to many live-feed connections with one subscription. It keeps the most
 * recent events in memory; a connection that starts further back catches up from the store in pages
 * until it reaches what the hub holds, then switches to the hub in the same tick (no await between
 * taking the buffered events and registering), so no event is lost or repeated across the switch.
 */
export interface HubListener {
  /** Called synchronously with each new batch, in log order. */
  onEvents(events: readonly StoredEvent<ExperimentEvent>[]): void;
}

export class LiveHub {
  readonly #store: EventStore<ExperimentEvent>;
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

  constructor(store: EventStore<ExperimentEvent>, logger: Logger, capacity = 10_000) {
    this.#store = store;
    this.#logger = logger;
    this.#capacity = capacity;
  }

  /** Starts following the log from its current head; resolves once following. */
  start(): Promise<void> {
    this.#ready ??= (async () => {
      const head = await this.#store.head();
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
        for await (const message of this.#store.subscribe({
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
    for (const listener of this.#listeners) listener.onEvents(events);
  }

  /** The hub's head: where a feed without `from` starts. */
  get position(): Position {
    return this.#position;
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
    // Catch up from the store until the hub's buffer covers the rest.
    while (last < this.#bufferAfter && !signal.aborted) {
      const page = await this.#store.readAll({
        after: last,
        limit: 500,
        ...(streamPrefix ? { streamPrefix } : {}),
      });
      const behindHub = page.filter((e) => e.position <= this.#bufferAfter);
      if (behindHub.length > 0) {
        deliver(behindHub);
        last = behindHub[behindHub.length - 1]!.position;
      }
      // A short page holds every matching event up to the store's head, which is past the buffer's start.
      if (page.length < 500 || behindHub.length < page.length) {
        if (last < this.#bufferAfter) last = this.#bufferAfter;
        break;
      }
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
      onEvents: (events) => {
        const fresh = events.filter((e) => e.position > sent && matches(e));
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

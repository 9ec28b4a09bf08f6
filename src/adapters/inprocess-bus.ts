import {
  type Bus,
  type BusCommand,
  type BusCommandInput,
  type BusResult,
  type BusResultInput,
  busCommandSchema,
  busResultSchema,
  type CommandQueue,
  type Consumer,
  commandMessageId,
  type DeadLetter,
  type Delivery,
  type HandleOptions,
  type Handler,
  queueOf,
  resultMessageId,
} from '../application/ports/bus.js';

/**
 * The in-process bus of the embedded default, with the delivery rules of the NATS adapter: competing
 * consumers per queue, redelivery with backoff after a handler throws, de-duplication of message ids
 * within a window, dead letters after `maxDeliveries`. Messages are copied through JSON, as on the wire,
 * so a handler never shares objects with the sender. Nothing survives the process: it is for one process
 * that runs the server and the workers together.
 *
 * A broker holds the queues; each {@link InProcessBus} is a client of it. Closing a client abandons
 * its in-flight messages to the other clients, as a dead NATS connection does.
 */

export interface InProcessBusOptions {
  /** Deliveries of a message in all before it goes to the dead letters; default 5. */
  readonly maxDeliveries?: number;
  /** Delay before redelivering after a handler threw: `backoffMs × 2^(attempt−1)`, capped at 30 s; default 200. */
  readonly backoffMs?: number;
  /** How long a message id is remembered for de-duplication; default 2 minutes. */
  readonly duplicateWindowMs?: number;
}

interface Envelope {
  readonly messageId: string;
  readonly body: string;
  deliveries: number;
  /** Bumped on every delivery; a settle with an older token is ignored (the delivery was abandoned). */
  token: number;
}

interface Subscriber {
  readonly client: InProcessBus;
  readonly handler: (envelope: Envelope, delivery: Delivery) => Promise<void>;
  readonly concurrency: number;
  inFlight: Set<Envelope>;
  stopped: boolean;
}

interface Queue {
  readonly name: string;
  readonly ready: Envelope[];
  readonly subscribers: Subscriber[];
  next: number;
  /** Messages handed to a subscriber and not yet settled. */
  readonly unsettled: Map<Envelope, Subscriber>;
}

type QueueName = `command.${CommandQueue}` | 'result' | 'dlq';

export class InProcessBroker {
  private readonly queues = new Map<QueueName, Queue>();
  private readonly seen = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  readonly maxDeliveries: number;
  readonly backoffMs: number;
  readonly duplicateWindowMs: number;

  constructor(options: InProcessBusOptions = {}) {
    this.maxDeliveries = options.maxDeliveries ?? 5;
    this.backoffMs = options.backoffMs ?? 200;
    this.duplicateWindowMs = options.duplicateWindowMs ?? 120_000;
  }

  /** A new client of this broker. */
  connect(): InProcessBus {
    return new InProcessBus(this);
  }

  /** Enqueues unless the id was taken within the window; returns false for a duplicate. */
  enqueue(name: QueueName, messageId: string, body: string): boolean {
    const now = Date.now();
    for (const [id, expires] of this.seen) {
      if (expires > now) break; // insertion order is expiry order
      this.seen.delete(id);
    }
    const key = `${name === 'dlq' ? 'dlq' : name === 'result' ? 'result' : 'command'}\u0000${messageId}`;
    if (this.seen.has(key)) return false;
    this.seen.set(key, now + this.duplicateWindowMs);
    this.queue(name).ready.push({ messageId, body, deliveries: 0, token: 0 });
    this.pump(name);
    return true;
  }

  subscribe(name: QueueName, subscriber: Subscriber): void {
    this.queue(name).subscribers.push(subscriber);
    this.pump(name);
  }

  /** Detaches a subscriber; `abandon` puts its unsettled messages back for the others. */
  unsubscribe(name: QueueName, subscriber: Subscriber, abandon: boolean): void {
    const queue = this.queue(name);
    const i = queue.subscribers.indexOf(subscriber);
    if (i >= 0) queue.subscribers.splice(i, 1);
    if (!abandon) return;
    for (const [envelope, holder] of queue.unsettled) {
      if (holder !== subscriber) continue;
      queue.unsettled.delete(envelope);
      subscriber.inFlight.delete(envelope);
      envelope.token++;
      queue.ready.unshift(envelope);
    }
    this.pump(name);
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private queue(name: QueueName): Queue {
    let q = this.queues.get(name);
    if (q === undefined) {
      q = { name, ready: [], subscribers: [], next: 0, unsettled: new Map() };
      this.queues.set(name, q);
    }
    return q;
  }

  private pump(name: QueueName): void {
    const queue = this.queue(name);
    while (queue.ready.length > 0) {
      const free = queue.subscribers.filter((s) => !s.stopped && s.inFlight.size < s.concurrency);
      if (free.length === 0) return;
      const subscriber = free[queue.next++ % free.length] as Subscriber;
      const envelope = queue.ready.shift() as Envelope;
      this.dispatch(queue, subscriber, envelope);
    }
  }

  private dispatch(queue: Queue, subscriber: Subscriber, envelope: Envelope): void {
    envelope.deliveries++;
    const token = ++envelope.token;
    queue.unsettled.set(envelope, subscriber);
    subscriber.inFlight.add(envelope);
    const delivery: Delivery = {
      messageId: envelope.messageId,
      attempt: envelope.deliveries,
      lastAttempt: envelope.deliveries >= this.maxDeliveries,
    };
    const settle = (error: unknown) => {
      if (envelope.token !== token) return; // abandoned meanwhile: redelivered elsewhere
      queue.unsettled.delete(envelope);
      subscriber.inFlight.delete(envelope);
      subscriber.client.settled();
      if (error === undefined) {
        this.pump(queue.name as QueueName);
        return;
      }
      const fatal = error instanceof PoisonMessage;
      if (fatal || envelope.deliveries >= this.maxDeliveries) {
        this.deadLetter(queue.name, envelope, error);
      } else {
        const delay = Math.min(30_000, this.backoffMs * 2 ** (envelope.deliveries - 1));
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          queue.ready.push(envelope);
          this.pump(queue.name as QueueName);
        }, delay);
        timer.unref();
        this.timers.add(timer);
      }
      this.pump(queue.name as QueueName);
    };
    // A microtask later, so a send never runs its handler inside the sender's call stack.
    queueMicrotask(() => {
      subscriber.handler(envelope, delivery).then(
        () => settle(undefined),
        (err: unknown) => settle(err ?? new Error('handler failed')),
      );
    });
  }

  private deadLetter(source: string, envelope: Envelope, error: unknown): void {
    let message: unknown = envelope.body;
    try {
      message = JSON.parse(envelope.body);
    } catch {
      // kept as text
    }
    const letter: DeadLetter = {
      source,
      messageId: envelope.messageId,
      message,
      deliveries: envelope.deliveries,
      error: error instanceof Error ? error.message : String(error),
      at: new Date().toISOString(),
    };
    if (source === 'dlq') return; // a dead-letter handler that keeps failing drops the letter
    this.enqueue('dlq', `dlq:${source}:${envelope.messageId}`, JSON.stringify(letter));
  }
}

/** A message that cannot be handled however often it is delivered (it does not match its schema). */
class PoisonMessage extends Error {}

const parseWith =
  <T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: Error } }) =>
  (body: string): T => {
    let raw: unknown;
    try {
      raw = JSON.parse(body);
    } catch {
      throw new PoisonMessage('message is not JSON');
    }
    const parsed = schema.safeParse(raw);
    if (!parsed.success)
      throw new PoisonMessage(`message does not match its schema: ${parsed.error.message}`);
    return parsed.data;
  };

const parseCommand = parseWith(busCommandSchema);
const parseResult = parseWith(busResultSchema);
const parseDeadLetter = (body: string): DeadLetter => JSON.parse(body) as DeadLetter;

export class InProcessBus implements Bus {
  private readonly subscriptions = new Set<{ name: QueueName; subscriber: Subscriber }>();
  private waiters: (() => void)[] = [];
  private closed = false;

  constructor(private readonly broker: InProcessBroker) {}

  async send(command: BusCommandInput): Promise<void> {
    this.ensureOpen();
    const parsed = busCommandSchema.parse(command);
    this.broker.enqueue(
      `command.${queueOf(parsed.type)}`,
      commandMessageId(parsed.commandId),
      JSON.stringify(parsed),
    );
  }

  async publish(result: BusResultInput): Promise<void> {
    this.ensureOpen();
    const parsed = busResultSchema.parse(result);
    this.broker.enqueue('result', resultMessageId(parsed.commandId), JSON.stringify(parsed));
  }

  handleCommands(
    queue: CommandQueue,
    handler: Handler<BusCommand>,
    options?: HandleOptions,
  ): Promise<Consumer> {
    return this.attach(`command.${queue}`, parseCommand, handler, options);
  }

  handleResults(handler: Handler<BusResult>, options?: HandleOptions): Promise<Consumer> {
    return this.attach('result', parseResult, handler, options);
  }

  handleDeadLetters(handler: Handler<DeadLetter>, options?: HandleOptions): Promise<Consumer> {
    return this.attach('dlq', parseDeadLetter, handler, options);
  }

  async ping(): Promise<void> {
    this.ensureOpen();
  }

  async close(options: { readonly graceMs?: number } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const subs = [...this.subscriptions];
    for (const s of subs) s.subscriber.stopped = true;
    await this.waitIdle(
      subs.map((s) => s.subscriber),
      options.graceMs ?? 10_000,
    );
    for (const s of subs) this.broker.unsubscribe(s.name, s.subscriber, true);
    this.subscriptions.clear();
  }

  /** @internal the broker tells the client a handler settled. */
  settled(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private async attach<M>(
    name: QueueName,
    parse: (body: string) => M,
    handler: Handler<M>,
    options: HandleOptions = {},
  ): Promise<Consumer> {
    this.ensureOpen();
    const subscriber: Subscriber = {
      client: this,
      concurrency: Math.max(1, options.concurrency ?? 1),
      inFlight: new Set(),
      stopped: false,
      handler: async (envelope, delivery) => handler(parse(envelope.body), delivery),
    };
    const entry = { name, subscriber };
    this.subscriptions.add(entry);
    this.broker.subscribe(name, subscriber);
    return {
      stop: async () => {
        if (!this.subscriptions.has(entry)) return;
        subscriber.stopped = true;
        await this.waitIdle([subscriber], Number.POSITIVE_INFINITY);
        this.broker.unsubscribe(name, subscriber, false);
        this.subscriptions.delete(entry);
      },
    };
  }

  private async waitIdle(subscribers: readonly Subscriber[], graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    while (subscribers.some((s) => s.inFlight.size > 0)) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(left) ? setTimeout(resolve, left) : undefined;
        this.waiters.push(() => {
          if (timer) clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  private ensureOpen(): void {
    if (this.closed) throw new Error('the bus is closed');
  }
}

/** A bus with a broker of its own (the embedded default); `broker.connect()` gives more clients of it. */
export const createInProcessBus = (options: InProcessBusOptions = {}): InProcessBus =>
  new InProcessBroker(options).connect();

import { setTimeout as delay } from 'node:timers/promises';
import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { connect, headers, type NatsConnection, nanos } from '@nats-io/transport-node';
import type { Logger } from 'pino';
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
 * The bus over NATS JetStream. Three streams, named from a prefix (default `phoenix`):
 *
 * | stream            | subjects                          | retention  | durable consumers      |
 * | ----------------- | --------------------------------- | ---------- | ---------------------- |
 * | `PHOENIX_COMMANDS`| `phoenix.command.{deployer,analyzer}` | work queue | `deployer`, `analyzer` |
 * | `PHOENIX_RESULTS` | `phoenix.result`                  | work queue | `saga`                 |
 * | `PHOENIX_DLQ`     | `phoenix.dlq.<source>`            | limits, 14 days | `dead-letters`    |
 *
 * Every client of a queue pulls from the same durable consumer, so workers compete for messages
 * (one message at a time per handler slot: nothing waits in a client's buffer while its handlers are
 * busy). Acknowledgement is explicit; while a handler runs, the message is kept with `+WPI` heartbeats,
 * so a slow deploy is not redelivered but a worker that dies is, once `ackWaitMs` passes.
 *
 * Redelivery is bounded by the client, not only the server: a handler that throws gets its message back
 * after a backoff (`nak` with delay); on the last of `maxDeliveries` deliveries, a throw — or a delivery
 * past the limit because earlier consumers died without acknowledging — moves the message to the dead
 * letters and terminates it. The consumers' own `max_deliver` is two above, a backstop only.
 *
 * Each message is published with `Nats-Msg-Id` (commands: `command:<commandId>`, results:
 * `result:<commandId>`), so JetStream drops a copy sent within the stream's duplicate window; publishes
 * are retried through a reconnect for `publishTimeoutMs`, which the id makes safe.
 */

export interface NatsBusOptions {
  /** `nats://host:port`, comma-separated for a cluster. */
  readonly servers: string;
  /** Subject and stream prefix, to keep several installations (or test runs) apart; default `phoenix`. */
  readonly prefix?: string;
  /** Connection name shown by the server's monitoring. */
  readonly name?: string;
  readonly logger?: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
  /** Deliveries of a message in all before it goes to the dead letters; default 5. */
  readonly maxDeliveries?: number;
  /** How long a delivered message may go without an ack or heartbeat before redelivery; default 30 s. */
  readonly ackWaitMs?: number;
  /** Delay before redelivering after a handler threw: `backoffMs × 2^(attempt−1)`, capped at 60 s; default 1 s. */
  readonly backoffMs?: number;
  /** The streams' de-duplication window; default 2 minutes. */
  readonly duplicateWindowMs?: number;
  /** How long one pull waits for a message (also the longest a stopping consumer waits); default 2 s. */
  readonly pullExpiresMs?: number;
  /** How long a publish keeps trying (through a reconnect) before it fails; default 15 s. */
  readonly publishTimeoutMs?: number;
}

type Source = `command.${CommandQueue}` | 'result' | 'dlq';

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export class NatsBus implements Bus {
  private readonly js: JetStreamClient;
  private readonly prefix: string;
  private readonly streamPrefix: string;
  private readonly consumers = new Set<{ stop(graceMs: number): Promise<void> }>();
  private readonly heartbeats = new Set<NodeJS.Timeout>();
  private readonly options: Required<Omit<NatsBusOptions, 'logger' | 'name' | 'prefix' | 'servers'>>;
  private closed = false;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly logger: NatsBusOptions['logger'],
    options: NatsBusOptions,
  ) {
    this.js = jetstream(nc);
    this.prefix = options.prefix ?? 'phoenix';
    this.streamPrefix = this.prefix.replace(/[^A-Za-z0-9_-]/g, '_').toUpperCase();
    this.options = {
      maxDeliveries: options.maxDeliveries ?? 5,
      ackWaitMs: options.ackWaitMs ?? 30_000,
      backoffMs: options.backoffMs ?? 1_000,
      duplicateWindowMs: options.duplicateWindowMs ?? 120_000,
      pullExpiresMs: Math.max(1_000, options.pullExpiresMs ?? 2_000),
      publishTimeoutMs: options.publishTimeoutMs ?? 15_000,
    };
  }

  /** Connects (reconnecting for ever once connected) and makes sure the streams exist. */
  static async connect(options: NatsBusOptions): Promise<NatsBus> {
    if (!/^[A-Za-z0-9_-]+$/.test(options.prefix ?? 'phoenix'))
      throw new Error('the NATS subject prefix may hold letters, digits, "_" and "-" only');
    const nc = await connect({
      servers: options.servers.split(',').map((s) => s.trim()),
      name: options.name ?? 'phoenix',
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1_000,
      pingInterval: 10_000,
    });
    try {
      const jsm = await jetstreamManager(nc);
      const bus = new NatsBus(nc, jsm, options.logger, options);
      await bus.ensureStreams();
      bus.watchStatus();
      return bus;
    } catch (err) {
      await nc.close();
      throw err;
    }
  }

  /** Stream names, for operators and tests (which delete them afterwards). */
  get streams(): { readonly commands: string; readonly results: string; readonly deadLetters: string } {
    return {
      commands: `${this.streamPrefix}_COMMANDS`,
      results: `${this.streamPrefix}_RESULTS`,
      deadLetters: `${this.streamPrefix}_DLQ`,
    };
  }

  async send(command: BusCommandInput): Promise<void> {
    const parsed = busCommandSchema.parse(command);
    await this.publishDurably(
      `${this.prefix}.command.${queueOf(parsed.type)}`,
      JSON.stringify(parsed),
      commandMessageId(parsed.commandId),
    );
  }

  async publish(result: BusResultInput): Promise<void> {
    const parsed = busResultSchema.parse(result);
    await this.publishDurably(
      `${this.prefix}.result`,
      JSON.stringify(parsed),
      resultMessageId(parsed.commandId),
    );
  }

  handleCommands(
    queue: CommandQueue,
    handler: Handler<BusCommand>,
    options?: HandleOptions,
  ): Promise<Consumer> {
    return this.consume(
      `command.${queue}`,
      this.streams.commands,
      queue,
      parseWith(busCommandSchema),
      handler,
      options,
    );
  }

  handleResults(handler: Handler<BusResult>, options?: HandleOptions): Promise<Consumer> {
    return this.consume('result', this.streams.results, 'saga', parseWith(busResultSchema), handler, options);
  }

  handleDeadLetters(handler: Handler<DeadLetter>, options?: HandleOptions): Promise<Consumer> {
    return this.consume(
      'dlq',
      this.streams.deadLetters,
      'dead-letters',
      (data) => JSON.parse(data) as DeadLetter,
      handler,
      options,
    );
  }

  async ping(): Promise<void> {
    if (this.nc.isClosed()) throw new Error('the NATS connection is closed');
    await this.nc.rtt();
  }

  async close(options: { readonly graceMs?: number } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const grace = options.graceMs ?? 10_000;
    await Promise.all([...this.consumers].map((c) => c.stop(grace)));
    for (const h of this.heartbeats) clearInterval(h);
    this.heartbeats.clear();
    if (grace > 0) await this.nc.drain().catch(() => undefined);
    await this.nc.close().catch(() => undefined);
  }

  /** Deletes this prefix's streams (and so their consumers): for tests and uninstalling. */
  async destroy(): Promise<void> {
    for (const name of Object.values(this.streams)) {
      await this.jsm.streams.delete(name).catch(() => undefined);
    }
  }

  private async ensureStreams(): Promise<void> {
    const base = {
      storage: StorageType.File,
      num_replicas: 1,
      duplicate_window: nanos(this.options.duplicateWindowMs),
    } satisfies Partial<StreamConfig>;
    await this.ensureStream({
      ...base,
      name: this.streams.commands,
      subjects: [`${this.prefix}.command.*`],
      retention: RetentionPolicy.Workqueue,
    });
    await this.ensureStream({
      ...base,
      name: this.streams.results,
      subjects: [`${this.prefix}.result`],
      retention: RetentionPolicy.Workqueue,
    });
    await this.ensureStream({
      ...base,
      name: this.streams.deadLetters,
      subjects: [`${this.prefix}.dlq.>`],
      retention: RetentionPolicy.Limits,
      max_age: nanos(14 * 24 * 3600 * 1000),
    });
  }

  private async ensureStream(config: Partial<StreamConfig> & { name: string }): Promise<void> {
    try {
      await this.jsm.streams.add(config);
    } catch (err) {
      // Exists with other settings (an older version's, or a changed duplicate window): bring it in line.
      const existing = await this.jsm.streams.info(config.name).catch(() => undefined);
      if (existing === undefined) throw err;
      await this.jsm.streams.update(config.name, config);
    }
  }

  private async ensureConsumer(stream: string, durable: string, filter: string): Promise<void> {
    const config: Partial<ConsumerConfig> = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.options.ackWaitMs),
      max_deliver: this.options.maxDeliveries + 2,
      filter_subject: filter,
    };
    try {
      await this.jsm.consumers.add(stream, config);
    } catch (err) {
      const existing = await this.jsm.consumers.info(stream, durable).catch(() => undefined);
      if (existing === undefined) throw err;
      await this.jsm.consumers.update(stream, durable, config);
    }
  }

  private async publishDurably(subject: string, body: string, msgID: string): Promise<void> {
    const deadline = Date.now() + this.options.publishTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new Error('the bus is closed');
      try {
        const left = Math.max(1_000, Math.min(5_000, deadline - Date.now()));
        await this.js.publish(subject, body, { msgID, timeout: left });
        return;
      } catch (err) {
        const wait = Math.min(2_000, 100 * 2 ** attempt);
        if (this.nc.isClosed() || Date.now() + wait >= deadline) throw err;
        this.logger?.warn({ err: errorText(err), subject, attempt }, 'publish failed; retrying');
        await delay(wait);
      }
    }
  }

  private async consume<M>(
    source: Source,
    stream: string,
    durable: string,
    parse: (data: string) => M,
    handler: Handler<M>,
    options: HandleOptions = {},
  ): Promise<Consumer> {
    if (this.closed) throw new Error('the bus is closed');
    const filter = `${this.prefix}.${source === 'dlq' ? 'dlq.>' : source}`;
    await this.ensureConsumer(stream, durable, filter);
    const consumer = await this.js.consumers.get(stream, durable);
    let stopping = false;
    const inFlight = new Set<Promise<void>>();
    const loop = async () => {
      while (!stopping) {
        let msg: JsMsg | null;
        try {
          msg = await consumer.next({ expires: this.options.pullExpiresMs });
        } catch (err) {
          if (stopping || this.nc.isClosed()) return;
          this.logger?.warn({ err: errorText(err), stream, durable }, 'pull failed; retrying');
          await delay(1_000);
          continue;
        }
        if (msg === null) continue;
        if (stopping) {
          msg.nak();
          return;
        }
        const work = this.deliver(source, msg, parse, handler);
        inFlight.add(work);
        await work;
        inFlight.delete(work);
      }
    };
    const loops = Array.from({ length: Math.max(1, options.concurrency ?? 1) }, () => loop());
    const done = Promise.all(loops).then(() => undefined);
    const entry = {
      stop: async (graceMs: number) => {
        stopping = true;
        // Pulls end within pullExpiresMs; handlers get graceMs, then are abandoned to redelivery.
        if (Number.isFinite(graceMs)) {
          // The grace timer is cancelled once the loops are done: it must not keep the process up.
          const grace = new AbortController();
          await Promise.race([done, delay(Math.max(graceMs, 0), undefined, { signal: grace.signal })]);
          grace.abort(); // the losing delay rejects into the settled race: handled, not unhandled
        } else await done;
        this.consumers.delete(entry);
      },
    };
    this.consumers.add(entry);
    return { stop: () => entry.stop(Number.POSITIVE_INFINITY) };
  }

  private async deliver<M>(
    source: Source,
    msg: JsMsg,
    parse: (data: string) => M,
    handler: Handler<M>,
  ): Promise<void> {
    const max = this.options.maxDeliveries;
    const attempt = msg.info.deliveryCount;
    const messageId = msg.headers?.get('Nats-Msg-Id') || `${msg.info.stream}:${msg.seq}`;
    const text = new TextDecoder().decode(msg.data);
    if (attempt > max) {
      await this.deadLetter(
        source,
        msg,
        messageId,
        text,
        `delivered ${attempt - 1} times without an acknowledgement`,
      );
      return;
    }
    let message: M;
    try {
      message = parse(text);
    } catch (err) {
      await this.deadLetter(source, msg, messageId, text, `malformed message: ${errorText(err)}`);
      return;
    }
    const heartbeat = setInterval(
      () => {
        try {
          msg.working();
        } catch {
          // connection gone: the message will be redelivered
        }
      },
      Math.max(250, this.options.ackWaitMs / 3),
    );
    this.heartbeats.add(heartbeat);
    const delivery: Delivery = { messageId, attempt, lastAttempt: attempt >= max };
    let failure: unknown;
    try {
      await handler(message, delivery);
    } catch (err) {
      failure = err ?? new Error('handler failed');
    } finally {
      clearInterval(heartbeat);
      this.heartbeats.delete(heartbeat);
    }
    if (this.nc.isClosed()) return; // abandoned: redelivered elsewhere after ack_wait
    try {
      if (failure === undefined) {
        await msg.ackAck();
      } else if (attempt >= max) {
        this.logger?.warn({ err: errorText(failure), source, messageId, attempt }, 'dead-lettering message');
        await this.deadLetter(source, msg, messageId, text, errorText(failure));
      } else {
        this.logger?.warn(
          { err: errorText(failure), source, messageId, attempt },
          'handler failed; redelivering',
        );
        msg.nak(Math.min(60_000, this.options.backoffMs * 2 ** (attempt - 1)));
      }
    } catch (err) {
      this.logger?.warn(
        { err: errorText(err), source, messageId },
        'could not settle a message; it will be redelivered',
      );
    }
  }

  private async deadLetter(
    source: Source,
    msg: JsMsg,
    messageId: string,
    text: string,
    error: string,
  ): Promise<void> {
    if (source === 'dlq') {
      msg.term(error); // a dead letter that cannot be handled is not dead-lettered again
      return;
    }
    let message: unknown = text;
    try {
      message = JSON.parse(text);
    } catch {
      // kept as text
    }
    const letter: DeadLetter = {
      source,
      messageId,
      message,
      deliveries: msg.info.deliveryCount,
      error,
      at: new Date().toISOString(),
    };
    const h = headers();
    h.set('Phoenix-Original-Msg-Id', messageId);
    try {
      await this.js.publish(`${this.prefix}.dlq.${source}`, JSON.stringify(letter), {
        msgID: `dlq:${source}:${messageId}`,
        headers: h,
        timeout: 5_000,
      });
      msg.term(error);
    } catch (err) {
      this.logger?.error(
        { err: errorText(err), messageId },
        'could not dead-letter a message; it will be redelivered',
      );
      msg.nak(this.options.backoffMs);
    }
  }

  private watchStatus(): void {
    void (async () => {
      for await (const status of this.nc.status()) {
        if (status.type === 'disconnect' || status.type === 'reconnect' || status.type === 'error')
          this.logger?.warn({ status: status.type }, `NATS ${status.type}`);
      }
    })().catch(() => undefined);
  }
}

const parseWith =
  <T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: Error } }) =>
  (text: string): T => {
    const parsed = schema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new Error(`does not match its schema: ${parsed.error.message}`);
    return parsed.data;
  };

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import {
  type Position,
  type ReadAllOptions,
  START,
  type StoredEvent,
  type SubscribeOptions,
  type SubscriptionMessage,
} from '../src/application/ports/event-store.js';
import type { LogReader } from '../src/application/ports/log-reader.js';
import type { ExperimentEvent } from '../src/domain/experiment.js';
import { LiveHub } from '../src/handlers/live-hub.js';

type Event = StoredEvent<ExperimentEvent>;

/** The log in memory: what the hub needs of a store (head, lastCommitted, readAll, subscribe). */
class MemoryLog {
  readonly events: Event[] = [];
  #wake: (() => void) | undefined;

  append(streamId: string, n = 1): Event[] {
    const added: Event[] = [];
    for (let i = 0; i < n; i++) {
      const seq = this.events.length + 1;
      const version = [...this.events, ...added].filter((e) => e.streamId === streamId).length + 1;
      added.push({
        streamId,
        version,
        position: `${String(seq).padStart(20, '0')}-${String(seq).padStart(20, '0')}`,
        type: 'ExperimentCancelled',
        data: { reason: `event ${seq}` },
        metadata: {
          eventId: `e-${seq}`,
          actor: 'test',
          correlationId: 'c',
          causationId: 'c',
          occurredAt: new Date(0).toISOString(),
          schemaVersion: 1,
        },
        recordedAt: new Date(0).toISOString(),
      } as unknown as Event);
    }
    this.events.push(...added);
    this.#wake?.();
    return added;
  }

  get head(): Position {
    return this.events.at(-1)?.position ?? START;
  }

  reader(): LogReader<ExperimentEvent> {
    const after = (from: Position | undefined, prefix?: string) =>
      this.events.filter((e) => e.position > (from ?? START) && (!prefix || e.streamId.startsWith(prefix)));
    const log = this;
    return {
      head: async () => this.head,
      lastCommitted: async () => this.head,
      readAll: async (o: ReadAllOptions) => after(o.after, o.streamPrefix).slice(0, o.limit),
      async *subscribe(o: SubscribeOptions): AsyncIterable<SubscriptionMessage<ExperimentEvent>> {
        let checkpoint = o.after ?? log.head;
        while (!o.signal?.aborted) {
          const page = after(checkpoint, o.streamPrefix).slice(0, o.batchSize ?? 500);
          if (page.length > 0) {
            checkpoint = page.at(-1)!.position;
            yield { kind: 'events', events: page };
            continue;
          }
          await new Promise<void>((resolve) => {
            log.#wake = resolve;
            o.signal?.addEventListener('abort', () => resolve(), { once: true });
          });
        }
      },
    } as unknown as LogReader<ExperimentEvent>;
  }
}

const settle = () => new Promise((r) => setTimeout(r, 20));

describe('LiveHub fan-out', () => {
  const log = new MemoryLog();
  const hub = new LiveHub(log.reader(), pino({ level: 'silent' }));
  const abort = new AbortController();
  after(async () => {
    abort.abort();
    await hub.stop();
  });

  it('hands every listener with the same filter the same array, and each listener only its matches', async () => {
    await hub.start();
    const got = new Map<string, (readonly Event[])[]>();
    const listen = async (name: string, prefix: string | undefined) => {
      got.set(name, []);
      await hub.attach(log.head, prefix, (events) => got.get(name)!.push(events), abort.signal);
    };
    await listen('all-1', 'experiment-');
    await listen('all-2', 'experiment-');
    await listen('a-1', 'experiment-a');
    await listen('a-2', 'experiment-a');
    await listen('b', 'experiment-b');
    log.append('experiment-a', 2);
    log.append('other-stream', 1);
    log.append('experiment-b', 1);
    await settle();

    const positions = (name: string) => got.get(name)!.flatMap((batch) => batch.map((e) => e.streamId));
    assert.deepEqual(positions('all-1'), ['experiment-a', 'experiment-a', 'experiment-b']);
    assert.deepEqual(positions('a-1'), ['experiment-a', 'experiment-a']);
    assert.deepEqual(positions('b'), ['experiment-b']);
    // Same filter, same batch: the very same array (so what is built from it is built once).
    const batchesAll1 = got.get('all-1')!;
    const batchesAll2 = got.get('all-2')!;
    assert.equal(batchesAll1.length, batchesAll2.length);
    for (const [i, batch] of batchesAll1.entries()) assert.equal(batch, batchesAll2[i]);
    for (const [i, batch] of got.get('a-1')!.entries()) assert.equal(batch, got.get('a-2')![i]);
  });

  it('a listener that throws does not keep the batch from the others, nor stop the hub', async () => {
    const good: Event[] = [];
    await hub.attach(
      log.head,
      'experiment-',
      () => {
        throw new Error('this connection is broken');
      },
      abort.signal,
    );
    await hub.attach(log.head, 'experiment-', (events) => good.push(...events), abort.signal);
    const first = log.append('experiment-c', 1);
    await settle();
    const second = log.append('experiment-c', 1);
    await settle();
    assert.deepEqual(
      good.map((e) => e.position),
      [...first, ...second].map((e) => e.position),
    );
  });

  it('a listener attached behind the hub gets the buffered events once, then live ones, none twice', async () => {
    const from = log.head;
    log.append('experiment-d', 3);
    await settle();
    const seen: Event[] = [];
    await hub.attach(from, 'experiment-', (events) => seen.push(...events), abort.signal);
    log.append('experiment-d', 2);
    await settle();
    assert.deepEqual(
      seen.map((e) => e.version),
      [1, 2, 3, 4, 5],
    );
  });
});

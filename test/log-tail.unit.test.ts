import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { LogTail, type LogTailSource, type TailMember } from '../src/adapters/log-tail.js';
import type { AnyEvent, StoredEvent } from '../src/application/ports/event-store.js';

/** An in-memory log: `append` makes events visible and wakes the tail; reads can be made to fail. */
class FakeLog implements LogTailSource<AnyEvent> {
  readonly events: StoredEvent<AnyEvent>[] = [];
  readonly wake = new EventEmitter();
  reads = 0;
  failNext: Error | undefined;
  isClosed = false;

  append(streamId: string, n = 1): void {
    for (let i = 0; i < n; i++) {
      const seq = this.events.length + 1;
      this.events.push({
        streamId,
        version: seq,
        position: String(seq).padStart(8, '0'),
        type: 'E',
        data: {},
        metadata: {
          eventId: `e${seq}`,
          actor: 't',
          correlationId: 'c',
          causationId: null,
          occurredAt: '2026-01-01T00:00:00.000Z',
          schemaVersion: 1,
        },
        recordedAt: '2026-01-01T00:00:00.000Z',
      });
    }
    this.wake.emit('wake');
  }

  pos(seq: number): string {
    return String(seq).padStart(8, '0');
  }

  async read(after: string, limit: number): Promise<StoredEvent<AnyEvent>[]> {
    this.reads++;
    await new Promise((r) => setImmediate(r));
    if (this.failNext) {
      const err = this.failNext;
      this.failNext = undefined;
      throw err;
    }
    return this.events.filter((e) => e.position > after).slice(0, limit);
  }

  heldBackAsked = 0;
  appending = false;

  async heldBack(): Promise<boolean> {
    this.heldBackAsked++;
    return false;
  }

  wakeComing(): boolean {
    return this.appending;
  }

  nextWake() {
    let cancel: () => void = () => undefined;
    const promise = new Promise<void>((resolve) => {
      this.wake.once('wake', resolve);
      cancel = () => {
        this.wake.off('wake', resolve);
        resolve();
      };
    });
    return { promise, cancel };
  }

  closed(): boolean {
    return this.isClosed;
  }
}

const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

/** Everything a member has waiting now. */
const drain = (m: TailMember<AnyEvent>) => m.take(1_000_000).map((e) => e.position);

describe('LogTail', () => {
  it('reads each new page once for all its members, who each get every event in order', async () => {
    const log = new FakeLog();
    log.append('experiment-a', 3);
    const tail = new LogTail(log, { idlePollMs: 10_000 });
    const a = tail.join(log.pos(3), undefined);
    const b = tail.join(log.pos(3), undefined);
    await settle();
    const readsBefore = log.reads;
    log.append('experiment-a', 2);
    await settle();
    log.append('experiment-b', 1);
    await settle();
    assert.deepEqual(drain(a), [log.pos(4), log.pos(5), log.pos(6)]);
    assert.deepEqual(drain(b), [log.pos(4), log.pos(5), log.pos(6)]);
    assert.equal(log.reads - readsBefore, 2, 'one read per wake, whatever the number of members');
    a.leave();
    b.leave();
    log.append('experiment-a');
    await settle();
  });

  it('a member joining behind the tail reads the gap itself and gets only what follows it', async () => {
    const log = new FakeLog();
    const tail = new LogTail(log, { idlePollMs: 10_000 });
    const first = tail.join(log.pos(0), undefined);
    log.append('experiment-a', 5);
    await settle();
    assert.deepEqual(
      drain(first),
      [1, 2, 3, 4, 5].map((n) => log.pos(n)),
    );
    const late = tail.join(log.pos(2), undefined);
    assert.equal(late.gapThrough, log.pos(5), 'told to read 3..5 itself');
    log.append('experiment-a', 2);
    await settle();
    assert.deepEqual(drain(late), [log.pos(6), log.pos(7)]);
    assert.deepEqual(drain(first), [log.pos(6), log.pos(7)]);
    first.leave();
    late.leave();
  });

  it('a member joining ahead of the tail drops what it has already', async () => {
    const log = new FakeLog();
    log.append('experiment-a', 4);
    const tail = new LogTail(log, { idlePollMs: 10_000 });
    const slow = tail.join(log.pos(1), undefined); // the tail starts at 1 and reads 2..4
    const ahead = tail.join(log.pos(3), undefined);
    assert.equal(ahead.gapThrough, undefined);
    await settle();
    assert.deepEqual(drain(slow), [log.pos(2), log.pos(3), log.pos(4)]);
    assert.deepEqual(drain(ahead), [log.pos(4)]);
    slow.leave();
    ahead.leave();
  });

  it('filters by stream prefix', async () => {
    const log = new FakeLog();
    const tail = new LogTail(log, { idlePollMs: 10_000 });
    const onlyA = tail.join(log.pos(0), 'experiment-a');
    log.append('experiment-a');
    log.append('experiment-b');
    log.append('experiment-a');
    await settle();
    assert.deepEqual(drain(onlyA), [log.pos(1), log.pos(3)]);
    onlyA.leave();
  });

  it('lets a member go whose queue outgrows the bound, and goes on feeding the others', async () => {
    const log = new FakeLog();
    const tail = new LogTail(log, { idlePollMs: 10_000, maxQueued: 5 });
    const slow = tail.join(log.pos(0), undefined);
    const quick = tail.join(log.pos(0), undefined);
    let woke = false;
    void slow.wait(undefined).then(() => (woke = true));
    log.append('experiment-a', 3);
    await settle();
    assert.equal(drain(quick).length, 3);
    assert.ok(slow.attached);
    log.append('experiment-a', 3); // slow now has 6 waiting
    await settle();
    assert.equal(slow.attached, false);
    assert.equal(slow.failed, false);
    assert.deepEqual(drain(slow), [], 'its queue is dropped: it reads from its own position');
    assert.ok(woke, 'a waiting member wakes when let go');
    assert.equal(tail.size, 1);
    log.append('experiment-a');
    await settle();
    assert.deepEqual(drain(quick), [log.pos(4), log.pos(5), log.pos(6), log.pos(7)]);
    quick.leave();
  });

  it('lets every member go when a read fails', async () => {
    const log = new FakeLog();
    const tail = new LogTail(log, { idlePollMs: 10_000 });
    const a = tail.join(log.pos(0), undefined);
    const b = tail.join(log.pos(0), undefined);
    await settle();
    log.failNext = new Error('corrupt event');
    log.append('experiment-a');
    await settle();
    assert.equal(a.attached, false);
    assert.equal(b.attached, false);
    assert.ok(a.failed && b.failed, 'told it was a failure');
    assert.equal(tail.size, 0);
    // A new member starts the tail again, from its own checkpoint.
    const c = tail.join(log.pos(1), undefined);
    log.append('experiment-a');
    await settle();
    assert.deepEqual(drain(c), [log.pos(2)]);
    c.leave();
  });

  it('asks "is anything held back?" only when no append of this process is sure to wake it', async () => {
    const log = new FakeLog();
    const tail = new LogTail(log, { idlePollMs: 10_000 });
    const a = tail.join(log.pos(0), undefined);
    await settle();
    const asked = log.heldBackAsked;
    assert.ok(asked >= 1, 'asked when idle');
    log.appending = true;
    log.append('experiment-a');
    await settle();
    assert.equal(log.heldBackAsked, asked, 'not asked while an append is in flight');
    log.appending = false;
    log.append('experiment-a');
    await settle();
    assert.equal(log.heldBackAsked, asked + 1);
    assert.deepEqual(drain(a), [log.pos(1), log.pos(2)]);
    a.leave();
  });

  it('stops reading when the last member leaves, and lets members go when the store closes', async () => {
    const log = new FakeLog();
    const tail = new LogTail(log, { idlePollMs: 10_000 });
    const a = tail.join(log.pos(0), undefined);
    await settle();
    a.leave();
    log.append('experiment-a'); // one last read, then the loop ends
    await settle();
    const reads = log.reads;
    log.append('experiment-a');
    await settle();
    assert.equal(log.reads, reads, 'no member, no reads');
    const b = tail.join(log.pos(2), undefined);
    await settle();
    log.isClosed = true;
    log.wake.emit('wake');
    await settle();
    assert.equal(b.attached, false);
  });
});

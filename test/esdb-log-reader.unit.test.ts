import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type AllStreamResolvedEvent,
  START as ESDB_START,
  type Position as EsdbPosition,
  type ReadAllOptions as EsdbReadAllOptions,
  UnavailableError,
} from '@eventstore/db-client';
import {
  type EsdbLogClient,
  EsdbLogReader,
  formatEsdbPosition,
  parseEsdbPosition,
  unavailableOr,
} from '../src/adapters/esdb-log-reader.js';
import {
  CorruptEventError,
  isPosition,
  START,
  StoreUnavailableError,
} from '../src/application/ports/event-store.js';

/**
 * The EventStoreDB log reader without a server (the conformance suite runs it against one where
 * EVENTSTORE_URL is set): positions mapped to and from Phoenix's, and `$all` read through a stand-in for
 * the client that serves resolved events of the client's own types the way the server pages them
 * (from a position, inclusive; at most maxCount).
 */

const metadata = (n: number) => ({
  eventId: `00000000-0000-4000-8000-${n.toString().padStart(12, '0')}`,
  actor: 'test',
  correlationId: 'c',
  causationId: null,
  occurredAt: '2026-01-01T00:00:00.000Z',
  schemaVersion: 1,
});

/** `$all` as the server holds it: experiment events, another prefix's, and system events in between. */
function log(): AllStreamResolvedEvent[] {
  const out: AllStreamResolvedEvent[] = [];
  for (let i = 0; i < 250; i++) {
    // commit positions grow with gaps, and cross a power of ten (string order must still hold)
    const position: EsdbPosition = { commit: BigInt(90 + i * 7), prepare: BigInt(90 + i * 7) };
    const kind = i % 5;
    const streamId = kind === 3 ? '$stats-127.0.0.1:2113' : kind === 4 ? `other-${i}` : `experiment-${i % 7}`;
    out.push({
      event: {
        streamId,
        id: `e${i}`,
        revision: BigInt(i),
        type: kind === 3 ? '$statsCollected' : 'Thing',
        created: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
        data: { n: i },
        metadata: metadata(i),
        isJson: true,
        contentType: 'application/json',
        position,
      },
    } as AllStreamResolvedEvent);
  }
  return out;
}

/** The part of the client the reader uses, over `events`; counts the reads. */
function fakeClient(events: AllStreamResolvedEvent[]): EsdbLogClient & { reads: number } {
  const client = {
    reads: 0,
    readAll(options?: EsdbReadAllOptions) {
      client.reads++;
      const from = options?.fromPosition;
      const start =
        from === undefined || from === ESDB_START
          ? 0
          : events.findIndex((e) => {
              const p = e.event!.position;
              return (
                from !== 'end' &&
                (p.commit > from.commit || (p.commit === from.commit && p.prepare >= from.prepare))
              );
            });
      const page = start < 0 ? [] : events.slice(start, start + Number(options?.maxCount ?? events.length));
      return (async function* () {
        yield* page;
      })();
    },
    subscribeToAll() {
      throw new Error('not used here');
    },
  };
  return client as unknown as EsdbLogClient & { reads: number };
}

describe('EventStoreDB positions', () => {
  it('map to fixed-width text that orders as the log does, and back', () => {
    const positions: EsdbPosition[] = [
      { commit: 0n, prepare: 0n },
      { commit: 9n, prepare: 9n },
      { commit: 10n, prepare: 2n },
      { commit: 18446744073709551615n, prepare: 9223372036854775807n },
    ];
    const texts = positions.map(formatEsdbPosition);
    assert.equal(texts[1], '00000000000000000009-00000000000000000009');
    assert.deepEqual([...texts].sort(), texts, 'string order is log order');
    for (const [i, text] of texts.entries()) {
      assert.ok(isPosition(text), text);
      assert.deepEqual(parseEsdbPosition(text), positions[i]);
    }
    assert.equal(parseEsdbPosition(START), ESDB_START);
  });

  it('refuses text no EventStoreDB position maps to', () => {
    for (const bad of ['', '1', '12-34', `${'9'.repeat(20)}-${'0'.repeat(20)}`, 'x'.repeat(41)]) {
      assert.throws(() => parseEsdbPosition(bad), /is not an EventStoreDB position/, bad);
    }
  });
});

describe('EsdbLogReader over $all', () => {
  const all = log();
  const experiment = all.filter((r) => r.event!.streamId.startsWith('experiment-'));
  const nonSystem = all.filter((r) => !r.event!.streamId.startsWith('$'));
  const positionOf = (r: AllStreamResolvedEvent) => formatEsdbPosition(r.event!.position);

  it('reads pages after a position (exclusive), leaving system events and other prefixes out', async () => {
    const reader = new EsdbLogReader(fakeClient(all), { streamPrefix: 'experiment-' });
    const first = await reader.readAll({ limit: 40 });
    assert.deepEqual(
      first.map((e) => e.position),
      experiment.slice(0, 40).map(positionOf),
    );
    const next = await reader.readAll({ after: first.at(-1)!.position, limit: 1000 });
    assert.deepEqual(
      next.map((e) => e.position),
      experiment.slice(40).map(positionOf),
    );
    // a call's own prefix wins; without a prefix every non-system stream is read
    const unfiltered = new EsdbLogReader(fakeClient(all));
    assert.deepEqual(
      (await unfiltered.readAll({ limit: 1000 })).map((e) => e.position),
      nonSystem.map(positionOf),
    );
    const others = await reader.readAll({ limit: 1000, streamPrefix: 'other-' });
    assert.ok(others.length > 0 && others.every((e) => e.streamId.startsWith('other-')));
  });

  it('maps each event: version is revision + 1, the store position, the recording time', async () => {
    const [event] = await new EsdbLogReader(fakeClient(all)).readAll({ limit: 1 });
    const source = all[0]!.event!;
    assert.deepEqual(event, {
      streamId: source.streamId,
      version: Number(source.revision) + 1,
      position: formatEsdbPosition(source.position),
      type: 'Thing',
      data: { n: 0 },
      metadata: metadata(0),
      recordedAt: '2026-01-01T00:00:00.000Z',
    });
  });

  it('reads a rebuild range up to a bound (inclusive), and says when nothing up to it follows', async () => {
    const reader = new EsdbLogReader(fakeClient(all), { streamPrefix: 'experiment-' });
    const bound = positionOf(experiment[100]!);
    const got: string[] = [];
    let after = START;
    let pages = 0;
    for (;;) {
      const { events, done } = await reader.readRange(after, bound, 33);
      pages++;
      got.push(...events.map((e) => e.position));
      if (done) break;
      assert.equal(events.length, 33, 'a page that is not the last is full');
      after = events.at(-1)!.position;
    }
    assert.deepEqual(got, experiment.slice(0, 101).map(positionOf));
    assert.equal(pages, 4);
    // a bound between two experiment events ends the range at the last event before it
    const between = positionOf(all.find((r) => r.event!.streamId.startsWith('$'))!);
    const short = await reader.readRange(START, between, 1000);
    assert.equal(short.done, true);
    assert.ok(short.events.every((e) => e.position < between));
  });

  it('an event it cannot read is a CorruptEventError naming it', async () => {
    const binary = log().slice(0, 1);
    (binary[0]!.event as { isJson: boolean }).isJson = false;
    await assert.rejects(new EsdbLogReader(fakeClient(binary)).readAll({ limit: 5 }), CorruptEventError);
  });

  it("the client's unavailable and deadline errors become StoreUnavailableError; others pass", () => {
    const down = new UnavailableError(undefined, 'connection refused');
    const mapped = unavailableOr(down);
    assert.ok(mapped instanceof StoreUnavailableError);
    assert.equal((mapped as Error).cause, down);
    const other = new Error('no');
    assert.equal(unavailableOr(other), other);
  });
});

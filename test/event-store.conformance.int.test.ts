import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import { EsdbEventStore } from '../src/adapters/esdb-event-store.js';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import { experimentCodec } from '../src/application/experiment-codec.js';
import type { SqlDatabase } from '../src/application/ports/database.js';
import {
  type AnyEvent,
  CorruptEventError,
  DuplicateEventIdError,
  type EventCodec,
  type EventStore,
  type NewEvent,
  START,
  type StoredEvent,
  WrongExpectedVersionError,
} from '../src/application/ports/event-store.js';
import type { ExperimentEvent } from '../src/domain/experiment.js';
import { pgliteTestDatabase, postgresTestDatabase, type TestDatabase } from './support/databases.js';

/**
 * One conformance suite for every EventStore adapter. Each fixture opens stores over one backing
 * store; `slowAppend` (SQL stores only) holds an append's transaction open to commit it late.
 */
interface Fixture {
  readonly name: string;
  readonly skip: string | undefined;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  open<E extends AnyEvent>(codec?: EventCodec<E>): EventStore<E>;
  slowAppend?(
    streamId: string,
    events: readonly NewEvent[],
    holdMs: number,
    rollback: boolean,
  ): Promise<void>;
  /**
   * Opens a transaction that holds a transaction id in another database of the same server, for as
   * long as the returned function is not called; a reason string when there is no such database.
   */
  foreignTransaction?(): Promise<(() => Promise<void>) | string>;
  /** The connection URL of the SQL store's database, when it has a server. */
  url?(): string | undefined;
  /** The SQL store's database, for statements of its own. */
  sql?(): SqlDatabase;
  /** Why transactions of this store cannot overlap, if they cannot. */
  readonly serialTransactions?: string;
}

const sqlFixture = (db: TestDatabase, serialTransactions?: string): Fixture => {
  let database: SqlDatabase | undefined;
  const stores: EventStore<AnyEvent>[] = [];
  return {
    name: db.name,
    skip: db.skip,
    ...(serialTransactions ? { serialTransactions } : {}),
    async setup() {
      database = await db.open();
    },
    async teardown() {
      await Promise.all(stores.map((s) => s.close()));
      await database?.close();
    },
    open<E extends AnyEvent>(codec?: EventCodec<E>) {
      // A small queue per caught-up subscriber, so that slow ones are let go and read on their own.
      const options = { idlePollMs: 200, tailMaxQueued: 20 };
      const store = new PostgresEventStore<E>(database!, codec ? { codec, ...options } : options);
      stores.push(store as unknown as EventStore<AnyEvent>);
      return store;
    },
    url() {
      return (database as { url?: string } | undefined)?.url;
    },
    sql() {
      return database!;
    },
    async foreignTransaction() {
      const url = (database as { url?: string } | undefined)?.url;
      if (!url) return 'no server: the embedded database is the only one';
      const other = new URL(url);
      const name = other.pathname.slice(1) === 'postgres' ? 'template1' : 'postgres';
      other.pathname = `/${name}`;
      other.searchParams.delete('options');
      const client = new pg.Client({ connectionString: other.toString() });
      try {
        await client.connect();
      } catch (err) {
        return `cannot reach database '${name}' on the same server: ${(err as Error).message}`;
      }
      await client.query('begin');
      await client.query('select pg_current_xact_id()');
      return async () => {
        await client.query('rollback');
        await client.end();
      };
    },
    async slowAppend(streamId, events, holdMs, rollback) {
      const payload = JSON.stringify([{ stream: streamId, expected: 'any', events }]);
      await database!.db
        .transaction()
        .execute(async (tx) => {
          await sql`select * from phoenix_append_each(${payload}::jsonb)`.execute(tx);
          await sql`select pg_sleep(${holdMs / 1000})`.execute(tx);
          if (rollback) throw new RollbackOnPurpose();
        })
        .catch((err) => {
          if (!(err instanceof RollbackOnPurpose)) throw err;
        });
    },
  };
};

class RollbackOnPurpose extends Error {}

const esdbFixture = (): Fixture => {
  const url = process.env.EVENTSTORE_URL;
  const stores: EventStore<AnyEvent>[] = [];
  return {
    name: 'EventStoreDB',
    skip: url
      ? undefined
      : 'EVENTSTORE_URL is not set: no EventStoreDB/KurrentDB server runs on this machine',
    async setup() {},
    async teardown() {
      await Promise.all(stores.map((s) => s.close()));
    },
    open<E extends AnyEvent>(codec?: EventCodec<E>) {
      const store = new EsdbEventStore<E>(url!, codec ? { codec } : {});
      stores.push(store as unknown as EventStore<AnyEvent>);
      return store;
    },
  };
};

const fixtures: Fixture[] = [
  sqlFixture(postgresTestDatabase()),
  sqlFixture(
    pgliteTestDatabase(),
    'PGlite runs one transaction at a time, so a later position cannot commit first',
  ),
  esdbFixture(),
];

const newEvent = (
  type = 'ExperimentStarted',
  data: unknown = { at: new Date().toISOString() },
): NewEvent => ({
  type,
  data,
  metadata: {
    eventId: randomUUID(),
    actor: 'conformance',
    correlationId: randomUUID(),
    causationId: null,
    occurredAt: new Date().toISOString(),
    schemaVersion: 1,
  },
});
const stream = () => `experiment-${randomUUID()}`;

const expectWrongVersion = async (p: Promise<unknown>, actual: number) =>
  assert.rejects(p, (err: unknown) => err instanceof WrongExpectedVersionError && err.actual === actual);

/** Reads a subscription until `done` says it has everything, or `timeoutMs` passes. */
async function collect<E extends AnyEvent>(
  store: EventStore<E>,
  options: { after?: string; streamPrefix?: string },
  done: (seen: StoredEvent<E>[]) => boolean,
  timeoutMs = 20_000,
): Promise<{ seen: StoredEvent<E>[]; liveAt: number }> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const seen: StoredEvent<E>[] = [];
  let liveAt = -1;
  try {
    for await (const message of store.subscribe({ ...options, signal: controller.signal, batchSize: 50 })) {
      if (message.kind === 'events') seen.push(...message.events);
      if (message.kind === 'live' && liveAt < 0) liveAt = seen.length;
      if (done(seen)) break;
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return { seen, liveAt };
}

for (const fixture of fixtures) {
  describe(`EventStore conformance: ${fixture.name}`, { skip: fixture.skip }, () => {
    let store: EventStore<AnyEvent>;
    before(async () => {
      await fixture.setup();
      store = fixture.open();
    });
    after(() => fixture.teardown());

    describe('expected-version modes', () => {
      it('no_stream: creates a stream, refuses an existing one', async () => {
        const s = stream();
        assert.equal((await store.append(s, [newEvent()], 'no_stream')).version, 1);
        await expectWrongVersion(store.append(s, [newEvent()], 'no_stream'), 1);
      });
      it('stream_exists: refuses a missing stream, appends to an existing one', async () => {
        const s = stream();
        await expectWrongVersion(store.append(s, [newEvent()], 'stream_exists'), 0);
        await store.append(s, [newEvent()], 'no_stream');
        assert.equal((await store.append(s, [newEvent(), newEvent()], 'stream_exists')).version, 3);
      });
      it('exact version: appends at that version only, and reports the actual one', async () => {
        const s = stream();
        await store.append(s, [newEvent(), newEvent()], 0);
        assert.equal((await store.append(s, [newEvent()], 2)).version, 3);
        await expectWrongVersion(store.append(s, [newEvent()], 2), 3);
        await expectWrongVersion(store.append(s, [newEvent()], 7), 3);
        await expectWrongVersion(store.append(stream(), [newEvent()], 1), 0);
      });
      it('any: appends whatever the stream holds', async () => {
        const s = stream();
        assert.equal((await store.append(s, [newEvent()], 'any')).version, 1);
        assert.equal((await store.append(s, [newEvent()], 'any')).version, 2);
      });
      it('a refused append writes nothing', async () => {
        const s = stream();
        await store.append(s, [newEvent()], 'no_stream');
        await expectWrongVersion(store.append(s, [newEvent(), newEvent()], 5), 1);
        assert.equal((await store.readStream(s)).length, 1);
      });
    });

    it('20 concurrent appends with the same expected version: exactly one succeeds', async () => {
      const s = stream();
      await store.append(s, [newEvent()], 'no_stream');
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, () => store.append(s, [newEvent()], 1)),
      );
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter(
        (r) => r.status === 'rejected' && r.reason instanceof WrongExpectedVersionError,
      );
      assert.equal(won.length, 1);
      assert.equal(lost.length, 19);
      assert.equal((await store.readStream(s)).length, 2);
    });

    it('20 concurrent creations of one stream: exactly one succeeds', async () => {
      const s = stream();
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, () => store.append(s, [newEvent()], 'no_stream')),
      );
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      assert.equal((await store.readStream(s)).length, 1);
    });

    it('stores in several processes racing to create the same streams: one wins each, the rest learn the version', async () => {
      const stores = Array.from({ length: 4 }, () => fixture.open());
      const streams = Array.from({ length: 12 }, () => stream());
      const results = await Promise.all(
        stores.map((st) =>
          Promise.allSettled(
            // Each store's batches mix contested streams with streams of its own.
            streams.flatMap((s) => [
              st.append(s, [newEvent()], 'no_stream'),
              st.append(stream(), [newEvent()], 'no_stream'),
            ]),
          ),
        ),
      );
      for (const [i, s] of streams.entries()) {
        const mine = results.map((r) => r[i * 2]!);
        assert.equal(mine.filter((r) => r.status === 'fulfilled').length, 1, s);
        for (const r of mine) {
          if (r.status === 'rejected')
            assert.ok(r.reason instanceof WrongExpectedVersionError, String(r.reason));
        }
        assert.equal((await store.readStream(s)).length, 1);
      }
      for (const r of results.flat().filter((_, k) => k % 2 === 1)) assert.equal(r.status, 'fulfilled');
    });

    it('a retry racing its original from other processes is stored once, and every copy is answered the same', async () => {
      const stores = Array.from({ length: 4 }, () => fixture.open());
      const s = stream();
      await store.append(s, [newEvent()], 'no_stream');
      const batch = [newEvent(), newEvent()];
      const answers = await Promise.all(
        stores.flatMap((st) => [st.append(s, batch, 'any'), st.append(s, batch, 1)]),
      );
      for (const a of answers) assert.deepEqual(a, answers[0]);
      assert.equal(answers[0]!.version, 3);
      assert.equal((await store.readStream(s)).length, 3);
    });

    it('an append retried with the same event ids is stored once and answered the same', async () => {
      const s = stream();
      const batch = [newEvent(), newEvent()];
      const first = await store.append(s, batch, 'no_stream');
      const again = await store.append(s, batch, 'no_stream');
      const anyMode = await store.append(s, batch, 'any');
      assert.deepEqual(again, first);
      assert.deepEqual(anyMode, first);
      const concurrent = await Promise.all(
        Array.from({ length: 5 }, () => store.append(s, [batch[1]!], 'any')),
      );
      for (const r of concurrent) assert.equal(r.version, 2);
      assert.equal((await store.readStream(s)).length, 2);
    });

    it('an event id stored elsewhere is refused, not stored twice', async () => {
      const e = newEvent();
      await store.append(stream(), [e], 'no_stream');
      await assert.rejects(store.append(stream(), [e], 'no_stream'), DuplicateEventIdError);
    });

    it('reads its own stream right after appending, in version order, with metadata', async () => {
      const s = stream();
      const batch = [newEvent(), newEvent(), newEvent()];
      const result = await store.append(s, batch, 'no_stream');
      const read = await store.readStream(s);
      assert.deepEqual(
        read.map((e) => [e.version, e.metadata.eventId, e.type]),
        batch.map((e, i) => [i + 1, e.metadata.eventId, e.type]),
      );
      assert.equal(read[2]!.position, result.position);
      assert.deepEqual(read[0]!.metadata, batch[0]!.metadata);
      assert.deepEqual(read[0]!.data, batch[0]!.data);
      assert.ok(read[0]!.position < read[1]!.position && read[1]!.position < read[2]!.position);
    });

    it('reads a stream from a version, to a version, up to a time', async () => {
      const s = stream();
      await store.append(s, [newEvent(), newEvent()], 'no_stream');
      await new Promise((r) => setTimeout(r, 50));
      const cut = new Date();
      await new Promise((r) => setTimeout(r, 50));
      await store.append(s, [newEvent(), newEvent()], 2);
      assert.deepEqual(
        (await store.readStream(s, { fromVersion: 2 })).map((e) => e.version),
        [2, 3, 4],
      );
      assert.deepEqual(
        (await store.readStream(s, { toVersion: 3 })).map((e) => e.version),
        [1, 2, 3],
      );
      assert.deepEqual(
        (await store.readStream(s, { until: cut })).map((e) => e.version),
        [1, 2],
      );
      assert.deepEqual(
        (await store.readStream(s, { fromVersion: 2, limit: 1 })).map((e) => e.version),
        [2],
      );
      assert.deepEqual(await store.readStream(stream()), []);
    });

    describe('streams longer than 10 and than 100 events: every read path in version order', () => {
      /** A fold that needs its events in order: the last `n` it applied, and whether each followed the one before. */
      const fold = (events: readonly StoredEvent[]) =>
        events.reduce(
          (s, e) => {
            const n = (e.data as { n: number }).n;
            return { last: n, inOrder: s.inOrder && n === s.last + 1 };
          },
          { last: 0, inOrder: true },
        );
      const upTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

      for (const length of [12, 105]) {
        it(`${length} events, appended one to seven at a time: whole, paged, ranged, in the log, subscribed`, async () => {
          const s = stream();
          let version = 0;
          for (let k = 0; version < length; k++) {
            const n = Math.min(length - version, 1 + (k % 7));
            const events = Array.from({ length: n }, (_, i) => newEvent('Counted', { n: version + i + 1 }));
            const result = await store.append(s, events, version === 0 ? 'no_stream' : version);
            version += n;
            assert.equal(result.version, version);
          }
          const all = upTo(length);

          // the whole stream (the command path's read, batched with reads of other streams)
          const [whole, none, again] = await Promise.all([
            store.readStream(s),
            store.readStream(stream()),
            store.readStream(s),
          ]);
          assert.deepEqual(none, []);
          for (const read of [whole, again]) {
            assert.deepEqual(
              read.map((e) => e.version),
              all,
            );
            assert.deepEqual(
              read.map((e) => (e.data as { n: number }).n),
              all,
            );
          }
          for (let i = 1; i < whole.length; i++) assert.ok(whole[i - 1]!.position < whole[i]!.position);
          assert.deepEqual(fold(whole), { last: length, inOrder: true });

          // paged by fromVersion and limit, as a client of GET …/events pages
          for (const limit of [1, 3, 10, 11, 100]) {
            const paged: StoredEvent[] = [];
            for (let from = 1; ; ) {
              const page = await store.readStream(s, { fromVersion: from, limit });
              paged.push(...page);
              if (page.length < limit) break;
              from = page[page.length - 1]!.version + 1;
            }
            assert.deepEqual(
              paged.map((e) => e.version),
              all,
              `pages of ${limit}`,
            );
          }

          // ranged: from a version, to a version (time travel), up to a time
          assert.deepEqual(
            (await store.readStream(s, { fromVersion: 9 })).map((e) => e.version),
            all.slice(8),
          );
          for (const to of [2, 10, 11, length]) {
            const travelled = await store.readStream(s, { toVersion: to });
            assert.deepEqual(
              travelled.map((e) => e.version),
              upTo(to),
            );
            assert.deepEqual(fold(travelled), { last: to, inOrder: true });
          }
          assert.deepEqual(
            (await store.readStream(s, { fromVersion: 2, toVersion: 11, limit: 9 })).map((e) => e.version),
            upTo(10).slice(1),
          );
          assert.deepEqual(
            (await store.readStream(s, { until: new Date(Date.now() + 60_000) })).map((e) => e.version),
            all,
          );

          // the global log, filtered to the stream, and a subscription from the start
          const logged: StoredEvent[] = [];
          const deadline = Date.now() + 15_000;
          for (let after = START; logged.length < length && Date.now() < deadline; ) {
            const page = await store.readAll({ after, limit: 7, streamPrefix: s });
            if (page.length === 0) {
              await new Promise((r) => setTimeout(r, 20));
              continue;
            }
            logged.push(...page);
            after = page[page.length - 1]!.position;
          }
          assert.deepEqual(
            logged.map((e) => e.version),
            all,
          );
          const { seen } = await collect(store, { after: START, streamPrefix: s }, (x) => x.length >= length);
          assert.deepEqual(
            seen.map((e) => e.version),
            all,
          );
          assert.deepEqual(fold(seen), { last: length, inOrder: true });
        });
      }
    });

    it('reads the global log in pages, in order, after a position', async () => {
      const startAt = await store.head();
      const s1 = stream();
      const s2 = stream();
      await store.append(s1, [newEvent()], 'no_stream');
      await store.append(s2, [newEvent(), newEvent()], 'no_stream');
      await store.append(s1, [newEvent()], 1);
      // Readers see an event once every older transaction has ended (anywhere on the cluster): wait for
      // ours to become readable rather than assume it is at once.
      const pages: StoredEvent[] = [];
      let cursor = startAt;
      const deadline = Date.now() + 15_000;
      while (
        pages.filter((e) => e.streamId === s1 || e.streamId === s2).length < 4 &&
        Date.now() < deadline
      ) {
        const page = await store.readAll({ after: cursor, limit: 2 });
        if (page.length === 0) {
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        pages.push(...page);
        cursor = page[page.length - 1]!.position;
      }
      const ours = pages.filter((e) => e.streamId === s1 || e.streamId === s2);
      assert.deepEqual(
        ours.map((e) => `${e.streamId === s1 ? 's1' : 's2'}:${e.version}`),
        ['s1:1', 's2:1', 's2:2', 's1:2'],
      );
      for (let i = 1; i < pages.length; i++) assert.ok(pages[i - 1]!.position < pages[i]!.position);
      assert.ok((await store.head()) >= cursor);
    });

    it('subscribes: the backlog, then live, then new events, each once', async () => {
      const from = await store.head();
      const s = stream();
      await store.append(s, [newEvent(), newEvent()], 'no_stream');
      const collecting = collect(
        store,
        { after: from },
        (seen) => seen.filter((e) => e.streamId === s).length >= 4,
      );
      await new Promise((r) => setTimeout(r, 200));
      await store.append(s, [newEvent()], 2);
      await store.append(s, [newEvent()], 3);
      const { seen, liveAt } = await collecting;
      const ours = seen.filter((e) => e.streamId === s);
      assert.deepEqual(
        ours.map((e) => e.version),
        [1, 2, 3, 4],
      );
      assert.ok(liveAt >= 0, 'the subscription said when it went live');
      // Resuming after the second event delivers exactly the rest.
      const resumed = await collect(
        store,
        { after: ours[1]!.position },
        (x) => x.filter((e) => e.streamId === s).length >= 2,
      );
      assert.deepEqual(
        resumed.seen.filter((e) => e.streamId === s).map((e) => e.version),
        [3, 4],
      );
    });

    it('many subscribers at once, joining at different points, one slow, under 8 writers: each gets every event once, in order', async () => {
      const from = await store.head();
      const prefix = `experiment-${randomUUID().slice(0, 8)}`;
      const ids: string[] = [];
      const sentinel = newEvent();
      const hasSentinel = (seen: StoredEvent<AnyEvent>[]) =>
        seen.some((e) => e.metadata.eventId === sentinel.metadata.eventId);
      const writers = Array.from({ length: 8 }, async (_, w) => {
        for (let i = 0; i < 40; i++) {
          const e = newEvent();
          ids.push(e.metadata.eventId);
          await store.append(`${prefix}-${w}`, [e], i === 0 ? 'no_stream' : i);
          await new Promise((r) => setTimeout(r, 3));
        }
      });
      // slowMs: how long the subscriber takes over each batch while it holds events 60 to 160 (so it
      // falls behind after it has caught up, and catches up again).
      const subscriber = async (startAfterMs: number, slowMs: number) => {
        await new Promise((r) => setTimeout(r, startAfterMs));
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(), 30_000);
        const seen: StoredEvent<AnyEvent>[] = [];
        try {
          for await (const m of store.subscribe({
            after: from,
            streamPrefix: prefix,
            signal: controller.signal,
            batchSize: 7,
          })) {
            if (m.kind !== 'events') continue;
            seen.push(...m.events);
            if (hasSentinel(seen)) break;
            if (slowMs > 0 && seen.length > 60 && seen.length < 160)
              await new Promise((r) => setTimeout(r, slowMs));
          }
        } finally {
          clearTimeout(timer);
          controller.abort();
        }
        return seen;
      };
      const subscribers = [
        subscriber(0, 0),
        subscriber(0, 0),
        subscriber(30, 0),
        subscriber(80, 0),
        subscriber(10, 15),
      ];
      await Promise.all(writers);
      await store.append(`${prefix}-end`, [sentinel], 'no_stream');
      const results = await Promise.all(subscribers);
      for (const [n, seen] of results.entries()) {
        const got = seen.filter((e) => e.metadata.eventId !== sentinel.metadata.eventId);
        const gotIds = got.map((e) => e.metadata.eventId);
        assert.equal(new Set(gotIds).size, gotIds.length, `subscriber ${n}: no event twice`);
        assert.deepEqual(new Set(gotIds), new Set(ids), `subscriber ${n}: every event`);
        for (let i = 1; i < seen.length; i++)
          assert.ok(seen[i - 1]!.position < seen[i]!.position, `subscriber ${n}: in position order`);
      }
    });

    it('subscribes without a position: starts at the head', async () => {
      const s = stream();
      await store.append(s, [newEvent()], 'no_stream');
      const controller = new AbortController();
      const messages: string[] = [];
      const iterator = store.subscribe({ signal: controller.signal })[Symbol.asyncIterator]();
      const first = await iterator.next();
      messages.push(first.done ? 'done' : first.value.kind);
      const next = iterator.next();
      await store.append(s, [newEvent()], 1);
      const second = await next;
      controller.abort();
      assert.deepEqual(messages, ['live']);
      assert.ok(!second.done && second.value.kind === 'events');
      if (!second.done && second.value.kind === 'events') {
        assert.deepEqual(
          second.value.events.map((e) => [e.streamId, e.version]),
          [[s, 2]],
        );
      }
      await iterator.return?.();
    });

    it('16 writers committing slowly and out of order, some rolled back: every committed event once, in order', {
      skip: fixture.slowAppend
        ? undefined
        : `${fixture.name} commits each append atomically on the server; covered by the concurrent-writer test`,
    }, async () => {
      const from = await store.head();
      const prefix = `experiment-${randomUUID().slice(0, 8)}`;
      const committed = new Set<string>();
      const rolledBack = new Set<string>();
      const writers = Array.from({ length: 16 }, async (_, w) => {
        for (let i = 0; i < 6; i++) {
          const e = newEvent();
          // Early appends hold their transaction longest, so later positions commit first.
          const hold = ((16 - w) * 7 + (i % 3) * 20) % 120;
          const rollback = (w + i) % 5 === 0;
          await fixture.slowAppend!(`${prefix}-${w}`, [e], hold, rollback);
          (rollback ? rolledBack : committed).add(e.metadata.eventId);
        }
      });
      const sentinel = newEvent();
      const collecting = collect(store, { after: from, streamPrefix: prefix }, (seen) =>
        seen.some((e) => e.metadata.eventId === sentinel.metadata.eventId),
      );
      await Promise.all(writers);
      // Appended after every writer has finished: whatever committed before it must come before it.
      await store.append(`${prefix}-end`, [sentinel], 'no_stream');
      const { seen: all } = await collecting;
      const seen = all.filter((e) => e.metadata.eventId !== sentinel.metadata.eventId);
      const ids = seen.map((e) => e.metadata.eventId);
      assert.equal(new Set(ids).size, ids.length, 'no event delivered twice');
      assert.deepEqual(new Set(ids), committed, 'every committed event, and no rolled-back one');
      for (let i = 1; i < seen.length; i++)
        assert.ok(seen[i - 1]!.position < seen[i]!.position, 'in position order');
    });

    it('a long transaction in another database of the server holds no reader back', {
      skip: fixture.foreignTransaction ? undefined : `${fixture.name} has no neighbouring databases`,
    }, async (t) => {
      const release = await fixture.foreignTransaction!();
      if (typeof release === 'string') return t.skip(release);
      try {
        const from = await store.head();
        const s = stream();
        const e = newEvent();
        await store.append(s, [e], 'no_stream');
        const read = await store.readAll({ after: from, limit: 100, streamPrefix: s });
        assert.deepEqual(
          read.map((x) => x.metadata.eventId),
          [e.metadata.eventId],
        );
        assert.ok((await store.head()) > from);
      } finally {
        await release();
      }
    });

    it('a transaction of this database that writes no events holds no reader back', {
      skip:
        fixture.serialTransactions ??
        (fixture.slowAppend ? undefined : `${fixture.name} has no SQL sessions`),
    }, async () => {
      // What the projection runner and the saga do: a transaction with an id, open a while, no events.
      const url = fixture.url?.();
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query('begin');
        await client.query('select pg_current_xact_id()');
        const from = await store.head();
        const s = stream();
        const e = newEvent();
        await store.append(s, [e], 'no_stream');
        const read = await store.readAll({ after: from, limit: 100, streamPrefix: s });
        assert.deepEqual(
          read.map((x) => x.metadata.eventId),
          [e.metadata.eventId],
        );
      } finally {
        await client.query('rollback').catch(() => undefined);
        await client.end();
      }
    });

    it('the horizon lets pass only transactions that are running, in a backend, without the append mark', {
      skip: fixture.sql ? undefined : `${fixture.name} has no SQL horizon`,
    }, async () => {
      // The rule alone (migrations/043_log_horizon_ending.sql), over lock rows as pg_locks shows them:
      // a snapshot that sees 100, 103 and 105 in progress, and 110 as the first id not yet given.
      const horizon = async (holders: [number, number | null, boolean][], marked: number[]) => {
        const rows = holders.map(([xid, pid, running]) => `(${xid},${pid ?? ''},${running})`);
        const { rows: out } = await sql<{ h: string }>`select phoenix_log_horizon_of(
            '100:110:100,103,105'::pg_snapshot,
            ${`{${rows.map((r) => `"${r}"`).join(',')}}`}::phoenix_xid_holder[],
            ${marked}::int[])::text as h`.execute(fixture.sql!().db);
        return Number(out[0]!.h);
      };
      // Nothing seen in pg_locks (ended since the snapshot, say): held back by the oldest.
      assert.equal(await horizon([], []), 100);
      const allRunning: [number, number, boolean][] = [
        [100, 11, true],
        [103, 12, true],
        [105, 13, true],
      ];
      // Running without the mark (a projection batch, the saga): let pass.
      assert.equal(await horizon([[100, 11, true]], []), 103);
      assert.equal(await horizon(allRunning, []), 110);
      // Running with the mark, matched by its backend: an append, held back.
      assert.equal(await horizon(allRunning, [12]), 103);
      assert.equal(await horizon([[100, 11, true]], [11]), 100);
      // Ending (its virtual transaction reads `N/0`; the mark may be gone already or read under
      // another virtual transaction id): it may be an append committing, held back. 042 let it pass,
      // and readers lost its events.
      assert.equal(await horizon([[100, 11, false]], []), 100);
      assert.equal(
        await horizon(
          [
            [100, 11, true],
            [103, 12, false],
            [105, 13, true],
          ],
          [],
        ),
        103,
      );
      // Prepared (no backend): held back.
      assert.equal(await horizon([[100, null, true]], []), 100);
    });

    it('a subscriber joining the shared reader with a lower horizon than it read under still gets the events in between', {
      skip:
        fixture.serialTransactions ??
        (fixture.slowAppend ? undefined : `${fixture.name} has no shared reader of the log`),
    }, async () => {
      // The horizon can be lower for one statement than it was for an earlier one: a transaction
      // that writes no events is let pass, and when it ends between a later statement's snapshot
      // and that statement's look at pg_locks, it holds the later one back. That window is too
      // short to hit on purpose; a transaction that takes the append mark after its id lowers the
      // horizon the same way, and stays.
      const url = fixture.url?.();
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const subscribers: AbortController[] = [];
      try {
        const from = await store.head();
        const prefix = `experiment-${randomUUID().slice(0, 8)}`;
        await client.query('begin');
        await client.query('select pg_current_xact_id()'); // an id, no mark: readers pass it
        const first = newEvent();
        await store.append(`${prefix}-a`, [first], 'no_stream');
        /** A subscriber from `from`, collecting into `seen` until aborted. */
        const follow = (seen: StoredEvent<AnyEvent>[]) => {
          const controller = new AbortController();
          subscribers.push(controller);
          return (async () => {
            for await (const m of store.subscribe({
              after: from,
              streamPrefix: prefix,
              signal: controller.signal,
            })) {
              if (m.kind === 'events') seen.push(...m.events);
            }
          })();
        };
        // Subscriber A catches up and follows the head through the shared reader.
        const seenA: StoredEvent<AnyEvent>[] = [];
        const gotA = follow(seenA);
        const until = async (cond: () => boolean) => {
          const deadline = Date.now() + 10_000;
          while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
          assert.ok(cond(), 'timed out');
        };
        await until(() => seenA.length === 1);
        const second = newEvent();
        await store.append(`${prefix}-a`, [second], 1);
        await until(() => seenA.length === 2); // the shared reader is at the second event now
        // From here every reader's horizon is below both events.
        await client.query(
          `select pg_advisory_xact_lock_shared(1347964504, hashtext(current_schema() || ':append'))`,
        );
        assert.deepEqual(await store.readAll({ after: from, limit: 10, streamPrefix: prefix }), []);
        // Subscriber B starts behind the shared reader: it must read the gap up to it itself.
        const seenB: StoredEvent<AnyEvent>[] = [];
        const gotB = follow(seenB);
        await until(() => seenB.length === 2);
        await client.query('rollback');
        const third = newEvent();
        await store.append(`${prefix}-a`, [third], 2);
        await until(() => seenA.length === 3 && seenB.length === 3);
        for (const seen of [seenA, seenB]) {
          assert.deepEqual(
            seen.map((e) => e.metadata.eventId),
            [first, second, third].map((e) => e.metadata.eventId),
          );
        }
        for (const s of subscribers) s.abort();
        await Promise.all([gotA, gotB]);
      } finally {
        for (const s of subscribers) s.abort();
        await client.query('rollback').catch(() => undefined);
        await client.end();
      }
    });

    it('an event whose position is taken first but commits last is delivered, after the earlier ones', {
      skip:
        fixture.serialTransactions ??
        (fixture.slowAppend ? undefined : `${fixture.name} assigns positions at commit`),
    }, async () => {
      const from = await store.head();
      const prefix = `experiment-${randomUUID().slice(0, 8)}`;
      const slow = newEvent();
      const fast = newEvent();
      const slowDone = fixture.slowAppend!(`${prefix}-slow`, [slow], 600, false);
      await new Promise((r) => setTimeout(r, 100));
      await store.append(`${prefix}-fast`, [fast], 'no_stream');
      // While the slow transaction is open, readers hold back rather than pass it.
      const early = await store.readAll({ after: from, limit: 100, streamPrefix: prefix });
      assert.deepEqual(
        early.map((e) => e.metadata.eventId),
        [],
      );
      await slowDone;
      const { seen } = await collect(store, { after: from, streamPrefix: prefix }, (x) => x.length >= 2);
      assert.deepEqual(
        seen.map((e) => e.metadata.eventId),
        [slow.metadata.eventId, fast.metadata.eventId],
      );
    });

    describe('events it cannot read', () => {
      let typed: EventStore<ExperimentEvent>;
      before(() => {
        typed = fixture.open(experimentCodec);
      });

      it('an unknown event type is an error naming the stream and version', async () => {
        const s = stream();
        await store.append(
          s,
          [newEvent('ExperimentStarted'), newEvent('SomethingNobodyWrote', { at: 'x' })],
          'no_stream',
        );
        await assert.rejects(typed.readStream(s), (err: unknown) => {
          assert.ok(err instanceof CorruptEventError);
          assert.equal(err.streamId, s);
          assert.equal(err.version, 2);
          assert.match(err.message, /unknown event type 'SomethingNobodyWrote'/);
          return true;
        });
      });

      it('a corrupt payload is an error naming the stream and version', async () => {
        const s = stream();
        await store.append(
          s,
          [newEvent('VariantDeployed', { at: new Date().toISOString(), variant: 'nope' })],
          'no_stream',
        );
        await assert.rejects(
          typed.readStream(s),
          (err: unknown) => err instanceof CorruptEventError && err.streamId === s && err.version === 1,
        );
        // Through the global log too, once the event is readable there.
        const deadline = Date.now() + 15_000;
        while (
          (await store.readAll({ after: START, limit: 10, streamPrefix: s })).length === 0 &&
          Date.now() < deadline
        ) {
          await new Promise((r) => setTimeout(r, 20));
        }
        await assert.rejects(
          typed.readAll({ after: START, limit: 1_000_000, streamPrefix: s }),
          (err: unknown) => err instanceof CorruptEventError && err.version === 1,
        );
      });

      it('an old creation event without criticalProcesses is upcast on read', async () => {
        const s = stream();
        const v1 = newEvent('ExperimentCreated', {
          at: new Date().toISOString(),
          experimentId: randomUUID(),
          spec: {
            name: 'old',
            baseline: { template: 'process-baseline-v1', params: {} },
            candidate: { template: 'process-topk-v1', params: {} },
            target: { namespace: 'default', nodeSelector: {}, hosts: 1 },
            durationSeconds: 60,
            successCriteria: {
              minCardinalityReductionPct: 50,
              maxCriticalProcessLossPct: 0,
              maxCollectorCpuOverheadPct: 10,
            },
          },
        });
        await store.append(s, [v1], 'no_stream');
        const [event] = await typed.readStream(s);
        assert.ok(event);
        assert.equal(event.type, 'ExperimentCreated');
        assert.deepEqual(
          (event.data as unknown as { spec: { criticalProcesses: string[] } }).spec.criticalProcesses,
          [],
        );
      });
    });
  });
}

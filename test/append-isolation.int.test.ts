import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import type { SqlDatabase } from '../src/application/ports/database.js';
import {
  type AppendResult,
  DuplicateEventIdError,
  type NewEvent,
  UnstorableEventError,
} from '../src/application/ports/event-store.js';
import { pgliteTestDatabase, postgresTestDatabase, type TestDatabase } from './support/databases.js';

/**
 * Appends made together share one statement (group commit); one that the database refuses for what
 * it holds (PostgreSQL takes no NUL in text or jsonb) fails alone, with an UnstorableEventError, and
 * every other append of its group is stored.
 */

const newEvent = (data: unknown, type = 'ExperimentCreated'): NewEvent => ({
  type,
  data,
  metadata: {
    eventId: randomUUID(),
    actor: 'isolation',
    correlationId: randomUUID(),
    causationId: null,
    occurredAt: new Date().toISOString(),
    schemaVersion: 1,
  },
});

const settle = (p: Promise<AppendResult>) =>
  p.then(
    (result) => ({ ok: true as const, result }),
    (error: unknown) => ({ ok: false as const, error }),
  );

for (const db of [postgresTestDatabase(), pgliteTestDatabase()] as TestDatabase[]) {
  describe(`a rejected append fails only itself: ${db.name}`, { skip: db.skip }, () => {
    let database: SqlDatabase;
    let store: PostgresEventStore;
    before(async () => {
      database = await db.open();
      store = new PostgresEventStore(database);
    });
    after(async () => {
      await store?.close();
      await database?.close();
    });

    it('100 creates made together, one with a NUL in its name: 99 stored, that one refused as unstorable', async () => {
      const streams = Array.from({ length: 100 }, () => `experiment-${randomUUID()}`);
      const bad = 37;
      // all pushed in one turn of the event loop: they go out as one or two batches
      const results = await Promise.all(
        streams.map((s, i) =>
          settle(
            store.append(s, [newEvent({ name: i === bad ? 'bad\u0000name' : `name ${i}` })], 'no_stream'),
          ),
        ),
      );
      results.forEach((r, i) => {
        if (i === bad) {
          assert.equal(r.ok, false);
          assert.ok(!r.ok && r.error instanceof UnstorableEventError, `got ${!r.ok && String(r.error)}`);
          assert.equal((r.error as UnstorableEventError).code, 'unstorable_event');
          assert.equal((r.error as UnstorableEventError).streamId, streams[bad]);
        } else {
          assert.ok(r.ok, `append ${i} failed: ${!r.ok && String(r.error)}`);
          assert.equal(r.result.version, 1);
        }
      });
      const read = await Promise.all(streams.map((s) => store.readStream(s)));
      for (const [i, events] of read.entries()) assert.equal(events.length, i === bad ? 0 : 1, `stream ${i}`);
    });

    it('several refused appends of every kind in one group, among good ones, a retry and a clash', async () => {
      const clash = newEvent({ name: 'stored first' });
      await store.append(`experiment-${randomUUID()}`, [clash], 'no_stream');
      const retried = `experiment-${randomUUID()}`;
      const retriedEvents = [newEvent({ name: 'retried' })];
      const first = await store.append(retried, retriedEvents, 'no_stream');

      type Case = { stream: string; events: NewEvent[]; expect: 'ok' | 'unstorable' | 'duplicate' | 'retry' };
      const cases: Case[] = [];
      for (let i = 0; i < 40; i++) {
        const stream = `experiment-${randomUUID()}`;
        const kind = i % 8;
        if (kind === 1)
          cases.push({ stream, events: [newEvent({ name: `n\u0000${i}` })], expect: 'unstorable' });
        else if (kind === 3)
          // the second of two events: the whole append is refused, its first event too
          cases.push({
            stream,
            events: [
              newEvent({ name: 'fine' }),
              newEvent({ note: { deep: ['x\u0000'] } }, 'ExperimentStarted'),
            ],
            expect: 'unstorable',
          });
        else if (kind === 5)
          cases.push({
            stream,
            events: [newEvent({ name: 'bad type' }, 'Experiment\u0000Created')],
            expect: 'unstorable',
          });
        else if (kind === 6) {
          // refused by the database, not by a NUL: an event id its uuid column cannot take
          const event = newEvent({ name: 'bad id' });
          cases.push({
            stream,
            events: [{ ...event, metadata: { ...event.metadata, eventId: 'not-a-uuid' } }],
            expect: 'unstorable',
          });
        } else if (kind === 7)
          cases.push({
            stream: `experiment-\u0000${i}`,
            events: [newEvent({ name: 'bad stream' })],
            expect: 'unstorable',
          });
        else cases.push({ stream, events: [newEvent({ name: `good ${i}` })], expect: 'ok' });
      }
      cases.push({ stream: `experiment-${randomUUID()}`, events: [clash], expect: 'duplicate' });
      cases.push({ stream: retried, events: retriedEvents, expect: 'retry' });

      const results = await Promise.all(
        cases.map((c) => settle(store.append(c.stream, c.events, 'no_stream'))),
      );
      results.forEach((r, i) => {
        const c = cases[i]!;
        const got = r.ok ? 'ok' : String(r.error);
        switch (c.expect) {
          case 'ok':
            assert.ok(r.ok && r.result.version === c.events.length, `case ${i}: ${got}`);
            break;
          case 'retry':
            assert.ok(r.ok, `case ${i}: ${got}`);
            assert.deepEqual(r.result, first);
            break;
          case 'duplicate':
            assert.ok(!r.ok && r.error instanceof DuplicateEventIdError, `case ${i}: ${got}`);
            break;
          case 'unstorable':
            assert.ok(!r.ok && r.error instanceof UnstorableEventError, `case ${i}: ${got}`);
            break;
        }
      });
      const read = await Promise.all(cases.map((c) => store.readStream(c.stream)));
      read.forEach((events, i) => {
        const c = cases[i]!;
        const stored = c.expect === 'ok' ? c.events.length : c.expect === 'retry' ? 1 : 0;
        assert.equal(events.length, stored, `case ${i} (${c.expect})`);
      });
    });

    it('a refused append alone is refused the same, and the store goes on appending', async () => {
      const s = `experiment-${randomUUID()}`;
      await assert.rejects(
        store.append(s, [newEvent({ name: '\u0000' })], 'no_stream'),
        (err: unknown) => err instanceof UnstorableEventError && /NUL|\\u0000/.test(err.message),
      );
      assert.equal((await store.append(s, [newEvent({ name: 'then fine' })], 'no_stream')).version, 1);
    });
  });
}

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { openPGlite } from '../src/adapters/postgres-database.js';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import { readSlice } from '../src/adapters/postgres-log-reader.js';
import { migrateToLatest } from '../src/adapters/postgres-migrations.js';
import { experimentCodec } from '../src/application/experiment-codec.js';
import { START } from '../src/application/ports/event-store.js';
import { STREAM_SLICES } from '../src/application/ports/log-reader.js';
import type { ExperimentEvent } from '../src/domain/experiment.js';
import { createProjections, type Projections } from '../src/projections/index.js';
import { readAhead } from '../src/projections/log-reader.js';
import { ProjectionRunner } from '../src/projections/runner.js';
import { pgliteTestDatabase, postgresTestDatabase, type TestDatabase } from './support/databases.js';
import { runPhoenix } from './support/phoenix-cli.js';
import { applied, openFixture } from './support/projection-fixtures.js';
import {
  appendLifecycles,
  expectedHistory,
  expectedView,
  type Step,
} from './support/projection-lifecycles.js';

/**
 * Replay: thousands of random lifecycles projected live equal a rebuild from position zero, row by row;
 * a rebuild swapped in while events keep coming leaves no gap and no duplicate; --verify finds a
 * tampered row. Then the CLI: replay, events, state, and its answers to bad input.
 */
for (const db of [postgresTestDatabase(), pgliteTestDatabase()] as TestDatabase[]) {
  describe(`replay on ${db.name}`, { skip: db.skip }, () => {
    let fx: Awaited<ReturnType<typeof openFixture>>;
    let projections: Projections;
    let lifecycles: Step[][];

    before(async () => {
      fx = await openFixture(db);
      // odd batch sizes, so the live batches cut the log elsewhere than the rebuild's
      projections = createProjections({
        database: fx.database,
        log: fx.log,
        store: fx.store,
        runner: { batchSize: 37 },
      });
      await projections.start();
      const appended = await appendLifecycles(fx.store, {
        count: db.name === 'PGlite' ? 1_200 : 2_500,
        seed: 2024,
      });
      lifecycles = appended.lifecycles;
      await applied(projections.runner, appended.last, 120_000);
    });
    after(async () => {
      await projections?.stop();
      await fx?.close();
    });

    it('rebuilds exactly what the live runner projected (thousands of random lifecycles)', async () => {
      const report = await projections.rebuild({ verify: true });
      assert.equal(report.swapped, false);
      assert.equal(
        report.events,
        lifecycles.flat().reduce((n, s) => n + s.events.length, 0),
      );
      assert.deepEqual(report.differences, []);
      // and the rebuilt tables are gone again
      const { rows } = await sql<{ n: string }>`
        select count(*)::text as n from pg_class where relname like '%\\_\\_next%'
          and relnamespace = (select oid from pg_namespace where nspname = current_schema())`.execute(
        fx.database.db,
      );
      assert.equal(rows[0]?.n, '0');
    });

    it('rebuilds the same with experiments written out of memory and read back (tiny cache, odd sizes)', async () => {
      // 3 experiments in memory: most are written out while their lifecycle goes on, read back and
      // updated; pages and writes cut the log at other places than the live batches
      // (in log order on this thread: worker threads read whole streams and never write one out early)
      const report = await projections.rebuild({
        verify: true,
        cacheSize: 3,
        pageSize: 97,
        batchSize: 211,
        workers: 0,
      });
      assert.deepEqual(report.differences, []);
      assert.equal(
        report.events,
        lifecycles.flat().reduce((n, s) => n + s.events.length, 0),
      );
    });

    it('rebuilds the same on three worker threads by slices of streams, with odd page and write sizes', async () => {
      // PostgreSQL: 16 slices over three threads ('auto' would take one per core); PGlite loads in log
      // order whatever is asked
      const report = await projections.rebuild({ verify: true, workers: 3, pageSize: 89, batchSize: 173 });
      assert.deepEqual(report.differences, []);
      assert.equal(
        report.events,
        lifecycles.flat().reduce((n, s) => n + s.events.length, 0),
      );
    });

    it('reads every stream once across the slices, whole and in version order, up to a bound', async () => {
      const all = await fx.store.readAll({ limit: 100_000 });
      const upTo = all[Math.floor(all.length / 2)]!.position;
      const inLog = all.filter((e) => e.position <= upTo);
      const seen: typeof all = [];
      for (const slice of STREAM_SLICES) {
        for await (const page of readSlice(fx.database, experimentCodec, slice, upTo, 61)) {
          for (const e of page) {
            assert.ok(e.streamId >= slice.from && (slice.to === undefined || e.streamId < slice.to));
            const previous = seen[seen.length - 1];
            if (previous?.streamId === e.streamId) assert.equal(e.version, previous.version + 1);
            else assert.equal(e.version, 1, `${e.streamId} starts at its first event`);
            seen.push(e);
          }
        }
      }
      const byPosition = (a: { position: string }, b: { position: string }) =>
        a.position < b.position ? -1 : a.position > b.position ? 1 : 0;
      // the same events as the store reads up to the bound, decoded the same way
      assert.deepEqual([...seen].sort(byPosition), inLog);
      assert.equal(new Set(seen.map((e) => e.streamId)).size, new Set(inLog.map((e) => e.streamId)).size);
    });

    it('reads the log straight from the database as the store reads it', async () => {
      const head = await fx.store.head();
      const all = await fx.store.readAll({ limit: 100_000 });
      const upTo = all[Math.floor(all.length / 2)]!.position;
      for (const bound of [head, upTo]) {
        const pages = async () => {
          const out: unknown[] = [];
          for (let after = START; ; ) {
            const { events, done } = await fx.log.readRange(after, bound, 113);
            out.push(...events);
            if (done || events.length === 0) return out;
            after = events[events.length - 1]!.position;
          }
        };
        const viaSql = await pages();
        assert.deepEqual(
          viaSql,
          all.filter((e) => e.position <= bound),
        );
        // and read ahead of their use: the same pages, in order
        const ahead: unknown[] = [];
        for await (const page of readAhead(fx.log, START, bound, 113, 3)) ahead.push(...page);
        assert.deepEqual(ahead, viaSql);
      }
    });

    it('builds the indexes of a rebuilt set in parallel exactly as the migrations build them', async () => {
      const indexes = async () => {
        const { rows } = await sql<{ t: string; d: string }>`
          select tablename as t, indexdef as d from pg_indexes
           where schemaname = current_schema()
             and (tablename like 'experiment%' or tablename like 'state_transitions%')
           order by 1, 2`.execute(fx.database.db);
        // a partition's indexes are named after the partition by PostgreSQL (cut to 63 characters), so a
        // rebuilt set's, renamed from '__next', read differently: their names are left out
        return rows.map((r) =>
          /_p\d{6}$/.test(r.t)
            ? { ...r, d: r.d.replace(/^CREATE (UNIQUE )?INDEX \S+ ON/, 'CREATE $1INDEX ON') }
            : r,
        );
      };
      const before = await indexes();
      assert.ok(before.length >= 9);
      const report = await projections.rebuild({ indexConcurrency: 4 });
      assert.equal(report.swapped, true);
      assert.deepEqual(await indexes(), before);
    });

    it('finds a tampered row, and a rebuild repairs it', async () => {
      const id = lifecycles[5]![0]!.experimentId;
      await sql`update experiments set status_reason = 'tampered' where id = ${id}`.execute(fx.database.db);
      await sql`delete from experiment_states where experiment_id = ${lifecycles[6]![0]!.experimentId} and version = 1`.execute(
        fx.database.db,
      );
      const report = await projections.rebuild({ verify: true });
      const byTable = Object.fromEntries(report.differences.map((d) => [d.table, d]));
      assert.equal(byTable.experiments?.onlyLive, 1);
      assert.equal(byTable.experiments?.onlyRebuilt, 1);
      assert.match(byTable.experiments?.samples.join('\n') ?? '', /tampered/);
      assert.equal(byTable.experiment_states?.onlyLive, 0);
      assert.equal(byTable.experiment_states?.onlyRebuilt, 1);
      assert.equal(byTable.state_transitions, undefined);

      const swapped = await projections.rebuild();
      assert.equal(swapped.swapped, true);
      assert.deepEqual((await projections.rebuild({ verify: true })).differences, []);
      assert.deepEqual(await projections.readModels.getExperiment(id), expectedView(lifecycles[5]!));
    });

    // in log order on this thread, and (PostgreSQL) by slices on worker threads
    for (const workers of db.name === 'PostgreSQL' ? [0, 2] : [0]) {
      it(`swaps a rebuild in while events keep coming: the live runner goes on without a gap (${workers} workers)`, async () => {
        const progress: number[] = [];
        const [more, report] = await Promise.all([
          appendLifecycles(fx.store, { count: 300, seed: 99 + workers, concurrency: 8 }),
          projections.rebuild({ batchSize: 500, workers, onProgress: (p) => progress.push(p.events) }),
        ]);
        assert.equal(report.swapped, true);
        assert.ok(progress.length > 0, 'progress was reported');
        await applied(projections.runner, more.last, 60_000);
        assert.equal(projections.runner.status, 'active');
        for (const steps of [...lifecycles.slice(0, 100), ...more.lifecycles]) {
          const id = steps[0]!.experimentId;
          assert.deepEqual(await projections.readModels.getExperiment(id), expectedView(steps));
          assert.deepEqual(await projections.readModels.getHistory(id), expectedHistory(steps));
        }
        assert.deepEqual((await projections.rebuild({ verify: true })).differences, []);
        // the swapped-in partitions carry live names
        const { rows } = await sql<{ name: string }>`
        select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = 'state_transitions'::regclass order by 1`.execute(fx.database.db);
        assert.ok(rows.length >= 6);
        for (const r of rows) assert.match(r.name, /^state_transitions_p\d{6}$/);
      });
    }

    it('never runs a handler with side effects in a rebuild', () => {
      assert.throws(
        () =>
          new ProjectionRunner({
            database: fx.database,
            log: fx.log,
            store: fx.store,
            mode: 'rebuild',
            handler: { name: 'saga', sideEffects: true, apply: async () => undefined },
          }),
        /side effects/,
      );
    });
  });
}

describe('a rebuild on worker threads (PostgreSQL)', { skip: postgresTestDatabase().skip }, () => {
  it('stops at an event it cannot read, names it, and leaves the live read models as they were', async () => {
    const fx = await openFixture(postgresTestDatabase());
    const projections = createProjections({ database: fx.database, log: fx.log, store: fx.store });
    try {
      await projections.start();
      const appended = await appendLifecycles(fx.store, { count: 200, seed: 7 });
      await applied(projections.runner, appended.last, 60_000);
      await projections.stop();
      const victim = appended.lifecycles[150]![0]!.experimentId;
      const { numAffectedRows } = await sql`
        update phoenix_events set data = jsonb_set(data, '{at}', '"yesterday"')
         where stream_id = ${`experiment-${victim}`} and version = 2`.execute(fx.database.db);
      assert.equal(numAffectedRows, 1n);
      await assert.rejects(
        projections.rebuild({ workers: 2 }),
        (err: Error) =>
          err.message.includes(`stream experiment-${victim} version 2:`) &&
          err.message.includes('payload at at:'),
      );
      const { rows } = await sql<{ n: string }>`
        select count(*)::text as n from pg_class where relname like '%\\_\\_next%'
          and relnamespace = (select oid from pg_namespace where nspname = current_schema())`.execute(
        fx.database.db,
      );
      assert.equal(rows[0]?.n, '0', 'the half-filled tables are dropped');
      for (const steps of appended.lifecycles.slice(140, 160)) {
        const id = steps[0]!.experimentId;
        assert.deepEqual(await projections.readModels.getExperiment(id), expectedView(steps));
      }
    } finally {
      await projections.stop();
      await fx.close();
    }
  });
});

describe('phoenix replay / events / state (embedded database)', () => {
  let dataDir: string;
  let lifecycles: Step[][];
  const phoenix = (...args: string[]) => runPhoenix(dataDir, ...args);

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'phoenix-replay-'));
    const database = await openPGlite(join(dataDir, 'pgdata'));
    await migrateToLatest(database.db);
    const store = new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec });
    ({ lifecycles } = await appendLifecycles(store, { count: 40, seed: 5 }));
    await store.close();
    await database.close();
  });
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  it('replays, then verifies equal, with progress on stderr', async () => {
    // --workers is taken everywhere; the embedded database loads in log order whatever it says
    const replay = await phoenix('replay', '--workers', '2');
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stdout, /rebuilt and swapped in: \d+ events/);
    assert.match(replay.stderr, /events\/s/);
    const verify = await phoenix('replay', '--verify');
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /equal the live ones/);
  });

  it('prints the events as JSON lines and folds the state at a version or a time', async () => {
    const steps = lifecycles.find((s) => s.flatMap((x) => x.events).length >= 4)!;
    const id = steps[0]!.experimentId;
    const events = await phoenix('events', id);
    assert.equal(events.code, 0, events.stderr);
    const lines = events.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => l.type),
      steps.flatMap((s) => s.events.map((e) => e.type)),
    );
    assert.deepEqual(
      lines.map((l) => l.version),
      lines.map((_, i) => i + 1),
    );
    assert.ok(lines.every((l) => l.metadata.eventId && l.position));

    const atVersion = await phoenix('state', id, '--version', '2');
    assert.equal(atVersion.code, 0, atVersion.stderr);
    const two = JSON.parse(atVersion.stdout);
    assert.equal(two.version, 2);
    const upTo = steps.flatMap((s) => s.events).slice(0, 2);
    assert.equal(two.state, expectedView([{ ...steps[0]!, events: upTo }]).state);

    const secondAt = steps[1]!.at;
    const atTime = await phoenix('state', id, '--at', secondAt);
    assert.equal(atTime.code, 0, atTime.stderr);
    assert.equal(JSON.parse(atTime.stdout).version, steps[0]!.events.length + steps[1]!.events.length);

    const now = await phoenix('state', id);
    assert.equal(JSON.parse(now.stdout).state, expectedView(steps).state);
  });

  it('answers bad input with one line on stderr and exit code 2', async () => {
    const id = lifecycles[0]![0]!.experimentId;
    const bad = [
      ['events', 'not-a-uuid'],
      ['state', id, '--version', 'two'],
      ['state', id, '--at', 'yesterday'],
      ['state', id, '--version', '1', '--at', '2025-01-01T00:00:00Z'],
      ['replay', '--batch-size', '0'],
      ['replay', '--workers', 'many'],
    ];
    // refused before the database is opened, so they may run side by side
    const results = await Promise.all(bad.map((args) => phoenix(...args)));
    results.forEach((r, i) => {
      assert.equal(r.code, 2, `${bad[i]!.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /^phoenix: /);
    });
    const unknown = await phoenix('events', randomUUID());
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no experiment/);
    const tooFar = await phoenix('state', id, '--version', '999');
    assert.equal(tooFar.code, 1);
  });
});

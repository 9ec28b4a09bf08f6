import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { pino } from 'pino';
import { experimentIdOf, streamIdOf } from '../src/application/experiment-commands.js';
import { START, type StoredEvent, type SubscriptionMessage } from '../src/application/ports/event-store.js';
import type { LogReader } from '../src/application/ports/log-reader.js';
import type { ExperimentEvent } from '../src/domain/experiment.js';
import { experimentReadModels, READ_MODELS } from '../src/projections/experiment-read-models.js';
import { rebuildReadModels } from '../src/projections/rebuild.js';
import {
  ProjectionFailedError,
  ProjectionRunner,
  type RunnerOptions,
  readCheckpoint,
  writeCheckpoint,
} from '../src/projections/runner.js';
import { pgliteTestDatabase, postgresTestDatabase, type TestDatabase } from './support/databases.js';
import { applied, openFixture, until } from './support/projection-fixtures.js';
import {
  appendLifecycles,
  expectedCounts,
  expectedHistory,
  expectedView,
  lifecycle,
  newEvents,
  rngOf,
} from './support/projection-lifecycles.js';

/** A logger of errors and what it logged, parsed. */
const errorLog = () => {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'error' },
    new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    }),
  );
  return { lines, logger };
};

/**
 * The runner's guarantees: a crash between apply and commit (injected, and a real kill -9 of another
 * process) loses and repeats nothing, so the read models afterwards equal a fresh rebuild; one active
 * runner per projection, the standby taking over; a failing event stops the runner, named, never
 * skipped; lag is measured against the head of the log.
 */
for (const db of [postgresTestDatabase(), pgliteTestDatabase()] as TestDatabase[]) {
  describe(`projection runner on ${db.name}`, { skip: db.skip }, () => {
    let fx: Awaited<ReturnType<typeof openFixture>>;
    const runners: ProjectionRunner<ExperimentEvent>[] = [];
    const runner = (options: Partial<RunnerOptions<ExperimentEvent>> = {}) => {
      const r = new ProjectionRunner<ExperimentEvent>({
        database: fx.database,
        log: fx.log,
        store: fx.store,
        handler: experimentReadModels(),
        batchSize: 25,
        lockRetryMs: 100,
        retryBaseMs: 5,
        ...options,
      });
      runners.push(r);
      return r;
    };
    /** The live read models against a rebuild from zero up to the same position. */
    const equalsRebuild = async () => {
      const report = await rebuildReadModels({
        database: fx.database,
        log: fx.log,
        store: fx.store,
        verify: true,
      });
      assert.deepEqual(report.differences, []);
      assert.equal(report.position, await readCheckpoint(fx.database.db, READ_MODELS));
    };
    const resetReadModels = async () => {
      await sql`select phoenix_drop_read_models('')`.execute(fx.database.db);
      await sql`select phoenix_create_read_models('')`.execute(fx.database.db);
      await sql`select phoenix_index_read_models('')`.execute(fx.database.db);
      await sql`delete from projection_checkpoints`.execute(fx.database.db);
    };

    before(async () => {
      fx = await openFixture(db);
    });
    after(async () => {
      await Promise.all(runners.map((r) => r.stop()));
      await fx?.close();
    });

    it('survives a crash between apply and commit: after a restart the read models equal a rebuild', async () => {
      await resetReadModels();
      const { last } = await appendLifecycles(fx.store, { count: 60, seed: 11 });
      let batches = 0;
      const crashing = runner({
        maxAttempts: 1,
        beforeCommit: () => {
          if (++batches >= 4) throw new Error('injected crash between apply and commit');
        },
      });
      crashing.start();
      await until(() => crashing.status === 'failed', 10_000, 'the injected crash');
      const stopped = await readCheckpoint(fx.database.db, READ_MODELS);
      assert.ok(stopped > START && stopped < last, 'stopped part way');
      await equalsRebuild(); // what was committed is whole

      const restarted = runner();
      restarted.start();
      await applied(restarted, last);
      await equalsRebuild();
      await restarted.stop();
    });

    // Both ways a runner applies a batch: the handler's own one-statement apply-and-checkpoint, and
    // `apply` in the runner's transaction (a handler without the former).
    for (const path of ['applyAndCheckpoint', 'apply'] as const) {
      it(`stops on an event that keeps failing, names it, and skips nothing (${path})`, async () => {
        await resetReadModels();
        const { last } = await appendLifecycles(fx.store, { count: 20, seed: 12 });
        const all = await fx.store.readAll({ limit: 10_000 });
        const poison = all[Math.floor(all.length / 2)]!;
        let attempts = 0;
        const inner = experimentReadModels();
        const failing = runner({
          maxAttempts: 3,
          handler: {
            ...inner,
            async apply(tx, events, context) {
              if (events.some((e) => e.position === poison.position)) {
                attempts++;
                throw new Error('cannot project this one');
              }
              await inner.apply(tx, events, context);
            },
            applyAndCheckpoint:
              path === 'apply'
                ? undefined
                : async (db, events, context) => {
                    if (events.some((e) => e.position === poison.position)) {
                      attempts++;
                      throw new Error('cannot project this one');
                    }
                    return inner.applyAndCheckpoint!(db, events, context);
                  },
          },
        });
        failing.start();
        await until(() => failing.status === 'failed', 10_000, 'the runner to stop');
        const failure = failing.failure;
        assert.ok(failure instanceof ProjectionFailedError);
        assert.equal(failure.event.position, poison.position);
        assert.equal(failure.event.streamId, poison.streamId);
        assert.match(
          failure.message,
          new RegExp(`${poison.type} of ${poison.streamId} version ${poison.version}`),
        );
        assert.ok(attempts >= 3, `retried (${attempts} attempts)`);
        // everything before it is applied, nothing after it
        const at = await readCheckpoint(fx.database.db, READ_MODELS);
        assert.equal(at, all[all.indexOf(poison) - 1]!.position);
        const { rows } = await sql<{ version: number }>`
        select version from experiments where id = ${experimentIdOf(poison.streamId)}`.execute(
          fx.database.db,
        );
        assert.equal(rows[0]?.version ?? 0, poison.version - 1);
        assert.ok(at < last);
      });
    }

    it('stops on an event whose predecessor it never got, and logs where the log has the missing ones', async () => {
      await resetReadModels();
      await appendLifecycles(fx.store, { count: 6, seed: 33 });
      const all = await fx.store.readAll({ limit: 10_000 });
      // The checkpoint moved over events it never applied, as a subscription that skipped them would.
      const skippedTo = all.find((e) => e.version === 2)!;
      await writeCheckpoint(fx.database.db, READ_MODELS, skippedTo.position);
      const { lines, logger } = errorLog();
      const r = runner({ maxAttempts: 2, logger });
      r.start();
      await until(() => r.status === 'failed', 10_000, 'the runner to stop');
      assert.ok(r.failure instanceof ProjectionFailedError, String(r.failure));
      assert.match(r.failure.message, /an event is missing/);
      const failed = r.failure.event;
      const line = lines.find((l) => String(l.msg).startsWith('events the projection never got'));
      assert.ok(line, `a line on the missing events among ${JSON.stringify(lines)}`);
      assert.equal(line.streamId, failed.streamId);
      const stream = all.filter((e) => e.streamId === failed.streamId && e.version < failed.version);
      assert.ok(stream.length > 0);
      assert.deepEqual(
        line.missing,
        stream.map((e) => ({ version: e.version, position: e.position, passed: true })),
      );
    });

    it('says so when its subscription gives events out of log order, and applies none twice', async () => {
      await resetReadModels();
      const { last } = await appendLifecycles(fx.store, { count: 8, seed: 34 });
      // A log whose subscription gives its first page of events a second time, after the second.
      async function* subscribe(
        options: Parameters<LogReader<ExperimentEvent>['subscribe']>[0],
      ): AsyncIterable<SubscriptionMessage<ExperimentEvent>> {
        let first: SubscriptionMessage<ExperimentEvent> | undefined;
        let pages = 0;
        for await (const m of fx.log.subscribe(options)) {
          yield m;
          if (m.kind !== 'events') continue;
          first ??= m;
          if (++pages === 2) yield first;
        }
      }
      const log = new Proxy(fx.log, {
        get(target, key) {
          if (key === 'subscribe') return subscribe;
          const value = Reflect.get(target, key, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
      const { lines, logger } = errorLog();
      const r = runner({ log, logger });
      r.start();
      await applied(r, last);
      const isOrderLine = (l: Record<string, unknown>) =>
        String(l.msg).startsWith('the subscription gave events out of log order');
      // (the page may come again after the last event is applied: wait for the runner to take it)
      await until(() => lines.some(isOrderLine), 10_000, 'the runner to log the page given again');
      const line = lines.find(isOrderLine);
      assert.ok(line, `a line on the order among ${JSON.stringify(lines)}`);
      assert.equal(line.late, 25, 'the whole first page came again');
      await r.stop();
      await equalsRebuild();
    });

    it('folds again from the table when the rows are not as its cache has them', async () => {
      await resetReadModels();
      const { lifecycles } = await appendLifecycles(fx.store, { count: 12, seed: 21 });
      const streams = new Set(lifecycles.map((steps) => streamIdOf(steps[0]!.experimentId)));
      const appended = lifecycles.flat().reduce((n, s) => n + s.events.length, 0);
      let events: StoredEvent<ExperimentEvent>[] = [];
      // (readers see a commit once every older transaction of the cluster has ended)
      await until(
        async () => {
          events = (await fx.store.readAll({ limit: 100_000 })).filter((e) => streams.has(e.streamId));
          return events.length === appended;
        },
        10_000,
        'the appended events to be readable',
      );
      const third = Math.floor(events.length / 3);
      const batches = [events.slice(0, third), events.slice(third, 2 * third), events.slice(2 * third)];
      const live = experimentReadModels(); // remembers the rows it writes
      const intruder = experimentReadModels();
      const apply = async (
        handler: typeof live,
        checkpoint: string,
        expected: string,
        batch: typeof events,
      ): Promise<string> => {
        const position = batch[batch.length - 1]!.position;
        const stored = await handler.applyAndCheckpoint!(fx.database.db, batch, {
          mode: 'live',
          checkpoint,
          expected,
          position,
        });
        assert.equal(stored, expected);
        return position;
      };
      let at = await apply(live, READ_MODELS, START, batches[0]!);
      // Another writer, under a checkpoint of its own, applies the next batch behind the live one's back:
      // rows it remembers are now older than the table's, and experiments it takes for new exist.
      await apply(intruder, 'intruder', START, batches[1]!);
      at = await apply(live, READ_MODELS, at, batches[1]!);
      at = await apply(live, READ_MODELS, at, batches[2]!);
      assert.equal(await readCheckpoint(fx.database.db, READ_MODELS), at);
      // every event applied once: the views, the histories (durations included) and the counts
      const { PostgresReadModels } = await import('../src/projections/read-models.js');
      const readModels = new PostgresReadModels(fx.database.db, { checkpoint: READ_MODELS });
      for (const steps of lifecycles) {
        const id = steps[0]!.experimentId;
        assert.deepEqual(await readModels.getExperiment(id), expectedView(steps));
        assert.deepEqual(await readModels.getHistory(id), expectedHistory(steps));
      }
      assert.deepEqual(await readModels.countByState(), expectedCounts(lifecycles));
      const { rows } = await sql<{ n: string }>`select count(*)::text as n from state_transitions`.execute(
        fx.database.db,
      );
      assert.equal(Number(rows[0]!.n), lifecycles.flatMap(expectedHistory).length);
    });

    it('runs one active runner per projection; the standby takes over when it stops', async () => {
      await resetReadModels();
      const a = runner();
      const b = runner();
      a.start();
      b.start();
      await until(() => a.status === 'active' || b.status === 'active', 5_000, 'a runner to become active');
      await new Promise((r) => setTimeout(r, 300));
      const [first, second] = a.status === 'active' ? [a, b] : [b, a];
      assert.equal(second.status, 'standby');
      const one = await appendLifecycles(fx.store, { count: 30, seed: 13 });
      await applied(first, one.last);
      assert.equal(second.position, START, 'the standby applied nothing');

      const stoppedAt = Date.now();
      await first.stop();
      await until(() => second.status === 'active', 5_000, 'the standby to take over');
      assert.ok(Date.now() - stoppedAt < 5_000);
      const two = await appendLifecycles(fx.store, { count: 30, seed: 14 });
      await applied(second, two.last);
      await equalsRebuild();
      for (const steps of [...one.lifecycles, ...two.lifecycles]) {
        assert.deepEqual(
          await readView(steps[0]!.experimentId),
          expectedView(steps),
          'every event applied exactly once',
        );
      }
      await second.stop();
    });

    it('moves the checkpoint over a batch its handler ignores without handing it over, and says so', async () => {
      const name = `ignoring-${randomUUID().slice(0, 8)}`;
      const handed: string[] = [];
      const moves: boolean[] = [];
      const r = runner({
        checkpointName: name,
        handler: {
          name,
          sideEffects: false,
          ignores: (e) => e.type === 'ExperimentCreated',
          apply: async (_tx, events) => {
            for (const e of events) handed.push(e.type);
          },
        },
      });
      r.on('applied', (_position, wrote) => moves.push(wrote));
      await writeCheckpoint(fx.database.db, name, await fx.store.head()); // the log so far is not ours
      // Only creations: nothing handed over, the checkpoint still moves to the last one.
      const steps = lifecycle(rngOf(21), 1, Date.now());
      const stream = streamIdOf(steps[0]!.experimentId);
      const created = await fx.store.append(stream, newEvents(steps[0]!), 'no_stream');
      r.start();
      await applied(r, created.position);
      assert.deepEqual(handed, []);
      assert.ok(moves.length > 0 && moves.every((w) => !w), 'every move so far wrote nothing');
      // A batch with something the handler wants goes to apply whole (ignored events included).
      const next = newEvents(steps[1]!);
      const started = await fx.store.append(stream, next, 1);
      await applied(r, started.position);
      assert.deepEqual(
        handed,
        next.map((e) => e.type),
      );
      assert.equal(moves.at(-1), true);
      assert.equal(await readCheckpoint(fx.database.db, name), started.position, 'stored with the apply');
      // Only ignored events again: stored within a second, or when the runner stops.
      const more = lifecycle(rngOf(22), 1, Date.now());
      const other = streamIdOf(more[0]!.experimentId);
      const again = await fx.store.append(other, newEvents(more[0]!), 'no_stream');
      await applied(r, again.position);
      assert.equal(handed.length, next.length, 'nothing more handed over');
      await r.stop();
      assert.equal(await readCheckpoint(fx.database.db, name), again.position, 'stored on the way out');
    });

    it('measures lag against the head of the log', async () => {
      const r = runner();
      const before = await r.lag();
      const more = await appendLifecycles(fx.store, { count: 10, seed: 15 });
      const events = more.lifecycles.flat().reduce((n, s) => n + s.events.length, 0);
      await new Promise((res) => setTimeout(res, 50));
      const behind = await r.lag();
      assert.equal(behind.events, before.events + events);
      assert.ok(behind.seconds > 0);
      r.start();
      await applied(r, more.last);
      assert.deepEqual(await r.lag(), { events: 0, seconds: 0 });
      await r.stop();
    });

    it('survives kill -9 of the runner process mid-batch; the standby here takes over', {
      skip: db.name === 'PGlite' ? 'PGlite is one process: there is no other process to kill' : false,
    }, async () => {
      await resetReadModels();
      const url = fx.database.url!;
      const child: ChildProcess = spawn(
        process.execPath,
        ['--import', 'tsx', join(import.meta.dirname, 'support', 'projection-child.ts')],
        {
          env: { ...process.env, PROJECTION_URL: url, PROJECTION_LINGER_MS: '100' },
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      let output = '';
      child.stdout!.on('data', (d: Buffer) => {
        output += d.toString();
      });
      try {
        await until(() => output.includes('status active'), 20_000, 'the child runner to become active');
        const standby = runner();
        standby.start();
        await until(() => standby.status === 'standby', 5_000, 'the standby');
        const { lifecycles, last } = await appendLifecycles(fx.store, { count: 80, seed: 16 });
        await until(() => /in-batch 5\n/.test(output), 20_000, 'the child to be inside its 5th batch');
        child.kill('SIGKILL');
        const killedAt = Date.now();
        await until(() => standby.status === 'active', 10_000, 'the standby to take over');
        const takeover = Date.now() - killedAt;
        assert.ok(takeover < 10_000, `took over in ${takeover} ms`);
        await applied(standby, last);
        await equalsRebuild();
        for (const steps of lifecycles)
          assert.deepEqual(await readView(steps[0]!.experimentId), expectedView(steps));
        await standby.stop();
      } finally {
        child.kill('SIGKILL');
      }
    });

    // Last: the unreadable event it writes stays in this suite's log.
    it('stops on an event the store cannot read, naming it', async () => {
      await resetReadModels();
      const id = randomUUID();
      await sql`insert into phoenix_streams (stream_id, version) values (${streamIdOf(id)}, 1)`.execute(
        fx.database.db,
      );
      await sql`insert into phoenix_events (stream_id, version, event_id, type, data, metadata)
                values (${streamIdOf(id)}, 1, ${randomUUID()}, 'ExperimentExploded', '{}', '{}')`.execute(
        fx.database.db,
      );
      const r = runner({ maxAttempts: 2 });
      r.start();
      await until(() => r.status === 'failed', 10_000, 'the runner to stop');
      assert.ok(r.failure instanceof ProjectionFailedError, String(r.failure));
      assert.equal(r.failure.event.streamId, streamIdOf(id));
      assert.equal(r.failure.event.version, 1);
      assert.match(r.failure.message, /unknown event type 'ExperimentExploded'/);
    });

    const readView = async (id: string) => {
      const { PostgresReadModels } = await import('../src/projections/read-models.js');
      return new PostgresReadModels(fx.database.db, { checkpoint: READ_MODELS }).getExperiment(id);
    };
  });
}

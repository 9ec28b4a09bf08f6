import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { openPGlite, openPostgres } from '../src/adapters/postgres-database.js';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import { PostgresLogReader } from '../src/adapters/postgres-log-reader.js';
import { migrateToLatest } from '../src/adapters/postgres-migrations.js';
import { experimentCodec } from '../src/application/experiment-codec.js';
import { streamIdOf } from '../src/application/experiment-commands.js';
import type { EventStore, StoredEvent } from '../src/application/ports/event-store.js';
import { loadConfig } from '../src/config.js';
import {
  decide,
  type Experiment,
  type ExperimentCommand,
  type ExperimentEvent,
  evolve,
  fold,
  initialState,
} from '../src/domain/experiment.js';
import { currentSchemaVersion } from '../src/domain/upcasters.js';
import { buildSystem, type System } from '../src/main.js';
import { createProjections } from '../src/projections/index.js';
import { rebuildReadModels } from '../src/projections/rebuild.js';
import { withSearchPath } from './support/databases.js';
import { runPhoenix } from './support/phoenix-cli.js';
import { applied } from './support/projection-fixtures.js';
import { randomSpec, rngOf } from './support/projection-lifecycles.js';
import { TEST_SECRET, tokenFor } from './support/system.js';

/**
 * Streams of more than nine (and more than 99) events read in version order wherever they are read:
 * GET …/events page by page, GET …/state at a version (time travel), `phoenix events` and
 * `phoenix state`; and `phoenix replay --verify` notices a store whose stream reads come back out of
 * version order or with a gap. (The PostgreSQL store once sorted stream reads by the version's text:
 * 1, 10, 11, 12, 2, …, so a torn-down candidate folded as deployed.)
 */

/**
 * An experiment decided by the real decider, each decision appended with its expected version:
 * created, started, both variants deployed (and the run started), `extensions` runtime extensions,
 * cancelled, both variants torn down: 8 + `extensions` events. Returns the events in version order.
 */
async function appendLifecycle(
  store: EventStore<ExperimentEvent>,
  experimentId: string,
  extensions: number,
): Promise<ExperimentEvent[]> {
  const base = Date.parse('2025-03-01T10:00:00.000Z');
  let step = 0;
  const at = () => new Date(base + 1_000 * step++).toISOString();
  const commands: ExperimentCommand[] = [
    { type: 'CreateExperiment', at: at(), experimentId, spec: randomSpec(rngOf(7), 1) },
    { type: 'StartExperiment', at: at() },
    { type: 'RecordVariantDeployed', at: at(), variant: 'baseline' },
    { type: 'RecordVariantDeployed', at: at(), variant: 'candidate' },
    ...Array.from(
      { length: extensions },
      (): ExperimentCommand => ({ type: 'ExtendRuntime', at: at(), extraSeconds: 60, reason: 'more data' }),
    ),
    { type: 'CancelExperiment', at: at(), reason: 'enough' },
    { type: 'RecordVariantTornDown', at: at(), variant: 'candidate' },
    { type: 'RecordVariantTornDown', at: at(), variant: 'baseline' },
  ];
  let state: Experiment = initialState();
  const all: ExperimentEvent[] = [];
  for (const command of commands) {
    const events = decide(command, state);
    await store.append(
      streamIdOf(experimentId),
      events.map((e) => ({
        type: e.type,
        data: e.data,
        metadata: {
          eventId: randomUUID(),
          actor: 'alice',
          correlationId: randomUUID(),
          causationId: null,
          occurredAt: command.at,
          schemaVersion: currentSchemaVersion(e.type),
        },
      })),
      all.length === 0 ? 'no_stream' : all.length,
    );
    state = events.reduce(evolve, state);
    all.push(...events);
  }
  return all;
}

/** The app and store of a whole Phoenix, not started (no saga adds events), on an embedded database or a PostgreSQL schema. */
async function openSystem(postgres: boolean): Promise<{ system: System; dispose(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-order-'));
  const base = process.env.DATABASE_URL;
  let schema: string | undefined;
  let url: string | undefined;
  if (postgres && base) {
    schema = `phoenix_order_${randomBytes(5).toString('hex')}`;
    const admin = openPostgres({ url: base, poolSize: 1 });
    await sql`create schema ${sql.id(schema)}`.execute(admin.db);
    await admin.close();
    url = withSearchPath(base, schema);
  }
  const config = loadConfig({
    PHOENIX_DATA_DIR: dir,
    PHOENIX_JWT_SECRET: TEST_SECRET,
    LOG_LEVEL: 'silent',
    ...(url ? { DATABASE_URL: url } : {}),
  });
  const system = await buildSystem(config, { logger: pino({ level: 'silent' }) });
  await system.app.ready();
  return {
    system,
    async dispose() {
      await system.stop();
      rmSync(dir, { recursive: true, force: true });
      if (schema) {
        const admin = openPostgres({ url: base!, poolSize: 1 });
        await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(admin.db);
        await admin.close();
      }
    },
  };
}

/** `store`, but its stream reads of `streamId` pass through `tamper`. */
const tampered = (
  store: EventStore<ExperimentEvent>,
  streamId: string,
  tamper: (events: StoredEvent<ExperimentEvent>[]) => StoredEvent<ExperimentEvent>[],
): EventStore<ExperimentEvent> => ({
  append: (s, events, expected) => store.append(s, events, expected),
  readStream: async (s, options) => {
    const events = await store.readStream(s, options);
    return s === streamId ? tamper(events) : events;
  },
  readAll: (options) => store.readAll(options),
  subscribe: (options) => store.subscribe(options),
  head: () => store.head(),
  lastCommitted: () => store.lastCommitted(),
  ping: () => store.ping(),
  close: async () => undefined,
});

const versions = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

for (const database of [
  {
    name: 'PostgreSQL',
    postgres: true,
    skip: process.env.DATABASE_URL ? undefined : 'DATABASE_URL is not set: no real PostgreSQL here',
  },
  { name: 'PGlite', postgres: false, skip: undefined },
]) {
  describe(`event order on ${database.name}`, { skip: database.skip }, () => {
    let system: System;
    let dispose: () => Promise<void>;
    let viewer: string;
    const experiments: { id: string; events: ExperimentEvent[] }[] = [];
    const get = async (url: string) => {
      const res = await system.app.inject({
        method: 'GET',
        url,
        headers: { authorization: `Bearer ${viewer}` },
      });
      assert.equal(res.statusCode, 200, res.body);
      return res.json();
    };

    before(async () => {
      ({ system, dispose } = await openSystem(database.postgres));
      viewer = await tokenFor(system, 'viewer');
      for (const extensions of [0, 4, 95]) {
        const id = randomUUID();
        experiments.push({ id, events: await appendLifecycle(system.store, id, extensions) });
      }
    });
    after(() => dispose?.());

    it('GET …/events pages through streams of 12 and 103 events in version order', async () => {
      for (const { id, events } of experiments) {
        for (const limit of [5, 10, 100]) {
          const read: { version: number; type: string }[] = [];
          for (let from = 1; ; ) {
            const page = await get(`/api/v1/experiments/${id}/events?fromVersion=${from}&limit=${limit}`);
            read.push(...page.items);
            if (page.items.length < limit) break;
            from = page.items[page.items.length - 1].version + 1;
          }
          assert.deepEqual(
            read.map((e) => e.version),
            versions(events.length),
            `${events.length} events in pages of ${limit}`,
          );
          assert.deepEqual(
            read.map((e) => e.type),
            events.map((e) => e.type),
          );
        }
      }
    });

    it('GET …/state folds the events in version order, at every version and now', async () => {
      for (const { id, events } of experiments) {
        for (let version = 1; version <= events.length; version += version < 14 ? 1 : 10) {
          const expected = fold(events.slice(0, version)) as Exclude<Experiment, { status: 'empty' }>;
          const state = await get(`/api/v1/experiments/${id}/state?version=${version}`);
          assert.equal(state.version, version);
          assert.equal(state.state, expected.status, `state at version ${version} of ${events.length}`);
          assert.deepEqual(
            Object.fromEntries(
              Object.entries(state.deployments).map(([v, d]) => [v, (d as { status: string }).status]),
            ),
            Object.fromEntries(Object.entries(expected.deployments).map(([v, d]) => [v, d!.status])),
            `deployments at version ${version} of ${events.length}`,
          );
        }
        const now = await get(`/api/v1/experiments/${id}/state`);
        assert.equal(now.version, events.length);
        assert.equal(now.state, 'cancelled');
        assert.equal(now.deployments.candidate.status, 'torn_down');
        assert.equal(now.deployments.baseline.status, 'torn_down');
      }
    });

    it('replay --verify reads every stream back, and names one out of version order or with a gap', async () => {
      await system.projections.start();
      await applied(system.projections.runner, await system.store.head(), 60_000);
      const rebuild = (store: EventStore<ExperimentEvent>) =>
        rebuildReadModels({ database: system.database, log: system.log, store, verify: true, workers: 0 });

      const clean = await rebuild(system.store);
      assert.deepEqual(clean.differences, []);
      assert.deepEqual(clean.streams, { checked: experiments.length, bad: 0, samples: [] });

      const long = streamIdOf(experiments[2]!.id);
      // as the store once read: sorted by the version's text
      const asText = await rebuild(
        tampered(system.store, long, (events) =>
          [...events].sort((a, b) => (String(a.version) < String(b.version) ? -1 : 1)),
        ),
      );
      assert.deepEqual(
        asText.differences,
        [],
        'the read models rebuild equal: only the stream read is wrong',
      );
      assert.equal(asText.streams?.bad, 1);
      assert.equal(asText.streams?.checked, experiments.length);
      assert.ok(asText.streams?.samples.some((s) => s.startsWith(long) && /out of version order/.test(s)));

      const gap = await rebuild(
        tampered(system.store, long, (events) => events.filter((e) => e.version !== 5)),
      );
      assert.equal(gap.streams?.bad, 1);
      assert.ok(gap.streams?.samples.some((s) => s.startsWith(long) && /a gap: 5 missing/.test(s)));
    });
  });
}

describe('phoenix events / state / replay --verify on a stream of more than nine events (embedded)', () => {
  let dataDir: string;
  let id: string;
  let events: ExperimentEvent[];
  const phoenix = (...args: string[]) => runPhoenix(dataDir, ...args);

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'phoenix-order-cli-'));
    const database = await openPGlite(join(dataDir, 'pgdata'));
    await migrateToLatest(database.db);
    const store = new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec });
    id = randomUUID();
    events = await appendLifecycle(store, id, 4);
    // the live read models, as a server would have projected them
    const log = new PostgresLogReader(store, database, experimentCodec);
    const projections = createProjections({ database, log, store });
    await projections.start();
    await applied(projections.runner, await store.head(), 60_000);
    await projections.stop();
    await store.close();
    await database.close();
  });
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  it('prints the events in version order and folds the state at a version in that order', async () => {
    const printed = await phoenix('events', id);
    assert.equal(printed.code, 0, printed.stderr);
    const lines = printed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => l.version),
      versions(events.length),
    );
    const beforeTeardown = await phoenix('state', id, '--version', '10');
    assert.equal(beforeTeardown.code, 0, beforeTeardown.stderr);
    const ten = JSON.parse(beforeTeardown.stdout);
    assert.equal(ten.state, 'cancelled');
    assert.equal(ten.deployments.candidate.status, 'deployed');
    const afterTeardown = JSON.parse((await phoenix('state', id, '--version', '11')).stdout);
    assert.equal(afterTeardown.deployments.candidate.status, 'torn_down');
    assert.equal(afterTeardown.deployments.baseline.status, 'deployed');

    const verify = await phoenix('replay', '--verify');
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /1 streams read back in version order/);
  });
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { NatsBus } from '../src/adapters/nats-bus.js';
import { openPostgres } from '../src/adapters/postgres-database.js';
import { streamIdOf } from '../src/application/experiment-commands.js';
import { loadConfig } from '../src/config.js';
import type { ExistingExperiment } from '../src/domain/experiment.js';
import { fold } from '../src/domain/experiment.js';
import { buildSystem, type System } from '../src/main.js';
import { natsSkipReason, natsUrl, uniquePrefix } from './support/bus-fixtures.js';
import { withSearchPath } from './support/databases.js';
import { TEST_SECRET, tokenFor, validSpec } from './support/system.js';

/**
 * A restart in the middle of an experiment. The local data plane lives in the process that deploys
 * to it, so a new process holds none of the variants the events say are deployed: start-up
 * reconciliation asks the deployer, and an experiment whose run lost its variants fails saying so,
 * instead of being analysed on data that is gone ("no data for the baseline series"). Runs where
 * the lifecycle tests run: the embedded database with the in-process bus, and PostgreSQL with the
 * in-process bus and with NATS.
 */

interface Installation {
  readonly name: string;
  readonly skip: string | undefined;
  /** The environment of every system of one test: the same database (and bus) each time. */
  setup(): Promise<{ env: Record<string, string>; teardown(): Promise<void> }>;
}

const pglite: Installation = {
  name: 'embedded PGlite, in-process bus',
  skip: undefined,
  async setup() {
    const dir = mkdtempSync(join(tmpdir(), 'phoenix-reconcile-'));
    return {
      env: { PHOENIX_DATA_DIR: dir },
      async teardown() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

const postgres = (nats: boolean): Installation => ({
  name: `PostgreSQL, ${nats ? 'NATS' : 'in-process bus'}`,
  skip: !process.env.DATABASE_URL
    ? 'DATABASE_URL is not set: no real PostgreSQL to test against (CI sets it)'
    : nats
      ? natsSkipReason()
      : undefined,
  async setup() {
    const base = process.env.DATABASE_URL!;
    const schema = `phoenix_reconcile_${randomBytes(5).toString('hex')}`;
    const admin = openPostgres({ url: base, poolSize: 1 });
    await sql`create schema ${sql.id(schema)}`.execute(admin.db);
    await admin.close();
    const dir = mkdtempSync(join(tmpdir(), 'phoenix-reconcile-'));
    const prefix = uniquePrefix('phxrec');
    return {
      env: {
        PHOENIX_DATA_DIR: dir,
        DATABASE_URL: withSearchPath(base, schema),
        ...(nats ? { NATS_URL: natsUrl()!, PHOENIX_NATS_PREFIX: prefix } : {}),
      },
      async teardown() {
        if (nats) {
          const bus = await NatsBus.connect({ servers: natsUrl()!, prefix, name: `test-${prefix}` });
          await bus.destroy();
          // An open connection keeps the test process alive after its last test.
          await bus.close({ graceMs: 0 });
        }
        const dropper = openPostgres({ url: base, poolSize: 1 });
        await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(dropper.db);
        await dropper.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
});

const startSystem = async (env: Record<string, string>): Promise<System> => {
  const config = loadConfig({ PHOENIX_JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'silent', ...env });
  const system = await buildSystem(config, { logger: pino({ level: 'silent' }) });
  await system.start();
  return system;
};

const stateOf = async (system: System, id: string) =>
  fold(await system.store.readStream(streamIdOf(id))) as ExistingExperiment;

/** Reads the experiment from its events until it is in one of `states`. */
const waitForState = async (system: System, id: string, states: string[], timeoutMs = 60_000) => {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const state = await stateOf(system, id);
    last = state.status;
    if (states.includes(last)) return state;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`experiment ${id} still ${last}, not ${states.join('|')}, after ${timeoutMs} ms`);
};

const createAndStart = async (system: System, durationSeconds: number): Promise<string> => {
  const token = await tokenFor(system, 'operator', 'olga');
  const headers = { authorization: `Bearer ${token}` };
  const created = await system.app.inject({
    method: 'POST',
    url: '/api/v1/experiments',
    headers,
    payload: validSpec({
      candidate: { template: 'process-minimal-v1', params: {} },
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 2 },
      criticalProcesses: ['^kubelet$'],
      durationSeconds,
      successCriteria: {
        minCardinalityReductionPct: 50,
        maxCriticalProcessLossPct: 0,
        maxCollectorCpuOverheadPct: 100,
      },
    }),
  });
  assert.equal(created.statusCode, 201, created.body);
  const { id } = created.json() as { id: string };
  const started = await system.app.inject({
    method: 'POST',
    url: `/api/v1/experiments/${id}/start`,
    headers,
  });
  assert.equal(started.statusCode, 202, started.body);
  return id;
};

const LOST = /reconciled after a restart: the data plane no longer holds the baseline and candidate variants/;

for (const installation of [pglite, postgres(false), postgres(true)]) {
  describe(`reconciliation on start: ${installation.name}`, { skip: installation.skip }, () => {
    const cleanups: (() => Promise<void>)[] = [];
    after(async () => {
      for (const c of cleanups.reverse()) await c();
    });

    it('a run whose variants a restart lost fails, naming what was lost, once, by the reconciler', {
      timeout: 180_000,
    }, async () => {
      const { env, teardown } = await installation.setup();
      cleanups.push(teardown);
      const first = await startSystem(env);
      let id: string;
      let runEndsAt: string;
      try {
        id = await createAndStart(first, 2);
        const running = await waitForState(first, id, ['running']);
        runEndsAt = running.runEndsAt!;
      } finally {
        await first.stop();
      }
      // The run ends while nothing runs: the new process finds its end due at once.
      while (Date.now() <= Date.parse(runEndsAt)) await new Promise((r) => setTimeout(r, 100));

      const second = await startSystem(env);
      cleanups.push(() => second.stop());
      const ended = await waitForState(second, id, ['completed', 'failed', 'cancelled']);
      assert.equal(ended.status, 'failed');
      assert.match(ended.statusReason ?? '', LOST);
      const events = await second.store.readStream(streamIdOf(id));
      const failed = events.filter((e) => e.type === 'ExperimentFailed');
      assert.equal(failed.length, 1);
      assert.equal(failed[0]!.metadata.actor, 'system:reconciler');
      assert.equal(
        events.filter((e) => e.type === 'AnalysisRecorded').length,
        0,
        'not analysed on lost data',
      );
    });

    if (installation !== pglite) {
      it('two processes starting at once on the same database: the experiment fails once', {
        timeout: 180_000,
      }, async () => {
        const { env, teardown } = await installation.setup();
        cleanups.push(teardown);
        const first = await startSystem(env);
        let id: string;
        try {
          id = await createAndStart(first, 3600);
          await waitForState(first, id, ['running']);
        } finally {
          await first.stop();
        }
        const [a, b] = await Promise.all([startSystem(env), startSystem(env)]);
        cleanups.push(
          () => a.stop(),
          () => b.stop(),
        );
        const ended = await waitForState(a, id, ['completed', 'failed', 'cancelled']);
        assert.equal(ended.status, 'failed');
        assert.match(ended.statusReason ?? '', LOST);
        await waitForState(b, id, ['failed']);
        const events = await a.store.readStream(streamIdOf(id));
        assert.equal(events.filter((e) => e.type === 'ExperimentFailed').length, 1);
      });
    }
  });
}

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { openPostgres } from '../src/adapters/postgres-database.js';
import { type Config, loadConfig } from '../src/config.js';
import { buildSystem, type System } from '../src/main.js';
import { withSearchPath } from './support/databases.js';
import { TEST_SECRET, tokenFor, validSpec } from './support/system.js';

/**
 * Issue 15: a critical-process pattern that is valid RE2 but catastrophic for a backtracking engine
 * (`^(.|.|.)*Z$` against the simulated fleet's names of up to 23 characters: 3^23 steps each) used to
 * freeze the server when the candidate was tuned, and again at every start, since the saga resumes the
 * experiment. A server whose store holds such an experiment must start, tune, run it and answer.
 */
const POISON = '^(.|.|.)*Z$';

interface Backend {
  readonly name: string;
  readonly skip: string | undefined;
  /** Environment for the system, and how to drop what it left. */
  prepare(): Promise<{ env: Record<string, string>; cleanup(): Promise<void> }>;
}

const backends: Backend[] = [
  {
    name: 'PGlite',
    skip: undefined,
    async prepare() {
      return { env: {}, cleanup: async () => {} };
    },
  },
  {
    name: 'PostgreSQL',
    skip: process.env.DATABASE_URL
      ? undefined
      : 'DATABASE_URL is not set: no real PostgreSQL to test against',
    async prepare() {
      const base = process.env.DATABASE_URL as string;
      const schema = `phoenix_poison_${randomBytes(5).toString('hex')}`;
      const admin = openPostgres({ url: base, poolSize: 1 });
      await sql`create schema ${sql.id(schema)}`.execute(admin.db);
      await admin.close();
      return {
        env: { DATABASE_URL: withSearchPath(base, schema) },
        async cleanup() {
          const dropper = openPostgres({ url: base, poolSize: 1 });
          await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(dropper.db);
          await dropper.close();
        },
      };
    },
  },
];

for (const backend of backends) {
  describe(`a poisoned critical-process pattern on ${backend.name}`, { skip: backend.skip }, () => {
    let dir: string;
    let config: Config;
    let cleanup: () => Promise<void> = async () => {};
    let system: System | undefined;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'phoenix-poison-'));
      const prepared = await backend.prepare();
      cleanup = prepared.cleanup;
      config = loadConfig({
        PHOENIX_DATA_DIR: dir,
        PHOENIX_JWT_SECRET: TEST_SECRET,
        LOG_LEVEL: 'silent',
        ...prepared.env,
      });
    });
    after(async () => {
      await system?.stop();
      await cleanup();
      rmSync(dir, { recursive: true, force: true });
    });

    const call = async (sys: System, method: 'GET' | 'POST', url: string, payload?: object) => {
      const token = await tokenFor(sys, 'operator', 'olga');
      const res = await sys.app.inject({
        method,
        url,
        headers: { authorization: `Bearer ${token}` },
        ...(payload ? { payload } : {}),
      });
      return { status: res.statusCode, body: res.body, json: () => res.json() };
    };

    it('a restarted server runs the experiment and answers /healthz', { timeout: 120_000 }, async () => {
      // The store gets an initializing experiment from a server that stops before doing anything with it.
      const writer = await buildSystem(config, { logger: pino({ level: 'silent' }) });
      let id: string;
      try {
        const created = await call(
          writer,
          'POST',
          '/api/v1/experiments',
          validSpec({
            name: 'poisoned pattern',
            candidate: { template: 'process-topk-v1', params: { k: 10 } },
            target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 },
            durationSeconds: 3600,
            criticalProcesses: [POISON],
          }),
        );
        assert.equal(created.status, 201, created.body);
        id = created.json().id;
        const started = await call(writer, 'POST', `/api/v1/experiments/${id}/start`);
        assert.equal(started.status, 202, started.body);
      } finally {
        await writer.stop();
      }

      // The next server resumes it: deploys the baseline, tunes the candidate with the pattern, runs.
      system = await buildSystem(config, { logger: pino({ level: 'silent' }) });
      await system.start();
      const sys = system;
      let state = '';
      while (state !== 'running') {
        const head = await sys.store.head();
        const res = await call(sys, 'GET', `/api/v1/experiments/${id}?minPosition=${head}`);
        assert.equal(res.status, 200, res.body);
        state = res.json().state;
        assert.ok(['initializing', 'running'].includes(state), `unexpected state ${state}: ${res.body}`);
        if (state !== 'running') await new Promise((r) => setTimeout(r, 100));
      }
      // The candidate was deployed tuned: its keep-list was computed with the poisoned pattern.
      const events = await call(sys, 'GET', `/api/v1/experiments/${id}/events?limit=1000`);
      const items: { type: string; data: { variant?: string; detail?: { keepList?: string[] } } }[] =
        events.json().items;
      const candidate = items.find((e) => e.type === 'VariantDeployed' && e.data.variant === 'candidate');
      assert.ok((candidate?.data.detail?.keepList ?? []).length > 0, events.body);

      const health = await sys.app.inject({ method: 'GET', url: '/healthz' });
      assert.equal(health.statusCode, 200);
      assert.deepEqual(health.json(), { status: 'ok' });
    });
  });
}

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import pino from 'pino';
import { type Config, loadConfig } from '../../src/config.js';
import type { Role } from '../../src/handlers/auth.js';
import { buildSystem, type System } from '../../src/main.js';

export const TEST_SECRET = 'test-secret-test-secret-test-secret-0123456789';

/**
 * A whole Phoenix in this process, on a fresh embedded database in a temporary folder (or, with
 * `postgres: true` and DATABASE_URL set, on the real PostgreSQL in a schema of its own).
 */
export async function startTestSystem(
  env: Record<string, string> = {},
): Promise<System & { dispose(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-test-'));
  const config: Config = loadConfig({
    PHOENIX_DATA_DIR: dir,
    PHOENIX_JWT_SECRET: TEST_SECRET,
    LOG_LEVEL: 'silent',
    ...env,
  });
  const system = await buildSystem(config, { logger: pino({ level: 'silent' }) });
  await system.start();
  return Object.assign(system, {
    async dispose() {
      await system.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  });
}

export const tokenFor = (system: Pick<System, 'tokens'>, role: Role, sub = `${role}-user`) =>
  system.tokens.mint({ sub, role }, 3600);

/** A token signed with the test secret but crafted by hand (other algorithms, missing claims…). */
export async function craftedToken(
  claims: Record<string, unknown>,
  options: { alg?: string; secret?: string } = {},
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: options.alg ?? 'HS256' })
    .sign(new TextEncoder().encode(options.secret ?? TEST_SECRET));
}

export const unsignedToken = (claims: Record<string, unknown>): string =>
  `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;

export const validSpec = (overrides: Record<string, unknown> = {}) => ({
  name: 'topk vs baseline on pool a',
  description: 'optional',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-topk-v1', params: { k: 20 } },
  target: { namespace: 'phoenix-experiments', nodeSelector: { pool: 'a' }, hosts: 10 },
  durationSeconds: 600,
  criticalProcesses: ['^postgres$', '^nginx'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
  ...overrides,
});

/**
 * Creates and starts an experiment through the API and waits (up to `timeoutMs`) until it has ended
 * with an analysis; returns the experiment as GET /api/v1/experiments/{id} shows it.
 */
export async function runToAnalysis(
  system: Pick<System, 'app' | 'store'>,
  token: string,
  spec: Record<string, unknown>,
  timeoutMs = 60_000,
  // biome-ignore lint/suspicious/noExplicitAny: the API's JSON, as a test reads it
): Promise<any> {
  const headers = { authorization: `Bearer ${token}` };
  const created = await system.app.inject({
    method: 'POST',
    url: '/api/v1/experiments',
    headers,
    payload: spec,
  });
  if (created.statusCode !== 201) throw new Error(`create: ${created.statusCode} ${created.body}`);
  const { id } = created.json();
  const started = await system.app.inject({
    method: 'POST',
    url: `/api/v1/experiments/${id}/start`,
    headers,
  });
  if (started.statusCode !== 202) throw new Error(`start: ${started.statusCode} ${started.body}`);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const head = await system.store.head();
    const res = await system.app.inject({
      method: 'GET',
      url: `/api/v1/experiments/${id}?minPosition=${head}`,
      headers,
    });
    const view = res.json();
    last = view.state;
    if (view.analysis && (view.state === 'completed' || view.state === 'failed')) return view;
    if (['completed', 'failed', 'cancelled'].includes(view.state))
      throw new Error(`experiment ${id} ended ${view.state} without an analysis: ${view.statusReason}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`experiment ${id} still ${last} after ${timeoutMs} ms`);
}

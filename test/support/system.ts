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

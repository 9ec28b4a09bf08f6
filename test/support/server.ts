import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { openPostgres } from '../../src/adapters/postgres-database.js';
import { TokenService } from '../../src/handlers/auth.js';
import { withSearchPath } from './databases.js';
import { TEST_SECRET } from './system.js';

export interface RunningServer {
  readonly url: string;
  readonly process: ChildProcess;
  readonly env: Record<string, string>;
  readonly output: () => string;
  token(role: 'viewer' | 'operator' | 'admin', sub?: string): Promise<string>;
  /** SIGTERM and wait; `kill9` kills without a chance to clean up. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  dispose(): Promise<void>;
}

/**
 * Starts `phoenix serve` as a child process on a free port: on the real PostgreSQL (a fresh schema)
 * when DATABASE_URL is set, else on a fresh embedded database. `env` adds or overrides variables;
 * passing `reuse` starts a second server on the same data (for restart tests).
 */
export async function startServer(
  env: Record<string, string> = {},
  reuse?: { env: Record<string, string> },
  options: { rewriteDatabaseUrl?: (url: string) => string } = {},
): Promise<RunningServer> {
  let cleanup: () => Promise<void> = async () => undefined;
  let base: Record<string, string>;
  if (reuse) {
    base = { ...reuse.env };
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'phoenix-e2e-'));
    base = {
      PHOENIX_DATA_DIR: dir,
      PHOENIX_JWT_SECRET: TEST_SECRET,
      LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? 'warn',
      HOST: '127.0.0.1',
      PORT: '0',
      // Servers run side by side in the tests: none takes the fixed gRPC port (grpc tests listen on 0).
      GRPC_PORT: '0',
    };
    const databaseUrl = process.env.DATABASE_URL;
    let schema: string | undefined;
    if (databaseUrl) {
      schema = `phoenix_e2e_${randomBytes(5).toString('hex')}`;
      const admin = openPostgres({ url: databaseUrl, poolSize: 1 });
      await sql`create schema ${sql.id(schema)}`.execute(admin.db);
      await admin.close();
      const url = withSearchPath(databaseUrl, schema);
      base.DATABASE_URL = options.rewriteDatabaseUrl ? options.rewriteDatabaseUrl(url) : url;
    }
    cleanup = async () => {
      rmSync(dir, { recursive: true, force: true });
      if (databaseUrl && schema) {
        const admin = openPostgres({ url: databaseUrl, poolSize: 1 });
        await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(admin.db);
        await admin.close();
      }
    };
  }
  const childEnv: Record<string, string> = { ...base, ...env };
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !['DATABASE_URL', 'NATS_URL', 'EVENTSTORE_URL', 'PORT', 'HOST'].includes(k),
    ),
  ) as Record<string, string>;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/bin.ts', 'serve'], {
    env: { ...inherited, ...childEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => {
    output += d;
  });
  child.stderr!.on('data', (d) => {
    output += d;
  });
  const url = await new Promise<string>((resolve, reject) => {
    // A server that did not start is killed: left running, it kept the test file (and CI) waiting.
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start in 60 s:\n${output}`));
    }, 60_000);
    const check = () => {
      const m = /serving on (http:\/\/\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });
  const tokens = new TokenService(childEnv.PHOENIX_JWT_SECRET ?? TEST_SECRET);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    url,
    process: child,
    env: childEnv,
    output: () => output,
    token: (role, sub = `${role}-e2e`) => tokens.mint({ sub, role }, 3600),
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    async dispose() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      await cleanup();
    },
  };
}

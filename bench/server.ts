import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { openPostgres } from '../src/adapters/postgres-database.js';
import { type Role, TokenService } from '../src/handlers/auth.js';
import { BENCH_DATABASE_URL } from './support.js';

/**
 * A real `phoenix serve` for the HTTP benchmarks: a child process (so the load generator in this
 * process does not share its event loop) on the local PostgreSQL, in a fresh schema dropped by
 * `dispose()`. Also starts `phoenix worker …` children against the same configuration.
 */
export const BENCH_NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
export const BENCH_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

export const withSearchPath = (url: string, schema: string): string => {
  const u = new URL(url);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return u.toString();
};

export interface BenchServer {
  readonly url: string;
  /** The schema's URL (search_path set), for loading data straight into the read models. */
  readonly databaseUrl: string;
  readonly schema: string;
  readonly process: ChildProcess;
  readonly env: Record<string, string>;
  output(): string;
  token(role: Role, sub?: string): Promise<string>;
  /** `phoenix_process_resident_memory_bytes` from /metrics, in MiB. */
  rssMiB(): Promise<number>;
  /** One sample of a metric from /metrics (the first line that starts with `name`). */
  metric(name: string): Promise<number | undefined>;
  /** `phoenix worker <kind>` on the same database, NATS and secret. */
  startWorker(kind: 'deployer' | 'analyzer' | 'all', args?: readonly string[]): Promise<ChildProcess>;
  dispose(): Promise<void>;
}

const inheritedEnv = (): Record<string, string> =>
  Object.fromEntries(
    Object.entries(process.env).filter(
      ([k, v]) =>
        v !== undefined && !['DATABASE_URL', 'NATS_URL', 'EVENTSTORE_URL', 'PORT', 'HOST'].includes(k),
    ),
  ) as Record<string, string>;

const exitOf = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', () => resolve()));

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = exitOf(child);
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

export async function startBenchServer(env: Record<string, string> = {}): Promise<BenchServer> {
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-bench-'));
  const schema = `phoenix_bench_${randomBytes(5).toString('hex')}`;
  const admin = openPostgres({ url: BENCH_DATABASE_URL, poolSize: 1 });
  await sql`create schema ${sql.id(schema)}`.execute(admin.db);
  await admin.close();
  const databaseUrl = withSearchPath(BENCH_DATABASE_URL, schema);
  const childEnv: Record<string, string> = {
    PHOENIX_DATA_DIR: dir,
    PHOENIX_JWT_SECRET: BENCH_SECRET,
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    HOST: '127.0.0.1',
    PORT: '0',
    DATABASE_URL: databaseUrl,
    ...env,
  };
  const children: ChildProcess[] = [];
  const cleanup = async () => {
    for (const c of children.reverse()) await stopChild(c);
    rmSync(dir, { recursive: true, force: true });
    const dropper = openPostgres({ url: BENCH_DATABASE_URL, poolSize: 1 });
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(dropper.db);
    await dropper.close();
  };

  // BENCH_SERVER_NODE_ARGS: node flags for the server, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof'.
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'src/bin.ts', 'serve'], {
    cwd: ROOT,
    env: { ...inheritedEnv(), ...childEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  const keep = (d: Buffer) => {
    output += d;
    // The server logs at warn and above only; keep the last 64 KiB for error reports.
    if (output.length > 1 << 17) output = output.slice(-(1 << 16));
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let url: string;
  try {
    url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${output}`)), 60_000);
      const check = () => {
        const m = /serving on (http:\/\/\S+)/.exec(output);
        if (m) {
          clearTimeout(timer);
          child.off('exit', onExit);
          resolve(m[1]!);
        }
      };
      const onExit = (code: number | null) => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code}:\n${output}`));
      };
      child.stdout!.on('data', check);
      child.once('exit', onExit);
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
  const tokens = new TokenService(BENCH_SECRET);
  const metric = async (name: string): Promise<number | undefined> => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  return {
    url,
    databaseUrl,
    schema,
    process: child,
    env: childEnv,
    output: () => output,
    token: (role, sub = `bench-${role}`) => tokens.mint({ sub, role }, 3600),
    metric,
    async rssMiB() {
      return ((await metric('phoenix_process_resident_memory_bytes')) ?? Number.NaN) / 2 ** 20;
    },
    async startWorker(kind, args = []) {
      const worker = spawn(process.execPath, ['--import', 'tsx', 'src/bin.ts', 'worker', kind, ...args], {
        cwd: ROOT,
        env: { ...inheritedEnv(), ...childEnv },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(worker);
      let out = '';
      worker.stdout!.on('data', (d) => {
        out += d;
      });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${kind} worker did not start in 60 s:\n${out}`)),
          60_000,
        );
        worker.stderr!.on('data', (d) => {
          out += d;
          if (/worker consuming|consuming from NATS/.test(out)) {
            clearTimeout(timer);
            resolve();
          }
        });
        worker.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`${kind} worker exited with ${code}:\n${out}`));
        });
      });
      return worker;
    },
    dispose: cleanup,
  };
}

/** Spawns `node --import tsx <file> <args>` from the repository root and waits for a line matching `ready`. */
export async function startChild(
  file: string,
  args: readonly string[],
  env: Record<string, string>,
  ready: RegExp,
): Promise<{ process: ChildProcess; match: RegExpExecArray; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], {
    cwd: ROOT,
    env: { ...inheritedEnv(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file} did not start in 60 s:\n${out}`)), 60_000);
    const onData = (d: Buffer) => {
      out += d;
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${file} exited with ${code}:\n${out}`));
    });
  });
  return { process: child, match, stop: () => stopChild(child) };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

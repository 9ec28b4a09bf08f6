import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { sql } from 'kysely';
import { openPostgres } from '../src/adapters/postgres-database.js';
import { migrateToLatest } from '../src/adapters/postgres-migrations.js';
import type { SqlDatabase } from '../src/application/ports/database.js';

export const BENCH_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** A migrated schema of its own on the local PostgreSQL, dropped by `close()`. */
export async function benchDatabase(poolSize: number): Promise<SqlDatabase> {
  const schema = `phoenix_bench_${randomBytes(4).toString('hex')}`;
  const admin = openPostgres({ url: BENCH_DATABASE_URL, poolSize: 1 });
  await sql`create schema ${sql.id(schema)}`.execute(admin.db);
  const u = new URL(BENCH_DATABASE_URL);
  u.searchParams.set('options', `-c search_path=${schema}`);
  const database = openPostgres({ url: u.toString(), poolSize });
  await migrateToLatest(database.db);
  return {
    ...database,
    async close() {
      await database.close();
      await sql`drop schema ${sql.id(schema)} cascade`.execute(admin.db);
      await admin.close();
    },
  };
}

export const percentile = (sorted: readonly number[], p: number): number =>
  sorted.length === 0
    ? Number.NaN
    : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

export const median = (xs: readonly number[]): number =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );

/**
 * CPU time (user + system, in seconds) that processes have used so far, read from /proc (Linux): the
 * process `pid`, and every process whose command name is `comm`. Undefined where /proc is not there.
 */
export function cpuSeconds(select: { pid: number } | { comm: string }): number | undefined {
  const tick = 100; // USER_HZ on Linux
  const read = (pid: string): { comm: string; seconds: number } | undefined => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const fields = stat.slice(close + 2).split(' ');
      return {
        comm: stat.slice(stat.indexOf('(') + 1, close),
        seconds: (Number(fields[11]) + Number(fields[12])) / tick,
      };
    } catch {
      return undefined;
    }
  };
  if (!existsSync('/proc/self/stat')) return undefined;
  if ('pid' in select) return read(String(select.pid))?.seconds;
  let total = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const p = read(pid);
    if (p?.comm === select.comm) total += p.seconds;
  }
  return total;
}

export interface RunFigures {
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** CPU this process used, as a share of one core. */
  readonly clientCpu?: number;
}

/** Runs `workers` loops of `op` until `total` operations are done; rate and latency percentiles. */
export async function drive(
  total: number,
  workers: number,
  op: (worker: number, i: number) => Promise<void>,
): Promise<RunFigures> {
  const latencies: number[] = [];
  let next = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        const t = performance.now();
        await op(w, i);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  latencies.sort((a, b) => a - b);
  return {
    perSecond: total / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    clientCpu: (used.user + used.system) / 1e6 / seconds,
  };
}

export const fmt = (f: RunFigures, unit: string): string =>
  `${Math.round(f.perSecond).toLocaleString('en-US')} ${unit}/s, p50 ${f.p50Ms.toFixed(2)} ms, p99 ${f.p99Ms.toFixed(2)} ms` +
  (f.clientCpu !== undefined ? `, client cpu ${Math.round(f.clientCpu * 100)}%` : '');

/** Several rounds; reports each and the median, because this machine is shared and noisy. */
export async function rounds(
  label: string,
  unit: string,
  n: number,
  run: () => Promise<RunFigures>,
): Promise<RunFigures> {
  const results: RunFigures[] = [];
  for (let r = 0; r < n; r++) {
    const f = await run();
    results.push(f);
    console.log(`  ${label} round ${r + 1}: ${fmt(f, unit)}`);
  }
  const m: RunFigures = {
    perSecond: median(results.map((r) => r.perSecond)),
    p50Ms: median(results.map((r) => r.p50Ms)),
    p99Ms: median(results.map((r) => r.p99Ms)),
  };
  console.log(`${label} (median of ${n}): ${fmt(m, unit)}`);
  return m;
}

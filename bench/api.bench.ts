/**
 * Issue 5 §7: the HTTP API of a real `phoenix serve` (a child process) on the local PostgreSQL.
 *
 * - create: `POST /api/v1/experiments` at BENCH_CONNECTIONS (32) connections with autocannon (in this
 *   process; the server is another), beside a bare fastify + jose + pg app doing one INSERT per request
 *   (also a child process, started from this file with `--baseline-server`). Rounds interleave the two.
 *   Each round also reports the CPU used per create by the server process and by PostgreSQL (from
 *   /proc), which says where the time went. Target ≥ 3,000 creates/s, p99 ≤ 25 ms.
 * - audit: ~1,000,000 transitions bulk-loaded into state_transitions (monthly partitions over six
 *   months, a few hundred actors), then `GET /api/v1/audit` with a mix of filters. Target p99 ≤ 50 ms.
 * - live: BENCH_LIVE_CLIENTS (1,000) WebSocket clients on `/api/v1/live`, BENCH_LIVE_RATE (100)
 *   events/s written through the API; delivery latency and the server's RSS. Target p99 ≤ 50 ms.
 *   By default each experiment is created and cancelled (BENCH_LIVE_CYCLE=create,cancel): the feed
 *   then carries exactly the rate asked for. A cycle with `start` also sets the saga going, whose own
 *   events (deploys, running, teardown) make the feed carry about 2.5 times that rate.
 *
 *   npx tsx bench/api.bench.ts [create] [audit] [live]
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import { CompiledQuery, type Kysely, sql } from 'kysely';
import WebSocket from 'ws';
import { openPostgres } from '../src/adapters/postgres-database.js';
import type { AuditFilter } from '../src/application/ports/read-models.js';
import { auditQuery } from '../src/projections/read-models.js';
import { validSpec } from '../test/support/system.js';
import { type BenchServer, sleep, startBenchServer, startChild, withSearchPath } from './server.js';
import { BENCH_DATABASE_URL, cpuSeconds, fmt, median, percentile, type RunFigures } from './support.js';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const CREATE_SECONDS = Number(process.env.BENCH_CREATE_SECONDS ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const AUDIT_ROWS = Number(process.env.BENCH_AUDIT_ROWS ?? 1_000_000);
const AUDIT_ACTORS = Number(process.env.BENCH_AUDIT_ACTORS ?? 300);
const AUDIT_QUERIES = Number(process.env.BENCH_AUDIT_QUERIES ?? 2_000);
const AUDIT_CONCURRENCY = Number(process.env.BENCH_AUDIT_CONCURRENCY ?? 4);
const LIVE_CLIENTS = Number(process.env.BENCH_LIVE_CLIENTS ?? 1_000);
const LIVE_RATE = Number(process.env.BENCH_LIVE_RATE ?? 100);
const LIVE_SECONDS = Number(process.env.BENCH_LIVE_SECONDS ?? 20);
/** The commands each experiment goes through in the live test, one event each. */
const LIVE_CYCLE = (process.env.BENCH_LIVE_CYCLE ?? 'create,cancel').split(',') as (
  | 'create'
  | 'start'
  | 'cancel'
)[];
const SECTIONS = ['create', 'audit', 'live'] as const;
type Section = (typeof SECTIONS)[number];

/** A bench server that nothing throttles. */
const SERVER_ENV = { PHOENIX_RATE_LIMIT_PER_MINUTE: '1000000000' };

const specBody = (name: string, overrides: Record<string, unknown> = {}) =>
  validSpec({
    name,
    description: 'api benchmark',
    target: { namespace: 'phoenix-experiments', nodeSelector: { pool: 'a' }, hosts: 3 },
    ...overrides,
  });

const ms = (x: number) => `${x.toFixed(1)} ms`;
const int = (x: number) => Math.round(x).toLocaleString('en-US');

// ---------------------------------------------------------------------------------------------------
// create-experiment throughput, beside a bare fastify + JWT + one INSERT

interface CreateFigures extends RunFigures {
  readonly bad: number;
  /** CPU per 2xx create, in µs: the server process, and PostgreSQL (all its processes). */
  readonly serverUs?: number;
  readonly postgresUs?: number;
}

async function cannon(
  url: string,
  token: string,
  seconds: number,
  serverPid?: number,
): Promise<CreateFigures> {
  const server0 = serverPid === undefined ? undefined : cpuSeconds({ pid: serverPid });
  const pg0 = cpuSeconds({ comm: 'postgres' });
  const result = await autocannon({
    url: `${url}/api/v1/experiments`,
    method: 'POST',
    connections: CONNECTIONS,
    duration: seconds,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(specBody('autocannon create')),
  });
  const server1 = serverPid === undefined ? undefined : cpuSeconds({ pid: serverPid });
  const pg1 = cpuSeconds({ comm: 'postgres' });
  const perCreate = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined || result['2xx'] === 0 ? undefined : ((b - a) * 1e6) / result['2xx'];
  const serverUs = perCreate(server0, server1);
  const postgresUs = perCreate(pg0, pg1);
  return {
    perSecond: result['2xx'] / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    bad: result.non2xx + result.errors + result.timeouts,
    ...(serverUs !== undefined ? { serverUs } : {}),
    ...(postgresUs !== undefined ? { postgresUs } : {}),
  };
}

/** ", server 340 µs + PostgreSQL 310 µs of CPU per create" when /proc told. */
const cpuNote = (f: CreateFigures): string =>
  f.serverUs !== undefined && f.postgresUs !== undefined
    ? `, CPU per create: server ${Math.round(f.serverUs)} µs + PostgreSQL ${Math.round(f.postgresUs)} µs`
    : '';

/** The bare app the create figures are compared with: fastify, an HS256 check with jose, one INSERT. */
async function baselineServer(): Promise<void> {
  const [{ default: Fastify }, { jwtVerify }, { default: pg }] = await Promise.all([
    import('fastify'),
    import('jose'),
    import('pg'),
  ]);
  const key = new TextEncoder().encode(process.env.PHOENIX_JWT_SECRET!);
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 20 });
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
  app.post('/api/v1/experiments', async (request, reply) => {
    const m = /^Bearer (\S+)$/.exec(request.headers.authorization ?? '');
    if (!m) return reply.code(401).send({ status: 401 });
    try {
      await jwtVerify(m[1]!, key, { algorithms: ['HS256'] });
    } catch {
      return reply.code(401).send({ status: 401 });
    }
    const id = randomUUID();
    const body = request.body as { name?: string };
    await pool.query('insert into baseline_experiments (id, name, spec) values ($1, $2, $3)', [
      id,
      body.name ?? '',
      JSON.stringify(body),
    ]);
    return reply.code(201).header('location', `/api/v1/experiments/${id}`).send({ id, state: 'pending' });
  });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  process.stdout.write(`baseline serving on ${address}\n`);
  process.once('SIGTERM', () => {
    void app
      .close()
      .then(() => pool.end())
      .then(() => process.exit(0));
  });
}

async function benchCreate(): Promise<string> {
  console.log(
    `-- create: POST /api/v1/experiments, ${CONNECTIONS} connections (autocannon), ${ROUNDS} rounds of ${CREATE_SECONDS} s each, interleaved with the baseline`,
  );
  const server = await startBenchServer(SERVER_ENV);
  const schema = `phoenix_bench_base_${randomBytes(4).toString('hex')}`;
  const admin = openPostgres({ url: BENCH_DATABASE_URL, poolSize: 1 });
  await sql`create schema ${sql.id(schema)}`.execute(admin.db);
  await sql`create table ${sql.id(schema)}.baseline_experiments (id uuid primary key, name text not null, spec jsonb not null, created_at timestamptz not null default now())`.execute(
    admin.db,
  );
  const { BENCH_SECRET } = await import('./server.js');
  const baseline = await startChild(
    'bench/api.bench.ts',
    ['--baseline-server'],
    { DATABASE_URL: withSearchPath(BENCH_DATABASE_URL, schema), PHOENIX_JWT_SECRET: BENCH_SECRET },
    /baseline serving on (http:\/\/\S+)/,
  );
  const baselineUrl = baseline.match[1]!;
  try {
    const token = await server.token('operator');
    // Warm-up (JIT, pools, plans), not counted.
    await cannon(server.url, token, 2);
    await cannon(baselineUrl, token, 2);
    const ours: CreateFigures[] = [];
    const bare: CreateFigures[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const p = await cannon(server.url, token, CREATE_SECONDS, server.process.pid);
      console.log(
        `  phoenix  round ${r + 1}: ${fmt(p, 'creates')}${cpuNote(p)}${p.bad ? ` (${p.bad} non-2xx/errors)` : ''}`,
      );
      ours.push(p);
      const b = await cannon(baselineUrl, token, CREATE_SECONDS, baseline.process.pid);
      console.log(
        `  baseline round ${r + 1}: ${fmt(b, 'creates')}${cpuNote(b)}${b.bad ? ` (${b.bad} non-2xx/errors)` : ''}`,
      );
      bare.push(b);
    }
    const med = (xs: CreateFigures[]): CreateFigures => {
      const server = xs.flatMap((x) => (x.serverUs === undefined ? [] : [x.serverUs]));
      const postgres = xs.flatMap((x) => (x.postgresUs === undefined ? [] : [x.postgresUs]));
      return {
        perSecond: median(xs.map((x) => x.perSecond)),
        p50Ms: median(xs.map((x) => x.p50Ms)),
        p99Ms: median(xs.map((x) => x.p99Ms)),
        bad: 0,
        ...(server.length === xs.length ? { serverUs: median(server) } : {}),
        ...(postgres.length === xs.length ? { postgresUs: median(postgres) } : {}),
      };
    };
    const p = med(ours);
    const b = med(bare);
    const lag = await server.metric('phoenix_projection_lag_events');
    console.log(`create (median of ${ROUNDS}): phoenix ${fmt(p, 'creates')}${cpuNote(p)}`);
    console.log(
      `create (median of ${ROUNDS}): baseline fastify+jose+INSERT ${fmt(b, 'creates')}${cpuNote(b)}`,
    );
    const ok = p.perSecond >= 3000 && p.p99Ms <= 25;
    console.log(
      `create: ratio to the baseline ${(p.perSecond / b.perSecond).toFixed(2)}; target ≥ 3,000/s and p99 ≤ 25 ms — ${ok ? 'met' : 'MISSED'}` +
        (lag !== undefined ? ` (projection lag after the run: ${lag} events)` : ''),
    );
    return `create ${int(p.perSecond)}/s p99 ${p.p99Ms} ms (baseline ${int(b.perSecond)}/s, ratio ${(p.perSecond / b.perSecond).toFixed(2)})`;
  } finally {
    await baseline.stop();
    await server.dispose();
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(admin.db);
    await admin.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// audit queries over ~1,000,000 transitions

/** An md5-derived UUID with the version-4 and variant bits set (the API takes RFC 9562 UUIDs only), the same in SQL and here. */
const md5Uuid = (text: string): string => {
  const h = createHash('md5').update(text).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20)}`;
};

/** Lifecycles: 70 % completed and 20 % failed (5 transitions), 10 % cancelled while running (4). */
const TRANSITIONS_PER_EXPERIMENT = 4.9;
const SPAN_DAYS = 180;

/** A small deterministic PRNG, so every run asks the same questions. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

async function loadTransitions(
  // biome-ignore lint/suspicious/noExplicitAny: raw SQL on the server's schema
  db: Kysely<any>,
  experiments: number,
  base: Date,
): Promise<number> {
  const spacingSeconds = (SPAN_DAYS * 86400) / experiments;
  await sql`select phoenix_ensure_transition_partitions('', ${base.toISOString()}::timestamptz, now())`.execute(
    db,
  );
  // Bulk-load without the indexes, then build them once (what a rebuild does), then ANALYZE.
  await sql`alter table state_transitions drop constraint if exists state_transitions_pkey`.execute(db);
  for (const index of ['time', 'actor', 'from', 'to'])
    await sql`drop index if exists ${sql.id(`state_transitions_${index}`)}`.execute(db);
  const chunk = 10_000; // ~49,000 rows a statement: short transactions (a long one holds back every event reader on the cluster)
  for (let from = 0; from < experiments; from += chunk) {
    const to = Math.min(experiments, from + chunk) - 1;
    await sql`
      with path (kind, v, from_state, to_state, by_user, offset_s, duration_ms, reason) as (values
        ('c', 1, null, 'pending', true, 0, null::bigint, 'created'),
        ('c', 2, 'pending', 'initializing', true, 60, 60000, 'started'),
        ('c', 3, 'initializing', 'running', false, 62, 2000, 'both variants deployed'),
        ('c', 4, 'running', 'analyzing', false, 662, 600000, 'run completed'),
        ('c', 5, 'analyzing', 'completed', false, 665, 3000, 'success criteria met'),
        ('f', 1, null, 'pending', true, 0, null, 'created'),
        ('f', 2, 'pending', 'initializing', true, 60, 60000, 'started'),
        ('f', 3, 'initializing', 'running', false, 62, 2000, 'both variants deployed'),
        ('f', 4, 'running', 'analyzing', false, 662, 600000, 'run completed'),
        ('f', 5, 'analyzing', 'failed', false, 665, 3000, 'cardinality reduction 31% < 50%'),
        ('x', 1, null, 'pending', true, 0, null, 'created'),
        ('x', 2, 'pending', 'initializing', true, 60, 60000, 'started'),
        ('x', 3, 'initializing', 'running', false, 62, 2000, 'both variants deployed'),
        ('x', 4, 'running', 'cancelled', true, 300, 238000, 'cancelled by user'))
      insert into state_transitions (experiment_id, version, experiment_name, from_state, to_state, actor,
        reason, duration_ms, correlation_id, success, error_message, metadata, created_at)
      select overlay(overlay(md5('bench-' || e) placing '4' from 13) placing '8' from 17)::uuid, p.v, 'bench experiment ' || e, p.from_state, p.to_state,
             case when p.by_user then 'user-' || (e % ${AUDIT_ACTORS}) else 'phoenix-saga' end,
             p.reason, p.duration_ms, md5('corr-' || e), p.to_state <> 'failed', null, '{}'::jsonb,
             ${base.toISOString()}::timestamptz + make_interval(secs => e * ${spacingSeconds}::float8 + p.offset_s)
        from generate_series(${from}::int, ${to}::int) e
        join path p on p.kind = case when e % 10 < 7 then 'c' when e % 10 < 9 then 'f' else 'x' end`.execute(
      db,
    );
  }
  await sql`select phoenix_index_read_models('')`.execute(db);
  await sql`analyze state_transitions`.execute(db);
  const { rows } = await sql<{ n: string }>`select count(*)::text as n from state_transitions`.execute(db);
  return Number(rows[0]!.n);
}

interface AuditCase {
  readonly kind: string;
  readonly query: Record<string, string>;
}

function auditCases(experiments: number, base: Date, count: number): AuditCase[] {
  const rand = prng(42);
  const pick = (n: number) => Math.floor(rand() * n);
  const spanMs = SPAN_DAYS * 86400_000;
  const at = (offsetMs: number) => new Date(base.getTime() + offsetMs).toISOString();
  const cases: AuditCase[] = [];
  for (let i = 0; i < count; i++) {
    const t = pick(spanMs);
    switch (i % 8) {
      case 0:
        cases.push({ kind: 'experimentId', query: { experimentId: md5Uuid(`bench-${pick(experiments)}`) } });
        break;
      case 1:
        cases.push({ kind: 'actor', query: { actor: `user-${pick(AUDIT_ACTORS)}` } });
        break;
      case 2:
        cases.push({
          kind: 'actor+30d',
          query: { actor: `user-${pick(AUDIT_ACTORS)}`, since: at(t), until: at(t + 30 * 86400_000) },
        });
        break;
      case 3:
        cases.push({
          kind: 'from+to+1d',
          query: { fromState: 'running', toState: 'analyzing', since: at(t), until: at(t + 86400_000) },
        });
        break;
      case 4:
        cases.push({ kind: 'toState=failed', query: { toState: 'failed' } });
        break;
      case 5:
        cases.push({ kind: 'since+until 1h', query: { since: at(t), until: at(t + 3600_000) } });
        break;
      case 6:
        cases.push({ kind: 'no filter', query: {} });
        break;
      default:
        cases.push({ kind: 'fromState+since', query: { fromState: 'pending', since: at(t) } });
    }
  }
  return cases;
}

const filterOf = (q: Record<string, string>): AuditFilter => ({
  ...(q.experimentId ? { experimentId: q.experimentId } : {}),
  ...(q.actor ? { actor: q.actor } : {}),
  ...(q.fromState ? { fromState: q.fromState as AuditFilter['fromState'] & string } : {}),
  ...(q.toState ? { toState: q.toState as AuditFilter['toState'] & string } : {}),
  ...(q.since ? { since: new Date(q.since) } : {}),
  ...(q.until ? { until: new Date(q.until) } : {}),
});

/** The plan of exactly what queryAudit runs, shortened to the nodes and the timings. */
async function explain(
  // biome-ignore lint/suspicious/noExplicitAny: raw SQL on the server's schema
  db: Kysely<any>,
  label: string,
  query: Record<string, string>,
): Promise<void> {
  const compiled = auditQuery(db, filterOf(query), undefined, 101).compile();
  const result = await db.executeQuery<{ 'QUERY PLAN': string }>(
    CompiledQuery.raw(`explain (analyze, buffers) ${compiled.sql}`, [...compiled.parameters]),
  );
  const lines = result.rows.map((r) => r['QUERY PLAN']);
  const interesting = lines.filter((l) =>
    /Scan|Append|Limit|Sort|Execution Time|Planning Time|Subplans Removed|Index Cond|Filter:|Rows Removed/.test(
      l,
    ),
  );
  console.log(`  EXPLAIN ANALYZE, ${label} (${new URLSearchParams(query).toString() || 'no filter'}):`);
  const shown = interesting.slice(0, 14);
  for (const l of shown) console.log(`    ${l.length > 150 ? `${l.slice(0, 147)}...` : l}`);
  if (interesting.length > shown.length) console.log(`    … ${interesting.length - shown.length} more lines`);
}

async function benchAudit(): Promise<string> {
  const experiments = Math.round(AUDIT_ROWS / TRANSITIONS_PER_EXPERIMENT);
  console.log(
    `-- audit: GET /api/v1/audit over ~${int(AUDIT_ROWS)} transitions (${int(experiments)} experiments, ${AUDIT_ACTORS} actors, ${SPAN_DAYS} days), ${AUDIT_CONCURRENCY} concurrent clients, ${ROUNDS} rounds of ${int(AUDIT_QUERIES)} queries`,
  );
  const server = await startBenchServer(SERVER_ENV);
  const database = openPostgres({ url: server.databaseUrl, poolSize: 2 });
  try {
    const base = new Date(Date.now() - (SPAN_DAYS + 5) * 86400_000);
    const t0 = performance.now();
    const rows = await loadTransitions(database.db, experiments, base);
    const { rows: parts } = await sql<{ n: number }>`
      select count(*)::int as n from pg_inherits where inhparent = 'state_transitions'::regclass`.execute(
      database.db,
    );
    console.log(
      `  loaded ${int(rows)} rows into ${parts[0]!.n} monthly partitions and indexed them in ${((performance.now() - t0) / 1000).toFixed(1)} s` +
        ' (the audit query reads state_transitions alone, which carries experiment_name: no experiments rows needed)',
    );
    const token = await server.token('admin');
    const headers = { authorization: `Bearer ${token}` };
    const ask = async (c: AuditCase): Promise<number> => {
      const t = performance.now();
      const res = await fetch(
        `${server.url}/api/v1/audit?${new URLSearchParams({ ...c.query, limit: '100' })}`,
        {
          headers,
        },
      );
      const body = (await res.json()) as { items?: unknown[] };
      const elapsed = performance.now() - t;
      if (res.status !== 200 || !Array.isArray(body.items)) {
        throw new Error(
          `audit ${JSON.stringify(c.query)} → ${res.status}: ${JSON.stringify(body).slice(0, 300)}`,
        );
      }
      return elapsed;
    };
    // Warm-up: the server's JIT and the pool's prepared connections; the data's pages get warm too.
    for (const c of auditCases(experiments, base, 400)) await ask(c);

    const byKind = new Map<string, number[]>();
    const figures: RunFigures[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const cases = auditCases(experiments, base, AUDIT_QUERIES * (r + 2)).slice(AUDIT_QUERIES * (r + 1));
      const latencies: number[] = [];
      let next = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: AUDIT_CONCURRENCY }, async () => {
          for (;;) {
            const c = cases[next++];
            if (!c) return;
            const l = await ask(c);
            latencies.push(l);
            const list = byKind.get(c.kind);
            if (list) list.push(l);
            else byKind.set(c.kind, [l]);
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      latencies.sort((a, b) => a - b);
      const f = {
        perSecond: cases.length / seconds,
        p50Ms: percentile(latencies, 50),
        p99Ms: percentile(latencies, 99),
      };
      figures.push(f);
      console.log(`  audit round ${r + 1}: ${fmt(f, 'queries')}`);
    }
    const m = {
      perSecond: median(figures.map((f) => f.perSecond)),
      p50Ms: median(figures.map((f) => f.p50Ms)),
      p99Ms: median(figures.map((f) => f.p99Ms)),
    };
    console.log('  by filter (all rounds pooled):');
    for (const [kind, list] of byKind) {
      list.sort((a, b) => a - b);
      console.log(
        `    ${kind.padEnd(18)} p50 ${ms(percentile(list, 50)).padStart(9)}  p99 ${ms(percentile(list, 99)).padStart(9)}  max ${ms(list[list.length - 1]!).padStart(9)}  (${list.length})`,
      );
    }
    console.log(
      `audit (median of ${ROUNDS}): ${fmt(m, 'queries')} — target p99 ≤ 50 ms ${m.p99Ms <= 50 ? 'met' : 'MISSED'}`,
    );
    const t = base.getTime() + 90 * 86400_000;
    await explain(database.db, 'actor, 30 days', {
      actor: 'user-17',
      since: new Date(t).toISOString(),
      until: new Date(t + 30 * 86400_000).toISOString(),
    });
    await explain(database.db, 'transition, 1 day', {
      fromState: 'running',
      toState: 'analyzing',
      since: new Date(t).toISOString(),
      until: new Date(t + 86400_000).toISOString(),
    });
    return `audit p50 ${m.p50Ms.toFixed(1)} ms p99 ${m.p99Ms.toFixed(1)} ms over ${int(rows)} rows`;
  } finally {
    await database.close();
    await server.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------
// live feed fan-out

const wallNow = () => performance.timeOrigin + performance.now();

async function connectClients(
  server: BenchServer,
  token: string,
  n: number,
  onMessage: (data: Buffer) => void,
  closes: Map<number, number>,
): Promise<WebSocket[]> {
  const wsUrl = `${server.url.replace(/^http/, 'ws')}/api/v1/live`;
  const sockets: WebSocket[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (next < n) {
        next++;
        const socket = new WebSocket(wsUrl, {
          headers: { authorization: `Bearer ${token}` },
          perMessageDeflate: false,
        });
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('a live client got no `live` in 30 s')), 30_000);
          const first = (data: Buffer) => {
            if (data.toString().includes('"kind":"live"')) {
              clearTimeout(timer);
              socket.off('message', first);
              socket.on('message', onMessage);
              resolve();
            } else onMessage(data);
          };
          socket.on('message', first);
          socket.once('error', (err) => {
            clearTimeout(timer);
            reject(err);
          });
        });
        socket.on('close', (code) => closes.set(code, (closes.get(code) ?? 0) + 1));
        sockets.push(socket);
      }
    }),
  );
  return sockets;
}

async function benchLive(): Promise<string> {
  console.log(
    `-- live: ${int(LIVE_CLIENTS)} WebSocket clients on /api/v1/live, ${LIVE_RATE} commands/s (${LIVE_CYCLE.join(' → ')}) for ${LIVE_SECONDS} s; ulimit -n is what this process was given (1,000 sockets fit the Linux default)`,
  );
  const server = await startBenchServer(SERVER_ENV);
  const sockets: WebSocket[] = [];
  try {
    const operator = await server.token('operator');
    const viewer = await server.token('viewer');
    const headers = { authorization: `Bearer ${operator}`, 'content-type': 'application/json' };
    // Warm the command path up before anyone listens.
    for (let i = 0; i < 50; i++) {
      const res = await fetch(`${server.url}/api/v1/experiments`, {
        method: 'POST',
        headers,
        body: JSON.stringify(specBody(`warm-up ${i}`)),
      });
      await res.arrayBuffer();
    }
    await sleep(500);
    const rssIdle = await server.rssMiB();

    // position → when the command that wrote it answered (bench clock), and receipts seen before that.
    const answeredAt = new Map<string, number>();
    const early = new Map<string, number[]>();
    const occurredAt = new Map<string, number>();
    const sinceAnswer: number[] = [];
    const sinceOccurred: number[] = [];
    let deliveries = 0;
    let measuring = false;
    const onMessage = (data: Buffer) => {
      const now = wallNow();
      const text = data.toString();
      const m = /"position":"([^"]+)"/.exec(text);
      if (!m || !text.startsWith('{"kind":"event"')) return;
      deliveries++;
      if (!measuring) return;
      const position = m[1]!;
      let occurred = occurredAt.get(position);
      if (occurred === undefined) {
        const o = /"occurredAt":"([^"]+)"/.exec(text);
        occurred = o ? Date.parse(o[1]!) : Number.NaN;
        occurredAt.set(position, occurred);
      }
      if (!Number.isNaN(occurred)) sinceOccurred.push(now - occurred);
      const answered = answeredAt.get(position);
      if (answered !== undefined) sinceAnswer.push(now - answered);
      else {
        const list = early.get(position);
        if (list) list.push(now);
        else early.set(position, [now]);
      }
    };
    const closes = new Map<number, number>();
    const t0 = performance.now();
    sockets.push(...(await connectClients(server, viewer, LIVE_CLIENTS, onMessage, closes)));
    const connectSeconds = (performance.now() - t0) / 1000;
    await sleep(1000);
    const rssConnected = await server.rssMiB();
    console.log(
      `  ${int(sockets.length)} clients live in ${connectSeconds.toFixed(1)} s; server RSS idle ${rssIdle.toFixed(0)} MiB, with the clients connected ${rssConnected.toFixed(0)} MiB`,
    );

    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const serverCpu0 = (await server.metric('phoenix_process_cpu_seconds_total')) ?? Number.NaN;
    const benchCpu0 = process.cpuUsage();
    measuring = true;
    deliveries = 0;
    const total = LIVE_RATE * LIVE_SECONDS;
    const ids: string[] = [];
    const chains: Promise<void>[] = [];
    const commandMs: number[] = [];
    let failures = 0;
    let ownEvents = 0;
    const rssSamples: number[] = [];
    const sampler = setInterval(() => {
      void server.rssMiB().then(
        (r) => rssSamples.push(r),
        () => undefined,
      );
    }, 1000);
    const command = async (experiment: number, step: number): Promise<void> => {
      const kind = LIVE_CYCLE[step]!;
      const t = performance.now();
      const res =
        kind === 'create'
          ? await fetch(`${server.url}/api/v1/experiments`, {
              method: 'POST',
              headers,
              body: JSON.stringify(specBody(`live ${experiment}`)),
            })
          : await fetch(`${server.url}/api/v1/experiments/${ids[experiment]}/${kind}`, {
              method: 'POST',
              headers,
              body: kind === 'cancel' ? '{"reason":"bench"}' : '{}',
            });
      const body = (await res.json()) as { id?: string; position?: string };
      const now = wallNow();
      commandMs.push(performance.now() - t);
      if (res.status >= 300 || !body.position) {
        failures++;
        if (failures <= 3) console.log(`  ${kind} → ${res.status} ${JSON.stringify(body).slice(0, 200)}`);
        return;
      }
      ownEvents++;
      if (kind === 'create') ids[experiment] = body.id!;
      answeredAt.set(body.position, now);
      const before = early.get(body.position);
      if (before) {
        for (const r of before) sinceAnswer.push(r - now);
        early.delete(body.position);
      }
    };
    const started = performance.now();
    for (let i = 0; i < total; i++) {
      const wait = started + (i * 1000) / LIVE_RATE - performance.now();
      if (wait > 0) await sleep(wait);
      const experiment = Math.floor(i / LIVE_CYCLE.length);
      const step = i % LIVE_CYCLE.length;
      chains[experiment] = (chains[experiment] ?? Promise.resolve()).then(() => command(experiment, step));
    }
    await Promise.all(chains);
    const sendSeconds = (performance.now() - started) / 1000;
    const serverCpu = ((await server.metric('phoenix_process_cpu_seconds_total')) ?? Number.NaN) - serverCpu0;
    const benchCpuUsed = process.cpuUsage(benchCpu0);
    const benchCpu = (benchCpuUsed.user + benchCpuUsed.system) / 1e6;
    // Let the last deliveries land.
    const expected = () => answeredAt.size * sockets.length;
    const until = Date.now() + 10_000;
    while (sinceAnswer.length < expected() && Date.now() < until) await sleep(50);
    clearInterval(sampler);
    loop.disable();
    measuring = false;
    const rssDuring = Math.max(...rssSamples);

    sinceAnswer.sort((a, b) => a - b);
    sinceOccurred.sort((a, b) => a - b);
    commandMs.sort((a, b) => a - b);
    const negative = sinceAnswer.filter((x) => x < 0).length;
    const closed = [...closes].map(([code, n]) => `${n}×${code}`).join(', ');
    console.log(
      `  wrote ${int(ownEvents)} events through the API in ${sendSeconds.toFixed(1)} s (${(ownEvents / sendSeconds).toFixed(0)}/s, ${failures} failed commands; command p50 ${ms(percentile(commandMs, 50))}, p99 ${ms(percentile(commandMs, 99))}); ` +
        `the clients received ${int(deliveries)} event frames (${int(deliveries / sockets.length)} each on average, the saga's own events included)`,
    );
    console.log(
      `  deliveries of our events: ${int(sinceAnswer.length)} of ${int(expected())} expected` +
        (closed ? `; closes: ${closed}` : '; no client was closed'),
    );
    console.log(
      `  latency, command answered → frame received (bench clock; ${int(negative)} frames came before the HTTP answer, counted as ≤ 0): p50 ${ms(percentile(sinceAnswer, 50))}, p99 ${ms(percentile(sinceAnswer, 99))}, max ${ms(sinceAnswer[sinceAnswer.length - 1] ?? Number.NaN)}`,
    );
    console.log(
      `  latency, event occurredAt (server clock, before the append) → frame received, every event: p50 ${ms(percentile(sinceOccurred, 50))}, p99 ${ms(percentile(sinceOccurred, 99))}`,
    );
    console.log(
      `  CPU while writing: the server ${Math.round((serverCpu / sendSeconds) * 100)}% of a core, this process (the ${int(sockets.length)} clients and the writer) ${Math.round((benchCpu / sendSeconds) * 100)}%`,
    );
    console.log(
      `  this process's event loop delay while receiving (${int(deliveries / sendSeconds)} frames/s): p50 ${ms(loop.percentile(50) / 1e6 - 10)}, p99 ${ms(loop.percentile(99) / 1e6 - 10)}, max ${ms(loop.max / 1e6 - 10)}`,
    );
    const p99 = percentile(sinceAnswer, 99);
    console.log(
      `live: p50 ${ms(percentile(sinceAnswer, 50))}, p99 ${ms(p99)} — target p99 ≤ 50 ms ${p99 <= 50 ? 'met' : 'MISSED'}; server RSS idle ${rssIdle.toFixed(0)} MiB, ${LIVE_CLIENTS} clients ${rssConnected.toFixed(0)} MiB, during the writes max ${rssDuring.toFixed(0)} MiB`,
    );
    return `live p99 ${p99.toFixed(1)} ms to ${int(LIVE_CLIENTS)} clients, RSS ${rssConnected.toFixed(0)}→${rssDuring.toFixed(0)} MiB`;
  } finally {
    for (const s of sockets) s.terminate();
    await server.dispose();
  }
}

export async function run(sections: readonly Section[] = SECTIONS): Promise<string> {
  const results: string[] = [];
  for (const section of sections) {
    if (section === 'create') results.push(await benchCreate());
    else if (section === 'audit') results.push(await benchAudit());
    else results.push(await benchLive());
  }
  return results.join('; ');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  if (process.argv[2] === '--baseline-server') {
    await baselineServer();
  } else {
    const asked = process.argv
      .slice(2)
      .filter((a): a is Section => (SECTIONS as readonly string[]).includes(a));
    run(asked.length > 0 ? asked : SECTIONS).then(
      (summary) => {
        console.log(summary);
        process.exit(0);
      },
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  }
}

/**
 * Issue 6 §6: BENCH_LIFECYCLE_EXPERIMENTS (100) concurrent experiments of 1 s each through the whole
 * lifecycle (pending → initializing → running → analyzing → completed/failed) on real NATS JetStream
 * and PostgreSQL: `phoenix serve` as a child process (fresh schema, NATS_URL, a NATS prefix of its own
 * in PHOENIX_NATS_PREFIX), with the deployer and analyzer workers in the server (default) or, with
 * BENCH_LIFECYCLE_WORKERS=separate, in a `phoenix worker all` child and none in the server.
 *
 * Per round: create them all, start them all at once, and time, from the live feed (one client):
 * - the wall time from the last start's answer until every experiment is completed or failed
 *   (target ≤ 10 s);
 * - started → running per experiment, from the events' own metadata.occurredAt (target p99 ≤ 500 ms),
 *   and where the rest of the time goes (deploys, the run, the analysis).
 *
 *   npx tsx bench/lifecycle.bench.ts
 */
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import WebSocket from 'ws';
import { BENCH_NATS_URL, type BenchServer, sleep, startBenchServer } from './server.js';
import { median, percentile } from './support.js';

const EXPERIMENTS = Number(process.env.BENCH_LIFECYCLE_EXPERIMENTS ?? 100);
const HOSTS = Number(process.env.BENCH_LIFECYCLE_HOSTS ?? 3);
const ROUNDS = Number(process.env.BENCH_LIFECYCLE_ROUNDS ?? process.env.BENCH_ROUNDS ?? 3);
const WORKERS = (process.env.BENCH_LIFECYCLE_WORKERS ?? 'inprocess') as 'inprocess' | 'separate';
/** With BENCH_LIFECYCLE_WORKERS=separate: `--concurrency` of the worker (its default: deployer 4, analyzer 2). */
const WORKER_CONCURRENCY = process.env.BENCH_LIFECYCLE_WORKER_CONCURRENCY;
const TIMEOUT_MS = Number(process.env.BENCH_LIFECYCLE_TIMEOUT_MS ?? 60_000);
const CANDIDATES = ['process-topk-v1', 'process-minimal-v1'];
const TERMINAL = new Set(['ExperimentCompleted', 'ExperimentFailed', 'ExperimentCancelled']);

const wallNow = () => performance.timeOrigin + performance.now();

interface Trace {
  /** metadata.occurredAt of each event type (the first of its kind), server clock. */
  readonly at: Map<string, number>;
  readonly candidate: string;
  deployed: number[];
  /** When this bench saw each bus message of the experiment on NATS (first of its kind). */
  readonly bus: Map<string, number>;
  terminal?: { type: string; receivedAt: number; reason?: string };
}

interface RoundFigures {
  readonly wallMs: number;
  readonly finished: number;
  readonly outcomes: Record<string, number>;
  readonly startedToRunning: number[];
  readonly startedToFirstDeployed: number[];
  readonly startedToLastDeployed: number[];
  readonly failures: Map<string, number>;
  readonly runningToRunCompleted: number[];
  readonly runCompletedToEnd: number[];
  readonly startAnswersMs: number;
  /** started → each deploy command on the bus; command → its answer on the bus. */
  readonly startedToDeploySent: number[];
  readonly deploySentToAnswered: number[];
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `p50 ${percentile(s, 50).toFixed(0)} ms, p99 ${percentile(s, 99).toFixed(0)} ms, max ${(s[s.length - 1] ?? Number.NaN).toFixed(0)} ms`;
};

/** One live-feed client that keeps, per experiment, when each of its events occurred. */
async function feed(server: BenchServer, token: string, traces: Map<string, Trace>) {
  const socket = new WebSocket(`${server.url.replace(/^http/, 'ws')}/api/v1/live`, {
    headers: { authorization: `Bearer ${token}` },
  });
  await new Promise<void>((resolve, reject) => {
    socket.on('message', (data: Buffer) => {
      const receivedAt = wallNow();
      const m = JSON.parse(data.toString()) as {
        kind: string;
        experimentId?: string;
        type?: string;
        data?: { reason?: string };
        metadata?: { occurredAt: string };
      };
      if (m.kind === 'live') return resolve();
      if (m.kind !== 'event' || !m.experimentId || !m.type) return;
      const trace = traces.get(m.experimentId);
      if (!trace) return;
      const occurred = Date.parse(m.metadata?.occurredAt ?? '');
      if (!trace.at.has(m.type)) trace.at.set(m.type, occurred);
      if (m.type === 'VariantDeployed') trace.deployed.push(occurred);
      if (TERMINAL.has(m.type) && !trace.terminal)
        trace.terminal = { type: m.type, receivedAt, ...(m.data?.reason ? { reason: m.data.reason } : {}) };
    });
    socket.once('error', reject);
    socket.once('close', (code) => reject(new Error(`the live feed closed with ${code}`)));
  });
  return socket;
}

/**
 * Watches the server's bus subjects (a plain NATS subscription sees what JetStream stores) and notes
 * when each deploy command and each answer passed, to split started → running into the saga's part
 * (started → command sent), the worker's (command → answer) and the rest.
 */
async function busTap(prefix: string, traces: Map<string, Trace>) {
  const nc = await connect({ servers: BENCH_NATS_URL, name: 'phoenix-lifecycle-bench-tap' });
  const sub = nc.subscribe(`${prefix}.>`);
  void (async () => {
    for await (const m of sub) {
      const seenAt = wallNow();
      try {
        const b = JSON.parse(new TextDecoder().decode(m.data)) as {
          type?: string;
          experimentId?: string;
          variant?: string;
        };
        const trace = b.experimentId ? traces.get(b.experimentId) : undefined;
        if (!trace || !b.type) continue;
        const key = b.variant ? `${b.type}:${b.variant}` : b.type;
        if (!trace.bus.has(key)) trace.bus.set(key, seenAt);
      } catch {
        // not one of ours
      }
    }
  })();
  return { close: () => nc.close() };
}

async function oneRound(server: BenchServer, round: number, prefix: string): Promise<RoundFigures> {
  const operator = await server.token('operator');
  const viewer = await server.token('viewer');
  const headers = { authorization: `Bearer ${operator}`, 'content-type': 'application/json' };
  const traces = new Map<string, Trace>();
  const socket = await feed(server, viewer, traces);
  const tap = await busTap(prefix, traces);
  try {
    // Create them all (16 at a time), then start them all at once.
    const ids: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < EXPERIMENTS) {
          const n = next++;
          const res = await fetch(`${server.url}/api/v1/experiments`, {
            method: 'POST',
            headers,
            body: JSON.stringify({
              name: `lifecycle bench ${round}.${n}`,
              baseline: { template: 'process-baseline-v1', params: {} },
              candidate: { template: CANDIDATES[n % CANDIDATES.length]!, params: {} },
              target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: HOSTS },
              durationSeconds: 1,
              // on every simulated host (postgres is on a quarter of them: 3 hosts often have none,
              // and the analysis is then inconclusive)
              criticalProcesses: ['^kubelet$', '^containerd$'],
            }),
          });
          const body = (await res.json()) as { id: string };
          if (res.status !== 201) throw new Error(`create → ${res.status}: ${JSON.stringify(body)}`);
          traces.set(body.id, {
            at: new Map(),
            candidate: CANDIDATES[n % CANDIDATES.length]!,
            deployed: [],
            bus: new Map(),
          });
          ids.push(body.id);
        }
      }),
    );
    const firstStart = wallNow();
    let lastStart = 0;
    await Promise.all(
      ids.map(async (id) => {
        const res = await fetch(`${server.url}/api/v1/experiments/${id}/start`, {
          method: 'POST',
          headers,
          body: '{}',
        });
        const body = await res.text();
        if (res.status !== 202) throw new Error(`start → ${res.status}: ${body}`);
        lastStart = Math.max(lastStart, wallNow());
      }),
    );
    const deadline = Date.now() + TIMEOUT_MS;
    const done = () => [...traces.values()].filter((t) => t.terminal).length;
    while (done() < ids.length && Date.now() < deadline) await sleep(20);
    const all = [...traces.values()];
    const finished = all.filter((t) => t.terminal);
    const outcomes: Record<string, number> = {};
    for (const t of finished) {
      const k = t.terminal!.type.replace('Experiment', '').toLowerCase();
      outcomes[k] = (outcomes[k] ?? 0) + 1;
    }
    const failures = new Map<string, number>();
    for (const t of finished) {
      if (t.terminal!.type !== 'ExperimentFailed') continue;
      const key = `${t.candidate}: ${(t.terminal!.reason ?? '').replace(/[\d.]+/g, 'N')}`;
      failures.set(key, (failures.get(key) ?? 0) + 1);
    }
    if (finished.length < ids.length) outcomes.unfinished = ids.length - finished.length;
    const span = (t: Trace, from: string, to: string) =>
      (t.at.get(to) ?? Number.NaN) - (t.at.get(from) ?? Number.NaN);
    const defined = (xs: number[]) => xs.filter((x) => !Number.isNaN(x));
    return {
      wallMs:
        finished.length < ids.length
          ? Number.POSITIVE_INFINITY
          : Math.max(...finished.map((t) => t.terminal!.receivedAt)) - lastStart,
      finished: finished.length,
      outcomes,
      startedToRunning: defined(all.map((t) => span(t, 'ExperimentStarted', 'ExperimentRunStarted'))),
      startedToFirstDeployed: defined(
        all.map((t) => Math.min(...t.deployed) - (t.at.get('ExperimentStarted') ?? Number.NaN)),
      ),
      startedToLastDeployed: defined(
        all.map((t) => Math.max(...t.deployed) - (t.at.get('ExperimentStarted') ?? Number.NaN)),
      ),
      failures,
      runningToRunCompleted: defined(
        all.map((t) => span(t, 'ExperimentRunStarted', 'ExperimentRunCompleted')),
      ),
      runCompletedToEnd: defined(
        all.map((t) => {
          const end = t.at.get('ExperimentCompleted') ?? t.at.get('ExperimentFailed') ?? Number.NaN;
          return end - (t.at.get('ExperimentRunCompleted') ?? Number.NaN);
        }),
      ),
      startAnswersMs: lastStart - firstStart,
      startedToDeploySent: defined(
        all.flatMap((t) =>
          ['baseline', 'candidate'].map(
            (v) =>
              (t.bus.get(`DeployVariant:${v}`) ?? Number.NaN) - (t.at.get('ExperimentStarted') ?? Number.NaN),
          ),
        ),
      ),
      deploySentToAnswered: defined(
        all.flatMap((t) =>
          ['baseline', 'candidate'].map(
            (v) =>
              (t.bus.get(`VariantDeployed:${v}`) ?? t.bus.get(`VariantDeployFailed:${v}`) ?? Number.NaN) -
              (t.bus.get(`DeployVariant:${v}`) ?? Number.NaN),
          ),
        ),
      ),
    };
  } finally {
    socket.terminate();
    await tap.close();
  }
}

/** The streams on the NATS server, to see whether the server honoured our prefix. */
async function natsStreams(): Promise<{
  names: string[];
  close(): Promise<void>;
  remove(prefix: string): Promise<void>;
}> {
  const nc = await connect({ servers: BENCH_NATS_URL, name: 'phoenix-lifecycle-bench' });
  const jsm = await jetstreamManager(nc);
  const names: string[] = [];
  for await (const name of jsm.streams.names()) names.push(name);
  return {
    names,
    async remove(prefix: string) {
      for await (const name of jsm.streams.names()) {
        if (name.startsWith(`${prefix.toUpperCase()}_`))
          await jsm.streams.delete(name).catch(() => undefined);
      }
    },
    close: () => nc.close(),
  };
}

export async function run(): Promise<string> {
  const prefix = `phxbench${randomBytes(3).toString('hex')}`;
  console.log(
    `lifecycle: ${EXPERIMENTS} experiments × ${HOSTS} hosts, 1 s runs, on PostgreSQL + NATS (${BENCH_NATS_URL}, prefix ${prefix}), workers ${WORKERS === 'separate' ? `in a separate \`phoenix worker all${WORKER_CONCURRENCY ? ` --concurrency ${WORKER_CONCURRENCY}` : ''}\` process` : 'in the server (default concurrency: deployer 4, analyzer 2)'}, ${ROUNDS} rounds`,
  );
  const env: Record<string, string> = {
    NATS_URL: BENCH_NATS_URL,
    PHOENIX_NATS_PREFIX: prefix,
    PHOENIX_RATE_LIMIT_PER_MINUTE: '1000000000',
    ...(WORKERS === 'separate' ? { PHOENIX_INPROCESS_WORKERS: 'false' } : {}),
  };
  const server = await startBenchServer(env);
  let nats: Awaited<ReturnType<typeof natsStreams>> | undefined;
  try {
    if (WORKERS === 'separate')
      await server.startWorker('all', WORKER_CONCURRENCY ? ['--concurrency', WORKER_CONCURRENCY] : []);
    nats = await natsStreams();
    const ours = nats.names.filter((n) => n.startsWith(`${prefix.toUpperCase()}_`));
    if (ours.length === 0) {
      console.log(
        `  WARNING: the server made no ${prefix.toUpperCase()}_* streams, so it ignores PHOENIX_NATS_PREFIX and uses the default \`phoenix\` prefix; any other Phoenix on this NATS now competes for its commands (streams there: ${nats.names.join(', ') || 'none'})`,
      );
    } else console.log(`  the server uses its own NATS streams: ${ours.join(', ')}`);

    const figures: RoundFigures[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      const f = await oneRound(server, r, prefix);
      figures.push(f);
      const outcomes = Object.entries(f.outcomes)
        .map(([k, n]) => `${n} ${k}`)
        .join(', ');
      console.log(
        `  round ${r}: all ${EXPERIMENTS} finished ${Number.isFinite(f.wallMs) ? `${(f.wallMs / 1000).toFixed(2)} s` : `NOT within ${TIMEOUT_MS / 1000} s`} after the last start (${outcomes}); the ${EXPERIMENTS} starts answered within ${f.startAnswersMs.toFixed(0)} ms`,
      );
      console.log(`    started → running   ${stats(f.startedToRunning)}`);
      console.log(`      started → deploy command on the bus ${stats(f.startedToDeploySent)} (saga, outbox)`);
      console.log(
        `      deploy command → answer on the bus ${stats(f.deploySentToAnswered)} (worker queue, deploy)`,
      );
      console.log(`    started → first variant deployed ${stats(f.startedToFirstDeployed)}`);
      console.log(`    started → both variants deployed ${stats(f.startedToLastDeployed)}`);
      console.log(`    running → run completed ${stats(f.runningToRunCompleted)} (the 1 s run)`);
      console.log(`    run completed → completed/failed ${stats(f.runCompletedToEnd)} (analysis)`);
      for (const [reason, n] of f.failures) console.log(`    failed: ${n}× ${reason}`);
    }
    const wall = median(figures.map((f) => f.wallMs));
    const p99 = median(
      figures.map((f) =>
        percentile(
          [...f.startedToRunning].sort((a, b) => a - b),
          99,
        ),
      ),
    );
    const ok = wall <= 10_000 && p99 <= 500;
    console.log(
      `lifecycle (median of ${ROUNDS}): all finished ${(wall / 1000).toFixed(2)} s after the last start (target ≤ 10 s), started → running p99 ${p99.toFixed(0)} ms (target ≤ 500 ms) — ${ok ? 'met' : 'MISSED'}`,
    );
    if (!ok) {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      const lines = text
        .split('\n')
        .filter((l) =>
          /^phoenix_(state_transition_duration_seconds_(sum|count)|projection_lag_events)/.test(l),
        );
      console.log('  server metrics:');
      for (const l of lines) console.log(`    ${l}`);
    }
    return `lifecycle ${EXPERIMENTS} done ${(wall / 1000).toFixed(2)} s after last start, started→running p99 ${p99.toFixed(0)} ms`;
  } finally {
    await server.dispose();
    await nats?.remove(prefix);
    await nats?.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  run().then(
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

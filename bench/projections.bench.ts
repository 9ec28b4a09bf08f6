import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { pino } from 'pino';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import { PostgresLogReader } from '../src/adapters/postgres-log-reader.js';
import { experimentCodec } from '../src/application/experiment-codec.js';
import { streamIdOf } from '../src/application/experiment-commands.js';
import type { Position } from '../src/application/ports/event-store.js';
import {
  DomainError,
  decide,
  type Experiment,
  type ExperimentCommand,
  type ExperimentEvent,
  evolve,
  initialState,
} from '../src/domain/experiment.js';
import type { Analysis, ExperimentSpec } from '../src/domain/experiment-spec.js';
import { currentSchemaVersion } from '../src/domain/upcasters.js';
import { READ_MODELS } from '../src/projections/experiment-read-models.js';
import { createProjections } from '../src/projections/index.js';
import { rebuildReadModels } from '../src/projections/rebuild.js';
import { writeCheckpoint } from '../src/projections/runner.js';
import { BENCH_DATABASE_URL, benchDatabase, median, percentile } from './support.js';

/**
 * Issue 4's benchmark, against the local PostgreSQL:
 * - rebuild: `phoenix replay` of BENCH_EVENTS events (default 1,000,000: about 150,000 experiments
 *   with lifecycles made by the real decider, BENCH_ACTIVE of them under way at once so their events
 *   interleave as in production). The events are bulk-loaded straight into phoenix_events first; the
 *   live checkpoint is set to the head, so the rebuild replays the whole log (it never goes past the
 *   live projection).
 * - lag: the live runner following a steady BENCH_RATE events/s (default 1,000) of real appends for
 *   BENCH_LAG_SECONDS; latency from the append call to the read model having applied it.
 * Targets (2 cores, local PostgreSQL): rebuild ≥ 50,000 events/s, lag p99 ≤ 50 ms.
 * BENCH_REBUILD_WORKERS sets the rebuild's worker threads (a number or `auto`; default: log order).
 */
const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const ACTIVE = Number(process.env.BENCH_ACTIVE ?? 200);
const RATE = Number(process.env.BENCH_RATE ?? 1_000);
const LAG_SECONDS = Number(process.env.BENCH_LAG_SECONDS ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** Worker threads for the rebuild: a number, or `auto` (default: the rebuild's own, log order). */
const REBUILD_WORKERS: number | 'auto' | undefined =
  process.env.BENCH_REBUILD_WORKERS === undefined
    ? undefined
    : process.env.BENCH_REBUILD_WORKERS === 'auto'
      ? 'auto'
      : Number(process.env.BENCH_REBUILD_WORKERS);
const LOAD_CHUNK = 10_000;

const TEMPLATES = [
  'process-topk-v1',
  'process-priority-filter-v1',
  'process-aggregated-v1',
  'process-adaptive-v1',
];

const spec = (n: number): ExperimentSpec => ({
  name: `bench experiment ${n}`,
  description: 'a realistic spec: two variants, a target, critical processes and criteria',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: TEMPLATES[n % TEMPLATES.length]!, params: { k: 10 + (n % 40) } },
  target: { namespace: 'phoenix-experiments', nodeSelector: { pool: `pool-${n % 5}` }, hosts: 10 },
  durationSeconds: 1,
  criticalProcesses: ['^postgres$', '^nginx', '^kubelet$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
});

const analysis = (pass: boolean): Analysis => ({
  verdict: pass ? 'pass' : 'fail',
  reasons: pass ? [] : ['cardinality reduction 31% < 50%'],
  baseline: { series: 12_000, datapointsPerMinute: 720_000 },
  candidate: { series: pass ? 3_000 : 8_300, datapointsPerMinute: pass ? 180_000 : 500_000 },
  cardinalityReductionPct: pass ? 75 : 31,
  datapointReductionPct: pass ? 75 : 30,
  criticalProcessLossPct: 0,
  missingCriticalProcesses: [],
});

/** The next command of a mostly-happy lifecycle (about 6.7 events per experiment on average). */
function nextCommand(s: Experiment, n: number, at: string, roll: number): ExperimentCommand | undefined {
  if (s.status === 'empty') return undefined;
  switch (s.status) {
    case 'pending':
      return roll < 0.35 ? { type: 'CancelExperiment', at } : { type: 'StartExperiment', at };
    case 'initializing':
      if (roll < 0.06 && !s.deployments.candidate)
        return {
          type: 'RecordVariantDeploymentFailed',
          at,
          variant: 'candidate',
          reason: 'image pull backoff',
        };
      return {
        type: 'RecordVariantDeployed',
        at,
        variant: s.deployments.baseline ? 'candidate' : 'baseline',
        detail: { pods: 10 },
      };
    case 'running':
      return roll < 0.05
        ? { type: 'CancelExperiment', at, reason: 'operator stopped it' }
        : { type: 'CompleteRun', at: s.runEndsAt ?? at };
    case 'analyzing':
      return { type: 'RecordAnalysis', at, analysis: analysis(n % 3 !== 0) };
    default: {
      const up = (['baseline', 'candidate'] as const).find(
        (v) => s.deployments[v] && s.deployments[v]?.status !== 'torn_down',
      );
      return up ? { type: 'RecordVariantTornDown', at, variant: up } : undefined;
    }
  }
}

interface Row {
  stream_id: string;
  version: number;
  event_id: string;
  type: string;
  data: unknown;
  metadata: unknown;
}

/** Lifecycles, ACTIVE at a time, advanced in random order: yields events in log order, in chunks. */
export function* generate(total: number): Generator<Row[]> {
  let n = 0;
  let clock = Date.UTC(2024, 0, 1);
  const newOne = () => {
    const id = randomUUID();
    const events = decide(
      { type: 'CreateExperiment', experimentId: id, spec: spec(n), at: new Date(clock).toISOString() },
      initialState(),
    );
    return { id, n: n++, state: events.reduce(evolve, initialState()), version: 0, pending: events };
  };
  const active = Array.from({ length: ACTIVE }, newOne);
  let produced = 0;
  let chunk: Row[] = [];
  while (produced < total) {
    const i = Math.floor(Math.random() * active.length);
    const x = active[i]!;
    clock += 250;
    const at = new Date(clock).toISOString();
    let events = x.pending;
    x.pending = [];
    if (events.length === 0) {
      const command = nextCommand(x.state, x.n, at, Math.random());
      if (!command) {
        active[i] = newOne();
        continue;
      }
      try {
        events = decide(command, x.state);
      } catch (err) {
        if (!(err instanceof DomainError)) throw err;
        active[i] = newOne();
        continue;
      }
      x.state = events.reduce(evolve, x.state);
    }
    const correlationId = randomUUID();
    for (const event of events) {
      x.version++;
      chunk.push({
        stream_id: streamIdOf(x.id),
        version: x.version,
        event_id: randomUUID(),
        type: event.type,
        data: event.data,
        metadata: {
          eventId: '',
          actor: x.n % 4 === 0 ? 'alice' : 'saga:deployer',
          correlationId,
          causationId: null,
          occurredAt: at,
          schemaVersion: currentSchemaVersion(event.type),
        },
      });
      const last = chunk[chunk.length - 1]!;
      (last.metadata as { eventId: string }).eventId = last.event_id;
    }
    produced += events.length;
    if (chunk.length >= LOAD_CHUNK) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}

export async function run(): Promise<void> {
  console.log(
    `projections on ${new URL(BENCH_DATABASE_URL).host}: ${EVENTS.toLocaleString('en-US')} events, ${ACTIVE} under way at once`,
  );
  const database = await benchDatabase(8);
  const store = new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec });
  const log = new PostgresLogReader(store, database, experimentCodec);
  try {
    // Bulk load: multi-row inserts of LOAD_CHUNK events, one transaction each.
    let t = performance.now();
    let loaded = 0;
    const versions = new Map<string, number>();
    for (const rows of generate(EVENTS)) {
      // jsonb_to_recordset yields the rows in array order, so global positions follow the log order
      await sql`
        insert into phoenix_events (stream_id, version, event_id, type, data, metadata)
        select stream_id, version, event_id, type, data, metadata
          from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
            as r(stream_id text, version bigint, event_id uuid, type text, data jsonb, metadata jsonb)`.execute(
        database.db,
      );
      for (const r of rows) versions.set(r.stream_id, r.version);
      loaded += rows.length;
    }
    const streams = [...versions].map(([stream_id, version]) => ({ stream_id, version }));
    for (let i = 0; i < streams.length; i += 50_000) {
      await sql`insert into phoenix_streams (stream_id, version)
                select * from jsonb_to_recordset(${JSON.stringify(streams.slice(i, i + 50_000))}::jsonb)
                  as r(stream_id text, version bigint)`.execute(database.db);
    }
    await sql`analyze phoenix_events`.execute(database.db);
    let seconds = (performance.now() - t) / 1000;
    console.log(
      `loaded ${loaded.toLocaleString('en-US')} events of ${streams.length.toLocaleString('en-US')} experiments in ${seconds.toFixed(1)} s (${Math.round(loaded / seconds).toLocaleString('en-US')}/s)`,
    );

    // Rebuild, ROUNDS times: each replays the whole log into fresh tables and swaps them in.
    const head = await store.head();
    await writeCheckpoint(database.db, READ_MODELS, head);
    const rates: number[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      t = performance.now();
      const report = await rebuildReadModels({
        database,
        log,
        store,
        ...(REBUILD_WORKERS === undefined ? {} : { workers: REBUILD_WORKERS }),
        onProgress: (p) =>
          process.stdout.write(
            `\r  rebuild round ${r}: ${p.phase} ${p.events.toLocaleString('en-US')} events, ${Math.round(p.perSecond).toLocaleString('en-US')}/s${p.secondsLeft !== undefined ? `, ~${Math.round(p.secondsLeft)} s left` : ''}   `,
          ),
      });
      seconds = (performance.now() - t) / 1000;
      rates.push(report.events / seconds);
      process.stdout.write('\n');
      console.log(
        `  rebuild round ${r}: ${report.events.toLocaleString('en-US')} events in ${seconds.toFixed(1)} s = ${Math.round(report.events / seconds).toLocaleString('en-US')} events/s (${Object.entries(
          report.phases,
        )
          .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
          .join(', ')})`,
      );
    }
    console.log(
      `rebuild (median of ${ROUNDS}): ${Math.round(median(rates)).toLocaleString('en-US')} events/s (target ≥ 50,000)`,
    );

    // Lag under a steady load of real appends. The rebuilds wrote gigabytes of WAL: flush it first, or
    // the checkpoint it triggers lands in the middle of the measurement (its fsyncs stall commits for
    // seconds) and the lag measured is the disk's, at a moment that differs from run to run.
    await sql`checkpoint`
      .execute(database.db)
      .then(() => console.log('(checkpoint after the rebuilds, before the lag run)'))
      .catch((err: Error) => console.log(`(no checkpoint before the lag run: ${err.message})`));
    // Warnings and errors only: a runner that stops says why, and where the events it missed are.
    const projections = createProjections({
      database,
      log,
      store,
      logger: pino({ level: 'warn' }, pino.destination(2)),
    });
    await projections.start();
    await new Promise<void>((resolve) => {
      const check = () => (projections.runner.isLive ? resolve() : setTimeout(check, 20));
      check();
    });
    const lags: number[] = [];
    const appendMs: number[] = [];
    const waiting: { position: Position; started: number }[] = [];
    projections.runner.on('applied', (p) => {
      const now = performance.now();
      for (let i = waiting.length - 1; i >= 0; i--) {
        const w = waiting[i]!;
        if (w.position <= p) {
          lags.push(now - w.started);
          waiting.splice(i, 1);
        }
      }
    });
    const live = Array.from({ length: 200 }, (_, i) => ({
      id: randomUUID(),
      n: i,
      state: initialState() as Experiment,
      version: 0,
      busy: false,
    }));
    const renew = (x: (typeof live)[number]) =>
      Object.assign(x, { id: randomUUID(), state: initialState(), version: 0 });
    let sent = 0;
    const tickMs = 10;
    let owed = 0;
    const started = performance.now();
    const appends: Promise<void>[] = [];
    while (performance.now() - started < LAG_SECONDS * 1000) {
      owed += RATE / (1000 / tickMs);
      for (const x of live) {
        if (owed < 1) break;
        if (x.busy) continue;
        const at = new Date().toISOString();
        const command: ExperimentCommand | undefined =
          x.state.status === 'empty'
            ? { type: 'CreateExperiment', experimentId: x.id, spec: spec(x.n), at }
            : nextCommand(x.state, x.n, at, Math.random());
        let events: ExperimentEvent[] = [];
        try {
          if (command) events = decide(command, x.state);
        } catch (err) {
          if (!(err instanceof DomainError)) throw err;
        }
        if (events.length === 0) {
          renew(x);
          continue;
        }
        const expected = x.version === 0 ? 'no_stream' : x.version;
        x.state = events.reduce(evolve, x.state);
        x.version += events.length;
        x.busy = true;
        owed -= events.length;
        sent += events.length;
        const t0 = performance.now();
        const newEvents = events.map((e) => ({
          type: e.type,
          data: e.data,
          metadata: {
            eventId: randomUUID(),
            actor: 'bench',
            correlationId: randomUUID(),
            causationId: null,
            occurredAt: at,
            schemaVersion: currentSchemaVersion(e.type),
          },
        }));
        appends.push(
          store.append(streamIdOf(x.id), newEvents, expected).then((r) => {
            x.busy = false;
            appendMs.push(performance.now() - t0);
            if (projections.runner.position >= r.position) lags.push(performance.now() - t0);
            else waiting.push({ position: r.position, started: t0 });
          }),
        );
      }
      await new Promise((r) => setTimeout(r, tickMs));
    }
    await Promise.all(appends);
    const until = Date.now() + 5_000;
    while (waiting.length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    await projections.stop();
    lags.sort((a, b) => a - b);
    appendMs.sort((a, b) => a - b);
    const elapsed = (performance.now() - started) / 1000;
    console.log(
      `lag at ${Math.round(sent / elapsed).toLocaleString('en-US')} events/s for ${LAG_SECONDS} s (append → visible in the read model): ` +
        `p50 ${percentile(lags, 50).toFixed(1)} ms, p99 ${percentile(lags, 99).toFixed(1)} ms, max ${(lags[lags.length - 1] ?? 0).toFixed(1)} ms ` +
        `(${lags.length} appends, ${waiting.length} never seen) (target p99 ≤ 50 ms)`,
    );
    console.log(
      `  of which the append itself (group commit): p50 ${percentile(appendMs, 50).toFixed(1)} ms, p99 ${percentile(appendMs, 99).toFixed(1)} ms`,
    );
  } finally {
    await store.close();
    await database.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  run().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import type { AnyEvent, NewEvent, Position } from '../src/application/ports/event-store.js';
import { benchDatabase } from './support.js';

/**
 * A soak of the PostgreSQL event store's subscriptions, not a benchmark: SOAK_STREAMS streams appended
 * in turn (each at its exact version) at SOAK_RATE events/s for SOAK_SECONDS, SOAK_SUBSCRIBERS
 * subscribers from the start (the first never re-subscribes; the others re-subscribe every 50–550 ms,
 * so they join the shared reader behind it), and SOAK_CHURN connections running short transactions
 * that write no events (what the projection and the saga do). Each subscriber checks every stream's
 * versions come one after another and every position after the last; at the end it must have seen
 * every event. Exits 1, naming the gaps, when one did not.
 *
 * Before migrations/043_log_horizon_ending.sql, two of four 600 s runs at 1,500 events/s with two
 * subscribers and two churners, with CPU burners and the test suite running beside them, lost 7–8
 * events: the horizon let reads pass an append transaction that was ending. Keep running it after any
 * change to the horizon, the tail or the subscription, on a loaded machine: the windows it finds are
 * microseconds wide. Run: `npx tsx bench/log-soak.ts`.
 */
const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const RATE = Number(process.env.SOAK_RATE ?? 1_500);
const STREAMS = Number(process.env.SOAK_STREAMS ?? 300);
const SUBSCRIBERS = Number(process.env.SOAK_SUBSCRIBERS ?? 2);
const CHURN = Number(process.env.SOAK_CHURN ?? 2);

const newEvent = (): NewEvent => ({
  type: 'SoakEvent',
  data: {},
  metadata: {
    eventId: randomUUID(),
    actor: 'soak',
    correlationId: randomUUID(),
    causationId: null,
    occurredAt: new Date().toISOString(),
    schemaVersion: 1,
  },
});

const database = await benchDatabase(8);
const store = new PostgresEventStore<AnyEvent>(database, { idlePollMs: 1_000 });
const problems: string[] = [];
const controllers = new Set<AbortController>();
let stopping = false;
const from = await store.head();

async function subscriber(n: number): Promise<number> {
  const versions = new Map<string, number>();
  let checkpoint: Position = from;
  let seen = 0;
  while (!stopping) {
    const controller = new AbortController();
    controllers.add(controller);
    const timer = setTimeout(() => controller.abort(), n === 0 ? 2 ** 31 - 1 : 50 + Math.random() * 500);
    try {
      for await (const m of store.subscribe({
        after: checkpoint,
        signal: controller.signal,
        batchSize: 100,
      })) {
        if (m.kind !== 'events') continue;
        for (const e of m.events) {
          if (e.position <= checkpoint) problems.push(`subscriber ${n}: ${e.position} after ${checkpoint}`);
          checkpoint = e.position;
          const before = versions.get(e.streamId) ?? 0;
          if (e.version !== before + 1) {
            problems.push(
              `subscriber ${n}: ${e.streamId} version ${e.version} after ${before} at ${e.position}`,
            );
          }
          versions.set(e.streamId, e.version);
          seen++;
        }
      }
    } finally {
      controllers.delete(controller);
      clearTimeout(timer);
    }
  }
  return seen;
}

async function churn(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  while (!stopping) {
    await client.query('begin');
    await client.query('insert into soak_churn values (1)');
    await new Promise((r) => setTimeout(r, Math.random() * 8));
    await client.query('commit');
  }
  await client.end();
}

await sql`create table soak_churn (x int)`.execute(database.db);
const subscribers = Array.from({ length: SUBSCRIBERS }, (_, n) => subscriber(n));
const churners = Array.from({ length: CHURN }, () => churn(database.url!));
const streams = Array.from({ length: STREAMS }, () => ({
  id: `soak-${randomUUID()}`,
  version: 0,
  busy: false,
}));
let sent = 0;
let owed = 0;
const started = performance.now();
const appends: Promise<void>[] = [];
while (performance.now() - started < SECONDS * 1_000) {
  owed += RATE / 100;
  for (const s of streams) {
    if (owed < 1) break;
    if (s.busy) continue;
    const events = Array.from({ length: 1 + Math.floor(Math.random() * 3) }, newEvent);
    s.busy = true;
    owed -= events.length;
    sent += events.length;
    appends.push(
      store.append(s.id, events, s.version === 0 ? 'no_stream' : s.version).then(
        (r) => {
          s.version = r.version;
          s.busy = false;
        },
        (err: unknown) => {
          problems.push(`append to ${s.id}: ${String(err)}`);
          s.busy = false;
        },
      ),
    );
  }
  await new Promise((r) => setTimeout(r, 10));
}
await Promise.all(appends);
await new Promise((r) => setTimeout(r, 3_000));
stopping = true;
for (const c of controllers) c.abort();
const seen = await Promise.all(subscribers);
await Promise.all(churners);
await store.close();
await database.close();
console.log(
  `log soak: ${sent.toLocaleString('en-US')} events in ${SECONDS} s; subscribers saw ${seen.map((n) => n.toLocaleString('en-US')).join(', ')}; ${problems.length} problems`,
);
for (const p of problems.slice(0, 20)) console.log(`  ${p}`);
if (problems.length > 0 || seen.some((n) => n !== sent)) process.exitCode = 1;

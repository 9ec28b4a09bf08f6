import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import { experimentCodec } from '../src/application/experiment-codec.js';
import { handleExperimentCommand, KnownStreams } from '../src/application/experiment-commands.js';
import type { NewEvent } from '../src/application/ports/event-store.js';
import type { ExperimentCommand, ExperimentEvent } from '../src/domain/experiment.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';
import { BENCH_DATABASE_URL, benchDatabase, drive, rounds } from './support.js';

/**
 * Issue 2's benchmark, against the local PostgreSQL:
 * - single-event appends from 16 concurrent writers (each to its own stream, exact expected version);
 * - read → decide → append commands with expected versions, 16 concurrent, through the real handler;
 * - the same commands as the server runs them, on the state it knows (KnownStreams), reading only
 *   when the append says the stream moved on.
 */
const WRITERS = 16;
const APPENDS = Number(process.env.BENCH_APPENDS ?? 20_000);
const COMMANDS = Number(process.env.BENCH_COMMANDS ?? 12_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

const spec: ExperimentSpec = {
  name: 'bench',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-topk-v1', params: { k: 20 } },
  target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 10 },
  durationSeconds: 1,
  criticalProcesses: ['^postgres$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};

const event = (): NewEvent<ExperimentEvent> => ({
  type: 'ExperimentStarted',
  data: { at: new Date().toISOString() },
  metadata: {
    eventId: randomUUID(),
    actor: 'bench',
    correlationId: randomUUID(),
    causationId: null,
    occurredAt: new Date().toISOString(),
    schemaVersion: 1,
  },
});

/** The lifecycle each command worker walks, one command at a time: five commands per experiment. */
const lifecycle = (experimentId: string, step: number): ExperimentCommand => {
  const at = new Date(Date.now() + step * 2000).toISOString();
  switch (step % 5) {
    case 0:
      return { type: 'CreateExperiment', experimentId, spec, at };
    case 1:
      return { type: 'StartExperiment', at };
    case 2:
      return { type: 'RecordVariantDeployed', variant: 'baseline', at };
    case 3:
      return { type: 'RecordVariantDeployed', variant: 'candidate', at };
    default:
      return { type: 'CancelExperiment', reason: 'bench', at };
  }
};

export async function run(): Promise<void> {
  console.log(`event store on ${new URL(BENCH_DATABASE_URL).host}, ${WRITERS} writers, ${ROUNDS} rounds`);
  const database = await benchDatabase(WRITERS + 4);
  const store = new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec });
  try {
    await sql`create table bench_raw (id bigserial primary key, stream_id text not null, data jsonb not null)`.execute(
      database.db,
    );
    const ceiling = await rounds('ceiling: raw single-row INSERT (16 writers)', 'rows', ROUNDS, () =>
      drive(APPENDS, WRITERS, async (w) => {
        await sql`insert into bench_raw (stream_id, data) values (${`s-${w}`}, ${'{"at":"x"}'}::jsonb)`.execute(
          database.db,
        );
      }),
    );
    const appends = await rounds('appends (single event, 16 writers)', 'appends', ROUNDS, async () => {
      const streams = Array.from({ length: WRITERS }, () => ({
        id: `experiment-${randomUUID()}`,
        version: 0,
      }));
      return drive(APPENDS, WRITERS, async (w) => {
        const s = streams[w]!;
        const r = await store.append(s.id, [event()], s.version === 0 ? 'no_stream' : s.version);
        s.version = r.version;
      });
    });
    const commandRounds = (label: string, known: () => KnownStreams | undefined) =>
      rounds(label, 'commands', ROUNDS, async () => {
        const mine = Array.from({ length: WRITERS }, () => ({ id: randomUUID(), step: 0 }));
        const cache = known();
        return drive(COMMANDS, WRITERS, async (w) => {
          const m = mine[w]!;
          if (m.step > 0 && m.step % 5 === 0) m.id = randomUUID();
          await handleExperimentCommand(
            store,
            m.id,
            lifecycle(m.id, m.step),
            { actor: 'bench', correlationId: randomUUID() },
            cache ? { known: cache } : {},
          );
          m.step++;
        });
      });
    // Every command reads its stream first (what another process's command does).
    const commands = await commandRounds('commands (read → decide → append, 16 writers)', () => undefined);
    // As the server runs them: decided on what this process knows, appended at that version, read
    // only when the store says the stream moved on.
    const knownCommands = await commandRounds(
      'commands (known state → decide → append, 16 writers)',
      () => new KnownStreams(),
    );
    console.log(
      `ratios to the raw INSERT ceiling: appends ${(appends.perSecond / ceiling.perSecond).toFixed(2)}, commands ${(commands.perSecond / ceiling.perSecond).toFixed(2)}, commands on known state ${(knownCommands.perSecond / ceiling.perSecond).toFixed(2)}`,
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

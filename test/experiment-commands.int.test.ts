import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import { experimentCodec } from '../src/application/experiment-codec.js';
import {
  type CommandContext,
  handleExperimentCommand,
  KnownStreams,
  streamIdOf,
} from '../src/application/experiment-commands.js';
import type { SqlDatabase } from '../src/application/ports/database.js';
import type { EventStore, ReadStreamOptions } from '../src/application/ports/event-store.js';
import {
  type ExperimentCommand,
  type ExperimentEvent,
  InvalidTransitionError,
} from '../src/domain/experiment.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';
import { pgliteTestDatabase, postgresTestDatabase } from './support/databases.js';

/**
 * The command handler with KnownStreams: a command on an experiment this process decided on skips
 * the read, and whatever another writer did meanwhile still wins.
 */
const spec: ExperimentSpec = {
  name: 'known streams',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-topk-v1', params: { k: 20 } },
  target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 2 },
  durationSeconds: 60,
  criticalProcesses: ['^postgres$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};

const at = () => new Date().toISOString();
const create = (experimentId: string): ExperimentCommand => ({
  type: 'CreateExperiment',
  experimentId,
  spec,
  at: at(),
});
const start: () => ExperimentCommand = () => ({ type: 'StartExperiment', at: at() });
const deployed = (variant: 'baseline' | 'candidate'): ExperimentCommand => ({
  type: 'RecordVariantDeployed',
  variant,
  at: at(),
});
const cancel: () => ExperimentCommand = () => ({ type: 'CancelExperiment', reason: 'test', at: at() });
const ctx = (extra: Partial<CommandContext> = {}): CommandContext => ({
  actor: 'tester',
  correlationId: randomUUID(),
  ...extra,
});

/** Counts the reads that go to the store. */
class CountingStore {
  reads = 0;
  constructor(readonly inner: EventStore<ExperimentEvent>) {}
  asStore(): EventStore<ExperimentEvent> {
    return new Proxy(this.inner, {
      get: (target, prop, receiver) => {
        if (prop === 'readStream') {
          return (streamId: string, options?: ReadStreamOptions) => {
            this.reads++;
            return target.readStream(streamId, options);
          };
        }
        const value = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }
}

for (const db of [postgresTestDatabase(), pgliteTestDatabase()]) {
  describe(`commands on known streams: ${db.name}`, { skip: db.skip }, () => {
    let database: SqlDatabase;
    let raw: PostgresEventStore<ExperimentEvent>;
    before(async () => {
      database = await db.open();
      raw = new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec });
    });
    after(async () => {
      await raw.close();
      await database.close();
    });

    it('a command on an experiment this process decided on does not read it, and writes the right version', async () => {
      const counting = new CountingStore(raw);
      const store = counting.asStore();
      const known = new KnownStreams();
      const id = randomUUID();
      await handleExperimentCommand(store, id, create(id), ctx(), { known });
      const started = await handleExperimentCommand(store, id, start(), ctx(), { known });
      const baseline = await handleExperimentCommand(store, id, deployed('baseline'), ctx(), { known });
      assert.equal(counting.reads, 0);
      assert.equal(started.previousStatus, 'pending');
      assert.equal(baseline.version, 3);
      assert.equal(baseline.state.status, 'initializing');
      const stored = await raw.readStream(streamIdOf(id));
      assert.deepEqual(
        stored.map((e) => e.type),
        ['ExperimentCreated', 'ExperimentStarted', 'VariantDeployed'],
      );
      assert.equal(baseline.position, stored[2]!.position);
    });

    it('another writer moved the stream on: the command reads, decides again, and the stream stays whole', async () => {
      const known = new KnownStreams();
      const id = randomUUID();
      await handleExperimentCommand(raw, id, create(id), ctx(), { known });
      // Another process (no shared knowledge) starts and cancels it.
      await handleExperimentCommand(raw, id, start(), ctx());
      await handleExperimentCommand(raw, id, cancel(), ctx());
      // This process still believes it is pending: Start looks allowed, but the store says otherwise.
      await assert.rejects(
        handleExperimentCommand(raw, id, start(), ctx(), { known }),
        (err: unknown) => err instanceof InvalidTransitionError && err.actual === 'cancelled',
      );
      const stored = await raw.readStream(streamIdOf(id));
      assert.equal(stored.length, 3);
      assert.equal(known.get(streamIdOf(id))?.version, 3);
    });

    it('a command refused on what is known is decided again on what is stored', async () => {
      const known = new KnownStreams();
      const id = randomUUID();
      await handleExperimentCommand(raw, id, create(id), ctx(), { known });
      await handleExperimentCommand(raw, id, start(), ctx(), { known });
      // Known: initializing. Another process records both variants: running.
      await handleExperimentCommand(raw, id, deployed('baseline'), ctx());
      await handleExperimentCommand(raw, id, deployed('candidate'), ctx());
      // On the known state the baseline is not yet deployed: the known path would write it again.
      const again = await handleExperimentCommand(raw, id, deployed('baseline'), ctx(), { known });
      assert.equal(again.written.length, 0);
      assert.equal(again.state.status, 'running');
      // created, started, two deployments and the run's start: nothing more.
      assert.equal((await raw.readStream(streamIdOf(id))).length, 5);
    });

    it('a repeated command (same command id) is answered from the stream and writes nothing', async () => {
      const known = new KnownStreams();
      const id = randomUUID();
      await handleExperimentCommand(raw, id, create(id), ctx(), { known });
      const first = await handleExperimentCommand(raw, id, start(), ctx({ commandId: 'start-once' }), {
        known,
      });
      const repeat = await handleExperimentCommand(raw, id, start(), ctx({ commandId: 'start-once' }), {
        known,
      });
      assert.deepEqual(
        { version: repeat.version, position: repeat.position, written: repeat.written.length },
        { version: first.version, position: first.position, written: 0 },
      );
      // Repeated by another process that never saw it run, after it ran: still once.
      const elsewhere = await handleExperimentCommand(raw, id, start(), ctx({ commandId: 'start-once' }), {
        known: new KnownStreams(),
      });
      assert.equal(elsewhere.written.length, 0);
      assert.equal((await raw.readStream(streamIdOf(id))).length, 2);
    });

    it('concurrent commands on one known experiment: one writes, the other decides again on it', async () => {
      const known = new KnownStreams();
      const id = randomUUID();
      await handleExperimentCommand(raw, id, create(id), ctx(), { known });
      await handleExperimentCommand(raw, id, start(), ctx(), { known });
      const results = await Promise.all([
        handleExperimentCommand(raw, id, deployed('baseline'), ctx(), { known }),
        handleExperimentCommand(raw, id, deployed('candidate'), ctx(), { known }),
      ]);
      // The second to write sees the first's deployment and starts the run as well.
      assert.deepEqual(results.map((r) => r.version).sort(), [3, 5]);
      const stored = await raw.readStream(streamIdOf(id));
      assert.equal(stored.length, 5);
      assert.equal(stored[4]!.type, 'ExperimentRunStarted');
      assert.equal(results.find((r) => r.version === 5)!.state.status, 'running');
    });

    it('keeps the most recently used experiments up to its capacity', async () => {
      const known = new KnownStreams(2);
      const ids = [randomUUID(), randomUUID(), randomUUID()];
      for (const id of ids) await handleExperimentCommand(raw, id, create(id), ctx(), { known });
      assert.equal(known.size, 2);
      assert.equal(known.get(streamIdOf(ids[0]!)), undefined);
      assert.equal(known.get(streamIdOf(ids[2]!))?.version, 1);
    });
  });
}

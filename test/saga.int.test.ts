import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { streamIdOf } from '../src/application/experiment-commands.js';
import type { SqlDatabase } from '../src/application/ports/database.js';
import type { StoredEvent } from '../src/application/ports/event-store.js';
import type { ExperimentEvent } from '../src/domain/experiment.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';
import { applySagaEvents, DEFAULT_SAGA_TIMEOUTS } from '../src/handlers/experiment-saga.js';
import { pgliteTestDatabase, postgresTestDatabase } from './support/databases.js';

/**
 * What the saga decides for each event, straight from its tables: the experiments it knows, the
 * commands in its outbox and its timers. A batch with many events of one experiment must decide
 * exactly what the same events one batch at a time decide, and a batch applied twice nothing more.
 */
const spec: ExperimentSpec = {
  name: 'saga',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-topk-v1', params: { k: 5 } },
  target: { namespace: 'ns-saga', nodeSelector: { pool: 'a' }, hosts: 2 },
  durationSeconds: 60,
  criticalProcesses: ['^sshd$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};

const T0 = Date.parse('2026-11-22T10:00:00Z');
const iso = (plusMs: number) => new Date(T0 + plusMs).toISOString();

/** A lifecycle's events: created, started, both deployed and the run, extended, completed, analysed, ended. */
function lifecycle(experimentId: string): StoredEvent<ExperimentEvent>[] {
  const data: ExperimentEvent[] = [
    { type: 'ExperimentCreated', data: { at: iso(0), experimentId, spec } },
    { type: 'ExperimentStarted', data: { at: iso(1_000) } },
    { type: 'VariantDeployed', data: { at: iso(2_000), variant: 'baseline' } },
    { type: 'VariantDeployed', data: { at: iso(2_500), variant: 'candidate' } },
    {
      type: 'ExperimentRunStarted',
      data: { at: iso(2_500), runEndsAt: iso(62_500), reason: 'both variants deployed' },
    },
    {
      type: 'ExperimentRuntimeExtended',
      data: { at: iso(30_000), runEndsAt: iso(92_500), reason: 'more data' },
    },
    { type: 'ExperimentRunCompleted', data: { at: iso(92_500) } },
  ] as ExperimentEvent[];
  return data.map((e, i) => ({
    streamId: streamIdOf(experimentId),
    version: i + 1,
    position: String(i + 1).padStart(41, '0'),
    type: e.type,
    data: e.data,
    metadata: {
      eventId: `${experimentId}-e${i + 1}`,
      actor: 'test',
      correlationId: `corr-${experimentId}`,
      causationId: null,
      occurredAt: e.data.at,
      schemaVersion: 1,
    },
    recordedAt: e.data.at,
  })) as StoredEvent<ExperimentEvent>[];
}

const ending = (experimentId: string, version: number): StoredEvent<ExperimentEvent> =>
  ({
    streamId: streamIdOf(experimentId),
    version,
    position: String(version).padStart(41, '0'),
    type: 'ExperimentCompleted',
    data: { at: iso(100_000), reason: 'criteria met' },
    metadata: {
      eventId: `${experimentId}-end`,
      actor: 'test',
      correlationId: `corr-${experimentId}`,
      causationId: null,
      occurredAt: iso(100_000),
      schemaVersion: 1,
    },
    recordedAt: iso(100_000),
  }) as StoredEvent<ExperimentEvent>;

for (const db of [postgresTestDatabase(), pgliteTestDatabase()]) {
  describe(`the saga's decisions: ${db.name}`, { skip: db.skip }, () => {
    let database: SqlDatabase;
    before(async () => {
      database = await db.open();
    });
    after(() => database.close());

    // The creation events the tests have written: where a start that comes alone finds its spec.
    const created = new Map<string, ExperimentSpec>();
    const apply = (events: StoredEvent<ExperimentEvent>[]) => {
      for (const e of events)
        if (e.type === 'ExperimentCreated')
          created.set((e.data as { experimentId: string }).experimentId, spec);
      return database.db
        .transaction()
        .execute((tx) => applySagaEvents(tx, events, { timeouts: DEFAULT_SAGA_TIMEOUTS, specs: created }));
    };

    const state = async (experimentId: string) => {
      const experiment = (
        await sql<{ started: boolean; run_started_at: Date | null; ended: boolean; spec: ExperimentSpec }>`
          select started, run_started_at, ended, spec from phoenix_saga_experiments where experiment_id = ${experimentId}`.execute(
          database.db,
        )
      ).rows[0];
      const outbox = (
        await sql<{ command: { type: string; variant?: string; window?: { start: string; end: string } } }>`
          select command from phoenix_saga_outbox where experiment_id = ${experimentId} order by id`.execute(
          database.db,
        )
      ).rows.map((r) => r.command);
      const timers = (
        await sql<{ kind: string; due_at: Date; cause_id: string }>`
          select kind, due_at, cause_id from phoenix_saga_timers where experiment_id = ${experimentId} order by kind`.execute(
          database.db,
        )
      ).rows.map((t) => ({ kind: t.kind, due: new Date(t.due_at).toISOString(), cause: t.cause_id }));
      return {
        started: experiment?.started,
        runStartedAt: experiment?.run_started_at ? new Date(experiment.run_started_at).toISOString() : null,
        ended: experiment?.ended,
        namespace: experiment?.spec.target.namespace,
        outbox: outbox.map((c) => [c.type, c.variant ?? c.window?.start ?? null]),
        timers,
      };
    };

    it('one event at a time: deploys, deadlines, the analysis window, and the teardown', async () => {
      const id = randomUUID();
      const events = lifecycle(id);
      for (const e of events.slice(0, 2)) await apply([e]);
      let s = await state(id);
      assert.equal(s.started, true);
      assert.deepEqual(s.outbox, [
        ['DeployVariant', 'baseline'],
        ['DeployVariant', 'candidate'],
      ]);
      assert.deepEqual(s.timers, [
        { kind: 'deploy-timeout', due: iso(1_000 + 5 * 60_000), cause: `${id}-e2` },
      ]);
      for (const e of events.slice(2)) await apply([e]);
      s = await state(id);
      assert.equal(s.runStartedAt, iso(2_500));
      assert.deepEqual(s.outbox.at(-1), ['AnalyzeExperiment', iso(2_500)]);
      assert.deepEqual(
        s.timers.map((t) => t.kind),
        ['analysis-timeout', 'run-end'],
      );
      assert.equal(s.timers.find((t) => t.kind === 'run-end')?.due, iso(92_500));
      await apply([ending(id, 8)]);
      s = await state(id);
      assert.equal(s.ended, true);
      assert.deepEqual(s.timers, []);
      assert.deepEqual(s.outbox.at(-1), ['TeardownExperiment', null]);
    });

    it('a creation alone records nothing; the start finds the spec and records the experiment', async () => {
      const id = randomUUID();
      const [created, started] = lifecycle(id);
      await apply([created!]);
      assert.equal((await state(id)).started, undefined, 'nothing written for a creation');
      await apply([started!]);
      const s = await state(id);
      assert.equal(s.started, true);
      assert.equal(s.namespace, 'ns-saga');
      assert.equal(s.outbox.length, 2);
    });

    it('a start whose stream has no creation fails the batch, naming the experiment', async () => {
      const id = randomUUID();
      const started = lifecycle(id)[1]!;
      await assert.rejects(
        database.db.transaction().execute((tx) => applySagaEvents(tx, [started], { specs: new Map() })),
        new RegExp(`experiment ${id} started, but its stream has no creation event`),
      );
      assert.equal((await state(id)).started, undefined);
    });

    it('a whole lifecycle in one batch decides what one event at a time decides', async () => {
      const a = randomUUID();
      const b = randomUUID();
      for (const e of [...lifecycle(a), ending(a, 8)]) await apply([e]);
      await apply([...lifecycle(b), ending(b, 8)]);
      const [sa, sb] = [await state(a), await state(b)];
      assert.deepEqual(sb, sa);
      assert.equal(sb.outbox.length, 4);
    });

    it('a batch applied twice (a redelivery) decides nothing more', async () => {
      const id = randomUUID();
      const events = lifecycle(id);
      await apply(events);
      const once = await state(id);
      await apply(events);
      assert.deepEqual(await state(id), once);
    });

    it('batches mixing experiments keep each one apart', async () => {
      const ids = [randomUUID(), randomUUID(), randomUUID()];
      const streams = ids.map((id) => lifecycle(id));
      // Interleaved, as the log holds them: every experiment's first event, then every second one…
      const interleaved = streams[0]!.flatMap((_, i) => streams.map((s) => s[i]!));
      await apply(interleaved.slice(0, 8));
      await apply(interleaved.slice(8));
      for (const id of ids) {
        const s = await state(id);
        assert.equal(s.namespace, 'ns-saga');
        assert.deepEqual(
          s.outbox.map((o) => o[0]),
          ['DeployVariant', 'DeployVariant', 'AnalyzeExperiment'],
        );
        assert.equal(s.timers.find((t) => t.kind === 'run-end')?.cause, `${id}-e6`);
      }
    });
  });
}

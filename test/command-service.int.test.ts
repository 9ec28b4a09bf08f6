import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { PostgresEventStore } from '../src/adapters/postgres-event-store.js';
import { PostgresIdempotencyStore } from '../src/adapters/postgres-idempotency.js';
import {
  type CommandService,
  createCommandService,
  handleMeasuredCommand,
  IdempotencyKeyReusedError,
} from '../src/application/command-service.js';
import { experimentCodec } from '../src/application/experiment-codec.js';
import {
  ConcurrencyConflictError,
  handleExperimentCommand,
  streamIdOf,
  VersionMismatchError,
} from '../src/application/experiment-commands.js';
import type { SqlDatabase } from '../src/application/ports/database.js';
import type { CommandEventStore } from '../src/application/ports/event-store.js';
import { WrongExpectedVersionError } from '../src/application/ports/event-store.js';
import { type ExperimentEvent, InvalidTransitionError } from '../src/domain/experiment.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';
import { commandMetricsOf, createMetrics, type Metrics } from '../src/handlers/metrics.js';
import { pgliteTestDatabase, postgresTestDatabase } from './support/databases.js';

/**
 * The command service alone, without HTTP: what every transport gets from it (idempotency keys,
 * expected versions, retries on conflict, metrics, correlation), on PGlite and PostgreSQL.
 */
const spec = (name: string): ExperimentSpec => ({
  name,
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
});

/** A clock that moves a second on every reading: a retry is never stamped with its first's time. */
const ticking = () => {
  let t = Date.parse('2026-01-01T00:00:00Z');
  return () => {
    t += 1000;
    return new Date(t);
  };
};

const counterValue = async (metrics: Metrics, resource: string): Promise<number> =>
  (await metrics.lockContention.get()).values.find((v) => v.labels.resource_type === resource)?.value ?? 0;

const transitions = async (metrics: Metrics) =>
  (await metrics.stateTransitionDuration.get()).values
    .filter((v) => v.metricName === 'phoenix_state_transition_duration_seconds_count' && v.value > 0)
    .map((v) => ({ ...v.labels, count: v.value }));

for (const db of [postgresTestDatabase(), pgliteTestDatabase()]) {
  describe(`command service: ${db.name}`, { skip: db.skip, timeout: 120_000 }, () => {
    let database: SqlDatabase;
    let raw: PostgresEventStore<ExperimentEvent>;
    let idempotency: PostgresIdempotencyStore;
    let metrics: Metrics;
    let actor: string;
    const service = (store: CommandEventStore<ExperimentEvent> = raw, maxAttempts?: number): CommandService =>
      createCommandService({
        store,
        idempotency,
        metrics: commandMetricsOf(metrics),
        clock: ticking(),
        newId: randomUUID,
        ...(maxAttempts !== undefined ? { maxAttempts } : {}),
      });
    const ctx = (extra: { idempotencyKey?: string; expectedVersion?: number } = {}) => ({
      actor,
      correlationId: randomUUID(),
      ...extra,
    });
    const eventsOf = (id: string) => raw.readStream(streamIdOf(id));

    before(async () => {
      database = await db.open();
      raw = new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec });
      idempotency = new PostgresIdempotencyStore(database.db);
    });
    beforeEach(() => {
      metrics = createMetrics({ collectDefaults: false });
      actor = `tester-${randomUUID()}`;
    });
    after(async () => {
      await raw.close();
      await database.close();
    });

    it('a retry with the key gets the first outcome, replayed, and writes nothing', async () => {
      const commands = service();
      const first = await commands.execute(
        { type: 'CreateExperiment', spec: spec('replay') },
        ctx({ idempotencyKey: 'create-1' }),
      );
      assert.equal(first.replayed, false);
      assert.deepEqual({ state: first.state, version: first.version }, { state: 'pending', version: 1 });
      // Another service (another process, another transport) with a later clock: the same command.
      const again = await service().execute(
        { type: 'CreateExperiment', spec: spec('replay') },
        ctx({ idempotencyKey: 'create-1' }),
      );
      assert.deepEqual(again, { ...first, replayed: true });
      const started = await commands.execute(
        { type: 'StartExperiment', experimentId: first.experimentId },
        ctx({ idempotencyKey: 'start-1', expectedVersion: 1 }),
      );
      const startedAgain = await commands.execute(
        { type: 'StartExperiment', experimentId: first.experimentId },
        ctx({ idempotencyKey: 'start-1', expectedVersion: 1 }),
      );
      assert.deepEqual(startedAgain, { ...started, replayed: true });
      assert.deepEqual(
        (await eventsOf(first.experimentId)).map((e) => e.type),
        ['ExperimentCreated', 'ExperimentStarted'],
      );
      // Replays ran nothing: two transitions observed, not four.
      assert.deepEqual(
        (await transitions(metrics)).map((t) => [t.from_state, t.to_state, t.success, t.count]),
        [
          ['none', 'pending', 'true', 1],
          ['pending', 'initializing', 'true', 1],
        ],
      );
    });

    it('the key with another command, later: IdempotencyKeyReusedError, nothing written', async () => {
      const commands = service();
      const first = await commands.execute(
        { type: 'CreateExperiment', spec: spec('body A') },
        ctx({ idempotencyKey: 'reused' }),
      );
      await assert.rejects(
        commands.execute(
          { type: 'CreateExperiment', spec: spec('body B') },
          ctx({ idempotencyKey: 'reused' }),
        ),
        IdempotencyKeyReusedError,
      );
      await assert.rejects(
        commands.execute(
          { type: 'StartExperiment', experimentId: first.experimentId },
          ctx({ idempotencyKey: 'reused' }),
        ),
        IdempotencyKeyReusedError,
      );
      // Same command, another expected version: another request.
      await assert.rejects(
        commands.execute(
          { type: 'CreateExperiment', spec: spec('body A') },
          ctx({ idempotencyKey: 'reused', expectedVersion: 0 }),
        ),
        IdempotencyKeyReusedError,
      );
      const events = await eventsOf(first.experimentId);
      assert.deepEqual(
        events.map((e) => e.type),
        ['ExperimentCreated'],
      );
      // The key is the actor's: another actor's same key is another command.
      const other = await commands.execute(
        { type: 'CreateExperiment', spec: spec('body B') },
        { actor: `${actor}-other`, correlationId: randomUUID(), idempotencyKey: 'reused' },
      );
      assert.notEqual(other.experimentId, first.experimentId);
    });

    it('the key with two commands at once: one wins everywhere, the other is refused, one creation', async () => {
      for (let round = 0; round < 3; round++) {
        const key = `race-${round}`;
        const results = await Promise.allSettled(
          Array.from({ length: 12 }, (_, i) =>
            service().execute(
              { type: 'CreateExperiment', spec: spec(`body ${i % 2} round ${round}`) },
              ctx({ idempotencyKey: key }),
            ),
          ),
        );
        const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []));
        assert.equal(won.length, 6, `round ${round}: one body's six requests succeed`);
        assert.equal(refused.length, 6);
        for (const err of refused) assert.ok(err instanceof IdempotencyKeyReusedError, String(err));
        assert.equal(new Set(won.map((o) => o.experimentId)).size, 1);
        const events = await eventsOf(won[0]!.experimentId);
        assert.equal(events.length, 1);
        const winner = results.findIndex((r) => r.status === 'fulfilled') % 2;
        assert.equal(
          (events[0]!.data as { spec: ExperimentSpec }).spec.name,
          `body ${winner} round ${round}`,
        );
      }
    });

    it('an expected version that is not the current one: VersionMismatchError, and the key is free again', async () => {
      const commands = service();
      const created = await commands.execute({ type: 'CreateExperiment', spec: spec('if-match') }, ctx());
      await assert.rejects(
        commands.execute(
          { type: 'StartExperiment', experimentId: created.experimentId },
          ctx({ idempotencyKey: 'start', expectedVersion: 7 }),
        ),
        (err: unknown) => err instanceof VersionMismatchError && err.expected === 7 && err.actual === 1,
      );
      assert.equal((await eventsOf(created.experimentId)).length, 1);
      // The failed command kept nothing: the key serves the next command.
      const started = await commands.execute(
        { type: 'StartExperiment', experimentId: created.experimentId },
        ctx({ idempotencyKey: 'start', expectedVersion: 1 }),
      );
      assert.deepEqual(
        { state: started.state, version: started.version, replayed: started.replayed },
        {
          state: 'initializing',
          version: 2,
          replayed: false,
        },
      );
      assert.deepEqual(
        (await transitions(metrics)).map((t) => [t.from_state, t.to_state, t.success, t.count]),
        [
          ['none', 'pending', 'true', 1],
          ['unknown', 'unknown', 'false', 1],
          ['pending', 'initializing', 'true', 1],
        ],
      );
    });

    it('a lost race is retried on what won, counted as contention, and the events carry the correlation', async () => {
      const created = await service().execute({ type: 'CreateExperiment', spec: spec('race') }, ctx());
      const id = created.experimentId;
      let sneaked = false;
      // Another writer starts the experiment between this command's read and its append.
      const racing: CommandEventStore<ExperimentEvent> = {
        readStream: (streamId, options) => raw.readStream(streamId, options),
        append: async (streamId, events, expected) => {
          if (!sneaked) {
            sneaked = true;
            await handleExperimentCommand(
              raw,
              id,
              { type: 'StartExperiment', at: new Date().toISOString() },
              {
                actor: 'someone else',
                correlationId: randomUUID(),
              },
            );
          }
          return raw.append(streamId, events, expected);
        },
      };
      const context = { ...ctx(), causationId: 'cause-1' };
      const cancelled = await service(racing).execute(
        { type: 'CancelExperiment', experimentId: id, reason: 'lost a race' },
        context,
      );
      assert.deepEqual(
        { state: cancelled.state, version: cancelled.version },
        { state: 'cancelled', version: 3 },
      );
      assert.equal(await counterValue(metrics, 'experiment'), 1);
      const events = await eventsOf(id);
      assert.deepEqual(
        events.map((e) => e.type),
        ['ExperimentCreated', 'ExperimentStarted', 'ExperimentCancelled'],
      );
      const last = events[2]!;
      assert.deepEqual(
        {
          actor: last.metadata.actor,
          correlationId: last.metadata.correlationId,
          causationId: last.metadata.causationId,
        },
        { actor, correlationId: context.correlationId, causationId: 'cause-1' },
      );
      assert.equal(last.position, cancelled.position);
      assert.ok(
        (await transitions(metrics)).some(
          (t) => t.from_state === 'initializing' && t.to_state === 'cancelled' && t.success === 'true',
        ),
      );
    });

    it('a refusal its caller expects (the saga: no longer applies) is no failed transition; others are', async () => {
      const created = await service().execute({ type: 'CreateExperiment', spec: spec('stale') }, ctx());
      await service().execute({ type: 'StartExperiment', experimentId: created.experimentId }, ctx());
      const before = await transitions(metrics);
      const start = { type: 'StartExperiment', at: new Date().toISOString() } as const;
      const measured = (expected?: (err: unknown) => boolean) =>
        handleMeasuredCommand(
          raw,
          created.experimentId,
          start,
          { actor, correlationId: randomUUID() },
          commandMetricsOf(metrics),
          expected ? { expectedRefusal: expected } : {},
        );
      await assert.rejects(
        measured((err) => err instanceof InvalidTransitionError),
        InvalidTransitionError,
      );
      assert.deepEqual(await transitions(metrics), before, 'an expected refusal is not observed');
      await assert.rejects(measured(), InvalidTransitionError);
      assert.ok(
        (await transitions(metrics)).some((t) => t.to_state === 'unknown' && t.success === 'false'),
        'an unexpected refusal is a failed transition',
      );
    });

    it('a race lost every time: ConcurrencyConflictError after the bounded attempts, the key released', async () => {
      const created = await service().execute({ type: 'CreateExperiment', spec: spec('always lost') }, ctx());
      const id = created.experimentId;
      const losing: CommandEventStore<ExperimentEvent> = {
        readStream: (streamId, options) => raw.readStream(streamId, options),
        append: async (streamId, _events, expected) => {
          throw new WrongExpectedVersionError(streamId, expected, 99);
        },
      };
      await assert.rejects(
        service(losing, 3).execute(
          { type: 'StartExperiment', experimentId: id },
          ctx({ idempotencyKey: 'start-lost' }),
        ),
        ConcurrencyConflictError,
      );
      assert.equal(await counterValue(metrics, 'experiment'), 3);
      assert.equal((await eventsOf(id)).length, 1);
      const started = await service().execute(
        { type: 'StartExperiment', experimentId: id },
        ctx({ idempotencyKey: 'start-lost' }),
      );
      assert.equal(started.replayed, false);
      assert.equal(started.state, 'initializing');
    });
  });
}

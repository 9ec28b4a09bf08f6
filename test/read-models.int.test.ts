import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { streamIdOf } from '../src/application/experiment-commands.js';
import { InvalidCursorError } from '../src/application/ports/read-models.js';
import { STATUSES } from '../src/domain/experiment.js';
import { createMetrics, readSideMetricsOf } from '../src/handlers/metrics.js';
import { experimentReadModels, READ_MODELS } from '../src/projections/experiment-read-models.js';
import { createProjections, type Projections } from '../src/projections/index.js';
import { applyBatch } from '../src/projections/runner.js';
import { pgliteTestDatabase, postgresTestDatabase, type TestDatabase } from './support/databases.js';
import { applied, openFixture, snapshot } from './support/projection-fixtures.js';
import {
  appendLifecycles,
  expectedCounts,
  expectedHistory,
  expectedView,
  randomSpec,
  rngOf,
  type Step,
} from './support/projection-lifecycles.js';

/**
 * The read models as the API reads them, against PostgreSQL and PGlite: every experiment, its history,
 * the counts and the audit trail equal what the domain's own fold of the events says; pages, cursors,
 * read-your-writes, idempotency and the v1 upcaster.
 */
for (const db of [postgresTestDatabase(), pgliteTestDatabase()] as TestDatabase[]) {
  describe(`read models on ${db.name}`, { skip: db.skip }, () => {
    let fx: Awaited<ReturnType<typeof openFixture>>;
    let projections: Projections;
    let lifecycles: Step[][];
    const metrics = createMetrics({ collectDefaults: false });

    before(async () => {
      fx = await openFixture(db);
      projections = createProjections({
        database: fx.database,
        log: fx.log,
        store: fx.store,
        metrics: readSideMetricsOf(metrics),
        cursorSecret: 'a test secret of at least thirty-two bytes',
        metricsEveryMs: 100,
      });
      await projections.start();
      const appended = await appendLifecycles(fx.store, { count: 300, seed: 42 });
      lifecycles = appended.lifecycles;
      await applied(projections.runner, appended.last);
    });
    after(async () => {
      await projections?.stop();
      await fx?.close();
    });

    it('shows every experiment and its history as the domain folds them', async () => {
      for (const steps of lifecycles) {
        const id = steps[0]!.experimentId;
        assert.deepEqual(await projections.readModels.getExperiment(id), expectedView(steps));
        assert.deepEqual(await projections.readModels.getHistory(id), expectedHistory(steps));
      }
      assert.equal(await projections.readModels.getExperiment(randomUUID()), undefined);
      assert.equal(await projections.readModels.getHistory(randomUUID()), undefined);
      assert.equal(await projections.readModels.getExperiment('not-a-uuid'), undefined);
    });

    it('counts experiments by state and feeds phoenix_experiments_by_state', async () => {
      const counts = await projections.readModels.countByState();
      assert.deepEqual(counts, expectedCounts(lifecycles));
      await new Promise((r) => setTimeout(r, 300));
      const gauge = await metrics.experimentsByState.get();
      for (const state of STATUSES) {
        assert.equal(gauge.values.find((v) => v.labels.state === state)?.value, counts[state], state);
      }
      const lag = await metrics.projectionLagEvents.get();
      assert.equal(lag.values.find((v) => v.labels.projection === READ_MODELS)?.value, 0);
    });

    it('lists newest first, page by page, with and without a state filter', async () => {
      const all = lifecycles
        .map((steps) => expectedView(steps))
        .sort((a, b) =>
          a.createdAt === b.createdAt ? (a.id < b.id ? 1 : -1) : a.createdAt < b.createdAt ? 1 : -1,
        );
      for (const state of [undefined, 'cancelled', 'completed'] as const) {
        const want = all.filter((e) => state === undefined || e.state === state).map((e) => e.id);
        const got: string[] = [];
        let cursor: string | undefined;
        do {
          const page = await projections.readModels.listExperiments({
            limit: 37,
            ...(state ? { state } : {}),
            ...(cursor ? { cursor } : {}),
          });
          assert.ok(page.items.length <= 37);
          got.push(...page.items.map((e) => e.id));
          cursor = page.nextCursor ?? undefined;
        } while (cursor);
        assert.deepEqual(got, want, `state ${state ?? 'any'}`);
      }
    });

    it('refuses tampered and foreign cursors', async () => {
      const page = await projections.readModels.listExperiments({ limit: 5 });
      const cursor = page.nextCursor!;
      const [payload, signature] = cursor.split('.');
      const forged = Buffer.from(
        JSON.stringify(
          JSON.parse(Buffer.from(payload!, 'base64url').toString()).with(2, '2000-01-01T00:00:00.000Z'),
        ),
      ).toString('base64url');
      for (const bad of [
        `${forged}.${signature}`,
        `${cursor}x`,
        'garbage',
        `${payload}`,
        `${payload}..${signature}`,
      ]) {
        await assert.rejects(
          projections.readModels.listExperiments({ limit: 5, cursor: bad }),
          InvalidCursorError,
        );
      }
      // handed out for another filter, or another listing
      await assert.rejects(
        projections.readModels.listExperiments({ limit: 5, state: 'pending', cursor }),
        InvalidCursorError,
      );
      await assert.rejects(projections.readModels.queryAudit({}, { limit: 5, cursor }), InvalidCursorError);
      // another service's secret
      const other = createProjections({
        database: fx.database,
        log: fx.log,
        store: fx.store,
        cursorSecret: 'another secret entirely',
      });
      await assert.rejects(other.readModels.listExperiments({ limit: 5, cursor }), InvalidCursorError);
    });

    it('answers the audit filters, oldest first, page by page, and streams them whole', async () => {
      const rows = lifecycles.flatMap((steps) => {
        const id = steps[0]!.experimentId;
        const name = expectedView(steps).name;
        const history = expectedHistory(steps);
        return history.map((h) => ({ experimentId: id, experimentName: name, ...h }));
      });
      const key = (r: { at: string; experimentId: string }) => `${r.at}|${r.experimentId}`;
      const sorted = [...rows].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
      const filters = [
        {},
        { actor: 'alice' },
        { fromState: 'running' as const },
        { toState: 'failed' as const, actor: 'saga:deployer' },
        { experimentId: lifecycles[7]![0]!.experimentId },
        { since: new Date('2025-02-01T00:00:00Z'), until: new Date('2025-03-15T12:00:00Z') },
      ];
      for (const filter of filters) {
        const want = sorted.filter(
          (r) =>
            (!('actor' in filter) || r.actor === filter.actor) &&
            (!('fromState' in filter) || r.from === filter.fromState) &&
            (!('toState' in filter) || r.to === filter.toState) &&
            (!('experimentId' in filter) || r.experimentId === filter.experimentId) &&
            (!('since' in filter) ||
              (r.at >= filter.since!.toISOString() && r.at <= filter.until!.toISOString())),
        );
        const got: unknown[] = [];
        let cursor: string | undefined;
        do {
          const page = await projections.readModels.queryAudit(filter, {
            limit: 50,
            ...(cursor ? { cursor } : {}),
          });
          got.push(...page.items);
          cursor = page.nextCursor ?? undefined;
        } while (cursor);
        const strip = (xs: readonly unknown[]) =>
          xs.map((x) => {
            const { correlationId: _c, ...rest } = x as { correlationId?: string };
            return rest;
          });
        // equal timestamps may come in either order in the expectation: compare as sets, order by time
        const canonical = (xs: readonly object[]) =>
          xs
            .map((x) =>
              JSON.stringify(Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1)))),
            )
            .sort();
        assert.equal(got.length, want.length, JSON.stringify(filter));
        assert.deepEqual(canonical(strip(got)), canonical(want), JSON.stringify(filter));
        const times = got.map((x) => (x as { at: string }).at);
        assert.deepEqual(times, [...times].sort(), 'oldest first');
        const streamed: unknown[] = [];
        for await (const entry of projections.readModels.streamAudit(filter)) streamed.push(entry);
        assert.deepEqual(streamed, got);
      }
      // each transition carries its command's correlation id
      const steps = lifecycles[3]!;
      const audit = await projections.readModels.queryAudit(
        { experimentId: steps[0]!.experimentId },
        { limit: 100 },
      );
      const correlationIds = new Set(steps.map((s) => s.correlationId));
      for (const entry of audit.items) assert.ok(correlationIds.has(entry.correlationId));
    });

    it('waits for a position (read-your-writes) and gives up after the timeout', async () => {
      const head = await fx.store.head();
      assert.equal(await projections.readModels.waitFor(head, 1_000), true);
      assert.equal(await projections.readModels.appliedPosition(), head);
      const id = randomUUID();
      const writing = fx.store.append(
        streamIdOf(id),
        [
          {
            type: 'ExperimentCreated',
            data: { experimentId: id, spec: randomSpec(rngOf(1), 1), at: new Date().toISOString() },
            metadata: {
              eventId: randomUUID(),
              actor: 'alice',
              correlationId: randomUUID(),
              causationId: null,
              occurredAt: new Date().toISOString(),
              schemaVersion: 2,
            },
          },
        ],
        'no_stream',
      );
      const { position } = await writing;
      assert.equal(await projections.readModels.waitFor(position, 5_000), true);
      assert.equal((await projections.readModels.getExperiment(id))?.state, 'pending');
      // a position beyond the head is never reached
      assert.equal(await projections.readModels.waitFor(`${position}z`, 150), false);
    });

    it('changes nothing when the same events are delivered again', async () => {
      const before = await snapshot(fx.database);
      const events = await fx.store.readAll({ limit: 200 });
      const handler = experimentReadModels();
      const checkpoint = await projections.readModels.appliedPosition();
      await projections.stop();
      try {
        // through the runner's path: events at or before the checkpoint are dropped
        await applyBatch(fx.database.db, handler, READ_MODELS, checkpoint, events, { mode: 'live' });
        // and straight into the handler: rows at a higher version ignore them
        await fx.database.db
          .transaction()
          .execute((tx) => handler.apply(tx, events, { mode: 'live', checkpoint: READ_MODELS }));
        assert.deepEqual(await snapshot(fx.database), before);
      } finally {
        await projections.start();
      }
    });

    it('projects a v1 ExperimentCreated (no criticalProcesses) through the upcaster', async () => {
      const id = randomUUID();
      const { criticalProcesses: _dropped, ...v1spec } = randomSpec(rngOf(7), 7);
      const at = '2025-03-03T10:00:00.000Z';
      const { position } = await fx.store.append(
        streamIdOf(id),
        [
          {
            type: 'ExperimentCreated',
            data: { experimentId: id, spec: v1spec, at } as never,
            metadata: {
              eventId: randomUUID(),
              actor: 'legacy',
              correlationId: randomUUID(),
              causationId: null,
              occurredAt: at,
              schemaVersion: 1,
            },
          },
        ],
        'no_stream',
      );
      await applied(projections.runner, position);
      const view = await projections.readModels.getExperiment(id);
      assert.deepEqual(view?.criticalProcesses, []);
      assert.equal(view?.name, v1spec.name);
      // what is stored stays v1: the upcast happens on every read
      const { rows } = await sql<{ data: { spec: Record<string, unknown> } }>`
        select data from phoenix_events where stream_id = ${streamIdOf(id)}`.execute(fx.database.db);
      assert.equal('criticalProcesses' in rows[0]!.data.spec, false);
    });
  });
}

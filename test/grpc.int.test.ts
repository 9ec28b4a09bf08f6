import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { credentials, loadPackageDefinition, status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { PostgresIdempotencyStore } from '../src/adapters/postgres-idempotency.js';
import { createCommandService } from '../src/application/command-service.js';
import { ExperimentState } from '../src/handlers/grpc/gen/phoenix/v1/experiments.js';
import { createGrpcServer } from '../src/handlers/grpc/server.js';
import { LiveHub } from '../src/handlers/live-hub.js';
import { commandMetricsOf } from '../src/handlers/metrics.js';
import { systemTargets } from './support/databases.js';
import { codeName, detailsOf, failureOf, grpcClients, protoSpec, unaryCall, watch } from './support/grpc.js';
import { craftedToken, startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * The gRPC API through a client built from the generated stubs, on both databases: commands and
 * reads, every status code the error mapping gives (with details a client can decode), auth as HTTP
 * does it, deadlines, and Watch's resume with `from` (exactly once, no gap, no duplicate).
 */

type TestSystem = Awaited<ReturnType<typeof startTestSystem>>;

for (const target of systemTargets()) {
  describe(`gRPC API (${target.name})`, { skip: target.skip, timeout: 180_000 }, () => {
    let system: TestSystem;
    let drop: () => Promise<void>;
    let clients: ReturnType<typeof grpcClients>;
    let address: string;
    let operator: string;
    let viewer: string;
    let admin: string;

    before(async () => {
      const prepared = await target.env();
      drop = prepared.drop;
      system = await startTestSystem(prepared.env);
      const port = await system.grpc!.listen('127.0.0.1', 0);
      address = `127.0.0.1:${port}`;
      clients = grpcClients(address);
      operator = await tokenFor(system, 'operator', `grpc-op-${randomUUID()}`);
      viewer = await tokenFor(system, 'viewer');
      admin = await tokenFor(system, 'admin');
    });
    after(async () => {
      clients?.close();
      await system?.dispose();
      await drop?.();
    });

    const ex = () => clients.experiments;
    const create = (spec = validSpec(), token = operator, extra: { idempotencyKey?: string } = {}) =>
      unaryCall(
        ex(),
        ex().createExperiment,
        { spec: protoSpec(spec), idempotencyKey: extra.idempotencyKey ?? '' },
        token,
      );
    const start = (id: string, extra: { expectedVersion?: number; idempotencyKey?: string } = {}) =>
      unaryCall(
        ex(),
        ex().startExperiment,
        { id, idempotencyKey: extra.idempotencyKey ?? '', ...extra },
        operator,
      );
    const cancel = (id: string, reason?: string) =>
      unaryCall(ex(), ex().cancelExperiment, { id, idempotencyKey: '', reason }, operator);
    const listEvents = async (id: string) =>
      (await unaryCall(ex(), ex().listExperimentEvents, { id, fromVersion: 0, limit: 0 }, viewer)).events;
    const get = (id: string, minPosition?: string) =>
      unaryCall(ex(), ex().getExperiment, { id, minPosition }, viewer);

    it('every call is observed by method and status code (phoenix_grpc_request_duration_seconds)', async () => {
      await create(validSpec({ name: 'grpc observed' }));
      await assert.rejects(get(randomUUID()));
      const counts = (await system.metrics.grpcDuration.get()).values
        .filter((v) => v.metricName === 'phoenix_grpc_request_duration_seconds_count')
        .map((v) => `${v.labels.method} ${v.labels.code} ${v.value > 0}`);
      assert.ok(counts.includes('CreateExperiment OK true'), counts.join(', '));
      assert.ok(counts.includes('GetExperiment NOT_FOUND true'), counts.join(', '));
    });

    it('create → get → start → cancel → history, events and state at a version and a time', async () => {
      const created = await create(validSpec({ name: 'grpc lifecycle' }));
      const o = created.outcome!;
      assert.equal(o.state, ExperimentState.EXPERIMENT_STATE_PENDING);
      assert.equal(o.version, 1);
      assert.equal(o.replayed, false);
      const got = (await get(o.experimentId, o.position)).experiment!;
      assert.equal(got.id, o.experimentId);
      assert.equal(got.spec!.name, 'grpc lifecycle');
      assert.deepEqual(got.spec!.candidate!.params, { k: 20 });
      assert.deepEqual(got.spec!.target!.nodeSelector, { pool: 'a' });

      const started = (await start(o.experimentId)).outcome!;
      assert.equal(started.state, ExperimentState.EXPERIMENT_STATE_INITIALIZING);
      const cancelled = (await cancel(o.experimentId, 'done with it')).outcome!;
      assert.equal(cancelled.state, ExperimentState.EXPERIMENT_STATE_CANCELLED);

      const history = await unaryCall(
        ex(),
        ex().getExperimentHistory,
        { id: o.experimentId, minPosition: cancelled.position },
        viewer,
      );
      assert.equal(history.entries[0]!.from, ExperimentState.EXPERIMENT_STATE_UNSPECIFIED);
      assert.equal(history.entries[0]!.to, ExperimentState.EXPERIMENT_STATE_PENDING);
      assert.equal(history.entries.at(-1)!.to, ExperimentState.EXPERIMENT_STATE_CANCELLED);
      assert.equal(history.entries.at(-1)!.reason, 'done with it');

      const events = await unaryCall(
        ex(),
        ex().listExperimentEvents,
        { id: o.experimentId, fromVersion: 0, limit: 0 },
        viewer,
      );
      assert.deepEqual(
        events.events.slice(0, 2).map((e) => e.type),
        ['ExperimentCreated', 'ExperimentStarted'],
      );
      assert.deepEqual(
        events.events.map((e) => e.version),
        events.events.map((_, i) => i + 1),
      );
      assert.equal(events.events[0]!.metadata!.actor.startsWith('grpc-op-'), true);
      const page = await unaryCall(
        ex(),
        ex().listExperimentEvents,
        { id: o.experimentId, fromVersion: 2, limit: 1 },
        viewer,
      );
      assert.deepEqual(
        page.events.map((e) => e.version),
        [2],
      );

      const atOne = await unaryCall(
        ex(),
        ex().getExperimentState,
        { id: o.experimentId, point: { $case: 'version', value: 1 } },
        viewer,
      );
      assert.equal(atOne.experiment!.state, ExperimentState.EXPERIMENT_STATE_PENDING);
      assert.equal(atOne.experiment!.version, 1);
      assert.equal(atOne.position, events.events[0]!.position);
      const atTime = await unaryCall(
        ex(),
        ex().getExperimentState,
        { id: o.experimentId, point: { $case: 'at', value: events.events[0]!.metadata!.occurredAt } },
        viewer,
      );
      assert.equal(atTime.experiment!.version, 1);
      const now = await unaryCall(ex(), ex().getExperimentState, { id: o.experimentId }, viewer);
      assert.equal(now.experiment!.state, ExperimentState.EXPERIMENT_STATE_CANCELLED);
    });

    it('lists a page at a time, newest first, filtered by state', async () => {
      const ids: string[] = [];
      let position = '';
      for (let i = 0; i < 3; i++) {
        const o = (await create(validSpec({ name: `page ${i}` }))).outcome!;
        ids.push(o.experimentId);
        position = o.position;
      }
      const seen: string[] = [];
      let token = '';
      for (let n = 0; n < 50; n++) {
        const page = await unaryCall(
          ex(),
          ex().listExperiments,
          {
            state: ExperimentState.EXPERIMENT_STATE_PENDING,
            pageSize: 2,
            pageToken: token,
            minPosition: position,
          },
          viewer,
        );
        assert.ok(page.experiments.length <= 2);
        for (const e of page.experiments) assert.equal(e.state, ExperimentState.EXPERIMENT_STATE_PENDING);
        seen.push(...page.experiments.map((e) => e.id));
        token = page.nextPageToken;
        if (!token) break;
      }
      assert.equal(new Set(seen).size, seen.length, 'no experiment twice across pages');
      assert.deepEqual(
        seen.filter((id) => ids.includes(id)),
        [...ids].reverse(),
      );
    });

    it('templates (viewer) and audit (admin)', async () => {
      const t = clients.templates;
      const templates = await unaryCall(t, t.listTemplates, {}, viewer);
      assert.ok(templates.templates.some((x) => x.name === 'process-topk-v1'));
      const o = (await create(validSpec({ name: 'audited' }))).outcome!;
      const a = clients.audit;
      const audit = await unaryCall(
        a,
        a.listAuditEntries,
        {
          experimentId: o.experimentId,
          fromState: 0,
          toState: 0,
          pageSize: 0,
          pageToken: '',
          minPosition: o.position,
        },
        admin,
      );
      assert.equal(audit.entries.length, 1);
      assert.equal(audit.entries[0]!.to, ExperimentState.EXPERIMENT_STATE_PENDING);
      const denied = await failureOf(
        unaryCall(a, a.listAuditEntries, { fromState: 0, toState: 0, pageSize: 0, pageToken: '' }, operator),
      );
      assert.equal(codeName(denied.code), 'PERMISSION_DENIED');
    });

    it('INVALID_ARGUMENT names the bad fields in a google.rpc.BadRequest, as HTTP names them', async () => {
      const bad = await failureOf(
        create(
          validSpec({
            durationSeconds: 0,
            target: { nodeSelector: {}, hosts: 0 },
            criticalProcesses: ['(?<=x)'],
          }),
        ),
      );
      assert.equal(codeName(bad.code), 'INVALID_ARGUMENT');
      const { info, violations } = detailsOf(bad);
      assert.equal(info?.reason, 'VALIDATION');
      const fields = violations.map((v) => v.field);
      for (const f of ['spec.duration_seconds', 'spec.target.hosts', 'spec.critical_processes.0'])
        assert.ok(fields.includes(f), `${f} in ${fields.join(', ')}`);
      const badId = await failureOf(start('not-a-uuid'));
      assert.equal(codeName(badId.code), 'INVALID_ARGUMENT');
      assert.deepEqual(
        detailsOf(badId).violations.map((v) => v.field),
        ['id'],
      );
      const badKey = await failureOf(create(validSpec(), operator, { idempotencyKey: 'has space' }));
      assert.equal(detailsOf(badKey).violations[0]?.field, 'idempotency_key');
      const badCursor = await failureOf(
        unaryCall(ex(), ex().listExperiments, { state: 0, pageSize: 0, pageToken: 'forged' }, viewer),
      );
      assert.equal(codeName(badCursor.code), 'INVALID_ARGUMENT');
      assert.equal(detailsOf(badCursor).violations[0]?.field, 'page_token');
      const badState = await failureOf(
        unaryCall(ex(), ex().listExperiments, { state: 42, pageSize: 0, pageToken: '' }, viewer),
      );
      assert.equal(codeName(badState.code), 'INVALID_ARGUMENT');
    });

    it('UNAUTHENTICATED without a token, with an expired or forged one; PERMISSION_DENIED below the role', async () => {
      const id = randomUUID();
      const none = await failureOf(unaryCall(ex(), ex().getExperiment, { id }, undefined));
      assert.equal(codeName(none.code), 'UNAUTHENTICATED');
      assert.equal(detailsOf(none).info?.reason, 'UNAUTHENTICATED');
      const expired = await craftedToken({
        sub: 'x',
        role: 'admin',
        exp: Math.floor(Date.now() / 1000) - 60,
      });
      const old = await failureOf(unaryCall(ex(), ex().getExperiment, { id }, expired));
      assert.equal(codeName(old.code), 'UNAUTHENTICATED');
      assert.match(old.details, /expired/);
      const forged = await craftedToken(
        { sub: 'x', role: 'admin' },
        { secret: 'another-secret-another-secret-0123456789' },
      );
      assert.equal(
        codeName((await failureOf(unaryCall(ex(), ex().getExperiment, { id }, forged))).code),
        'UNAUTHENTICATED',
      );
      const denied = await failureOf(create(validSpec(), viewer));
      assert.equal(codeName(denied.code), 'PERMISSION_DENIED');
      assert.match(denied.details, /operator/);
    });

    it('NOT_FOUND, FAILED_PRECONDITION (transition, reused key), ABORTED (stale expected version)', async () => {
      const missing = await failureOf(get(randomUUID()));
      assert.equal(codeName(missing.code), 'NOT_FOUND');
      assert.equal(codeName((await failureOf(start(randomUUID()))).code), 'NOT_FOUND');
      const noVersion = await failureOf(
        unaryCall(
          ex(),
          ex().getExperimentState,
          { id: (await create()).outcome!.experimentId, point: { $case: 'version', value: 9 } },
          viewer,
        ),
      );
      assert.equal(codeName(noVersion.code), 'NOT_FOUND');
      assert.equal(detailsOf(noVersion).info?.reason, 'VERSION_NOT_FOUND');

      const o = (await create()).outcome!;
      const stale = await failureOf(start(o.experimentId, { expectedVersion: 7 }));
      assert.equal(codeName(stale.code), 'ABORTED');
      assert.equal(detailsOf(stale).info?.reason, 'VERSION_MISMATCH');
      assert.equal(detailsOf(stale).info?.metadata.currentVersion, '1');
      await start(o.experimentId, { expectedVersion: 1 });
      const again = await failureOf(start(o.experimentId));
      assert.equal(codeName(again.code), 'FAILED_PRECONDITION');
      assert.equal(detailsOf(again).info?.reason, 'INVALID_TRANSITION');
      assert.ok(
        ['initializing', 'running'].includes(detailsOf(again).info?.metadata.currentState ?? ''),
        JSON.stringify(detailsOf(again).info),
      );

      const key = `k-${randomUUID()}`;
      await create(validSpec({ name: 'first' }), operator, { idempotencyKey: key });
      const reused = await failureOf(
        create(validSpec({ name: 'second' }), operator, { idempotencyKey: key }),
      );
      assert.equal(codeName(reused.code), 'FAILED_PRECONDITION');
      assert.equal(detailsOf(reused).info?.reason, 'IDEMPOTENCY_KEY_REUSED');
    });

    it('RESOURCE_EXHAUSTED past the message size; UNAVAILABLE when the read models cannot catch up', async () => {
      const huge = validSpec({ description: 'x'.repeat(1_100_000) });
      const big = await failureOf(create(huge));
      assert.equal(codeName(big.code), 'RESOURCE_EXHAUSTED');
      // The server still serves others.
      assert.ok((await create()).outcome!.experimentId);

      const far = '18446744073709551615-00000000000000000001';
      const behind = await failureOf(get(randomUUID(), far));
      assert.equal(codeName(behind.code), 'UNAVAILABLE');
      assert.equal(detailsOf(behind).info?.reason, 'READ_MODELS_BEHIND');
    });

    it('a call past its deadline ends DEADLINE_EXCEEDED', async () => {
      const far = '18446744073709551615-00000000000000000001';
      const started = Date.now();
      const late = await failureOf(
        unaryCall(ex(), ex().getExperiment, { id: randomUUID(), minPosition: far }, viewer, {
          deadline: Date.now() + 300,
        }),
      );
      assert.equal(codeName(late.code), 'DEADLINE_EXCEEDED');
      assert.ok(Date.now() - started < 3000, 'not the 5 s wait');
    });

    it('Watch: backlog, live, then resume with from: every event exactly once, no gap, no duplicate', async () => {
      const o = (await create(validSpec({ name: 'watched', durationSeconds: 3600 }))).outcome!;
      const id = o.experimentId;
      const first = watch(ex(), { experimentId: id, from: '0' }, viewer);
      await first.until((m) => m.kind?.$case === 'live');
      assert.deepEqual(
        first.events().map((e) => e.type),
        ['ExperimentCreated'],
      );
      await start(id);
      await first.until((m) => m.kind?.$case === 'event' && m.kind.value.type === 'ExperimentStarted');
      const upTo = first.events();
      const resumeFrom = upTo.at(-1)!.position;
      first.call.cancel();
      assert.equal(codeName((await first.ended).code), 'CANCELLED');

      // Written while no one watched: the resumed stream must have them, after what the first had.
      await cancel(id, 'resume test');
      const second = watch(ex(), { experimentId: id, from: resumeFrom }, viewer);
      try {
        await second.until((m) => m.kind?.$case === 'live');
        // The saga goes on writing (teardown): compare once the stream has caught up with the store.
        let all: Awaited<ReturnType<typeof listEvents>> = [];
        let combined = [...upTo, ...second.events()];
        for (let n = 0; n < 200; n++) {
          all = await listEvents(id);
          combined = [...upTo, ...second.events()];
          if (combined.length >= all.length) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.ok(all.length >= 3, 'created, started, cancelled at least');
        assert.deepEqual(
          combined.map((e) => e.version),
          all.map((e) => e.version),
          'the first stream and the resumed one together hold every event once, in order',
        );
        assert.deepEqual(
          combined.map((e) => e.position),
          all.map((e) => e.position),
        );
      } finally {
        second.call.cancel();
      }

      // Live: a new experiment's events arrive on an unfiltered stream, once each.
      const unfiltered = watch(ex(), {}, viewer);
      await unfiltered.until((m) => m.kind?.$case === 'live');
      const fresh = (await create(validSpec({ name: 'live one' }))).outcome!;
      const got = await unfiltered.until(
        (m) => m.kind?.$case === 'event' && m.kind.value.experimentId === fresh.experimentId,
      );
      assert.equal(got.kind?.$case === 'event' && got.kind.value.position, fresh.position);
      assert.equal(unfiltered.events().filter((e) => e.position === fresh.position).length, 1);
      assert.ok(system.grpc!.watchStreams >= 1);
      unfiltered.call.cancel();
      await Promise.all([second.ended, unfiltered.ended]);
      await waitUntil(() => system.grpc!.watchStreams === 0);
    });

    it('Watch ends at its deadline and frees its subscription; a bad from is INVALID_ARGUMENT', async () => {
      const w = watch(ex(), {}, viewer, { deadline: Date.now() + 500 });
      await w.until((m) => m.kind?.$case === 'live');
      assert.equal(codeName((await w.ended).code), 'DEADLINE_EXCEEDED');
      await waitUntil(() => system.grpc!.watchStreams === 0);
      const bad = watch(ex(), { from: 'nope' }, viewer);
      assert.equal(codeName((await bad.ended).code), 'INVALID_ARGUMENT');
      const anonymous = watch(ex(), {}, '');
      assert.equal(codeName((await anonymous.ended).code), 'UNAUTHENTICATED');
    });

    it('serves grpc.health.v1 from the readiness checks HTTP uses', async () => {
      const pkg = loadPackageDefinition(loadSync(healthProtoPath, { enums: String })) as unknown as {
        grpc: {
          health: {
            v1: {
              Health: new (
                a: string,
                c: unknown,
              ) => {
                check: (req: object, cb: (err: Error | null, res: { status: string }) => void) => void;
                close(): void;
              };
            };
          };
        };
      };
      const health = new pkg.grpc.health.v1.Health(address, credentials.createInsecure());
      const answer = await new Promise<{ status: string }>((resolve, reject) =>
        health.check(
          { service: 'phoenix.v1.ExperimentService' },
          (err: Error | null, res: { status: string }) => (err ? reject(err) : resolve(res)),
        ),
      );
      health.close();
      assert.equal(answer.status, 'SERVING');
      assert.equal(status.OK, 0);
    });
  });
}

describe('gRPC limits: one client cannot hold the server', { timeout: 60_000 }, () => {
  let system: TestSystem;
  let hub: LiveHub;
  let server: ReturnType<typeof createGrpcServer>;
  let clients: ReturnType<typeof grpcClients>;

  before(async () => {
    system = await startTestSystem();
    hub = new LiveHub(system.log, system.logger);
    const commands = createCommandService({
      store: system.store,
      idempotency: new PostgresIdempotencyStore(system.database.db),
      metrics: commandMetricsOf(system.metrics),
      clock: () => new Date(),
      newId: randomUUID,
    });
    server = createGrpcServer({
      logger: system.logger,
      tokens: system.tokens,
      commands,
      store: system.store,
      readModels: system.readModels,
      hub,
      readiness: {},
      watch: { maxStreams: 3, maxStreamsPerSubject: 2, maxQueuedMessages: 1 },
      rateLimitPerMinute: 5,
    });
    clients = grpcClients(`127.0.0.1:${await server.listen('127.0.0.1', 0)}`);
  });
  after(async () => {
    clients?.close();
    await server?.stop();
    await hub?.stop();
    await system?.dispose();
  });

  it('RESOURCE_EXHAUSTED past the streams per subject and per server; others still get theirs', async () => {
    const ex = clients.experiments;
    const [a, b, c] = await Promise.all(
      ['a', 'b', 'c'].map((sub) => tokenFor(system, 'viewer', `limits-${sub}`)),
    );
    const open = [watch(ex, {}, a!), watch(ex, {}, a!)];
    await Promise.all(open.map((w) => w.until((m) => m.kind?.$case === 'live')));
    const third = watch(ex, {}, a!);
    const refused = await third.ended;
    assert.equal(codeName(refused.code), 'RESOURCE_EXHAUSTED');
    assert.equal(detailsOf(refused.error!).info?.reason, 'TOO_MANY_STREAMS');
    const other = watch(ex, {}, b!);
    await other.until((m) => m.kind?.$case === 'live');
    const full = await watch(ex, {}, c!).ended;
    assert.equal(codeName(full.code), 'RESOURCE_EXHAUSTED');
    for (const w of [...open, other]) w.call.cancel();
    await waitUntil(() => server.watchStreams === 0);
  });

  it('RESOURCE_EXHAUSTED past the rate limit, per token subject and, without a valid token, per address', async () => {
    const t = clients.templates;
    const flood = await tokenFor(system, 'viewer', 'flood');
    for (let i = 0; i < 5; i++) await unaryCall(t, t.listTemplates, {}, flood);
    const limited = await failureOf(unaryCall(t, t.listTemplates, {}, flood));
    assert.equal(codeName(limited.code), 'RESOURCE_EXHAUSTED');
    assert.equal(detailsOf(limited).info?.reason, 'RATE_LIMITED');
    // Someone else is not held up by it.
    await unaryCall(t, t.listTemplates, {}, await tokenFor(system, 'viewer', 'calm'));
    const anonymous = [];
    for (let i = 0; i < 6; i++)
      anonymous.push(codeName((await failureOf(unaryCall(t, t.listTemplates, {}, 'bad'))).code));
    assert.deepEqual(anonymous, [...Array(5).fill('UNAUTHENTICATED'), 'RESOURCE_EXHAUSTED']);
  });

  it('a stream that falls behind is ended with RESOURCE_EXHAUSTED (resume with from)', async () => {
    const operator = await tokenFor(system, 'operator');
    for (let i = 0; i < 3; i++) {
      await unaryCall(
        clients.experiments,
        clients.experiments.createExperiment,
        { spec: protoSpec(validSpec({ name: `backlog ${i}` })), idempotencyKey: '' },
        operator,
      );
    }
    const slow = watch(clients.experiments, { from: '0' }, await tokenFor(system, 'viewer', 'slow'));
    const ended = await slow.ended;
    assert.equal(codeName(ended.code), 'RESOURCE_EXHAUSTED');
    assert.equal(detailsOf(ended.error!).info?.reason, 'TOO_SLOW');
    await waitUntil(() => server.watchStreams === 0);
  });

  it('at shutdown a Watch ends UNAVAILABLE (resume with from elsewhere), and stop does not wait on it', async () => {
    const w = watch(clients.experiments, {}, await tokenFor(system, 'viewer', 'at-shutdown'));
    await w.until((m) => m.kind?.$case === 'live');
    const started = Date.now();
    await server.stop(10_000);
    const ended = await w.ended;
    assert.equal(codeName(ended.code), 'UNAVAILABLE');
    assert.equal(detailsOf(ended.error!).info?.reason, 'SHUTTING_DOWN');
    assert.ok(Date.now() - started < 5_000, `stopped in ${Date.now() - started} ms`);
    assert.equal(server.watchStreams, 0);
  });
});

async function waitUntil(test: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

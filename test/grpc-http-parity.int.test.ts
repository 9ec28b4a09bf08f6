import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { systemTargets } from './support/databases.js';
import { codeName, detailsOf, failureOf, grpcClients, protoSpec, unaryCall } from './support/grpc.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * HTTP and gRPC call one command service: an idempotency key and an expected version mean the same
 * through both, and a key used over one transport is honoured over the other.
 */

type TestSystem = Awaited<ReturnType<typeof startTestSystem>>;

for (const target of systemTargets()) {
  describe(`Idempotency and If-Match through HTTP and gRPC alike (${target.name})`, {
    skip: target.skip,
    timeout: 120_000,
  }, () => {
    let system: TestSystem;
    let drop: () => Promise<void>;
    let clients: ReturnType<typeof grpcClients>;
    let operator: string;

    before(async () => {
      const prepared = await target.env();
      drop = prepared.drop;
      system = await startTestSystem(prepared.env);
      clients = grpcClients(`127.0.0.1:${await system.grpc!.listen('127.0.0.1', 0)}`);
      operator = await tokenFor(system, 'operator', `parity-${randomUUID()}`);
    });
    after(async () => {
      clients?.close();
      await system?.dispose();
      await drop?.();
    });

    const ex = () => clients.experiments;
    const httpCreate = (body: object, key: string) =>
      system.app.inject({
        method: 'POST',
        url: '/api/v1/experiments',
        headers: { authorization: `Bearer ${operator}`, 'idempotency-key': key },
        payload: body,
      });
    const httpStart = (id: string, headers: Record<string, string>) =>
      system.app.inject({
        method: 'POST',
        url: `/api/v1/experiments/${id}/start`,
        headers: { authorization: `Bearer ${operator}`, ...headers },
      });
    const grpcCreate = (body: ReturnType<typeof validSpec>, key: string) =>
      unaryCall(ex(), ex().createExperiment, { spec: protoSpec(body), idempotencyKey: key }, operator);
    const grpcStart = (id: string, extra: { idempotencyKey?: string; expectedVersion?: number }) =>
      unaryCall(ex(), ex().startExperiment, { id, idempotencyKey: '', ...extra }, operator);

    it('a key first used over HTTP: the same body over gRPC is replayed, another body refused (422 / FAILED_PRECONDITION)', async () => {
      const key = `http-first-${randomUUID()}`;
      const body = validSpec({ name: 'parity A' });
      const first = await httpCreate(body, key);
      assert.equal(first.statusCode, 201, first.body);
      const replay = await grpcCreate(body, key);
      assert.equal(replay.outcome!.experimentId, first.json().id);
      assert.equal(replay.outcome!.version, first.json().version);
      assert.equal(replay.outcome!.position, first.json().position);
      assert.equal(replay.outcome!.replayed, true);

      const other = validSpec({ name: 'parity B' });
      const overHttp = await httpCreate(other, key);
      assert.equal(overHttp.statusCode, 422);
      const overGrpc = await failureOf(grpcCreate(other, key));
      assert.equal(codeName(overGrpc.code), 'FAILED_PRECONDITION');
      assert.equal(detailsOf(overGrpc).info?.reason, 'IDEMPOTENCY_KEY_REUSED');
    });

    it('a key first used over gRPC: the same body over HTTP is replayed, another body refused', async () => {
      const key = `grpc-first-${randomUUID()}`;
      const body = validSpec({ name: 'parity C' });
      const first = (await grpcCreate(body, key)).outcome!;
      assert.equal(first.replayed, false);
      const again = (await grpcCreate(body, key)).outcome!;
      assert.equal(again.replayed, true);
      assert.equal(again.experimentId, first.experimentId);
      const overHttp = await httpCreate(body, key);
      assert.equal(overHttp.statusCode, 201);
      assert.equal(overHttp.headers['idempotent-replayed'], 'true');
      assert.equal(overHttp.json().id, first.experimentId);
      assert.equal((await httpCreate(validSpec({ name: 'parity D' }), key)).statusCode, 422);
      // One creation in the stream, whoever asked.
      const events = await unaryCall(
        ex(),
        ex().listExperimentEvents,
        { id: first.experimentId, fromVersion: 0, limit: 0 },
        operator,
      );
      assert.equal(events.events.filter((e) => e.type === 'ExperimentCreated').length, 1);
    });

    it('a stale expected version: 412 over HTTP, ABORTED over gRPC; the right one passes on either', async () => {
      const id = (await grpcCreate(validSpec({ name: 'parity E', durationSeconds: 3600 }), '')).outcome!
        .experimentId;
      const http = await httpStart(id, { 'if-match': '"4"' });
      assert.equal(http.statusCode, 412);
      assert.equal(http.json().currentVersion, 1);
      const grpc = await failureOf(grpcStart(id, { expectedVersion: 4 }));
      assert.equal(codeName(grpc.code), 'ABORTED');
      assert.equal(detailsOf(grpc).info?.reason, 'VERSION_MISMATCH');
      assert.equal(detailsOf(grpc).info?.metadata.currentVersion, '1');
      const key = `start-${randomUUID()}`;
      const started = (await grpcStart(id, { expectedVersion: 1, idempotencyKey: key })).outcome!;
      assert.equal(started.version, 2);
      // The same start with the same key and version over HTTP answers the stored outcome.
      const replay = await httpStart(id, { 'if-match': '"1"', 'idempotency-key': key });
      assert.equal(replay.statusCode, 202, replay.body);
      assert.equal(replay.headers['idempotent-replayed'], 'true');
      assert.equal(replay.json().version, 2);
      // The same key with another expected version is another request, on both.
      assert.equal((await httpStart(id, { 'if-match': '"2"', 'idempotency-key': key })).statusCode, 422);
      const reused = await failureOf(grpcStart(id, { expectedVersion: 2, idempotencyKey: key }));
      assert.equal(codeName(reused.code), 'FAILED_PRECONDITION');
    });
  });
}

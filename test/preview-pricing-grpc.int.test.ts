import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { codeName, failureOf, grpcClients, protoSpec, unaryCall } from './support/grpc.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/** The preview and the pricing profiles over gRPC: what REST answers, with gRPC's codes. */
describe('preview and pricing profiles over gRPC', { timeout: 180_000 }, () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let clients: ReturnType<typeof grpcClients>;
  let operator: string;
  let viewer: string;

  before(async () => {
    system = await startTestSystem();
    const port = await system.grpc!.listen('127.0.0.1', 0);
    clients = grpcClients(`127.0.0.1:${port}`);
    operator = await tokenFor(system, 'operator', 'grpc-olga');
    viewer = await tokenFor(system, 'viewer', 'grpc-vera');
  });
  after(async () => {
    clients?.close();
    await system?.dispose();
  });

  const ex = () => clients.experiments;
  const spec = () =>
    validSpec({
      candidate: { template: 'process-minimal-v1', params: {} },
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 },
    });

  it('previews a spec as REST does, and a created experiment on the fleet its run gets', async () => {
    const key = 'grpc-preview-key';
    const bySpec = await unaryCall(
      ex(),
      ex().previewExperiment,
      { subject: { $case: 'spec', value: protoSpec(spec()) }, idempotencyKey: key },
      viewer,
    );
    const rest = await system.app.inject({
      method: 'POST',
      url: '/api/v1/experiments/preview',
      headers: { authorization: `Bearer ${viewer}`, 'idempotency-key': key },
      payload: spec(),
    });
    // The key is the caller's: REST was called by another subject, so compare the figures only.
    assert.equal(rest.statusCode, 200, rest.body);
    assert.equal(bySpec.hosts, 3);
    assert.ok(bySpec.baseline!.series > bySpec.candidate!.series);
    assert.deepEqual(bySpec.droppedCriticalProcesses, []);

    const created = await unaryCall(
      ex(),
      ex().createExperiment,
      { spec: protoSpec(spec()), idempotencyKey: key },
      operator,
    );
    const byId = await unaryCall(
      ex(),
      ex().previewExperiment,
      { subject: { $case: 'id', value: created.outcome!.experimentId }, idempotencyKey: '' },
      viewer,
    );
    const asOperator = await unaryCall(
      ex(),
      ex().previewExperiment,
      { subject: { $case: 'spec', value: protoSpec(spec()) }, idempotencyKey: key },
      operator,
    );
    assert.deepEqual(byId, asOperator);
  });

  it('refuses what REST refuses, with gRPC codes', async () => {
    const none = await failureOf(unaryCall(ex(), ex().previewExperiment, { idempotencyKey: '' }, viewer));
    assert.equal(codeName(none.code), 'INVALID_ARGUMENT');
    const unknown = await failureOf(
      unaryCall(
        ex(),
        ex().previewExperiment,
        { subject: { $case: 'id', value: '00000000-0000-4000-8000-000000000000' }, idempotencyKey: '' },
        viewer,
      ),
    );
    assert.equal(codeName(unknown.code), 'NOT_FOUND');
    const badProfile = await failureOf(
      unaryCall(
        ex(),
        ex().createExperiment,
        { spec: { ...protoSpec(spec()), pricingProfile: 'no-such-profile' }, idempotencyKey: '' },
        operator,
      ),
    );
    assert.equal(codeName(badProfile.code), 'INVALID_ARGUMENT');
    assert.match(badProfile.details, /pricing/);
    const anonymous = await failureOf(unaryCall(ex(), ex().listPricingProfiles, {}, undefined));
    assert.equal(codeName(anonymous.code), 'UNAUTHENTICATED');
  });

  it('lists the pricing profiles, and a create keeps the one it names', async () => {
    const { profiles } = await unaryCall(ex(), ex().listPricingProfiles, {}, viewer);
    const names = profiles.map((p) => p.name);
    assert.ok(names.includes('default') && names.includes('datadog-custom-metrics'));
    assert.ok(profiles.every((p) => p.sources.length > 0));
    const created = await unaryCall(
      ex(),
      ex().createExperiment,
      { spec: { ...protoSpec(spec()), pricingProfile: 'amazon-managed-prometheus' }, idempotencyKey: '' },
      operator,
    );
    const got = await unaryCall(
      ex(),
      ex().getExperiment,
      { id: created.outcome!.experimentId, minPosition: created.outcome!.position },
      viewer,
    );
    assert.equal(got.experiment!.spec!.pricingProfile, 'amazon-managed-prometheus');
  });
});

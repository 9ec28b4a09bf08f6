import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type {
  FleetSampleOutcome,
  FleetSampleRequest,
  FleetSampler,
} from '../src/application/ports/fleet-sampler.js';
import { createPreviewService, PreviewRefused } from '../src/application/preview.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';

/** A sampler answering what it is told to, recording what it was asked (the use case's arithmetic). */
const answering = (outcome: FleetSampleOutcome) => {
  const asked: FleetSampleRequest[] = [];
  const sampler: FleetSampler = {
    async sample(request) {
      asked.push(request);
      return outcome;
    },
  };
  return { sampler, asked };
};

const spec = (hosts: number): ExperimentSpec => ({
  name: 'x',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-topk-v1', params: { k: 5 } },
  target: { namespace: 'n', nodeSelector: {}, hosts },
  durationSeconds: 60,
  criticalProcesses: ['^postgres$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
});

describe('previewExperiment', () => {
  it('samples at most 50 hosts, scales to the target and names what the candidate drops', async () => {
    const { sampler, asked } = answering({
      ok: true,
      hosts: 50,
      baseline: {
        series: 20_000,
        datapointsPerMinute: 20_000,
        critical: ['node-0001/postgres', 'node-0002/postgres', 'node-0002/postgres-exporter'],
      },
      candidate: { series: 5_000, datapointsPerMinute: 4_999.5, critical: ['node-0001/postgres'] },
    });
    const preview = await createPreviewService({ sampler }).preview('id-1', spec(1000));
    assert.equal(asked[0]?.hosts, 50);
    assert.equal(asked[0]?.experimentId, 'id-1');
    // × 1000 ÷ 50 = × 20
    assert.deepEqual(preview, {
      hosts: 1000,
      sampledHosts: 50,
      baseline: { series: 400_000, datapointsPerMinute: 400_000 },
      candidate: { series: 100_000, datapointsPerMinute: 99_990 },
      removedSeries: 300_000,
      removedSeriesPct: 75,
      criticalInBaseline: 60,
      droppedCriticalProcesses: ['postgres', 'postgres-exporter'],
      droppedCriticalPairs: ['node-0002/postgres', 'node-0002/postgres-exporter'],
    });
  });

  it('runs a small target whole', async () => {
    const { sampler, asked } = answering({
      ok: true,
      hosts: 3,
      baseline: { series: 0, datapointsPerMinute: 0, critical: [] },
      candidate: { series: 0, datapointsPerMinute: 0, critical: [] },
    });
    const preview = await createPreviewService({ sampler }).preview('id-2', spec(3));
    assert.equal(asked[0]?.hosts, 3);
    assert.equal(preview.removedSeriesPct, null);
  });

  it('turns a refusal of the spec into PreviewRefused', async () => {
    const { sampler } = answering({ ok: false, reason: 'cannot run this config: x' });
    await assert.rejects(createPreviewService({ sampler }).preview('id-3', spec(3)), PreviewRefused);
  });
});

import { randomUUID } from 'node:crypto';
import { streamIdOf } from '../../src/application/experiment-commands.js';
import type { EventStore, NewEvent, Position } from '../../src/application/ports/event-store.js';
import {
  decide,
  type ExperimentCommand,
  type ExperimentEvent,
  evolve,
  initialState,
} from '../../src/domain/experiment.js';
import type { Analysis, ExperimentSpec, MeasuredFigures } from '../../src/domain/experiment-spec.js';
import { currentSchemaVersion } from '../../src/domain/upcasters.js';

/**
 * An experiment whose analysis carries every extra the report can show, written through the server's
 * own event store by the real decider (the local analyzer does not measure them all yet).
 */
export async function seedFullAnalysis(
  store: EventStore<ExperimentEvent>,
): Promise<{ id: string; position: Position }> {
  const experimentId = randomUUID();
  const t0 = Date.now() - 600_000;
  const at = (s: number) => new Date(t0 + s * 1000).toISOString();
  const spec: ExperimentSpec = {
    name: 'seeded: topk with every figure',
    baseline: { template: 'process-baseline-v1', params: {} },
    candidate: { template: 'process-topk-v1', params: { k: 10 } },
    target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 4 },
    durationSeconds: 300,
    criticalProcesses: ['^postgres$', '^sshd$'],
    successCriteria: {
      minCardinalityReductionPct: 50,
      maxCriticalProcessLossPct: 30,
      maxCollectorCpuOverheadPct: 10,
    },
  };
  const figures = (series: number, dpm: number, cpu: number, mem: number): MeasuredFigures => ({
    series,
    datapointsPerMinute: dpm,
    collectorCpuCores: cpu,
    collectorMemoryBytes: mem,
  });
  const hosts = ['node-1', 'node-2', 'node-3', 'node-4'];
  const analysis: Analysis = {
    verdict: 'pass',
    reasons: ['cardinality reduced by 71.2% (at least 50% required)'],
    baseline: { series: 2000, datapointsPerMinute: 120_000 },
    candidate: { series: 576, datapointsPerMinute: 34_560 },
    cardinalityReductionPct: 71.2,
    datapointReductionPct: 71.2,
    criticalProcessLossPct: 25,
    missingCriticalProcesses: ['node-3/sshd'],
    evidence: {
      source: 'prometheus',
      window: { start: at(60), end: at(360) },
      queries: [
        {
          figure: 'series',
          variant: 'baseline',
          query: 'count(phoenix_process_series{variant="baseline"})',
          samples: 20,
        },
        {
          figure: 'series',
          variant: 'candidate',
          query: 'count(phoenix_process_series{variant="candidate"})',
          samples: 20,
        },
      ],
    },
    checks: [
      {
        criterion: 'minCardinalityReductionPct',
        threshold: 50,
        value: 71.2,
        outcome: 'pass',
        reason: 'cardinality reduced by 71.2% (95% CI 69.8–72.5), at least 50% required',
        dryRun: false,
        interval: { low: 69.8, high: 72.5, confidence: 0.95 },
        test: 'wilcoxon-signed-rank',
      },
      {
        criterion: 'maxCriticalProcessLossPct',
        threshold: 30,
        value: 25,
        outcome: 'pass',
        reason: '1 of 4 critical processes lost (25%, at most 30% allowed): node-3/sshd',
        dryRun: false,
      },
      {
        criterion: 'maxCollectorCpuOverheadPct',
        threshold: 10,
        value: -12.5,
        outcome: 'pass',
        reason: "collector CPU 12.5% below the baseline's",
        dryRun: false,
      },
      {
        criterion: 'sampleSize',
        threshold: 5,
        value: 4,
        outcome: 'fail',
        reason: '4 hosts with paired samples, 5 wanted',
        dryRun: true,
      },
    ],
    statistics: {
      series: {
        hosts: 4,
        samples: 80,
        baselineMean: 500,
        candidateMean: 144,
        relativeChangePct: -71.2,
        interval: { low: -72.5, high: -69.8, confidence: 0.95 },
        test: {
          name: 'wilcoxon-signed-rank',
          statistic: 0,
          pValue: 0.0625,
          effectSize: { name: 'rank-biserial', value: 1 },
        },
      },
    },
    timeline: Array.from({ length: 10 }, (_, i) => ({
      at: at(60 + i * 30),
      baseline: figures(2000 + i * 3, 120_000 + i * 100, 0.08 + i * 0.001, 96_000_000 + i * 100_000),
      candidate: figures(576 + i, 34_560 + i * 50, 0.07 + i * 0.001, 80_000_000 + i * 100_000),
    })),
    hosts: hosts.map((host, i) => ({
      host,
      samples: 20,
      baseline: figures(500, 30_000, 0.02, 24_000_000),
      candidate: figures(130 + i * 10, 7_800, 0.0175, 20_000_000),
      seriesReductionPct: Math.round((100 * (500 - (130 + i * 10))) / 5) / 100,
    })),
    topExecutables: [
      { executable: 'java', baselineSeries: 420, candidateSeries: 420 },
      { executable: 'postgres', baselineSeries: 300, candidateSeries: 300 },
      { executable: 'python3', baselineSeries: 240, candidateSeries: 0 },
      { executable: 'node', baselineSeries: 200, candidateSeries: 0 },
    ],
    parity: {
      ok: true,
      baselineInputPointsPerMinute: 121_000,
      candidateInputPointsPerMinute: 120_500,
      mismatchPct: 0.41,
      maxMismatchPct: 5,
      reason: 'both collectors received the same input',
    },
  };
  const commands: ExperimentCommand[] = [
    { type: 'CreateExperiment', at: at(0), experimentId, spec },
    { type: 'StartExperiment', at: at(10) },
    { type: 'RecordVariantDeployed', at: at(40), variant: 'baseline' },
    { type: 'RecordVariantDeployed', at: at(60), variant: 'candidate' },
    { type: 'CompleteRun', at: at(360) },
    { type: 'RecordAnalysis', at: at(380), analysis },
  ];
  const actors = ['olivia', 'olivia', 'saga:deployer', 'saga:deployer', 'saga:runtime', 'saga:analyzer'];
  let state = initialState();
  const events: NewEvent<ExperimentEvent>[] = [];
  commands.forEach((command, i) => {
    for (const event of decide(command, state)) {
      state = evolve(state, event);
      events.push({
        type: event.type,
        data: event.data,
        metadata: {
          eventId: randomUUID(),
          actor: actors[i]!,
          correlationId: randomUUID(),
          causationId: null,
          occurredAt: command.at,
          schemaVersion: currentSchemaVersion(event.type),
        },
      });
    }
  });
  const result = await store.append(streamIdOf(experimentId), events, 'no_stream');
  return { id: experimentId, position: result.position };
}

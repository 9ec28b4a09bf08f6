import { randomUUID } from 'node:crypto';
import { streamIdOf } from '../../src/application/experiment-commands.js';
import type { EventStore, NewEvent, Position } from '../../src/application/ports/event-store.js';
import type { ExperimentView, HistoryEntry } from '../../src/application/ports/read-models.js';
import {
  DomainError,
  decide,
  type Experiment,
  type ExperimentCommand,
  type ExperimentEvent,
  evolve,
  initialState,
  reasonOf,
  STATUSES,
  statusAfter,
} from '../../src/domain/experiment.js';
import type { ExperimentSpec, Variant } from '../../src/domain/experiment-spec.js';
import { currentSchemaVersion } from '../../src/domain/upcasters.js';

/**
 * Random but valid experiment lifecycles, made by the real decider: at each step a random command
 * among those that make sense is decided against the current state; refused commands are dropped.
 * Seeded, so a failing run can be replayed.
 */

export type Rng = () => number;

/** mulberry32: small, fast, good enough for test data. */
export const rngOf = (seed: number): Rng => {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;

export const ACTORS = ['alice', 'bob', 'carol', 'dave', 'saga:deployer', 'saga:analyzer', 'saga:runtime'];
const TEMPLATES = [
  'process-topk-v1',
  'process-priority-filter-v1',
  'process-aggregated-v1',
  'process-minimal-v1',
];

export const randomSpec = (rng: Rng, n: number): ExperimentSpec => ({
  name: `experiment ${n} ${pick(rng, ['topk', 'filter', 'agg', 'minimal'])}`,
  ...(rng() < 0.5 ? { description: `random lifecycle ${n}` } : {}),
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: pick(rng, TEMPLATES), params: rng() < 0.5 ? { k: 1 + Math.floor(rng() * 50) } : {} },
  target: {
    namespace: 'phoenix-experiments',
    nodeSelector: { pool: pick(rng, ['a', 'b', 'c']) },
    hosts: 1 + Math.floor(rng() * 20),
  },
  durationSeconds: 60 + Math.floor(rng() * 3600),
  criticalProcesses: rng() < 0.7 ? ['^postgres$', '^nginx'] : [],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
});

const analysis = (rng: Rng) => {
  const verdict = pick(rng, ['pass', 'pass', 'fail', 'inconclusive'] as const);
  const candidateSeries = 300 + Math.floor(rng() * 700);
  return {
    // what judge stores, so that a finished experiment can be re-judged (RejudgeAnalysis)
    evidence: {
      figures: {
        baseline: {
          series: 1000,
          datapointsPerMinute: 60_000,
          collectorCpuCores: 0.1,
          collectorMemoryBytes: 6e7,
        },
        candidate: {
          series: candidateSeries,
          datapointsPerMinute: 20_000,
          collectorCpuCores: 0.1,
          collectorMemoryBytes: 6e7,
        },
      },
      criticalInBaseline: 2,
    },
    verdict,
    reasons: verdict === 'pass' ? [] : ['cardinality reduction 12% < 50%'],
    baseline: { series: 1000, datapointsPerMinute: 60_000 },
    candidate: { series: candidateSeries, datapointsPerMinute: 20_000 },
    cardinalityReductionPct: Math.round(rng() * 100),
    datapointReductionPct: Math.round(rng() * 100),
    criticalProcessLossPct: 0,
    missingCriticalProcesses: [],
  };
};

/** The commands worth trying in a state (the decider still has the last word). */
function candidates(rng: Rng, s: Experiment, at: string): ExperimentCommand[] {
  if (s.status === 'empty') return [];
  const variant = (): Variant => pick(rng, ['baseline', 'candidate'] as const);
  switch (s.status) {
    case 'pending':
      return [
        { type: 'StartExperiment', at },
        { type: 'StartExperiment', at },
        { type: 'StartExperiment', at },
        { type: 'CancelExperiment', at, reason: rng() < 0.5 ? 'changed my mind' : undefined },
      ];
    case 'initializing':
      return [
        { type: 'RecordVariantDeployed', at, variant: variant(), detail: { pods: 2 } },
        { type: 'RecordVariantDeployed', at, variant: variant() },
        { type: 'RecordVariantDeployed', at, variant: variant() },
        { type: 'RecordVariantDeploymentFailed', at, variant: variant(), reason: 'image pull backoff' },
        { type: 'MarkExperimentRunning', at, reason: 'resources found during recovery' },
        { type: 'CancelExperiment', at },
      ];
    case 'running':
      return [
        { type: 'CompleteRun', at: s.runEndsAt ?? at },
        { type: 'CompleteRun', at: s.runEndsAt ?? at },
        { type: 'ExtendRuntime', at, extraSeconds: 60, reason: 'more data' },
        { type: 'CancelExperiment', at, reason: 'stop it' },
        { type: 'FailExperiment', at, reason: 'collector crashed' },
      ];
    case 'analyzing':
      return [
        { type: 'RecordAnalysis', at, analysis: analysis(rng) },
        { type: 'RecordAnalysis', at, analysis: analysis(rng) },
        { type: 'RetryAnalysis', at, reason: 'prometheus timeout' },
        { type: 'ExtendRuntime', at, extraSeconds: 120, reason: 'not enough data' },
        { type: 'FailExperiment', at, reason: 'analysis gave up' },
      ];
    default:
      return [{ type: 'RecordVariantTornDown', at, variant: variant() }];
  }
}

export interface Step {
  readonly experimentId: string;
  readonly events: readonly ExperimentEvent[];
  readonly actor: string;
  readonly correlationId: string;
  readonly at: string;
}

/** One lifecycle: the events of each accepted command, in order. */
export function lifecycle(rng: Rng, n: number, startMs: number): Step[] {
  const experimentId = randomUUID();
  let state = initialState();
  let t = startMs;
  const steps: Step[] = [];
  const run = (command: ExperimentCommand) => {
    let events: ExperimentEvent[];
    try {
      events = decide(command, state);
    } catch (err) {
      if (err instanceof DomainError) return;
      throw err;
    }
    if (events.length === 0) return;
    state = events.reduce(evolve, state);
    steps.push({
      experimentId,
      events,
      actor: pick(rng, ACTORS),
      correlationId: randomUUID(),
      at: command.at,
    });
  };
  run({ type: 'CreateExperiment', at: new Date(t).toISOString(), experimentId, spec: randomSpec(rng, n) });
  for (let i = 0; i < 40; i++) {
    t += 1 + Math.floor(rng() * 3_600_000 * (rng() < 0.1 ? 48 : 1));
    const options = candidates(rng, state, new Date(t).toISOString());
    if (options.length === 0) break;
    if (state.status !== 'empty' && ['completed', 'failed', 'cancelled'].includes(state.status)) {
      if (rng() < 0.15) {
        const minCardinalityReductionPct = Math.round(rng() * 100);
        run({
          type: 'RejudgeAnalysis',
          at: new Date(t).toISOString(),
          actor: pick(rng, ACTORS),
          criteria: { minCardinalityReductionPct },
        });
        continue;
      }
      const up = Object.entries(state.deployments).filter(([, d]) => d && d.status !== 'torn_down');
      if (up.length === 0 || rng() < 0.1) break;
      run({ type: 'RecordVariantTornDown', at: new Date(t).toISOString(), variant: up[0]![0] as Variant });
      continue;
    }
    const command = pick(rng, options);
    if (command.type === 'CompleteRun') t = Math.max(t, Date.parse(command.at));
    run(command);
  }
  return steps;
}

export const newEvents = (step: Step): NewEvent<ExperimentEvent>[] =>
  step.events.map((event) => ({
    type: event.type,
    data: event.data,
    metadata: {
      eventId: randomUUID(),
      actor: step.actor,
      correlationId: step.correlationId,
      causationId: null,
      occurredAt: step.at,
      schemaVersion: currentSchemaVersion(event.type),
    },
  }));

/**
 * Appends `count` lifecycles through `store`, `concurrency` of them at a time (so their events
 * interleave in the log and concurrent appends share batches), each command with its expected version.
 * Returns every experiment's steps and the position of the last append.
 */
export async function appendLifecycles(
  store: EventStore<ExperimentEvent>,
  options: { count: number; seed: number; concurrency?: number; startMs?: number; spreadMs?: number },
): Promise<{ lifecycles: Step[][]; last: Position }> {
  const rng = rngOf(options.seed);
  const start = options.startMs ?? Date.UTC(2025, 0, 1);
  const spread = options.spreadMs ?? 180 * 86_400_000;
  const lifecycles = Array.from({ length: options.count }, (_, n) =>
    lifecycle(rng, n, start + Math.floor(rng() * spread)),
  );
  let last: Position = '0';
  let next = 0;
  await Promise.all(
    Array.from({ length: options.concurrency ?? 32 }, async () => {
      for (;;) {
        const steps = lifecycles[next++];
        if (!steps) return;
        let version = 0;
        for (const step of steps) {
          const result = await store.append(
            streamIdOf(step.experimentId),
            newEvents(step),
            version === 0 ? 'no_stream' : version,
          );
          version = result.version;
          if (result.position > last) last = result.position;
        }
      }
    }),
  );
  return { lifecycles, last };
}

/** What GET /experiments/{id} must show after these steps: folded by the domain, mapped by hand. */
export function expectedView(steps: readonly Step[]): ExperimentView {
  const events = steps.flatMap((s) => s.events);
  const s = events.reduce(evolve, initialState());
  if (s.status === 'empty') throw new Error('no experiment');
  const iso = (x: string) => new Date(x).toISOString();
  const deployments = Object.fromEntries(
    Object.entries(s.deployments).map(([k, d]) => [k, JSON.parse(JSON.stringify({ ...d, at: iso(d!.at) }))]),
  );
  return JSON.parse(
    JSON.stringify({
      ...s.spec,
      id: s.id,
      state: s.status,
      version: events.length,
      createdAt: iso(s.createdAt),
      updatedAt: iso(s.updatedAt),
      ...(s.startedAt ? { startedAt: iso(s.startedAt) } : {}),
      ...(s.runEndsAt ? { runEndsAt: iso(s.runEndsAt) } : {}),
      ...(s.endedAt ? { endedAt: iso(s.endedAt) } : {}),
      ...(s.statusReason !== undefined ? { statusReason: s.statusReason } : {}),
      ...(Object.keys(deployments).length > 0 ? { deployments } : {}),
      ...(s.analysis ? { analysis: s.analysis } : {}),
      ...(s.rejudgements ? { rejudgements: s.rejudgements } : {}),
    }),
  );
}

/** What GET /experiments/{id}/history must show: one entry per status change. */
export function expectedHistory(steps: readonly Step[]): HistoryEntry[] {
  let state = initialState();
  const out: HistoryEntry[] = [];
  let enteredAt = 0;
  for (const step of steps) {
    for (const event of step.events) {
      const to = statusAfter(event, state);
      if (to !== undefined) {
        const at = Date.parse(event.data.at);
        out.push({
          from: state.status === 'empty' ? null : state.status,
          to,
          reason: reasonOf(event),
          actor: step.actor,
          at: new Date(at).toISOString(),
          durationMs: state.status === 'empty' ? null : at - enteredAt,
        });
        enteredAt = at;
      }
      state = evolve(state, event);
    }
  }
  return out;
}

export const expectedCounts = (lifecycles: readonly (readonly Step[])[]) => {
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<(typeof STATUSES)[number], number>;
  for (const steps of lifecycles) {
    const s = steps.flatMap((x) => x.events).reduce(evolve, initialState());
    if (s.status !== 'empty') counts[s.status]++;
  }
  return counts;
};

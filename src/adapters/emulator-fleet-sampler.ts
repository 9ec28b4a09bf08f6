import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type {
  FleetSampleOutcome,
  FleetSampleRequest,
  FleetSampler,
  VariantSample,
} from '../application/ports/fleet-sampler.js';
import type { Variant } from '../domain/experiment-spec.js';
import {
  type CollectorConfig,
  type CollectorRegex,
  compileCollectorRegex,
  computeTuning,
  NODE_NAME_ENV,
  type ProcessUsageTable,
  parseTemplateParams,
  type RenderVariantInput,
  renderVariant,
  type ValidationIssue,
} from '../domain/pipelines/index.js';
import { compilePipeline, emulateScrape, popcount, type ScrapeResult } from './local-dataplane-emulator.js';
import { fleetSeedOf, ProcessFleet } from './local-dataplane-fleet.js';

/**
 * The preview's fleet sample on the local emulator: the fleet the run would get (fleetSeedOf, the
 * first `hosts` hosts: a host's processes depend on the seed and its index only), both variants
 * rendered as the deployer worker renders them and run by the emulator that
 * emulator-differential.int.test.ts holds equal to the real collector.
 *
 * Each variant scrapes the same fleet state twice and the second scrape is measured: a collector's
 * first scrape has no CPU utilization for any process, so it would undercount every template alike.
 * A tuned candidate (top-k, adaptive, intelligent) is tuned from the baseline's usage on the sample.
 *
 * The work runs on a worker thread of its own, one per preview: up to a second of CPU for 50 hosts
 * that would otherwise hold the event loop, with a deadline and a heap limit, so a preview cannot
 * stall or exhaust the server. The service above bounds how many run at once.
 */

export interface EmulatorFleetSamplerOptions {
  /** Simulated processes per host, as the deployer in use simulates them (local: 500). */
  readonly processesPerHost?: number;
  /** Longest a preview may take; default 60 s. */
  readonly timeoutMs?: number;
  /** The worker's old-generation heap limit; default 256 MiB. */
  readonly maxHeapMb?: number;
}

interface WorkerInput extends FleetSampleRequest {
  readonly processesPerHost: number;
}

type WorkerOutput = { kind: 'done'; outcome: FleetSampleOutcome } | { kind: 'failed'; message: string };

const describe = (errors: readonly ValidationIssue[]): string =>
  errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join('; ');

/** Runs the sample in this thread (the worker's body; tests call it directly). */
export function sampleFleet(input: WorkerInput): FleetSampleOutcome {
  const critical: CollectorRegex[] = [];
  for (const pattern of input.criticalProcesses) {
    const check = compileCollectorRegex(pattern);
    if (!check.ok)
      return { ok: false, reason: `critical process pattern ${JSON.stringify(pattern)}: ${check.message}` };
    critical.push(check.regex);
  }
  const fleet = new ProcessFleet({
    hosts: input.hosts,
    processesPerHost: input.processesPerHost,
    seed: fleetSeedOf(input.experimentId),
  });

  const run = (variant: Variant, config: CollectorConfig): { sample: VariantSample; last: ScrapeResult } => {
    const pipeline = compilePipeline(config, {
      [NODE_NAME_ENV]: (h: number) => fleet.hostNames[h] as string,
      PHOENIX_EXPERIMENT_ID: input.experimentId,
      PHOENIX_VARIANT: variant,
    });
    const seen = new Int32Array(fleet.size).fill(-1);
    emulateScrape(fleet, pipeline, seen);
    const last = emulateScrape(fleet, pipeline, seen);
    const isCritical = new Map<number, boolean>();
    const pairs = new Set<string>();
    for (let o = 0; o < last.rows; o++) {
      const id = last.rowName[o] as number;
      if (id < 0) continue;
      let hit = isCritical.get(id);
      if (hit === undefined) {
        const name = last.names[id] as string;
        hit = critical.some((re) => re.test(name));
        isCritical.set(id, hit);
      }
      if (hit) pairs.add(`${fleet.hostNames[last.rowHost[o] as number]}/${last.names[id]}`);
    }
    return {
      sample: {
        series: last.series,
        datapointsPerMinute: (last.exportedPoints * 60) / pipeline.intervalSeconds,
        critical: [...pairs].sort(),
      },
      last,
    };
  };

  const render = (variant: Variant, extra: Pick<RenderVariantInput, 'keepList' | 'thresholds'>) => {
    const spec = input[variant];
    return renderVariant({
      experimentId: input.experimentId,
      variant,
      template: spec.template,
      params: spec.params,
      criticalProcesses: [...input.criticalProcesses],
      ...extra,
    });
  };

  try {
    const baselineRendered = render('baseline', {});
    if (!baselineRendered.ok) return { ok: false, reason: `baseline: ${describe(baselineRendered.errors)}` };
    const baseline = run('baseline', baselineRendered.config);
    let candidateRendered = render('candidate', {});
    if (!candidateRendered.ok)
      return { ok: false, reason: `candidate: ${describe(candidateRendered.errors)}` };
    if (candidateRendered.pendingTuning) {
      const parsed = parseTemplateParams(input.candidate.template, input.candidate.params);
      if (!parsed.ok) return { ok: false, reason: `candidate: ${describe(parsed.errors)}` };
      const tuning = computeTuning(parsed.value, usageOf(baseline.last), input.criticalProcesses);
      candidateRendered = render('candidate', {
        ...(tuning?.keepList ? { keepList: tuning.keepList } : {}),
        ...(tuning?.thresholds ? { thresholds: tuning.thresholds } : {}),
      });
      if (!candidateRendered.ok)
        return { ok: false, reason: `candidate: ${describe(candidateRendered.errors)}` };
    }
    const candidate = run('candidate', candidateRendered.config);
    return { ok: true, hosts: fleet.hosts, baseline: baseline.sample, candidate: candidate.sample };
  } catch (err) {
    // The emulator refuses what it cannot interpret (EmulationError) rather than approximate it.
    if (err instanceof Error && err.name === 'EmulationError')
      return { ok: false, reason: `cannot run this config: ${err.message}` };
    throw err;
  }
}

/** Per-process CPU, memory and series of a scrape, as the deployer's tuning reads them (LocalDataPlane.usage). */
const usageOf = (last: ScrapeResult): ProcessUsageTable => {
  const series = new Uint8Array(last.rows);
  for (let o = 0; o < last.rows; o++) series[o] = popcount(last.rowMask[o] as number);
  return {
    length: last.rows,
    node: last.rowHost,
    name: Int32Array.from(last.rowName, (n) => Math.max(0, n)),
    names: last.names,
    cpu: last.rowCpu,
    memory: last.rowMemory,
    series,
  };
};

/** This module's twin: the worker's entry, in whichever form (built .js or source .ts) runs now. */
const WORKER_URL = new URL(
  `./emulator-fleet-sampler-worker${extname(fileURLToPath(import.meta.url))}`,
  import.meta.url,
);
/** Run from the sources (tests: `node --import tsx`), a worker registers tsx first (as parallel-load.ts does). */
const WORKER_ENTRY: URL | string = WORKER_URL.pathname.endsWith('.ts')
  ? `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then(({ register }) => { register(); return import(${JSON.stringify(WORKER_URL.href)}); });`
  : WORKER_URL;

export class EmulatorFleetSampler implements FleetSampler {
  constructor(private readonly options: EmulatorFleetSamplerOptions = {}) {}

  sample(request: FleetSampleRequest, options: { signal?: AbortSignal } = {}): Promise<FleetSampleOutcome> {
    const input: WorkerInput = {
      ...request,
      baseline: { template: request.baseline.template, params: request.baseline.params },
      candidate: { template: request.candidate.template, params: request.candidate.params },
      criticalProcesses: [...request.criticalProcesses],
      processesPerHost: this.options.processesPerHost ?? 500,
    };
    const timeoutMs = this.options.timeoutMs ?? 60_000;
    return new Promise<FleetSampleOutcome>((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(options.signal.reason ?? new Error('aborted'));
        return;
      }
      const worker = new Worker(WORKER_ENTRY, {
        eval: WORKER_ENTRY !== WORKER_URL,
        workerData: input,
        resourceLimits: { maxOldGenerationSizeMb: this.options.maxHeapMb ?? 256 },
      });
      let settled = false;
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        fn();
        void worker.terminate();
      };
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(new Error(`the fleet sample took longer than ${Math.round(timeoutMs / 1000)} s`)),
          ),
        timeoutMs,
      );
      const onAbort = () => finish(() => reject(options.signal?.reason ?? new Error('aborted')));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      worker.on('message', (message: WorkerOutput) =>
        finish(() =>
          message.kind === 'done'
            ? resolve(message.outcome)
            : reject(new Error(`the fleet sample failed: ${message.message}`)),
        ),
      );
      worker.on('error', (err) => finish(() => reject(new Error(`the fleet sample failed: ${err.message}`))));
      worker.on('exit', (code) =>
        finish(() => reject(new Error(`the fleet sample's worker exited (code ${code}) before it answered`))),
      );
    });
  }
}

import pLimit from 'p-limit';
import type { ExperimentSpec, VariantFigures } from '../domain/experiment-spec.js';
import type { FleetSampler } from './ports/fleet-sampler.js';

/**
 * The preview before a run: one sample of the fleet through both rendered pipelines estimates the
 * series the candidate removes and names the critical processes it would drop (Grafana Adaptive
 * Metrics' impact preview, for a collector pipeline).
 *
 * At most `maxSampledHosts` hosts are run (the first ones of the target's fleet, the same hosts the
 * run gets); the counts are scaled up to the target by hosts ÷ sampled hosts. A preview is costly
 * (two pipelines over up to 25,000 simulated processes), so at most `concurrency` run at once and
 * `queue` more wait; beyond that the service is saturated and says so at once (PreviewBusy).
 */
export interface Preview {
  /** The target's hosts. */
  readonly hosts: number;
  /** The hosts actually run; the figures are scaled from them to `hosts`. */
  readonly sampledHosts: number;
  readonly baseline: VariantFigures;
  readonly candidate: VariantFigures;
  readonly removedSeries: number;
  readonly removedSeriesPct: number | null;
  /** Critical (node, executable) pairs in the baseline, scaled to the target. */
  readonly criticalInBaseline: number;
  /** Executables matching the critical patterns that the candidate drops on some host. */
  readonly droppedCriticalProcesses: readonly string[];
  /** The same, as `node/executable` pairs of the sampled hosts (at most 50 listed). */
  readonly droppedCriticalPairs: readonly string[];
}

/** The spec cannot be previewed (a config the data plane refuses): the user's input, a 400. */
export class PreviewRefused extends Error {
  override readonly name = 'PreviewRefused';
}

/** Every preview slot and queue place is taken: try again later (503 with Retry-After). */
export class PreviewBusy extends Error {
  override readonly name = 'PreviewBusy';
  constructor(readonly retryAfterSeconds: number) {
    super('the preview service is saturated: too many previews are running or waiting; retry later');
  }
}

export interface PreviewServiceOptions {
  readonly sampler: FleetSampler;
  /** Most hosts one preview runs; default 50. */
  readonly maxSampledHosts?: number;
  /** Previews running at once; default 2. */
  readonly concurrency?: number;
  /** Previews waiting for a slot; default 4. */
  readonly queue?: number;
}

export interface PreviewService {
  preview(experimentId: string, spec: ExperimentSpec, options?: { signal?: AbortSignal }): Promise<Preview>;
  /** Previews running and waiting now (for tests and metrics). */
  readonly load: { readonly running: number; readonly waiting: number };
}

const round2 = (v: number): number => Math.round(v * 100) / 100;
const MAX_PAIRS_LISTED = 50;

export function createPreviewService(options: PreviewServiceOptions): PreviewService {
  const maxSampled = options.maxSampledHosts ?? 50;
  const concurrency = options.concurrency ?? 2;
  const queue = options.queue ?? 4;
  const limit = pLimit(concurrency);
  return {
    get load() {
      return { running: limit.activeCount, waiting: limit.pendingCount };
    },
    async preview(experimentId, spec, callOptions = {}) {
      if (limit.activeCount + limit.pendingCount >= concurrency + queue) throw new PreviewBusy(5);
      const hosts = spec.target.hosts;
      const sampled = Math.max(1, Math.min(hosts, maxSampled));
      const outcome = await limit(() =>
        options.sampler.sample(
          {
            experimentId,
            hosts: sampled,
            baseline: spec.baseline,
            candidate: spec.candidate,
            criticalProcesses: spec.criticalProcesses,
          },
          callOptions,
        ),
      );
      if (!outcome.ok) throw new PreviewRefused(outcome.reason);
      const scale = hosts / outcome.hosts;
      const figures = (v: { series: number; datapointsPerMinute: number }): VariantFigures => ({
        series: Math.round(v.series * scale),
        datapointsPerMinute: round2(v.datapointsPerMinute * scale),
      });
      const { baseline, candidate } = outcome;
      const kept = new Set(candidate.critical);
      const droppedPairs = baseline.critical.filter((pair) => !kept.has(pair)).sort();
      const dropped = [...new Set(droppedPairs.map((pair) => pair.slice(pair.indexOf('/') + 1)))].sort();
      const removed = baseline.series - candidate.series;
      return {
        hosts,
        sampledHosts: outcome.hosts,
        baseline: figures(baseline),
        candidate: figures(candidate),
        removedSeries: Math.round(removed * scale),
        removedSeriesPct: baseline.series > 0 ? round2((100 * removed) / baseline.series) : null,
        criticalInBaseline: Math.round(baseline.critical.length * scale),
        droppedCriticalProcesses: dropped,
        droppedCriticalPairs: droppedPairs.slice(0, MAX_PAIRS_LISTED),
      };
    },
  };
}

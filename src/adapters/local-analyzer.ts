import {
  type AnalysisRequest,
  type Analyzer,
  measuredRange,
  type ProbeRequest,
} from '../application/ports/analyzer.js';
import type { CollectorHealth, ProbeFindings } from '../domain/early-abort.js';
import { VARIANTS, type Variant } from '../domain/experiment-spec.js';
import { compileCollectorRegex } from '../domain/pipelines/index.js';
import type { HostSample, Measurements, VariantMeasurement } from '../domain/verdict.js';
import type { LocalDataPlane, VariantSnapshot } from './local-dataplane.js';

const NO_DATA: VariantMeasurement = {
  series: null,
  datapointsPerMinute: null,
  collectorCpuCores: null,
  collectorMemoryBytes: null,
};

const figures = (s: VariantSnapshot | undefined): VariantMeasurement =>
  s === undefined
    ? NO_DATA
    : {
        series: s.series,
        datapointsPerMinute: s.datapointsPerMinute,
        collectorCpuCores: s.collector.cpuCoresPerNode,
        collectorMemoryBytes: s.collector.memoryRssBytesPerNode,
      };

/** Why a compatibility query has no result here (the judge makes it no_data). */
export const LOCAL_CANNOT_RUN_PROMQL =
  'the local analyzer cannot run PromQL: run the experiment with PHOENIX_ANALYZER=prometheus to check compatibility queries';

export interface LocalAnalyzerOptions {
  /** Excluded from the window's start, capped at a quarter of the window; default 60 (as the Prometheus analyzer). */
  readonly warmupSeconds?: number;
  readonly clock?: () => Date;
}

/**
 * The `local` analyzer: the same measurements as the Prometheus analyzer, read from the local data
 * plane directly.
 *
 * - `samples`: every host's figures per variant at each scrape the data plane kept over the window
 *   (warm-up excluded; the data plane keeps at most its history capacity per host, evenly spaced);
 * - the fleet figures (`baseline`, `candidate`) are those of each variant's last scrape, as before
 *   the history existed;
 * - critical processes are matched with the experiment's patterns against the executables each
 *   variant exported per node at its last scrape;
 * - collector health: restarts (redeploys and injected restarts) and failed exports the data plane
 *   recorded within the window. The emulator itself never restarts a collector nor fails an export,
 *   so these are non-zero only when a fault was injected or a variant redeployed: what it knows, exactly;
 * - compatibility queries cannot run (there is no PromQL engine here): each gets an `error`.
 */
export class LocalAnalyzer implements Analyzer {
  private readonly clock: () => Date;

  constructor(
    private readonly plane: LocalDataPlane,
    private readonly options: LocalAnalyzerOptions = {},
  ) {
    this.clock = options.clock ?? (() => new Date());
  }

  /**
   * A variant's scrapes within the window; a run shorter than the variant's scrape interval has none,
   * and then its last scrape (the one the measuring itself may have made) stands for it: one look, as
   * the sample count says.
   */
  private windowSamples(id: string, variant: Variant, fromMs: number, toMs: number) {
    const within = this.plane.samples(id, variant, fromMs, toMs);
    if (within === undefined || within.samples.length > 0) return within;
    const before = this.plane.samples(id, variant);
    const last = before?.samples.at(-1);
    return before && last ? { ...before, samples: [last] } : within;
  }

  async measure(request: AnalysisRequest): Promise<Measurements> {
    const id = request.experimentId;
    const baseline = this.plane.snapshot(id, 'baseline');
    const candidate = this.plane.snapshot(id, 'candidate');
    const patterns = this.patterns(request.spec.criticalProcesses);
    let criticalInBaseline: string[] | null = null;
    const missing: string[] = [];
    if (baseline !== undefined) {
      criticalInBaseline = [];
      for (const [node, names] of Object.entries(baseline.processesByNode)) {
        const kept = new Set(candidate?.processesByNode[node] ?? []);
        for (const name of names) {
          if (!patterns.some((re) => re.test(name))) continue;
          criticalInBaseline.push(`${node}/${name}`);
          if (candidate !== undefined && !kept.has(name)) missing.push(`${node}/${name}`);
        }
      }
    }
    const range = measuredRange(request.window, this.options.warmupSeconds ?? 60, this.clock());
    const samples: HostSample[] = [];
    const queries: { figure: string; variant: Variant; query: string; samples: number }[] = [];
    const seriesByExecutable = {} as Record<Variant, Record<string, number>>;
    const collectorHealth = {} as Record<Variant, CollectorHealth>;
    const kept = Object.fromEntries(
      VARIANTS.map((variant) => [
        variant,
        // A window too short to measure still has each variant's last look before it ended.
        this.windowSamples(
          id,
          variant,
          (range?.start ?? request.window.start).getTime(),
          (range?.end ?? request.window.end).getTime(),
        ),
      ]),
    ) as Record<Variant, ReturnType<LocalDataPlane['samples']>>;
    // Both variants scrape the one simulated fleet, each on its own collection interval and at its own
    // wall time. The judge pairs samples by `at`, so a candidate scrape is dated like the baseline scrape
    // of the nearest simulated instant (within the larger of the two scrape spacings), and a baseline
    // scrape by its own wall time.
    const baselineAt = new Map<number, number>();
    for (const sample of kept.baseline?.samples ?? []) baselineAt.set(sample.simulatedSeconds, sample.wallMs);
    const baselineTimes = [...baselineAt.keys()].sort((a, b) => a - b);
    const spacing = (times: readonly number[]): number => {
      const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
      return gaps.length === 0 ? Number.POSITIVE_INFINITY : Math.max(...gaps);
    };
    const candidateTimes = [...new Set((kept.candidate?.samples ?? []).map((s) => s.simulatedSeconds))].sort(
      (a, b) => a - b,
    );
    const tolerance = Math.max(spacing(baselineTimes), spacing(candidateTimes));
    const dateOf = (variant: Variant, simulatedSeconds: number, wallMs: number): string => {
      if (variant === 'baseline' || baselineTimes.length === 0) return new Date(wallMs).toISOString();
      let nearest = baselineTimes[0] as number;
      for (const t of baselineTimes)
        if (Math.abs(t - simulatedSeconds) < Math.abs(nearest - simulatedSeconds)) nearest = t;
      return Math.abs(nearest - simulatedSeconds) <= tolerance
        ? new Date(baselineAt.get(nearest) as number).toISOString()
        : new Date(wallMs).toISOString();
    };
    for (const variant of VARIANTS) {
      let count = 0;
      for (const sample of kept[variant]?.samples ?? []) {
        const at = dateOf(variant, sample.simulatedSeconds, sample.wallMs);
        kept[variant]?.hostNames.forEach((host, h) => {
          const f = sample.host(h);
          samples.push({
            at,
            host,
            variant,
            series: f.series,
            datapointsPerMinute: f.datapointsPerMinute,
            collectorCpuCores: f.collectorCpuCores,
            collectorMemoryBytes: f.collectorMemoryBytes,
            inputPointsPerMinute: f.inputPointsPerMinute,
            inputProcesses: f.inputProcesses,
          });
          count++;
        });
      }
      const endpoint = this.plane.endpointUrl(id, variant) ?? `local data plane ${id}/${variant}`;
      for (const figure of ['series', 'datapointsPerMinute', 'collectorCpuCores', 'collectorMemoryBytes'])
        queries.push({ figure, variant, query: `scrape history of ${endpoint}`, samples: count });
      seriesByExecutable[variant] = this.plane.seriesByExecutable(id, variant) ?? {};
      collectorHealth[variant] = this.health(id, variant, request.window.start, request.window.end);
    }
    return {
      baseline: figures(baseline),
      candidate: figures(candidate),
      criticalInBaseline,
      missingCriticalProcesses: missing,
      samples,
      seriesByExecutable,
      collectorHealth,
      queryResults: (request.spec.compatibilityQueries ?? []).map((q) => ({
        name: q.name,
        query: q.query,
        baseline: null,
        candidate: null,
        error: LOCAL_CANNOT_RUN_PROMQL,
      })),
      evidence: {
        source: 'local data plane',
        window: {
          start: request.window.start.toISOString(),
          end: request.window.end.toISOString(),
          ...(range
            ? {
                measured: { start: range.start.toISOString(), end: range.end.toISOString() },
                warmupSeconds: range.warmupSeconds,
              }
            : { note: 'the window is too short once the warm-up is excluded' }),
        },
        queries,
        measuredAt: {
          baseline: baseline && {
            scrapes: baseline.scrapes,
            simulatedTimeSeconds: baseline.simulatedTimeSeconds,
          },
          candidate: candidate && {
            scrapes: candidate.scrapes,
            simulatedTimeSeconds: candidate.simulatedTimeSeconds,
          },
        },
        endpoints: { baseline: baseline?.endpoint ?? null, candidate: candidate?.endpoint ?? null },
      },
    };
  }

  async probe(request: ProbeRequest): Promise<ProbeFindings> {
    const id = request.experimentId;
    const now = this.clock();
    const patterns = this.patterns(request.spec.criticalProcesses);
    let missing: string[] | null = [];
    if (patterns.length > 0) {
      const inBaseline = this.plane.presentMatching(id, 'baseline', patterns);
      const inCandidate = this.plane.presentMatching(id, 'candidate', patterns);
      missing =
        inBaseline === undefined || inCandidate === undefined
          ? null
          : [...inBaseline].filter((p) => !inCandidate.has(p)).sort();
    }
    return {
      at: now.toISOString(),
      missingCriticalProcesses: missing,
      collectorHealth: {
        baseline: this.health(id, 'baseline', request.runStartedAt, now),
        candidate: this.health(id, 'candidate', request.runStartedAt, now),
      },
      detail: { source: 'local data plane' },
    };
  }

  private patterns(criticalProcesses: readonly string[]) {
    return criticalProcesses.flatMap((p) => {
      const check = compileCollectorRegex(p);
      return check.ok ? [check.regex] : [];
    });
  }

  private health(id: string, variant: Variant, from: Date, to: Date): CollectorHealth {
    const record = this.plane.health(id, variant);
    if (record === undefined) return { restarts: null, droppedPoints: null };
    const within = (at: number) => at > from.getTime() && at <= to.getTime();
    return {
      restarts: record.restartsAt.filter(within).length,
      droppedPoints: record.dropsAt.filter((d) => within(d.at)).reduce((n, d) => n + d.points, 0),
    };
  }
}

import type { AnalysisRequest, Analyzer } from '../application/ports/analyzer.js';
import { compileCollectorRegex } from '../domain/pipelines/index.js';
import type { Measurements, VariantMeasurement } from '../domain/verdict.js';
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

/**
 * The `local` analyzer: the same measurements as the Prometheus analyzer, read from the local data
 * plane's output for both variants at one instant of the shared simulated fleet (the data plane keeps
 * no history, so the window is recorded but the figures are those of the last scrape of each variant).
 * Critical processes are matched with the experiment's patterns against the executables each variant
 * exported per node.
 */
export class LocalAnalyzer implements Analyzer {
  constructor(private readonly plane: LocalDataPlane) {}

  async measure(request: AnalysisRequest): Promise<Measurements> {
    const baseline = this.plane.snapshot(request.experimentId, 'baseline');
    const candidate = this.plane.snapshot(request.experimentId, 'candidate');
    const patterns = request.spec.criticalProcesses.flatMap((p) => {
      const check = compileCollectorRegex(p);
      return check.ok ? [check.regex] : [];
    });
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
    return {
      baseline: figures(baseline),
      candidate: figures(candidate),
      criticalInBaseline,
      missingCriticalProcesses: missing,
      evidence: {
        source: 'local data plane',
        window: { start: request.window.start.toISOString(), end: request.window.end.toISOString() },
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
}

import type { AnalysisRequest, Analyzer } from '../application/ports/analyzer.js';
import type { UsageSource } from '../application/ports/deployer.js';
import type { Variant } from '../domain/experiment-spec.js';
import type { ProcessUsageTable } from '../domain/pipelines/index.js';
import type { Measurements, VariantMeasurement } from '../domain/verdict.js';

/**
 * The `prometheus` analyzer: PromQL over Prometheus's HTTP API (`/api/v1/query`), as in the reference.
 * Both variants are measured over the same range — the run's window less its warm-up, ending no later
 * than now — evaluated at the range's end:
 *
 * - series: distinct process series of the variant seen in the range;
 * - data points per minute: the collector's `otelcol_exporter_sent_metric_points` rate (the busiest
 *   exporter, since every exporter sends the same points), summed over the variant's collectors;
 * - collector overhead: `otelcol_process_cpu_seconds` rate (cores) and resident memory, summed over the
 *   variant's shards (a variant the otelcol deployer runs as several collectors, each target labelled
 *   `shard`), averaged within a shard (a collector replaced during the range is not counted twice, and
 *   collectors without the label, as a DaemonSet's, stay one average per collector);
 * - critical processes: (node, executable) pairs matching the experiment's patterns in the baseline,
 *   `unless on (node, executable)` the candidate's (whichever shard a node's series came through).
 *
 * Every series must carry `experiment_id` and `variant` labels (the rendered configs set them on the
 * process series; a Kubernetes scrape config copies them onto the collector's own metrics from the pod
 * labels, the otelcol deployer's file_sd targets carry them). Collector v0.165 exports its own metrics
 * without unit or `_total` suffixes (`otelcol_process_cpu_seconds`, `otelcol_process_memory_rss`,
 * `otelcol_exporter_sent_metric_points`, seen through a real Prometheus in
 * test/otelcol-deployer.int.test.ts); the optional suffixes keep older collectors working. An empty answer is no data (null), never zero — except a variant whose collector reports
 * but exports no process series, which really exported 0 series.
 */

export interface PrometheusAnalyzerOptions {
  /** Base URL, e.g. http://prometheus:9090 (PROMETHEUS_URL). */
  readonly url: string;
  /** Excluded from the window's start, capped at a quarter of the window; default 60. */
  readonly warmupSeconds?: number;
  readonly timeoutMs?: number;
  readonly labels?: {
    readonly experiment?: string;
    readonly variant?: string;
    readonly node?: string;
    /** The label that tells a variant's collectors (shards) apart; `shard` unless said. */
    readonly shard?: string;
  };
  readonly fetch?: typeof fetch;
  readonly clock?: () => Date;
}

interface Sample {
  readonly metric: Record<string, string>;
  readonly value: number;
}

export class PrometheusQueryError extends Error {
  constructor(
    message: string,
    readonly query: string,
  ) {
    super(message);
    this.name = 'PrometheusQueryError';
  }
}

/** A PromQL string literal (double-quoted). */
export const promString = (value: string): string =>
  `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;

/**
 * The experiment's patterns as one PromQL regex. PromQL anchors a regex at both ends; the collector's
 * patterns match anywhere (as Go's MatchString), so each is wrapped in `.*(?:…).*`.
 */
export const criticalRegex = (patterns: readonly string[]): string =>
  patterns.map((p) => `.*(?:${p}).*`).join('|');

export class PrometheusAnalyzer implements Analyzer, UsageSource {
  private readonly base: string;
  private readonly fetchFn: typeof fetch;
  private readonly clock: () => Date;
  private readonly label: { experiment: string; variant: string; node: string; shard: string };

  constructor(private readonly options: PrometheusAnalyzerOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.fetchFn = options.fetch ?? fetch;
    this.clock = options.clock ?? (() => new Date());
    this.label = {
      experiment: options.labels?.experiment ?? 'experiment_id',
      variant: options.labels?.variant ?? 'variant',
      node: options.labels?.node ?? 'k8s_node_name',
      shard: options.labels?.shard ?? 'shard',
    };
  }

  /** The range measured for a run's window: warm-up excluded, clamped to now; null when nothing is left. */
  measuredRange(window: AnalysisRequest['window']): { start: Date; end: Date; warmupSeconds: number } | null {
    const length = (window.end.getTime() - window.start.getTime()) / 1000;
    const warmupSeconds = Math.min(this.options.warmupSeconds ?? 60, Math.floor(length / 4));
    const start = new Date(window.start.getTime() + warmupSeconds * 1000);
    const end = new Date(Math.min(window.end.getTime(), this.clock().getTime()));
    return end.getTime() - start.getTime() < 1000 ? null : { start, end, warmupSeconds };
  }

  async measure(request: AnalysisRequest): Promise<Measurements> {
    const range = this.measuredRange(request.window);
    const window = {
      requested: { start: request.window.start.toISOString(), end: request.window.end.toISOString() },
    };
    if (range === null) {
      const none: VariantMeasurement = {
        series: null,
        datapointsPerMinute: null,
        collectorCpuCores: null,
        collectorMemoryBytes: null,
      };
      return {
        baseline: none,
        candidate: none,
        criticalInBaseline: null,
        missingCriticalProcesses: [],
        evidence: {
          source: 'prometheus',
          window,
          note: 'the window is too short once the warm-up is excluded',
        },
      };
    }
    const seconds = Math.max(1, Math.floor((range.end.getTime() - range.start.getTime()) / 1000));
    const r = `[${seconds}s]`;
    const at = range.end;
    const sel = (variant: Variant, name: string, extra = '') =>
      `{__name__=~${promString(name)},${this.label.experiment}=${promString(request.experimentId)},${this.label.variant}=${promString(variant)}${extra}}`;
    const queriesFor = (variant: Variant) => ({
      series: `count(last_over_time(${sel(variant, 'process_.+')}${r}))`,
      datapointsPerMinute: `max(sum by (exporter) (rate(${sel(variant, 'otelcol_exporter_sent_metric_points(_total)?')}${r}))) * 60`,
      collectorCpuCores: `sum(avg by (${this.label.shard}) (rate(${sel(variant, 'otelcol_process_cpu_seconds(_total)?')}${r})))`,
      collectorMemoryBytes: `sum(avg by (${this.label.shard}) (avg_over_time(${sel(variant, 'otelcol_process_memory_rss(_bytes)?')}${r})))`,
    });
    const queries = { baseline: queriesFor('baseline'), candidate: queriesFor('candidate') };
    const scalar = async (query: string): Promise<number | null> => {
      const samples = await this.query(query, at);
      const v = samples[0]?.value;
      return v === undefined || Number.isNaN(v) ? null : v;
    };
    const measureVariant = async (q: ReturnType<typeof queriesFor>): Promise<VariantMeasurement> => {
      const [series, datapointsPerMinute, collectorCpuCores, collectorMemoryBytes] = await Promise.all([
        scalar(q.series),
        scalar(q.datapointsPerMinute),
        scalar(q.collectorCpuCores),
        scalar(q.collectorMemoryBytes),
      ]);
      // A collector that reports but exports no process series exported 0, which is data.
      const collectorSeen = datapointsPerMinute !== null || collectorCpuCores !== null;
      return {
        series: series ?? (collectorSeen ? 0 : null),
        datapointsPerMinute,
        collectorCpuCores,
        collectorMemoryBytes,
      };
    };
    const [baseline, candidate] = await Promise.all([
      measureVariant(queries.baseline),
      measureVariant(queries.candidate),
    ]);

    let criticalInBaseline: string[] | null = null;
    let missingCriticalProcesses: string[] = [];
    let criticalQueries: Record<string, string> | undefined;
    const patterns = request.spec.criticalProcesses;
    if (baseline.series !== null) {
      if (patterns.length === 0) {
        criticalInBaseline = [];
      } else {
        const node = this.label.node;
        const match = `,process_executable_name=~${promString(criticalRegex(patterns))}`;
        const pairs = (variant: Variant) =>
          `count by (${node}, process_executable_name) (last_over_time(${sel(variant, 'process_.+', match)}${r}))`;
        const inBaselineQuery = pairs('baseline');
        const missingQuery = `${pairs('baseline')} unless on (${node}, process_executable_name) ${pairs('candidate')}`;
        criticalQueries = { inBaseline: inBaselineQuery, missing: missingQuery };
        const key = (s: Sample) => `${s.metric[node] ?? '?'}/${s.metric.process_executable_name ?? '?'}`;
        const [present, missing] = await Promise.all([
          this.query(inBaselineQuery, at),
          candidate.series === null ? Promise.resolve([]) : this.query(missingQuery, at),
        ]);
        criticalInBaseline = present.map(key).sort();
        missingCriticalProcesses = missing.map(key).sort();
      }
    }
    return {
      baseline,
      candidate,
      criticalInBaseline,
      missingCriticalProcesses,
      evidence: {
        source: 'prometheus',
        prometheus: this.base,
        window: {
          ...window,
          measured: { start: range.start.toISOString(), end: range.end.toISOString() },
          warmupSeconds: range.warmupSeconds,
          rangeSeconds: seconds,
        },
        queries: { ...queries, ...(criticalQueries ? { criticalProcesses: criticalQueries } : {}) },
      },
    };
  }

  /**
   * Per-process usage of a variant over the last two minutes (for tuning top-k, intelligent, adaptive).
   * CPU is the process's rate of `process_cpu_time` in cores; the tuning reads it as a share of its
   * host, which is exact for one-core shares and keeps the ranking on bigger hosts.
   */
  async usage(experimentId: string, variant: Variant): Promise<ProcessUsageTable | undefined> {
    const node = this.label.node;
    const sel = (name: string) =>
      `{__name__=~${promString(name)},${this.label.experiment}=${promString(experimentId)},${this.label.variant}=${promString(variant)}}`;
    const by = `by (${node}, process_executable_name, process_pid)`;
    const now = this.clock();
    const [memory, cpu, series] = await Promise.all([
      this.query(`sum ${by} (last_over_time(${sel('process_memory_usage(_bytes)?')}[2m]))`, now),
      this.query(`sum ${by} (rate(${sel('process_cpu_time(_seconds)?(_total)?')}[2m]))`, now),
      this.query(`count ${by} (last_over_time(${sel('process_.+')}[2m]))`, now),
    ]);
    if (memory.length === 0) return undefined;
    const keyOf = (s: Sample) =>
      `${s.metric[node] ?? ''}\u0000${s.metric.process_executable_name ?? ''}\u0000${s.metric.process_pid ?? ''}`;
    const cpuBy = new Map(cpu.map((s) => [keyOf(s), s.value]));
    const seriesBy = new Map(series.map((s) => [keyOf(s), s.value]));
    const nodes = new Map<string, number>();
    const names = new Map<string, number>();
    const index = (map: Map<string, number>, k: string) => {
      let i = map.get(k);
      if (i === undefined) {
        i = map.size;
        map.set(k, i);
      }
      return i;
    };
    const n = memory.length;
    const table = {
      length: n,
      node: new Uint32Array(n),
      name: new Uint32Array(n),
      cpu: new Float64Array(n),
      memory: new Float64Array(n),
      series: new Uint16Array(n),
    };
    memory.forEach((s, i) => {
      table.node[i] = index(nodes, s.metric[node] ?? '');
      table.name[i] = index(names, s.metric.process_executable_name ?? '');
      table.memory[i] = s.value;
      table.cpu[i] = Math.max(0, cpuBy.get(keyOf(s)) ?? 0);
      table.series[i] = Math.min(65_535, seriesBy.get(keyOf(s)) ?? 7);
    });
    return { ...table, names: [...names.keys()] };
  }

  /** An instant query; throws on transport errors and Prometheus errors (the worker retries). */
  async query(query: string, time: Date): Promise<Sample[]> {
    const url = new URL(`${this.base}/api/v1/query`);
    url.searchParams.set('query', query);
    url.searchParams.set('time', (time.getTime() / 1000).toFixed(3));
    const response = await this.fetchFn(url, {
      signal: AbortSignal.timeout(this.options.timeoutMs ?? 30_000),
      headers: { accept: 'application/json' },
    });
    const text = await response.text();
    let body: {
      status?: string;
      error?: string;
      errorType?: string;
      data?: { resultType?: string; result?: { metric: Record<string, string>; value: [number, string] }[] };
    };
    try {
      body = JSON.parse(text);
    } catch {
      throw new PrometheusQueryError(`Prometheus answered ${response.status} with no JSON`, query);
    }
    if (body.status !== 'success')
      throw new PrometheusQueryError(
        `Prometheus ${response.status} ${body.errorType ?? ''}: ${body.error ?? 'query failed'}`,
        query,
      );
    if (body.data?.resultType !== 'vector') return [];
    return (body.data.result ?? []).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }
}

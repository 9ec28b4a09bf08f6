import {
  type AnalysisRequest,
  type Analyzer,
  measuredRange,
  type ProbeRequest,
} from '../application/ports/analyzer.js';
import type { UsageSource } from '../application/ports/deployer.js';
import { withLabelMatchers } from '../application/promql.js';
import type { CollectorHealth, ProbeFindings } from '../domain/early-abort.js';
import { VARIANTS, type Variant } from '../domain/experiment-spec.js';
import type { ProcessUsageTable } from '../domain/pipelines/index.js';
import type { HostSample, Measurements, VariantMeasurement } from '../domain/verdict.js';

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
  /** Smallest step of the range queries (per-host samples, compatibility queries); default 15. */
  readonly stepSeconds?: number;
  /** The step grows so that a host has at most this many samples per variant; default 120. */
  readonly maxSamplesPerHost?: number;
  /** Smallest window of the per-host rates (at least two steps); default 60. */
  readonly rateWindowSeconds?: number;
  /**
   * Collector health looks this much further back than the run's start, so that a restart right after
   * it is seen (a reset shows between two samples); about one scrape interval, default 15.
   */
  readonly healthLookbackSeconds?: number;
  /** How far back a probe looks for the variants' process series; default 120. */
  readonly probeLookbackSeconds?: number;
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
    /** The HTTP status Prometheus answered with (4xx: the query is at fault), when it answered. */
    readonly status?: number,
  ) {
    super(message);
    this.name = 'PrometheusQueryError';
  }
}

/** One entry of `evidence.queries`: a figure, the variant it is of, the PromQL and how many samples it gave. */
export interface QueryEvidence {
  readonly figure: string;
  readonly variant: Variant | null;
  readonly query: string;
  readonly samples: number;
}

interface RangeSeries {
  readonly metric: Record<string, string>;
  /** [unix seconds, value]. */
  readonly values: readonly (readonly [number, number])[];
}

// inputProcesses: a collector's telemetry does not say how many processes its scraper saw.
type HostFigure = Exclude<keyof HostSample, 'at' | 'host' | 'variant' | 'inputProcesses'>;

// Collector v0.165 exports its own metrics without unit or `_total` suffixes; older ones with them.
const SENT = 'otelcol_exporter_sent_metric_points(_total)?';
const CPU = 'otelcol_process_cpu_seconds(_total)?';
const RSS = 'otelcol_process_memory_rss(_bytes)?';
const ACCEPTED = 'otelcol_receiver_accepted_metric_points(_total)?';
const UPTIME = 'otelcol_process_uptime(_seconds)?(_total)?';
const DROPPED =
  'otelcol_exporter_send_failed_metric_points(_total)?|otelcol_receiver_refused_metric_points(_total)?|otelcol_processor_dropped_metric_points(_total)?|otelcol_processor_refused_metric_points(_total)?';

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
    return measuredRange(window, this.options.warmupSeconds ?? 60, this.clock());
  }

  /** The step of the range queries over a range this long: at least stepSeconds, at most ~maxSamples steps. */
  private stepFor(rangeSeconds: number): number {
    const min = this.options.stepSeconds ?? 15;
    return Math.max(min, Math.ceil(rangeSeconds / (this.options.maxSamplesPerHost ?? 120)));
  }

  /** Selector of a variant's series named by the regex `name`, with optional extra matchers. */
  private selector(experimentId: string, variant: Variant, name: string, extra = ''): string {
    return `{__name__=~${promString(name)},${this.label.experiment}=${promString(experimentId)},${this.label.variant}=${promString(variant)}${extra}}`;
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
        samples: [],
        queryResults: (request.spec.compatibilityQueries ?? []).map((q) => ({
          name: q.name,
          query: q.query,
          baseline: null,
          candidate: null,
          error: 'the window is too short once the warm-up is excluded',
        })),
        evidence: {
          source: 'prometheus',
          window,
          queries: [],
          note: 'the window is too short once the warm-up is excluded',
        },
      };
    }
    const seconds = Math.max(1, Math.floor((range.end.getTime() - range.start.getTime()) / 1000));
    const r = `[${seconds}s]`;
    const at = range.end;
    const evidence: QueryEvidence[] = [];
    const sel = (variant: Variant, name: string, extra = '') =>
      this.selector(request.experimentId, variant, name, extra);
    const queriesFor = (variant: Variant) => ({
      series: `count(last_over_time(${sel(variant, 'process_.+')}${r}))`,
      datapointsPerMinute: `max(sum by (exporter) (rate(${sel(variant, SENT)}${r}))) * 60`,
      collectorCpuCores: `sum(avg by (${this.label.shard}) (rate(${sel(variant, CPU)}${r})))`,
      collectorMemoryBytes: `sum(avg by (${this.label.shard}) (avg_over_time(${sel(variant, RSS)}${r})))`,
    });
    const queries = { baseline: queriesFor('baseline'), candidate: queriesFor('candidate') };
    const scalar = async (query: string, figure: string, variant: Variant | null): Promise<number | null> => {
      const samples = await this.query(query, at);
      const v = samples[0]?.value;
      evidence.push({ figure, variant, query, samples: samples.length });
      return v === undefined || Number.isNaN(v) ? null : v;
    };
    const measureVariant = async (variant: Variant): Promise<VariantMeasurement> => {
      const q = queries[variant];
      const [series, datapointsPerMinute, collectorCpuCores, collectorMemoryBytes] = await Promise.all([
        scalar(q.series, 'series', variant),
        scalar(q.datapointsPerMinute, 'datapointsPerMinute', variant),
        scalar(q.collectorCpuCores, 'collectorCpuCores', variant),
        scalar(q.collectorMemoryBytes, 'collectorMemoryBytes', variant),
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
      measureVariant('baseline'),
      measureVariant('candidate'),
    ]);

    let criticalInBaseline: string[] | null = null;
    let missingCriticalProcesses: string[] = [];
    const patterns = request.spec.criticalProcesses;
    if (baseline.series !== null) {
      if (patterns.length === 0) {
        criticalInBaseline = [];
      } else {
        const critical = await this.critical(
          request.experimentId,
          patterns,
          r,
          at,
          candidate.series !== null,
        );
        evidence.push(...critical.evidence);
        criticalInBaseline = critical.inBaseline;
        missingCriticalProcesses = critical.missing;
      }
    }
    const step = this.stepFor(seconds);
    const [samples, health, seriesByExecutable, queryResults] = await Promise.all([
      this.hostSamples(request.experimentId, range, step, evidence),
      Promise.all(
        VARIANTS.map((v) => this.health(request.experimentId, v, request.window.start, range.end, evidence)),
      ),
      this.seriesByExecutable(request.experimentId, r, at, evidence),
      this.compatibility(request, range, step, evidence),
    ]);
    return {
      baseline,
      candidate,
      criticalInBaseline,
      missingCriticalProcesses,
      samples,
      seriesByExecutable,
      collectorHealth: { baseline: health[0] as CollectorHealth, candidate: health[1] as CollectorHealth },
      queryResults,
      evidence: {
        source: 'prometheus',
        prometheus: this.base,
        window: {
          ...window,
          measured: { start: range.start.toISOString(), end: range.end.toISOString() },
          warmupSeconds: range.warmupSeconds,
          rangeSeconds: seconds,
          stepSeconds: step,
        },
        queries: evidence,
      },
    };
  }

  /** Critical (node, executable) pairs in the baseline over `r`, and those the candidate lacks. */
  private async critical(
    experimentId: string,
    patterns: readonly string[],
    r: string,
    at: Date,
    candidateSeen: boolean,
  ): Promise<{ inBaseline: string[]; missing: string[]; evidence: QueryEvidence[] }> {
    const node = this.label.node;
    const match = `,process_executable_name=~${promString(criticalRegex(patterns))}`;
    const pairs = (variant: Variant) =>
      `count by (${node}, process_executable_name) (last_over_time(${this.selector(experimentId, variant, 'process_.+', match)}${r}))`;
    const inBaselineQuery = pairs('baseline');
    const missingQuery = `${pairs('baseline')} unless on (${node}, process_executable_name) ${pairs('candidate')}`;
    const key = (s: Sample) => `${s.metric[node] ?? '?'}/${s.metric.process_executable_name ?? '?'}`;
    const [present, missing] = await Promise.all([
      this.query(inBaselineQuery, at),
      candidateSeen ? this.query(missingQuery, at) : Promise.resolve([]),
    ]);
    return {
      inBaseline: present.map(key).sort(),
      missing: missing.map(key).sort(),
      evidence: [
        {
          figure: 'criticalInBaseline',
          variant: 'baseline',
          query: inBaselineQuery,
          samples: present.length,
        },
        ...(candidateSeen
          ? [
              {
                figure: 'missingCriticalProcesses',
                variant: 'candidate' as const,
                query: missingQuery,
                samples: missing.length,
              },
            ]
          : []),
      ],
    };
  }

  /**
   * Every host's figures per variant at each step of the range. Hosts are told apart by the node label
   * the rendered configs put on the process series (`k8s.node.name` → k8s_node_name) and the collector's
   * own telemetry carries when it runs per node (a DaemonSet's pod labels, the local data plane). A
   * collector serving many hosts (the otelcol deployer's shards) has no node label on its telemetry:
   * its hosts get null collector figures, never a share guessed for them.
   */
  private async hostSamples(
    experimentId: string,
    range: { start: Date; end: Date },
    step: number,
    evidence: QueryEvidence[],
  ): Promise<HostSample[]> {
    const node = this.label.node;
    // A rate needs two scrapes in its window: at least two steps, and the configured minimum.
    const w = `[${Math.max(2 * step, this.options.rateWindowSeconds ?? 60)}s]`;
    const figures = (variant: Variant) => {
      const sel = (name: string) => this.selector(experimentId, variant, name);
      return {
        series: `count by (${node}) (last_over_time(${sel('process_.+')}${w}))`,
        datapointsPerMinute: `max by (${node}) (sum by (${node}, exporter) (rate(${sel(SENT)}${w}))) * 60`,
        collectorCpuCores: `sum by (${node}) (rate(${sel(CPU)}${w}))`,
        collectorMemoryBytes: `sum by (${node}) (avg_over_time(${sel(RSS)}${w}))`,
        inputPointsPerMinute: `sum by (${node}) (rate(${sel(ACCEPTED)}${w})) * 60`,
      } satisfies Record<HostFigure, string>;
    };
    const out: HostSample[] = [];
    await Promise.all(
      VARIANTS.map(async (variant) => {
        const q = figures(variant);
        const names = Object.keys(q) as HostFigure[];
        const matrices = await Promise.all(
          names.map((figure) => this.queryRange(q[figure], range.start, range.end, step)),
        );
        // host → time → figure → value
        const byHost = new Map<string, Map<number, Partial<Record<HostFigure, number>>>>();
        names.forEach((figure, i) => {
          const matrix = matrices[i] as RangeSeries[];
          evidence.push({
            figure: `host:${figure}`,
            variant,
            query: q[figure],
            samples: matrix.reduce((n, m) => n + m.values.length, 0),
          });
          for (const m of matrix) {
            const host = m.metric[node];
            if (!host) continue;
            let times = byHost.get(host);
            if (times === undefined) {
              times = new Map();
              byHost.set(host, times);
            }
            for (const [t, v] of m.values) {
              if (Number.isNaN(v)) continue;
              const row = times.get(t) ?? {};
              row[figure] = v;
              times.set(t, row);
            }
          }
        });
        for (const [host, times] of byHost) {
          for (const [t, row] of [...times].sort((a, b) => a[0] - b[0])) {
            const collectorSeen =
              row.datapointsPerMinute !== undefined || row.collectorCpuCores !== undefined;
            out.push({
              at: new Date(t * 1000).toISOString(),
              host,
              variant,
              // A collector that reports for the host but exports no process series there exported 0.
              series: row.series ?? (collectorSeen ? 0 : null),
              datapointsPerMinute: row.datapointsPerMinute ?? null,
              collectorCpuCores: row.collectorCpuCores ?? null,
              collectorMemoryBytes: row.collectorMemoryBytes ?? null,
              inputPointsPerMinute: row.inputPointsPerMinute ?? null,
            });
          }
        }
      }),
    );
    return out.sort((a, b) =>
      a.variant !== b.variant
        ? a.variant < b.variant
          ? -1
          : 1
        : a.host !== b.host
          ? a.host < b.host
            ? -1
            : 1
          : a.at < b.at
            ? -1
            : a.at > b.at
              ? 1
              : 0,
    );
  }

  /**
   * A variant's collector health from `from` to `to`: restarts are resets of its uptime counter; dropped
   * points are the largest values over the range of its failed-export, refused and dropped counters
   * (their totals since the collector started, which is the run's start: a counter that first appears
   * mid-run is counted, which `increase` would miss). Null when the collector's telemetry is not there.
   */
  private async health(
    experimentId: string,
    variant: Variant,
    from: Date,
    to: Date,
    evidence: QueryEvidence[],
  ): Promise<CollectorHealth> {
    // Back by one scrape: a reset is seen between two samples, and the one before the first restart
    // inside the window lies before it.
    const lookback = this.options.healthLookbackSeconds ?? 15;
    const r = `[${Math.max(1, Math.floor((to.getTime() - from.getTime()) / 1000) + lookback)}s]`;
    const sel = (name: string) => this.selector(experimentId, variant, name);
    const seenQuery = `count(last_over_time(${sel(UPTIME)}${r}))`;
    const restartsQuery = `sum(resets(${sel(UPTIME)}${r}))`;
    const droppedQuery = `sum(max_over_time(${sel(DROPPED)}${r}))`;
    const [seen, restarts, dropped] = await Promise.all([
      this.query(seenQuery, to),
      this.query(restartsQuery, to),
      this.query(droppedQuery, to),
    ]);
    evidence.push(
      { figure: 'collectorRestarts', variant, query: restartsQuery, samples: restarts.length },
      { figure: 'collectorDroppedPoints', variant, query: droppedQuery, samples: dropped.length },
    );
    if (seen.length === 0) return { restarts: null, droppedPoints: null };
    // Failure counters appear only once something failed: no series is none dropped.
    return { restarts: restarts[0]?.value ?? 0, droppedPoints: dropped[0]?.value ?? 0 };
  }

  /** Series per executable (summed over hosts) of each variant over `r`. */
  private async seriesByExecutable(
    experimentId: string,
    r: string,
    at: Date,
    evidence: QueryEvidence[],
  ): Promise<Record<Variant, Record<string, number>>> {
    const out = {} as Record<Variant, Record<string, number>>;
    await Promise.all(
      VARIANTS.map(async (variant) => {
        const query = `count by (process_executable_name) (last_over_time(${this.selector(experimentId, variant, 'process_.+')}${r}))`;
        const samples = await this.query(query, at);
        evidence.push({ figure: 'seriesByExecutable', variant, query, samples: samples.length });
        const byName: Record<string, number> = {};
        for (const s of samples) byName[s.metric.process_executable_name ?? ''] = s.value;
        out[variant] = byName;
      }),
    );
    return out;
  }

  /**
   * Each compatibility query against each variant over the range: the query with the variant's
   * experiment and variant matchers injected into every selector, at the range's step; its value is the
   * mean over the steps of the result's sum (null: it returned nothing). A query Prometheus refuses
   * gets its error; a Prometheus that cannot be reached throws (the analysis is retried).
   */
  private async compatibility(
    request: AnalysisRequest,
    range: { start: Date; end: Date },
    step: number,
    evidence: QueryEvidence[],
  ): Promise<NonNullable<Measurements['queryResults']>> {
    return Promise.all(
      (request.spec.compatibilityQueries ?? []).map(async (q) => {
        const result: {
          name: string;
          query: string;
          baseline: number | null;
          candidate: number | null;
          error?: string;
        } = { name: q.name, query: q.query, baseline: null, candidate: null };
        const errors: string[] = [];
        await Promise.all(
          VARIANTS.map(async (variant) => {
            let scoped: string;
            try {
              scoped = withLabelMatchers(q.query, {
                [this.label.experiment]: request.experimentId,
                [this.label.variant]: variant,
              });
            } catch (err) {
              errors.push(`${variant}: ${(err as Error).message}`);
              return;
            }
            try {
              const matrix = await this.queryRange(scoped, range.start, range.end, step);
              const sums = new Map<number, number>();
              for (const m of matrix)
                for (const [t, v] of m.values) if (!Number.isNaN(v)) sums.set(t, (sums.get(t) ?? 0) + v);
              evidence.push({ figure: `query:${q.name}`, variant, query: scoped, samples: sums.size });
              result[variant] =
                sums.size === 0 ? null : [...sums.values()].reduce((a, b) => a + b, 0) / sums.size;
            } catch (err) {
              if (!(err instanceof PrometheusQueryError) || err.status === undefined || err.status >= 500)
                throw err;
              evidence.push({ figure: `query:${q.name}`, variant, query: scoped, samples: 0 });
              errors.push(`${variant}: ${err.message}`);
            }
          }),
        );
        return errors.length > 0 ? { ...result, error: errors.join('; ') } : result;
      }),
    );
  }

  /**
   * The probe of a running experiment: critical processes the baseline exported in the last
   * `probeLookbackSeconds` (default 120) that the candidate did not, and collector health since the run
   * started. The candidate's prometheus exporter keeps a vanished series for its metric_expiration
   * (5 minutes by default), so a process is found missing that much later than it went.
   */
  async probe(request: ProbeRequest): Promise<ProbeFindings> {
    const now = this.clock();
    const id = request.experimentId;
    const evidence: QueryEvidence[] = [];
    const lookback = `[${this.options.probeLookbackSeconds ?? 120}s]`;
    let missing: string[] | null = [];
    if (request.spec.criticalProcesses.length > 0) {
      const baselineSeen = await this.query(
        `count(last_over_time(${this.selector(id, 'baseline', 'process_.+')}${lookback}))`,
        now,
      );
      const candidateSeen = await this.query(
        `count(last_over_time(${this.selector(id, 'candidate', 'process_.+')}${lookback}))`,
        now,
      );
      if (baselineSeen.length === 0 || candidateSeen.length === 0) missing = null;
      else {
        const critical = await this.critical(id, request.spec.criticalProcesses, lookback, now, true);
        evidence.push(...critical.evidence);
        missing = critical.missing;
      }
    }
    const from =
      request.runStartedAt.getTime() < now.getTime() ? request.runStartedAt : new Date(now.getTime() - 1000);
    const [baseline, candidate] = await Promise.all(
      VARIANTS.map((v) => this.health(id, v, from, now, evidence)),
    );
    return {
      at: now.toISOString(),
      missingCriticalProcesses: missing,
      collectorHealth: { baseline: baseline as CollectorHealth, candidate: candidate as CollectorHealth },
      detail: { source: 'prometheus', queries: evidence },
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
    const data = await this.request('query', query, { time: (time.getTime() / 1000).toFixed(3) });
    if (data.resultType !== 'vector') return [];
    return ((data.result ?? []) as { metric: Record<string, string>; value: [number, string] }[]).map(
      (r) => ({
        metric: r.metric,
        value: Number(r.value[1]),
      }),
    );
  }

  /** A range query (`/api/v1/query_range`); throws as `query` does. */
  async queryRange(query: string, start: Date, end: Date, stepSeconds: number): Promise<RangeSeries[]> {
    const data = await this.request('query_range', query, {
      start: (start.getTime() / 1000).toFixed(3),
      end: (end.getTime() / 1000).toFixed(3),
      step: String(stepSeconds),
    });
    if (data.resultType !== 'matrix') return [];
    return ((data.result ?? []) as { metric: Record<string, string>; values: [number, string][] }[]).map(
      (r) => ({ metric: r.metric, values: r.values.map(([t, v]) => [t, Number(v)] as const) }),
    );
  }

  private async request(
    endpoint: 'query' | 'query_range',
    query: string,
    params: Record<string, string>,
  ): Promise<{ resultType?: string; result?: unknown[] }> {
    const url = new URL(`${this.base}/api/v1/${endpoint}`);
    url.searchParams.set('query', query);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    const response = await this.fetchFn(url, {
      signal: AbortSignal.timeout(this.options.timeoutMs ?? 30_000),
      headers: { accept: 'application/json' },
    });
    const text = await response.text();
    let body: {
      status?: string;
      error?: string;
      errorType?: string;
      data?: { resultType?: string; result?: unknown[] };
    };
    try {
      body = JSON.parse(text);
    } catch {
      throw new PrometheusQueryError(
        `Prometheus answered ${response.status} with no JSON`,
        query,
        response.status,
      );
    }
    if (body.status !== 'success')
      throw new PrometheusQueryError(
        `Prometheus ${response.status} ${body.errorType ?? ''}: ${body.error ?? 'query failed'}`,
        query,
        response.status,
      );
    return body.data ?? {};
  }
}

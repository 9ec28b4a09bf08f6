import client from 'prom-client';
import type { ExperimentView, ReadModels } from '../application/ports/read-models.js';
import type { ExperimentStatus } from '../domain/experiment.js';
import type { Analysis, FigureName } from '../domain/experiment-spec.js';

/**
 * The verdicts on /metrics, so that alerts and Grafana can use them: per experiment, what its
 * `analysis` holds (the same numbers the API returns, percentages as percentages).
 *
 * Read from the read model when Prometheus scrapes (prom-client `collect`), not kept up to date from
 * events: a scrape reuses what the previous one read for `refreshMs`, so the database sees one bounded
 * read per interval whatever the scrape rate. The cost is bounded by a cap:
 * - only experiments with an analysis (completed, or failed with one) whose end lies within
 *   `maxAgeDays`;
 * - the newest `maxExperiments` of them by end time (0 exports none), looked for among the newest
 *   `SCAN_PAGES × maxExperiments` completed and as many failed experiments;
 * - label values bounded: `experiment_id` (a UUID), `experiment` (the name, control characters
 *   replaced, at most 64 characters), and enumerations (`variant`, `verdict`, `figure`, `bound`,
 *   `scope`, `currency`, a test's name).
 * At most 42 series per experiment (with paired statistics and cost), so about 4,200 at the default cap
 * of 100: a scrape of them measured about 40 ms on a loaded 2-core machine (110 ms when it re-reads).
 *
 * The verdict is one series per experiment, `phoenix_experiment_verdict{verdict="pass|fail|inconclusive"} 1`
 * (the kube-state-metrics style of an enumeration): an alert is `phoenix_experiment_verdict{verdict="fail"}`,
 * a count by verdict is `count by (verdict) (phoenix_experiment_verdict)`, and a join on
 * `experiment_id` brings the verdict to any other figure.
 */

export interface ExperimentMetricsOptions {
  readonly readModels: Pick<ReadModels, 'listExperiments'>;
  /** At most this many experiments are exported, the most recently ended first (default 100; 0: none). */
  readonly maxExperiments?: number;
  /** Only experiments that ended within this many days (default 30). */
  readonly maxAgeDays?: number;
  /** A scrape within this long of the last read reuses it (default 10 s; 0: every scrape reads). */
  readonly refreshMs?: number;
  readonly clock?: () => Date;
  /** Told when the read model could not be read; the scrape then shows the previous figures. */
  readonly onError?: (err: unknown) => void;
}

export const EXPERIMENT_METRICS_DEFAULTS = {
  maxExperiments: 100,
  maxAgeDays: 30,
  refreshMs: 10_000,
} as const;

/** Pages of `maxExperiments` read per state at most, looking for analysed experiments. */
const SCAN_PAGES = 3;
/** The states an experiment holds an analysis in. */
const ANALYSED_STATES: readonly ExperimentStatus[] = ['completed', 'failed'];
const FIGURES: readonly FigureName[] = [
  'series',
  'datapointsPerMinute',
  'collectorCpuCores',
  'collectorMemoryBytes',
];
/** Figure names as label values, in the metrics' own style. */
const FIGURE_LABEL: Record<FigureName, string> = {
  series: 'series',
  datapointsPerMinute: 'datapoints_per_minute',
  collectorCpuCores: 'collector_cpu_cores',
  collectorMemoryBytes: 'collector_memory_bytes',
};
const NAME_MAX = 64;

/** The experiment's name as a label value: control characters replaced, at most 64 characters. */
export const experimentLabel = (name: string): string => {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: replacing them is the point
  const clean = name.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').trim();
  return clean.length <= NAME_MAX ? clean : `${clean.slice(0, NAME_MAX - 1)}…`;
};

/** One exported value: a metric, its labels beyond the experiment's, and the value. */
export interface ExperimentSample {
  readonly metric: ExperimentMetricName;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const METRICS = {
  phoenix_experiment_verdict: {
    help: 'The verdict of the experiment analysis: 1 on the series whose verdict label is the verdict',
    labels: ['verdict'],
  },
  phoenix_experiment_info: {
    help: 'Experiment facts as labels (state, templates), value 1: join on experiment_id',
    labels: ['state', 'baseline_template', 'candidate_template'],
  },
  phoenix_experiment_end_timestamp_seconds: {
    help: 'When the experiment ended (Unix seconds)',
    labels: [],
  },
  phoenix_experiment_series: {
    help: 'Process series each variant exported (analysis.baseline/candidate.series)',
    labels: ['variant'],
  },
  phoenix_experiment_datapoints_per_minute: {
    help: 'Data points per minute each variant exported',
    labels: ['variant'],
  },
  phoenix_experiment_series_reduction_percent: {
    help: 'Series (cardinality) reduction of the candidate against the baseline, in % (analysis.cardinalityReductionPct)',
    labels: [],
  },
  phoenix_experiment_datapoint_reduction_percent: {
    help: 'Data point reduction of the candidate against the baseline, in % (analysis.datapointReductionPct)',
    labels: [],
  },
  phoenix_experiment_collector_cpu_overhead_percent: {
    help: "Candidate collector CPU relative to the baseline's, in % (negative: cheaper)",
    labels: [],
  },
  phoenix_experiment_critical_process_loss_percent: {
    help: 'Critical processes of the baseline missing from the candidate, in % (analysis.criticalProcessLossPct)',
    labels: [],
  },
  phoenix_experiment_missing_critical_processes: {
    help: 'Critical (node, executable) pairs missing from the candidate',
    labels: [],
  },
  phoenix_experiment_change_percent: {
    help: 'Paired per-host change of a figure, candidate against baseline, in %: the estimate and its confidence interval (bound=estimate|low|high)',
    labels: ['figure', 'bound'],
  },
  phoenix_experiment_change_confidence: {
    help: 'Confidence of the interval of phoenix_experiment_change_percent (e.g. 0.95)',
    labels: ['figure'],
  },
  phoenix_experiment_change_p_value: {
    help: 'p-value of the paired test of a figure',
    labels: ['figure', 'test'],
  },
  phoenix_experiment_paired_hosts: {
    help: 'Hosts with paired samples behind the comparison of a figure',
    labels: ['figure'],
  },
  phoenix_experiment_monthly_saving: {
    help: 'Monthly net saving of the candidate, for the target or the whole fleet, with its interval (bound=estimate|low|high)',
    labels: ['scope', 'bound', 'currency', 'profile'],
  },
} as const satisfies Record<string, { help: string; labels: readonly string[] }>;

export type ExperimentMetricName = keyof typeof METRICS;
export const EXPERIMENT_METRIC_NAMES = Object.keys(METRICS) as ExperimentMetricName[];

const finite = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);

/** The collector CPU overhead the verdict judged: the criteria table's, else the evidence's. */
const cpuOverhead = (analysis: Analysis): number | null => {
  const check = analysis.checks?.find((c) => c.criterion === 'maxCollectorCpuOverheadPct');
  if (check) return check.value;
  const v = analysis.evidence?.collectorCpuOverheadPct;
  return typeof v === 'number' ? v : null;
};

/** What one experiment's analysis exports (without the experiment's own labels). Pure. */
export function experimentSamples(experiment: ExperimentView): ExperimentSample[] {
  const a = experiment.analysis;
  if (!a) return [];
  const out: ExperimentSample[] = [];
  const add = (
    metric: ExperimentMetricName,
    labels: Record<string, string>,
    value: number | null | undefined,
  ) => {
    if (finite(value)) out.push({ metric, labels, value });
  };
  add('phoenix_experiment_verdict', { verdict: a.verdict }, 1);
  add(
    'phoenix_experiment_info',
    {
      state: experiment.state,
      baseline_template: experiment.baseline.template,
      candidate_template: experiment.candidate.template,
    },
    1,
  );
  const ended = Date.parse(experiment.endedAt ?? experiment.updatedAt);
  add('phoenix_experiment_end_timestamp_seconds', {}, Number.isNaN(ended) ? null : ended / 1000);
  for (const variant of ['baseline', 'candidate'] as const) {
    add('phoenix_experiment_series', { variant }, a[variant].series);
    add('phoenix_experiment_datapoints_per_minute', { variant }, a[variant].datapointsPerMinute);
  }
  add('phoenix_experiment_series_reduction_percent', {}, a.cardinalityReductionPct);
  add('phoenix_experiment_datapoint_reduction_percent', {}, a.datapointReductionPct);
  add('phoenix_experiment_collector_cpu_overhead_percent', {}, cpuOverhead(a));
  add('phoenix_experiment_critical_process_loss_percent', {}, a.criticalProcessLossPct);
  add('phoenix_experiment_missing_critical_processes', {}, a.missingCriticalProcesses.length);
  for (const name of FIGURES) {
    const s = a.statistics?.[name];
    if (!s) continue;
    const figure = FIGURE_LABEL[name];
    add('phoenix_experiment_change_percent', { figure, bound: 'estimate' }, s.relativeChangePct);
    if (s.interval) {
      add('phoenix_experiment_change_percent', { figure, bound: 'low' }, s.interval.low);
      add('phoenix_experiment_change_percent', { figure, bound: 'high' }, s.interval.high);
      add('phoenix_experiment_change_confidence', { figure }, s.interval.confidence);
    }
    if (s.test) add('phoenix_experiment_change_p_value', { figure, test: s.test.name }, s.test.pValue);
    add('phoenix_experiment_paired_hosts', { figure }, s.hosts);
  }
  if (a.cost) {
    const { currency, profile } = a.cost;
    for (const scope of ['target', 'fleet'] as const) {
      const m = a.cost.monthly[scope];
      add('phoenix_experiment_monthly_saving', { scope, bound: 'estimate', currency, profile }, m.saving);
      add('phoenix_experiment_monthly_saving', { scope, bound: 'low', currency, profile }, m.low);
      add('phoenix_experiment_monthly_saving', { scope, bound: 'high', currency, profile }, m.high);
    }
  }
  return out;
}

const endOf = (e: ExperimentView): number => Date.parse(e.endedAt ?? e.updatedAt);

/**
 * The experiments to export: analysed, ended within the age limit, the most recently ended first,
 * at most `max`.
 */
async function exportedExperiments(
  readModels: Pick<ReadModels, 'listExperiments'>,
  max: number,
  cutoff: number,
): Promise<ExperimentView[]> {
  if (max <= 0) return [];
  const found: ExperimentView[] = [];
  for (const state of ANALYSED_STATES) {
    let cursor: string | undefined;
    let kept = 0;
    for (let page = 0; page < SCAN_PAGES; page++) {
      const { items, nextCursor } = await readModels.listExperiments({
        state,
        limit: max,
        ...(cursor !== undefined ? { cursor } : {}),
      });
      for (const e of items) {
        if (e.analysis && endOf(e) >= cutoff) {
          found.push(e);
          kept++;
        }
      }
      if (nextCursor === null || kept >= max) break;
      cursor = nextCursor;
    }
  }
  return found.sort((x, y) => endOf(y) - endOf(x) || (x.id < y.id ? -1 : 1)).slice(0, max);
}

interface Snapshot {
  readonly at: number;
  readonly samples: ReadonlyMap<
    ExperimentMetricName,
    readonly { labels: Record<string, string>; value: number }[]
  >;
}

/**
 * Registers the per-experiment metrics on `registry`; their values are read from the read model
 * when the registry is collected.
 */
export function registerExperimentMetrics(
  registry: client.Registry,
  options: ExperimentMetricsOptions,
): void {
  const max = options.maxExperiments ?? EXPERIMENT_METRICS_DEFAULTS.maxExperiments;
  const maxAgeMs = (options.maxAgeDays ?? EXPERIMENT_METRICS_DEFAULTS.maxAgeDays) * 86_400_000;
  const refreshMs = options.refreshMs ?? EXPERIMENT_METRICS_DEFAULTS.refreshMs;
  const clock = options.clock ?? (() => new Date());

  let last: Snapshot | undefined;
  let inFlight: Promise<void> | undefined;

  const read = async (): Promise<Snapshot> => {
    const now = clock().getTime();
    const experiments = await exportedExperiments(options.readModels, max, now - maxAgeMs);
    const samples = new Map<ExperimentMetricName, { labels: Record<string, string>; value: number }[]>();
    for (const e of experiments) {
      const own = { experiment_id: e.id, experiment: experimentLabel(e.name) };
      for (const s of experimentSamples(e)) {
        const list = samples.get(s.metric) ?? [];
        list.push({ labels: { ...own, ...s.labels }, value: s.value });
        samples.set(s.metric, list);
      }
    }
    return { at: now, samples };
  };

  // Every metric's collect runs in the same scrape (prom-client collects them together): they share
  // one read, and one read serves scrapes for refreshMs.
  const snapshot = async (): Promise<Snapshot | undefined> => {
    if (last && clock().getTime() - last.at < refreshMs) return last;
    inFlight ??= read()
      .then(
        (read) => {
          last = read;
        },
        (err: unknown) => options.onError?.(err),
      )
      .finally(() => {
        inFlight = undefined;
      });
    await inFlight;
    return last;
  };

  for (const name of EXPERIMENT_METRIC_NAMES) {
    const spec = METRICS[name];
    // The snapshot this gauge holds: a scrape that reuses it leaves the gauge as it is.
    let applied: Snapshot | undefined;
    new client.Gauge({
      name,
      help: spec.help,
      labelNames: ['experiment_id', 'experiment', ...spec.labels],
      registers: [registry],
      async collect() {
        const current = await snapshot();
        if (current === applied) return;
        applied = current;
        this.reset();
        for (const { labels, value } of current?.samples.get(name) ?? []) this.set(labels, value);
      },
    });
  }
}

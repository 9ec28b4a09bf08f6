import { type OTTL_AGGREGATIONS, ottlString } from './ottl.js';
import type { TemplateName, TemplateParams } from './params.js';
import { quoteMeta, unionPattern } from './regex.js';

/**
 * What the control plane learned from the baseline and feeds back into a render. Templates that cannot
 * be expressed by a stock processor on their own (top-k, intelligent, adaptive) are completed by it:
 * see {@link TEMPLATE_DEFINITIONS}.
 */
export interface Tuning {
  /** Executable names to keep (top-k, intelligent); critical processes are kept regardless. */
  readonly keepList?: readonly string[];
  /** Data-point thresholds (adaptive). */
  readonly thresholds?: { readonly cpuUtilization: number; readonly memoryBytes: number };
}

/** How a template depends on tuning: `none` renders final configs; the others render a safe bootstrap without it. */
export type TuningKind = 'none' | 'keepList' | 'thresholds';

/** The part of a collector config that differs between templates; render.ts assembles the rest. */
export interface TemplateParts {
  /** `metrics.<name>.enabled` of the process scraper, for every metric the template sets. */
  readonly metrics: Readonly<Record<string, boolean>>;
  /** `resource_attributes.<name>.enabled` overrides of the process scraper. */
  readonly resourceAttributes: Readonly<Record<string, boolean>>;
  /** Processors between the fixed head (memory_limiter, resource) and the fixed tail (batch), in order. */
  readonly processors: readonly (readonly [id: string, config: Record<string, unknown>])[];
}

export interface TemplateContext {
  /** Critical-process patterns: the experiment's and the template's, deduplicated. */
  readonly critical: readonly string[];
  readonly tuning: Tuning | undefined;
}

interface TemplateDefinition<N extends TemplateName> {
  readonly name: N;
  readonly description: string;
  readonly tuning: TuningKind;
  readonly build: (params: TemplateParams<N>, ctx: TemplateContext) => TemplateParts;
}

const EXE = 'process.executable.name';
/** The name every non-critical process takes in the minimal template's per-node rollup. */
export const ROLLUP_PROCESS_NAME = 'other_processes';

const DEFAULT_METRICS_ON = {
  'process.cpu.time': true,
  'process.memory.usage': true,
  'process.memory.virtual': true,
  'process.disk.io': true,
} as const;

/** Gauges only: summing cumulative counters across processes fakes resets when one member exits. */
const GAUGE_METRICS = {
  'process.cpu.time': false,
  'process.cpu.utilization': true,
  'process.memory.usage': true,
  'process.memory.virtual': false,
  'process.disk.io': false,
} as const;

/** The longest labels the scraper adds; they never distinguish series that the pid does not. */
const TRIM_COMMAND = { 'process.command': false, 'process.command_line': false } as const;

/** Everything but the pid and the name: what must go for same-name processes to merge into one resource. */
const IDENTITY_ONLY = {
  'process.parent_pid': false,
  'process.executable.path': false,
  'process.command': false,
  'process.command_line': false,
  'process.owner': false,
} as const;

/** `IsMatch(<path>, "<pattern>")`, or undefined when there is nothing to match. */
const isMatch = (path: string, patterns: readonly string[]): string | undefined => {
  const union = unionPattern(patterns);
  return union === undefined ? undefined : `IsMatch(${path}, ${ottlString(union)})`;
};

const and = (...parts: (string | undefined)[]): string => {
  const present = parts.filter((p): p is string => p !== undefined);
  return present.length === 0 ? 'true' : present.join(' and ');
};

const not = (expr: string | undefined): string | undefined =>
  expr === undefined ? undefined : `not ${expr}`;

/** ` where <cond>` when there is a condition; editors without one apply to everything. */
const where = (statement: string, cond: string | undefined): string =>
  cond === undefined ? statement : `${statement} where ${cond}`;

/** A filter that drops every process whose name matches neither a critical pattern nor the keep-list. */
const keepListFilter = (ctx: TemplateContext): Record<string, unknown> => {
  const keep = ctx.tuning?.keepList ?? [];
  const keepPattern = keep.length > 0 ? [`^(?:${keep.map(quoteMeta).join('|')})$`] : [];
  return {
    error_mode: 'ignore',
    metrics: {
      metric: [
        and(not(isMatch(`resource.attributes[${ottlString(EXE)}]`, [...ctx.critical, ...keepPattern]))),
      ],
    },
  };
};

const notCriticalResource = (ctx: TemplateContext) =>
  not(isMatch(`attributes[${ottlString(EXE)}]`, ctx.critical));
const notCriticalDatapoint = (ctx: TemplateContext) =>
  not(isMatch(`resource.attributes[${ottlString(EXE)}]`, ctx.critical));

/**
 * The seven templates. Only stock otelcol-contrib components are used (hostmetrics, memory_limiter,
 * resource, filter, transform, groupbyattrs, batch, prometheus, otlp); where a template's idea has no
 * stock processor, the comment at the template says what the control plane does instead.
 */
/**
 * The template's `aggregation` parameter → the function name `aggregate_on_attributes` takes. The API
 * says `avg`; the collector only knows `mean` (it refuses "avg": "valid options: sum, mean, min, max,
 * median, count").
 */
const OTTL_AGGREGATION_OF = { sum: 'sum', avg: 'mean', max: 'max' } as const satisfies Record<
  TemplateParams<'process-aggregated-v1'>['aggregation'],
  (typeof OTTL_AGGREGATIONS)[number]
>;

export const TEMPLATE_DEFINITIONS: { readonly [N in TemplateName]: TemplateDefinition<N> } = {
  'process-baseline-v1': {
    name: 'process-baseline-v1',
    description:
      "Control: every process with the process scraper's default metrics and resource attributes, no optimization.",
    tuning: 'none',
    build: () => ({ metrics: DEFAULT_METRICS_ON, resourceAttributes: {}, processors: [] }),
  },

  // Tiers expressed as one stock filter: critical and high-priority processes pass untouched; every
  // other process keeps only `lowPriorityMetrics` (or nothing when that list is empty).
  'process-priority-filter-v1': {
    name: 'process-priority-filter-v1',
    description:
      'Critical and high-priority processes keep every metric; all other processes keep only a reduced metric set.',
    tuning: 'none',
    build: (params, ctx) => {
      const lowMetrics = params.lowPriorityMetrics.map(quoteMeta);
      const condition = and(
        not(
          isMatch(`resource.attributes[${ottlString(EXE)}]`, [...ctx.critical, ...params.priorityPatterns]),
        ),
        lowMetrics.length > 0 ? not(isMatch('name', [`^(?:${lowMetrics.join('|')})$`])) : undefined,
      );
      return {
        metrics: DEFAULT_METRICS_ON,
        resourceAttributes: TRIM_COMMAND,
        processors: [['filter/priority', { error_mode: 'ignore', metrics: { metric: [condition] } }]],
      };
    },
  },

  // No top-k processor exists in otelcol-contrib. The control plane ranks processes from the baseline's
  // data (computeKeepList) and renders the winners as a stock filter keep-list. Until that data exists
  // (the first baseline scrape), the candidate renders a bootstrap that keeps only critical processes and
  // the render result says `pendingTuning: true`; the deployer re-renders once the baseline has reported.
  'process-topk-v1': {
    name: 'process-topk-v1',
    description:
      'Only the top-k CPU/memory consumers (a keep-list computed from the baseline) plus critical processes.',
    tuning: 'keepList',
    build: (_params, ctx) => ({
      metrics: DEFAULT_METRICS_ON,
      resourceAttributes: TRIM_COMMAND,
      processors: [['filter/topk', keepListFilter(ctx)]],
    }),
  },

  // Stock aggregation in three steps: drop the pid of non-critical processes (transform, resource
  // context), merge the now-identical resources of one executable on one node (groupbyattrs without
  // keys), then combine their data points (transform, aggregate_on_attributes). Only gauges are kept:
  // summing cumulative counters over a changing set of processes fakes counter resets.
  'process-aggregated-v1': {
    name: 'process-aggregated-v1',
    description:
      'Non-critical processes are aggregated per executable name and node (CPU utilization and memory gauges); critical processes stay per process.',
    tuning: 'none',
    build: (params, ctx) => ({
      metrics: GAUGE_METRICS,
      resourceAttributes: IDENTITY_ONLY,
      processors: [
        [
          'transform/drop_pid',
          {
            error_mode: 'ignore',
            metric_statements: [
              {
                context: 'resource',
                statements: [
                  where(`delete_key(attributes, ${ottlString('process.pid')})`, notCriticalResource(ctx)),
                ],
              },
            ],
          },
        ],
        ['groupbyattrs/merge', {}],
        [
          'transform/aggregate',
          {
            error_mode: 'ignore',
            metric_statements: [
              {
                context: 'metric',
                statements: [
                  `aggregate_on_attributes(${ottlString(OTTL_AGGREGATION_OF[params.aggregation])}, ${params.keepCpuStates ? '["state"]' : '[]'})`,
                ],
              },
            ],
          },
        ],
      ],
    }),
  },

  // The collector has no notion of a moving threshold, so adaptation happens in the control plane: the
  // filter's thresholds are the template's parameters until the baseline has reported, then the
  // `adaptPercentile` of the baseline's non-critical values (computeAdaptiveThresholds) and re-rendered.
  // CPU states are summed first so the threshold applies to a process's total CPU, not to one state.
  'process-adaptive-v1': {
    name: 'process-adaptive-v1',
    description:
      'Drops data points of idle non-critical processes below CPU and memory thresholds that the control plane adapts from the baseline.',
    tuning: 'thresholds',
    build: (params, ctx) => {
      const cpu = ctx.tuning?.thresholds?.cpuUtilization ?? params.cpuUtilizationThreshold;
      const memory = Math.round(
        ctx.tuning?.thresholds?.memoryBytes ?? params.memoryThresholdMiB * 1024 * 1024,
      );
      const notCritical = notCriticalDatapoint(ctx);
      return {
        metrics: GAUGE_METRICS,
        resourceAttributes: TRIM_COMMAND,
        processors: [
          [
            'transform/cpu_total',
            {
              error_mode: 'ignore',
              metric_statements: [
                {
                  context: 'metric',
                  statements: [
                    `aggregate_on_attributes("sum", []) where name == ${ottlString('process.cpu.utilization')}`,
                  ],
                },
              ],
            },
          ],
          [
            'filter/adaptive',
            {
              error_mode: 'ignore',
              metrics: {
                datapoint: [
                  and(
                    `metric.name == ${ottlString('process.cpu.utilization')}`,
                    `value_double < ${formatNumber(cpu)}`,
                    notCritical,
                  ),
                  and(
                    `metric.name == ${ottlString('process.memory.usage')}`,
                    `value_int < ${memory}`,
                    notCritical,
                  ),
                ],
              },
            },
          ],
        ],
      };
    },
  },

  // There is no ML processor in otelcol-contrib and we do not invent one. "Intelligent" is an explainable
  // model run by the control plane on the baseline's data (computeIntelligentKeepList): each executable
  // name is valued by its share of CPU and memory plus an outlier score, costed by the series it
  // produces, and chosen greedily by value per series until the series budget is spent. The result is
  // rendered as the same stock keep-list filter as top-k, with the same bootstrap before tuning.
  'process-intelligent-v1': {
    name: 'process-intelligent-v1',
    description:
      'Keeps the executables with the most value per series (resource share and outliers) within a series budget, plus critical processes.',
    tuning: 'keepList',
    build: (_params, ctx) => ({
      metrics: DEFAULT_METRICS_ON,
      resourceAttributes: TRIM_COMMAND,
      processors: [['filter/intelligent', keepListFilter(ctx)]],
    }),
  },

  // Critical processes keep total CPU utilization and memory; every other process of a node is folded
  // into one `other_processes` resource (rename, drop pid, merge, sum) or dropped when rollupOthers is off.
  'process-minimal-v1': {
    name: 'process-minimal-v1',
    description:
      'Essential metrics only: total CPU utilization and memory for critical processes, plus one rollup of everything else per node.',
    tuning: 'none',
    build: (params, ctx) => {
      const collapse: readonly [string, Record<string, unknown>] = [
        'transform/essential',
        {
          error_mode: 'ignore',
          metric_statements: [{ context: 'metric', statements: ['aggregate_on_attributes("sum", [])'] }],
        },
      ];
      const metrics = { ...GAUGE_METRICS };
      if (!params.rollupOthers) {
        return {
          metrics,
          resourceAttributes: IDENTITY_ONLY,
          processors: [
            [
              'filter/critical_only',
              { error_mode: 'ignore', metrics: { metric: [and(notCriticalDatapoint(ctx))] } },
            ],
            collapse,
          ],
        };
      }
      const notCritical = notCriticalResource(ctx);
      return {
        metrics,
        resourceAttributes: IDENTITY_ONLY,
        processors: [
          [
            'transform/rollup',
            {
              error_mode: 'ignore',
              metric_statements: [
                {
                  context: 'resource',
                  statements: [
                    where(`delete_key(attributes, ${ottlString('process.pid')})`, notCritical),
                    where(
                      `set(attributes[${ottlString(EXE)}], ${ottlString(ROLLUP_PROCESS_NAME)})`,
                      notCritical,
                    ),
                  ],
                },
              ],
            },
          ],
          ['groupbyattrs/merge', {}],
          collapse,
        ],
      };
    },
  },
};

/** Numbers in OTTL are Go literals: no exponent notation for the small thresholds we render. */
const formatNumber = (n: number): string => {
  if (Number.isInteger(n)) return `${n}.0`;
  const fixed = n.toFixed(12).replace(/0+$/, '');
  return fixed.endsWith('.') ? `${fixed}0` : fixed;
};

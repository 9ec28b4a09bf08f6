/**
 * Facts about the `hostmetrics` receiver's `process` scraper (otelcol-contrib), kept in one place so the
 * renderer, the config checks, the local data plane's emulator and the OTLP simulator agree on what a
 * process emits. Source: the scraper's `metadata.yaml` and generated code at v0.165.0, the version
 * otelcol/builder-config.yaml pins (Linux metrics only; `process.handles` is Windows-only). Every sum is
 * cumulative; `counter` is a monotonic sum, `updown` a non-monotonic one.
 */

/** How a metric is exported; decides the Prometheus suffix and whether summing over processes is safe. */
export type MetricKind = 'counter' | 'updown' | 'gauge';

export interface ProcessMetricInfo {
  readonly name: string;
  readonly kind: MetricKind;
  /** UCUM unit as the scraper declares it. */
  readonly unit: string;
  /** Whether data points carry `value_int` or `value_double` (OTTL sees only the matching one). */
  readonly valueType: 'int' | 'double';
  readonly description: string;
  /** Enabled unless the config says otherwise. */
  readonly defaultEnabled: boolean;
  /** The single data point attribute and its values, when the metric has one. */
  readonly attribute?: { readonly key: string; readonly values: readonly string[] };
}

export const PROCESS_METRICS: readonly ProcessMetricInfo[] = [
  {
    name: 'process.cpu.time',
    kind: 'counter',
    unit: 's',
    valueType: 'double',
    description: 'Total CPU seconds broken down by different states.',
    defaultEnabled: true,
    attribute: { key: 'state', values: ['user', 'system', 'wait'] },
  },
  {
    name: 'process.memory.usage',
    kind: 'updown',
    unit: 'By',
    valueType: 'int',
    description: 'The amount of physical memory in use.',
    defaultEnabled: true,
  },
  {
    name: 'process.memory.virtual',
    kind: 'updown',
    unit: 'By',
    valueType: 'int',
    description: 'The amount of committed virtual memory.',
    defaultEnabled: true,
  },
  {
    name: 'process.disk.io',
    kind: 'counter',
    unit: 'By',
    valueType: 'int',
    description: 'Disk bytes transferred.',
    defaultEnabled: true,
    attribute: { key: 'direction', values: ['read', 'write'] },
  },
  {
    name: 'process.cpu.utilization',
    kind: 'gauge',
    unit: '1',
    valueType: 'double',
    description:
      'Percentage of total CPU time used by the process since last scrape, expressed as a value between 0 and 1. On the first scrape, no data point is emitted for this metric.',
    defaultEnabled: false,
    attribute: { key: 'state', values: ['user', 'system', 'wait'] },
  },
  {
    name: 'process.memory.utilization',
    kind: 'gauge',
    unit: '1',
    valueType: 'double',
    description: 'Percentage of total physical memory that is used by the process.',
    defaultEnabled: false,
  },
  {
    name: 'process.disk.operations',
    kind: 'counter',
    unit: '{operations}',
    valueType: 'int',
    description: 'Number of disk operations performed by the process.',
    defaultEnabled: false,
    attribute: { key: 'direction', values: ['read', 'write'] },
  },
  {
    name: 'process.threads',
    kind: 'updown',
    unit: '{threads}',
    valueType: 'int',
    description: 'Process threads count.',
    defaultEnabled: false,
  },
  {
    name: 'process.open_file_descriptors',
    kind: 'updown',
    unit: '{count}',
    valueType: 'int',
    description: 'Number of file descriptors in use by the process.',
    defaultEnabled: false,
  },
  {
    name: 'process.context_switches',
    kind: 'counter',
    unit: '{count}',
    valueType: 'int',
    description: 'Number of times the process has been context switched.',
    defaultEnabled: false,
    // The attribute is `context_switch_type` in metadata.yaml, renamed on the wire (name_override).
    attribute: { key: 'type', values: ['involuntary', 'voluntary'] },
  },
  {
    name: 'process.paging.faults',
    kind: 'counter',
    unit: '{faults}',
    valueType: 'int',
    description: 'Number of page faults the process has made.',
    defaultEnabled: false,
    attribute: { key: 'type', values: ['major', 'minor'] },
  },
  {
    name: 'process.signals_pending',
    kind: 'updown',
    unit: '{signals}',
    valueType: 'int',
    description: 'Number of pending signals for the process.',
    defaultEnabled: false,
  },
  {
    name: 'process.uptime',
    kind: 'gauge',
    unit: 's',
    valueType: 'double',
    description: 'The time the process has been running.',
    defaultEnabled: false,
  },
];

/**
 * The instrumentation scope of every ResourceMetrics the scraper emits. Its version is the collector's
 * build version (`dist.version` of otelcol/builder-config.yaml for Phoenix's build, "0.165.0" for
 * otelcol-contrib), and the prometheus exporter turns both into `otel_scope_*` labels.
 */
export const PROCESS_SCRAPER_SCOPE_NAME =
  'github.com/open-telemetry/opentelemetry-collector-contrib/receiver/hostmetricsreceiver/internal/scraper/processscraper';
export const PROCESS_SCRAPER_SCOPE_VERSION = '0.165.0-phoenix';
/** The ResourceMetrics' schema URL: the scraper's semantic conventions (v1.43.0 at collector v0.165.0). */
export const PROCESS_SCRAPER_SCHEMA_URL = 'https://opentelemetry.io/schemas/1.43.0';

export const PROCESS_METRIC_NAMES = PROCESS_METRICS.map((m) => m.name) as readonly string[];

/** Resource attributes of every process resource, in the scraper's order; all enabled by default. */
export const PROCESS_RESOURCE_ATTRIBUTES = [
  'process.pid',
  'process.parent_pid',
  'process.executable.name',
  'process.executable.path',
  'process.command',
  'process.command_line',
  'process.owner',
] as const;

export type ProcessResourceAttribute = (typeof PROCESS_RESOURCE_ATTRIBUTES)[number];

/** `process.cgroup` exists but is off by default; accepted in configs, never rendered by a template. */
export const OPTIONAL_PROCESS_RESOURCE_ATTRIBUTES = ['process.cgroup'] as const;

/**
 * What a process scraper configured with these overrides (`metrics.<name>.enabled`,
 * `resource_attributes.<name>.enabled`) emits: the enabled metrics in the scraper's emit order (by name)
 * and the enabled resource attributes in its order.
 */
export interface ProcessScraperSettings {
  readonly collectionIntervalSeconds: number;
  readonly metrics: readonly ProcessMetricInfo[];
  readonly resourceAttributes: readonly string[];
}

export const processScraperSettings = (
  collectionIntervalSeconds: number,
  metricOverrides: Readonly<Record<string, boolean>>,
  resourceAttributeOverrides: Readonly<Record<string, boolean>>,
): ProcessScraperSettings => ({
  collectionIntervalSeconds,
  metrics: PROCESS_METRICS.filter((m) => metricOverrides[m.name] ?? m.defaultEnabled).sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  ),
  resourceAttributes: [
    ...PROCESS_RESOURCE_ATTRIBUTES.filter((key) => resourceAttributeOverrides[key] ?? true),
    ...OPTIONAL_PROCESS_RESOURCE_ATTRIBUTES.filter((key) => resourceAttributeOverrides[key] ?? false),
  ],
});

const UNIT_SUFFIX: Record<string, string> = { s: 'seconds', By: 'bytes', '1': 'ratio' };

/**
 * The Prometheus name the collector's `prometheus` exporter gives a metric (OTLP → Prometheus
 * translation with unit and `_total` suffixes), so the emulator's output reads like a real collector's.
 */
export const prometheusMetricName = (metric: ProcessMetricInfo, namespace?: string): string => {
  let base = metric.name.replace(/[^a-zA-Z0-9_]/g, '_');
  const suffix = UNIT_SUFFIX[metric.unit];
  if (suffix !== undefined && !base.endsWith(`_${suffix}`)) base = `${base}_${suffix}`;
  if (metric.kind === 'counter') base = `${base}_total`;
  return namespace ? `${namespace}_${base}` : base;
};

/** Resource attribute key → Prometheus label, as `resource_to_telemetry_conversion` does it. */
export const prometheusLabelName = (key: string): string => {
  const label = key.replace(/[^a-zA-Z0-9_]/g, '_');
  return /^[0-9]/.test(label) ? `key_${label}` : label;
};

/**
 * Reads what the collector's `debug` exporter writes with `verbosity: detailed` (collector v0.165.0,
 * exporter/debugexporter/internal/otlptext): one block per exported batch, starting with
 * "ResourceMetrics #0". Enough of it for shape comparisons: resources with their attributes' types,
 * scopes, metric descriptors, sum properties and data points (attributes, timestamps, value type).
 * Attribute values may span lines (a v1 cgroup list does); such continuation lines are skipped.
 */

export interface DebugDataPoint {
  readonly attributes: Record<string, string>;
  readonly start: string;
  readonly time: string;
  readonly valueType: 'int' | 'double';
}

export interface DebugMetric {
  readonly name: string;
  readonly description: string;
  readonly unit: string;
  readonly dataType: string;
  readonly monotonic?: boolean;
  readonly temporality?: string;
  readonly points: DebugDataPoint[];
}

export interface DebugResource {
  readonly schemaUrl: string;
  /** Attribute key → pdata type (Str, Int, …) and the value's first line. */
  readonly attributes: Record<string, { readonly type: string; readonly value: string }>;
  readonly scopes: string[];
  readonly metrics: DebugMetric[];
}

/** One exported batch: a scrape of the hostmetrics receiver, or one OTLP request through the receiver. */
export type DebugBatch = DebugResource[];

const ATTRIBUTE = /^\s+-> ([^\s:]+): (Str|Int|Double|Bool|Map|Slice|Bytes|Empty)\((.*)$/;

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export const parseDebugText = (text: string): DebugBatch[] => {
  const batches: DebugBatch[] = [];
  let resource: Mutable<DebugResource> | undefined;
  let metric: Mutable<DebugMetric> | undefined;
  let point: { attributes: Record<string, string>; start: string; time: string } | undefined;
  let section: 'resource' | 'metric' | 'point' | 'none' = 'none';
  // Tried in order; the first that matches a line handles it. All but the first need a resource.
  const rules: [RegExp, (m: RegExpExecArray, r: Mutable<DebugResource>) => void][] = [
    [/^Resource SchemaURL: (.*)$/, (m, r) => (r.schemaUrl = m[1] as string)],
    [/^Resource attributes:$/, () => (section = 'resource')],
    [
      /^InstrumentationScope (.*)$/,
      (m, r) => {
        r.scopes.push(m[1] as string);
        section = 'none';
      },
    ],
    [
      /^Descriptor:$/,
      (_, r) => {
        metric = { name: '', description: '', unit: '', dataType: '', points: [] };
        r.metrics.push(metric);
        section = 'metric';
      },
    ],
    [
      /^\s+-> (Name|Description|Unit|DataType|IsMonotonic|AggregationTemporality): (.*)$/,
      (m) => {
        if (section !== 'metric' || metric === undefined) return;
        const value = m[2] as string;
        if (m[1] === 'Name') metric.name = value;
        else if (m[1] === 'Description') metric.description = value;
        else if (m[1] === 'Unit') metric.unit = value;
        else if (m[1] === 'DataType') metric.dataType = value;
        else if (m[1] === 'IsMonotonic') metric.monotonic = value === 'true';
        else metric.temporality = value;
      },
    ],
    [
      /^NumberDataPoints #\d+$/,
      () => {
        point = { attributes: {}, start: '', time: '' };
        section = 'point';
      },
    ],
    [
      /^StartTimestamp: (.*)$/,
      (m) => {
        if (point) point.start = m[1] as string;
      },
    ],
    [
      /^Timestamp: (.*)$/,
      (m) => {
        if (point) point.time = m[1] as string;
      },
    ],
    [
      /^Value: (.*)$/,
      (m) => {
        if (point === undefined || metric === undefined) return;
        metric.points.push({ ...point, valueType: (m[1] as string).includes('.') ? 'double' : 'int' });
        point = undefined;
      },
    ],
    [
      ATTRIBUTE,
      (m, r) => {
        const [, key, type, rest] = m as unknown as [string, string, string, string];
        // A one-line value ends with ")"; a multi-line one continues on lines no rule matches.
        const value = rest.endsWith(')') ? rest.slice(0, -1) : rest;
        if (section === 'resource') r.attributes[key] = { type, value };
        else if (section === 'point' && point) point.attributes[key] = value;
      },
    ],
  ];
  for (const line of text.split('\n')) {
    const start = /^ResourceMetrics #(\d+)$/.exec(line);
    if (start !== null) {
      if (start[1] === '0') batches.push([]);
      resource = { schemaUrl: '', attributes: {}, scopes: [], metrics: [] };
      batches.at(-1)?.push(resource);
      section = 'none';
      continue;
    }
    if (resource === undefined) continue;
    for (const [pattern, handle] of rules) {
      const m = pattern.exec(line);
      if (m !== null) {
        handle(m, resource);
        break;
      }
    }
  }
  return batches;
};

/** The shape of a metric across every resource of some batches: what the comparison is about. */
export interface MetricShape {
  readonly description: string;
  readonly unit: string;
  readonly dataType: string;
  readonly monotonic: boolean | undefined;
  readonly temporality: string | undefined;
  readonly valueTypes: string[];
  /** Data point attribute key → the sorted values seen. */
  readonly attributes: Record<string, string[]>;
}

export interface Shape {
  readonly schemaUrls: string[];
  readonly scopes: string[];
  /** Resource attribute key → the sorted types seen. */
  readonly resourceAttributes: Record<string, string[]>;
  readonly metrics: Record<string, MetricShape>;
}

const sorted = (set: Iterable<string>): string[] => [...new Set(set)].sort();

export const shapeOf = (batches: readonly DebugBatch[]): Shape => {
  const schemaUrls = new Set<string>();
  const scopes = new Set<string>();
  const resourceAttributes = new Map<string, Set<string>>();
  const metrics = new Map<
    string,
    {
      first: DebugMetric;
      descriptors: Set<string>;
      valueTypes: Set<string>;
      attributes: Map<string, Set<string>>;
    }
  >();
  for (const resource of batches.flat()) {
    schemaUrls.add(resource.schemaUrl);
    for (const s of resource.scopes) scopes.add(s);
    for (const [key, { type }] of Object.entries(resource.attributes)) {
      resourceAttributes.set(key, (resourceAttributes.get(key) ?? new Set()).add(type));
    }
    for (const metric of resource.metrics) {
      const entry = metrics.get(metric.name) ?? {
        first: metric,
        descriptors: new Set<string>(),
        valueTypes: new Set<string>(),
        attributes: new Map<string, Set<string>>(),
      };
      metrics.set(metric.name, entry);
      entry.descriptors.add(
        JSON.stringify([
          metric.description,
          metric.unit,
          metric.dataType,
          metric.monotonic,
          metric.temporality,
        ]),
      );
      for (const p of metric.points) {
        entry.valueTypes.add(p.valueType);
        for (const [key, value] of Object.entries(p.attributes)) {
          entry.attributes.set(key, (entry.attributes.get(key) ?? new Set()).add(value));
        }
      }
    }
  }
  return {
    schemaUrls: sorted(schemaUrls),
    scopes: sorted(scopes),
    resourceAttributes: Object.fromEntries(
      [...resourceAttributes].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, sorted(v)]),
    ),
    metrics: Object.fromEntries(
      [...metrics]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([name, e]) => {
          if (e.descriptors.size !== 1) throw new Error(`${name} has ${e.descriptors.size} descriptors`);
          return [
            name,
            {
              description: e.first.description,
              unit: e.first.unit,
              dataType: e.first.dataType,
              monotonic: e.first.monotonic,
              temporality: e.first.temporality,
              valueTypes: sorted(e.valueTypes),
              attributes: Object.fromEntries(
                [...e.attributes].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, sorted(v)]),
              ),
            },
          ];
        }),
    ),
  };
};

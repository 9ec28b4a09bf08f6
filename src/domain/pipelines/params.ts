import { z } from 'zod';
import { compileCollectorRegex } from './regex.js';

/** Template names, in the order the platform documents them. */
export const TEMPLATE_NAMES = [
  'process-baseline-v1',
  'process-priority-filter-v1',
  'process-topk-v1',
  'process-aggregated-v1',
  'process-adaptive-v1',
  'process-intelligent-v1',
  'process-minimal-v1',
] as const;

export type TemplateName = (typeof TEMPLATE_NAMES)[number];

export const isTemplateName = (name: string): name is TemplateName =>
  (TEMPLATE_NAMES as readonly string[]).includes(name);

/** A validation failure, in the shape the API's problem+json `errors` member uses. */
export interface ValidationIssue {
  readonly path: string;
  readonly message: string;
}

const collectorRegex = z.string().superRefine((pattern, ctx) => {
  const check = compileCollectorRegex(pattern);
  if (!check.ok) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(pattern)}: ${check.message}` });
});

/** Process metrics a template may keep for low-priority processes: the scraper's default set. */
const DEFAULT_METRICS = [
  'process.cpu.time',
  'process.memory.usage',
  'process.memory.virtual',
  'process.disk.io',
] as const;

/**
 * Long-running services whose metrics operators usually want in full. The priority-filter template keeps
 * every metric of these, on top of the experiment's critical processes.
 */
export const DEFAULT_PRIORITY_PATTERNS = [
  '^(java|python[0-9.]*|node|ruby|dotnet|php-fpm[0-9.]*|gunicorn|uwsgi|celery|sidekiq)$',
  '^(postgres|mysqld|mongod|redis-server|memcached|etcd|kafka|zookeeper|elasticsearch|rabbitmq-server)$',
  '^(nginx|envoy|haproxy|httpd|traefik)$',
];

const common = {
  collectionIntervalSeconds: z
    .int()
    .min(1)
    .max(3600)
    .default(60)
    .describe('hostmetrics collection_interval in seconds (the collector default is 60)'),
  criticalProcesses: z
    .array(collectorRegex)
    .max(100)
    .default([])
    .describe(
      "extra RE2 patterns on process.executable.name, added to the experiment's critical processes; critical processes are never dropped or aggregated",
    ),
};

const uniqueList = <T extends string>(list: readonly T[]) => new Set(list).size === list.length;

/** Parameter schemas per template: the single source for validation, defaults and `GET /templates`. */
export const TEMPLATE_PARAM_SCHEMAS = {
  'process-baseline-v1': z.strictObject({ ...common }),
  'process-priority-filter-v1': z.strictObject({
    ...common,
    priorityPatterns: z
      .array(collectorRegex)
      .max(100)
      .default(DEFAULT_PRIORITY_PATTERNS)
      .describe('RE2 patterns for high-priority processes, which keep every metric'),
    lowPriorityMetrics: z
      .array(z.enum(DEFAULT_METRICS))
      .max(DEFAULT_METRICS.length)
      .refine(uniqueList, 'metrics must not repeat')
      .default(['process.cpu.time', 'process.memory.usage'])
      .describe('metrics still collected for all other processes; [] drops them entirely'),
  }),
  'process-topk-v1': z.strictObject({
    ...common,
    k: z
      .int()
      .min(1)
      .max(500)
      .default(20)
      .describe(
        "processes ranked per node; the keep-list holds the k executable names that rank in most nodes' top k",
      ),
    rankBy: z
      .enum(['cpu', 'memory', 'combined'])
      .default('cpu')
      .describe('what ranks a process: CPU, resident memory, or the sum of both shares of the node'),
  }),
  'process-aggregated-v1': z.strictObject({
    ...common,
    aggregation: z
      .enum(['sum', 'avg', 'max'])
      .default('sum')
      .describe('how the processes of one executable on one node are combined'),
    keepCpuStates: z
      .boolean()
      .default(true)
      .describe('keep the user/system/wait breakdown of process.cpu.utilization'),
  }),
  'process-adaptive-v1': z.strictObject({
    ...common,
    cpuUtilizationThreshold: z
      .number()
      .min(0)
      .max(1)
      .default(0.002)
      .describe("drop a non-critical process's CPU data point below this share of the host's CPU"),
    memoryThresholdMiB: z
      .number()
      .min(0)
      .max(1_048_576)
      .default(64)
      .describe("drop a non-critical process's memory data point below this resident size"),
    adaptPercentile: z
      .int()
      .min(1)
      .max(99)
      .default(70)
      .describe(
        "when tuned from the baseline, both thresholds move to this percentile of the non-critical processes' values",
      ),
  }),
  'process-intelligent-v1': z.strictObject({
    ...common,
    seriesBudgetPct: z
      .number()
      .gt(0)
      .max(100)
      .default(20)
      .describe("share of the baseline's series the keep-list may spend, critical processes included"),
    anomalyWeight: z
      .number()
      .min(0)
      .max(10)
      .default(1)
      .describe(
        "weight of the outlier score (a process far above its executable's median) against resource share",
      ),
  }),
  'process-minimal-v1': z.strictObject({
    ...common,
    rollupOthers: z
      .boolean()
      .default(true)
      .describe(
        'fold every non-critical process of a node into one "other_processes" resource instead of dropping it',
      ),
  }),
} as const satisfies Record<TemplateName, z.ZodType>;

export type TemplateParams<N extends TemplateName> = z.output<(typeof TEMPLATE_PARAM_SCHEMAS)[N]>;

/** Parameters of any template, discriminated by the template's name. */
export type AnyTemplateParams = {
  [N in TemplateName]: { template: N; params: TemplateParams<N> };
}[TemplateName];

export type ParseParamsResult =
  | {
      readonly ok: true;
      /** The validated parameters with defaults filled in. */
      readonly params: AnyTemplateParams['params'];
      /** The same, discriminated by template, for code that needs the exact parameter type. */
      readonly value: AnyTemplateParams;
    }
  | { readonly ok: false; readonly errors: readonly ValidationIssue[] };

const issuePath = (path: readonly PropertyKey[]): string => path.map(String).join('.');

/** zod issues → `{ path, message }`, with unknown keys reported one by one under their own name. */
export const toValidationIssues = (error: z.ZodError, prefix = ''): ValidationIssue[] =>
  error.issues.flatMap((issue) => {
    const base = issuePath(issue.path);
    const join = (p: string) => [prefix, p].filter((s) => s !== '').join('.');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({
        path: join([base, key].filter((s) => s !== '').join('.')),
        message: `unknown parameter "${key}"`,
      }));
    }
    return [{ path: join(base), message: issue.message }];
  });

/**
 * Validates a template's parameters at the boundary (API body, CLI flags) and fills in defaults.
 * Paths are relative to the params object (e.g. `k`, `criticalProcesses.0`); an unknown template is
 * reported with the path `template`.
 */
export const parseTemplateParams = (template: string, params: unknown): ParseParamsResult => {
  if (!isTemplateName(template)) {
    return {
      ok: false,
      errors: [
        {
          path: 'template',
          message: `unknown template "${template}"; expected one of ${TEMPLATE_NAMES.join(', ')}`,
        },
      ],
    };
  }
  const schema: z.ZodType = TEMPLATE_PARAM_SCHEMAS[template];
  const parsed = schema.safeParse(params ?? {});
  if (!parsed.success) return { ok: false, errors: toValidationIssues(parsed.error) };
  const value = { template, params: parsed.data } as AnyTemplateParams;
  return { ok: true, params: value.params, value };
};

/** One parameter as `GET /api/v1/templates` describes it. */
export interface TemplateParamDescription {
  readonly name: string;
  readonly type: 'integer' | 'number' | 'boolean' | 'string' | 'array';
  readonly description: string;
  readonly default: unknown;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly exclusiveMinimum?: number;
  readonly enum?: readonly string[];
  readonly items?: { readonly type: string; readonly enum?: readonly string[]; readonly format?: string };
  readonly maxItems?: number;
}

type JsonSchemaNode = {
  type?: string;
  description?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  enum?: string[];
  items?: JsonSchemaNode;
  maxItems?: number;
  properties?: Record<string, JsonSchemaNode>;
};

/** The JSON-friendly description of a template's parameters, derived from its zod schema. */
export const describeTemplateParams = (template: TemplateName): TemplateParamDescription[] => {
  const json = z.toJSONSchema(TEMPLATE_PARAM_SCHEMAS[template], {
    io: 'input',
    unrepresentable: 'any',
  }) as JsonSchemaNode;
  return Object.entries(json.properties ?? {}).map(([name, node]) => {
    const isRegexList = name === 'criticalProcesses' || name === 'priorityPatterns';
    const items = node.items
      ? {
          type: node.items.type ?? 'string',
          ...(node.items.enum ? { enum: node.items.enum } : {}),
          ...(isRegexList ? { format: 're2' } : {}),
        }
      : undefined;
    return {
      name,
      type: (node.type ?? 'string') as TemplateParamDescription['type'],
      description: node.description ?? '',
      default: node.default,
      ...(node.minimum !== undefined ? { minimum: node.minimum } : {}),
      ...(node.exclusiveMinimum !== undefined ? { exclusiveMinimum: node.exclusiveMinimum } : {}),
      ...(node.maximum !== undefined ? { maximum: node.maximum } : {}),
      ...(node.enum ? { enum: node.enum } : {}),
      ...(items ? { items } : {}),
      ...(node.maxItems !== undefined ? { maxItems: node.maxItems } : {}),
    };
  });
};

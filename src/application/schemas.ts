import { z } from 'zod';
import type { Analysis, ExperimentSpec } from '../domain/experiment-spec.js';
import { VARIANTS } from '../domain/experiment-spec.js';
import { compileCollectorRegex } from '../domain/pipelines/index.js';
import { CRITERION_NAMES } from '../domain/verdict.js';
import { checkPromQL } from './promql.js';

/**
 * zod schemas for what crosses the boundary: request bodies and stored event payloads. Types are
 * inferred from them; the domain's own types must accept what they produce (checked below).
 */

/**
 * Why PostgreSQL cannot hold this text (in a text column or as a jsonb string), or undefined when it
 * can: it refuses NUL, and a lone UTF-16 surrogate has no UTF-8 form (the driver would replace it, or
 * the server refuse it). Either way the user gets a 400 naming the field, not a 500 from the database.
 */
export const unholdableTextReason = (value: string): string | undefined => {
  if (value.includes('\u0000')) return 'must not contain the NUL character (U+0000)';
  if (LONE_SURROGATE.test(value)) return 'must be well-formed Unicode (no lone surrogate such as \\ud800)';
  return undefined;
};
// With the `u` flag a surrogate pair is one code point, so only a surrogate on its own matches.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * Refinement: text the database can hold. It stops the field's other checks and the object's
 * cross-field ones (rendering a config from text that will be refused anyway helps nobody).
 */
export const holdableText = (value: string, ctx: z.core.$RefinementCtx<string>): void => {
  const reason = unholdableTextReason(value);
  if (reason) ctx.addIssue({ code: 'custom', message: reason, continue: false });
};

/** A string the database can hold. */
export const dbText = () => z.string().superRefine(holdableText);

/** Deeper than any template parameter goes (they are at most lists of strings), far below a stack's limit. */
export const MAX_JSON_DEPTH = 32;

/**
 * What in a free-form JSON value (template params) the database cannot hold exactly: text it refuses,
 * numbers beyond 2^53 (JSON.parse has already rounded them; they must not pass as something the user
 * did not send) and nesting beyond `maxDepth` (reported at the top-level key that holds it). Walks
 * with a stack of its own, so no depth of input overflows the call stack; stops after `limit` issues.
 */
export function unholdableJson(
  value: unknown,
  maxDepth = MAX_JSON_DEPTH,
  limit = 10,
): { path: (string | number)[]; message: string }[] {
  const issues: { path: (string | number)[]; message: string }[] = [];
  // Each entry is a value to check, or a key already found unholdable (kept in order with the values).
  const stack: { value: unknown; path: (string | number)[]; keyProblem?: string }[] = [{ value, path: [] }];
  while (stack.length > 0 && issues.length < limit) {
    const { value: v, path, keyProblem } = stack.pop()!;
    if (keyProblem !== undefined) {
      issues.push({ path, message: `the key ${keyProblem}` });
    } else if (typeof v === 'string') {
      const reason = unholdableTextReason(v);
      if (reason) issues.push({ path, message: reason });
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v) || Math.abs(v) > Number.MAX_SAFE_INTEGER) {
        issues.push({ path, message: 'must be a number between -(2^53 - 1) and 2^53 - 1' });
      }
    } else if (v !== null && typeof v === 'object') {
      if (path.length >= maxDepth) {
        issues.push({ path: path.slice(0, 1), message: `must not be nested more than ${maxDepth} deep` });
        continue;
      }
      const entries: [string | number, unknown][] = Array.isArray(v)
        ? v.map((x, i) => [i, x])
        : Object.entries(v);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, child] = entries[i]!;
        const keyProblem = typeof key === 'string' ? unholdableTextReason(key) : undefined;
        stack.push({ value: child, path: [...path, key], ...(keyProblem ? { keyProblem } : {}) });
      }
    }
  }
  return issues.slice(0, limit);
}

/** Refinement: a JSON value the database can hold exactly (see unholdableJson). */
export const holdableJson = (value: unknown, ctx: z.core.$RefinementCtx<unknown>): void => {
  for (const issue of unholdableJson(value)) {
    ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message, continue: false });
  }
};

/**
 * An ISO time with offset whose instant PostgreSQL and PGlite both accept as a parameter: years 0001
 * to 9999 in UTC (the embedded database sends a Date as its ISO text, and there is no year 0000).
 */
export const holdableTime = () =>
  z.iso.datetime({ offset: true }).superRefine((value, ctx) => {
    const ms = Date.parse(value);
    if (!(ms >= EARLIEST_TIME && ms <= LATEST_TIME)) {
      ctx.addIssue({
        code: 'custom',
        message: 'must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z',
        continue: false,
      });
    }
  });
const EARLIEST_TIME = Date.parse('0001-01-01T00:00:00Z');
const LATEST_TIME = Date.parse('9999-12-31T23:59:59.999Z');

const labelValue = dbText()
  .max(63)
  .regex(/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/, 'must be a Kubernetes label value');
const labelKey = dbText()
  .min(1)
  .max(253)
  .regex(
    /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/,
    'must be a Kubernetes label key',
  );

export const regexSource = dbText()
  .min(1)
  .max(256)
  .superRefine((source, ctx) => {
    // The collector runs these with RE2 (Go's regexp): check them in that dialect, not JavaScript's.
    // compileCollectorRegex remembers its answers: creates repeat the same few patterns.
    const check = compileCollectorRegex(source);
    if (!check.ok) ctx.addIssue({ code: 'custom', message: check.message });
  });

export const variantSpecSchema = z.strictObject({
  template: dbText().min(1).max(100),
  params: z.record(z.string().max(100), z.unknown()).superRefine(holdableJson).default({}),
});

export const MAX_COMPATIBILITY_QUERIES = 20;
export const MAX_PROMQL_LENGTH = 2000;

/** A criterion a dry-run list may name: one of the verdict's checks, or `query:<name>`. */
const criterionName = z.union([
  z.enum(CRITERION_NAMES),
  z.string().regex(/^query:[A-Za-z0-9][-A-Za-z0-9_.]{0,63}$/, 'must be a criterion name or query:<name>'),
]);

/**
 * The success criteria. The first three have defaults written into the stored spec; the rest are
 * optional, and the verdict applies their documented defaults (domain/verdict.ts) when absent, so a
 * stored spec means what it meant when it was written.
 */
const criteriaFields = {
  dryRun: z
    .array(criterionName)
    .max(CRITERION_NAMES.length + MAX_COMPATIBILITY_QUERIES)
    .refine((names) => new Set(names).size === names.length, 'must not name a criterion twice')
    .optional(),
  minHosts: z.number().int().min(1).max(1000).optional(),
  minSamplesPerHost: z.number().int().min(1).max(100_000).optional(),
  confidence: z.number().gt(0.5).lt(1).optional(),
  maxInputMismatchPct: z.number().min(0).max(100).optional(),
  criticalGraceSeconds: z
    .number()
    .int()
    .min(0)
    .max(7 * 24 * 3600)
    .optional(),
};
const reductionPct = z.number().min(0).max(100);
const lossPct = z.number().min(0).max(100);
const overheadPct = z.number().min(0).max(1000);

export const successCriteriaSchema = z.strictObject({
  minCardinalityReductionPct: reductionPct.default(50),
  maxCriticalProcessLossPct: lossPct.default(0),
  maxCollectorCpuOverheadPct: overheadPct.default(10),
  ...criteriaFields,
});

/**
 * A re-judge's criteria: each field given replaces the experiment's own, the others stay as they were
 * (no defaults here, or leaving a field out would reset it).
 */
export const rejudgeCriteriaSchema = z.strictObject({
  minCardinalityReductionPct: reductionPct.optional(),
  maxCriticalProcessLossPct: lossPct.optional(),
  maxCollectorCpuOverheadPct: overheadPct.optional(),
  ...criteriaFields,
});

/** A compatibility query as a user submits it: named (unique), parsed by Prometheus's grammar. */
export const compatibilityQuerySchema = z.strictObject({
  name: dbText()
    .min(1)
    .max(63)
    .regex(
      /^[A-Za-z0-9][-A-Za-z0-9_.]*$/,
      'must be letters, digits, -, _ or . (starting with a letter or digit)',
    ),
  query: dbText()
    .min(1)
    .max(MAX_PROMQL_LENGTH)
    .superRefine((query, ctx) => {
      const check = checkPromQL(query);
      if (!check.ok) ctx.addIssue({ code: 'custom', message: check.message });
      else if (check.selectors === 0)
        ctx.addIssue({
          code: 'custom',
          message: 'selects no series: it would give the same answer for both variants',
        });
    }),
  /** The most the candidate's value may differ from the baseline's, in %; default: the judge's. */
  maxDivergencePct: z.number().min(0).max(1000).optional(),
});

export const experimentSpecSchema = z
  .strictObject({
    name: dbText().trim().min(1).max(200),
    description: dbText().max(2000).optional(),
    baseline: variantSpecSchema,
    candidate: variantSpecSchema,
    target: z.strictObject({
      namespace: dbText()
        .max(63)
        .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a Kubernetes namespace name')
        .default('phoenix-experiments'),
      nodeSelector: z.record(labelKey, labelValue).default({}),
      hosts: z.number().int().min(1).max(1000),
    }),
    durationSeconds: z
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 3600),
    criticalProcesses: z.array(regexSource).max(100).default([]),
    successCriteria: successCriteriaSchema.default({
      minCardinalityReductionPct: 50,
      maxCriticalProcessLossPct: 0,
      maxCollectorCpuOverheadPct: 10,
    }),
    /** The pricing profile the analysis's cost is computed with (GET /api/v1/pricing-profiles); `default` when absent. */
    pricingProfile: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'must be the name of a pricing profile')
      .optional(),
    compatibilityQueries: z
      .array(compatibilityQuerySchema)
      .max(MAX_COMPATIBILITY_QUERIES)
      .superRefine((queries, ctx) => {
        const seen = new Set<string>();
        queries.forEach((q, i) => {
          if (seen.has(q.name))
            ctx.addIssue({
              code: 'custom',
              path: [i, 'name'],
              message: `duplicate query name ${JSON.stringify(q.name)}`,
            });
          seen.add(q.name);
        });
      })
      .optional(),
  })
  .superRefine((spec, ctx) => {
    // A dry-run `query:<name>` must name one of the experiment's compatibility queries.
    const names = new Set((spec.compatibilityQueries ?? []).map((q) => q.name));
    (spec.successCriteria.dryRun ?? []).forEach((criterion, i) => {
      if (criterion.startsWith('query:') && !names.has(criterion.slice('query:'.length))) {
        ctx.addIssue({
          code: 'custom',
          path: ['successCriteria', 'dryRun', i],
          message: `names no compatibility query of this experiment: ${criterion}`,
        });
      }
    });
  });

export type ExperimentSpecInput = z.infer<typeof experimentSpecSchema>;

function storedVariantSchema() {
  return z.strictObject({
    template: z.string().min(1).max(100),
    params: z.record(z.string().max(100), z.unknown()).default({}),
  });
}

/**
 * The spec as stored events hold it: the same shape, without re-running the checks that only matter
 * when a user submits it (compiling every critical-process pattern again on each read of a stream).
 */
export const storedSpecSchema = experimentSpecSchema.safeExtend({
  criticalProcesses: z.array(z.string().max(256)).max(100).default([]),
  baseline: storedVariantSchema(),
  candidate: storedVariantSchema(),
  // Stored as accepted: a stricter PromQL check later must not make a recorded event unreadable.
  compatibilityQueries: z
    .array(
      z.strictObject({
        name: z.string(),
        query: z.string(),
        maxDivergencePct: z.number().optional(),
      }),
    )
    .optional(),
});
type Assignable<T extends U, U> = T;
/** Compile-time check: what the schema accepts is an ExperimentSpec. */
export type SpecSchemaFitsDomain = Assignable<ExperimentSpecInput, ExperimentSpec>;

const variant = z.enum(VARIANTS);
const at = z.iso.datetime({ offset: true });
const figures = z.object({ series: z.number(), datapointsPerMinute: z.number() });

const costPart = z.object({ saving: z.number(), low: z.number().nullable(), high: z.number().nullable() });

/** analysis.cost: the money (domain/cost.ts). */
export const costEstimateSchema = z.object({
  profile: z.string(),
  currency: z.string(),
  monthly: z.object({ target: costPart, fleet: costPart }),
  breakdown: z.record(z.string(), z.number()),
  assumptions: z.record(z.string(), z.union([z.number(), z.string()])),
});

const n = z.number().nullable();
const measuredFigures = z.object({
  series: n,
  datapointsPerMinute: n,
  collectorCpuCores: n,
  collectorMemoryBytes: n,
});
const hostFigures = measuredFigures.extend({
  inputPointsPerMinute: n.optional(),
  inputProcesses: n.optional(),
});
const interval = z.object({ low: z.number(), high: z.number(), confidence: z.number() });
const criterionCheck = z.object({
  criterion: z.string(),
  threshold: n,
  value: n,
  outcome: z.enum(['pass', 'fail', 'no_data']),
  reason: z.string(),
  dryRun: z.boolean(),
  interval: interval.optional(),
  test: z.string().optional(),
});
const pairedComparison = z.object({
  hosts: z.number(),
  samples: z.number(),
  baselineMean: z.number(),
  candidateMean: z.number(),
  relativeChangePct: z.number(),
  interval: interval.nullable(),
  test: z
    .object({
      name: z.string(),
      statistic: z.number(),
      pValue: n,
      effectSize: z.object({ name: z.string(), value: z.number() }).nullable(),
    })
    .nullable(),
});

/** The analysis as events and the API carry it; the extras of issue 20 are optional (older analyses). */
export const analysisSchema = z.object({
  verdict: z.enum(['pass', 'fail', 'inconclusive']),
  reasons: z.array(z.string()),
  baseline: figures,
  candidate: figures,
  cardinalityReductionPct: z.number().nullable(),
  datapointReductionPct: z.number().nullable(),
  criticalProcessLossPct: z.number().nullable(),
  missingCriticalProcesses: z.array(z.string()),
  evidence: z.record(z.string(), z.unknown()).optional(),
  checks: z.array(criterionCheck).readonly().optional(),
  statistics: z
    .object({
      series: pairedComparison.optional(),
      datapointsPerMinute: pairedComparison.optional(),
      collectorCpuCores: pairedComparison.optional(),
      collectorMemoryBytes: pairedComparison.optional(),
    })
    .optional(),
  timeline: z
    .array(z.object({ at: z.string(), baseline: measuredFigures, candidate: measuredFigures }))
    .readonly()
    .optional(),
  hosts: z
    .array(
      z.object({
        host: z.string(),
        samples: z.number(),
        baseline: hostFigures,
        candidate: hostFigures,
        seriesReductionPct: n,
      }),
    )
    .readonly()
    .optional(),
  topExecutables: z
    .array(z.object({ executable: z.string(), baselineSeries: z.number(), candidateSeries: z.number() }))
    .readonly()
    .optional(),
  parity: z
    .object({
      ok: z.boolean().nullable(),
      baselineInputPointsPerMinute: n,
      candidateInputPointsPerMinute: n,
      basis: z.enum(['processes', 'points']).optional(),
      baselineInputProcesses: n.optional(),
      candidateInputProcesses: n.optional(),
      mismatchPct: n,
      maxMismatchPct: z.number(),
      reason: z.string(),
    })
    .optional(),
  cost: costEstimateSchema.optional(),
});
type AnalysisSchemaFitsDomain = Assignable<z.infer<typeof analysisSchema>, Analysis>;

export type { AnalysisSchemaFitsDomain };

const detail = z.record(z.string(), z.unknown()).optional();

/** The payload schema of every event type, at its current schema version. */
export const eventDataSchemas = {
  ExperimentCreated: z.object({ at, experimentId: z.uuid(), spec: storedSpecSchema }),
  ExperimentStarted: z.object({ at }),
  VariantDeployed: z.object({ at, variant, detail }),
  VariantDeploymentFailed: z.object({ at, variant, reason: z.string() }),
  ExperimentRunStarted: z.object({ at, runEndsAt: at, reason: z.string() }),
  ExperimentRunCompleted: z.object({ at }),
  AnalysisRecorded: z.object({ at, analysis: analysisSchema }),
  AnalysisRejudged: z.object({
    at,
    actor: z.string(),
    criteria: successCriteriaSchema,
    analysis: analysisSchema,
  }),
  AnalysisRetried: z.object({ at, attempt: z.number().int().min(1), reason: z.string() }),
  ExperimentRuntimeExtended: z.object({
    at,
    extraSeconds: z.number().int().min(1),
    runEndsAt: at,
    reason: z.string(),
  }),
  ExperimentCompleted: z.object({ at, reason: z.string() }),
  ExperimentFailed: z.object({
    at,
    reason: z.string(),
    // The early abort's evidence (domain/early-abort.ts AbortEvidence), kept as recorded.
    abort: z.record(z.string(), z.unknown()).optional(),
  }),
  ExperimentProbed: z.object({
    at,
    missing: z.array(z.object({ process: z.string(), since: at })),
  }),
  ExperimentCancelled: z.object({ at, reason: z.string() }),
  VariantTornDown: z.object({ at, variant }),
  PromotionRequested: z.object({ at, actor: z.string() }),
  PromotionCommitted: z.object({ at, repository: z.string(), path: z.string(), commit: z.string() }),
  PromotionRolledOut: z.object({ at, detail }),
  PromotionFailed: z.object({ at, reason: z.string(), reverted: z.string().optional() }),
  RollbackRequested: z.object({ at, actor: z.string(), reason: z.string().optional() }),
  RollbackCommitted: z.object({ at, commit: z.string() }),
  RolledBack: z.object({ at, detail }),
  RollbackFailed: z.object({ at, reason: z.string() }),
} as const;

export const eventMetadataSchema = z.object({
  eventId: z.uuid(),
  actor: z.string(),
  correlationId: z.string(),
  causationId: z.string().nullable(),
  occurredAt: at,
  schemaVersion: z.number().int().min(1),
});

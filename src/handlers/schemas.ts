import { z } from 'zod';
import type { ExperimentSpec } from '../domain/experiment-spec.js';
import { VARIANTS } from '../domain/experiment-spec.js';
import { compileCollectorRegex } from '../domain/pipelines/index.js';

/**
 * zod schemas for what crosses the boundary: request bodies and stored event payloads. Types are
 * inferred from them; the domain's own types must accept what they produce (checked below).
 */

const labelValue = z
  .string()
  .max(63)
  .regex(/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/, 'must be a Kubernetes label value');
const labelKey = z
  .string()
  .min(1)
  .max(253)
  .regex(
    /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/,
    'must be a Kubernetes label key',
  );

export const regexSource = z
  .string()
  .min(1)
  .max(256)
  .superRefine((source, ctx) => {
    // The collector runs these with RE2 (Go's regexp): check them in that dialect, not JavaScript's.
    const compiled = compileCollectorRegex(source);
    if (!compiled.ok) ctx.addIssue({ code: 'custom', message: compiled.message });
  });

export const variantSpecSchema = z.strictObject({
  template: z.string().min(1).max(100),
  params: z.record(z.string().max(100), z.unknown()).default({}),
});

export const experimentSpecSchema = z.strictObject({
  name: z.string().trim().min(1).max(200),
  description: z.string().max(2000).optional(),
  baseline: variantSpecSchema,
  candidate: variantSpecSchema,
  target: z.strictObject({
    namespace: z
      .string()
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
  successCriteria: z
    .strictObject({
      minCardinalityReductionPct: z.number().min(0).max(100).default(50),
      maxCriticalProcessLossPct: z.number().min(0).max(100).default(0),
      maxCollectorCpuOverheadPct: z.number().min(0).max(1000).default(10),
    })
    .default({
      minCardinalityReductionPct: 50,
      maxCriticalProcessLossPct: 0,
      maxCollectorCpuOverheadPct: 10,
    }),
});

export type ExperimentSpecInput = z.infer<typeof experimentSpecSchema>;

/**
 * The spec as stored events hold it: the same shape, without re-running the checks that only matter
 * when a user submits it (compiling every critical-process pattern again on each read of a stream).
 */
export const storedSpecSchema = experimentSpecSchema.extend({
  criticalProcesses: z.array(z.string().max(256)).max(100).default([]),
});
type Assignable<T extends U, U> = T;
/** Compile-time check: what the schema accepts is an ExperimentSpec. */
export type SpecSchemaFitsDomain = Assignable<ExperimentSpecInput, ExperimentSpec>;

const variant = z.enum(VARIANTS);
const at = z.iso.datetime({ offset: true });
const figures = z.object({ series: z.number(), datapointsPerMinute: z.number() });

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
});

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
  AnalysisRetried: z.object({ at, attempt: z.number().int().min(1), reason: z.string() }),
  ExperimentRuntimeExtended: z.object({
    at,
    extraSeconds: z.number().int().min(1),
    runEndsAt: at,
    reason: z.string(),
  }),
  ExperimentCompleted: z.object({ at, reason: z.string() }),
  ExperimentFailed: z.object({ at, reason: z.string() }),
  ExperimentCancelled: z.object({ at, reason: z.string() }),
  VariantTornDown: z.object({ at, variant }),
} as const;

export const eventMetadataSchema = z.object({
  eventId: z.uuid(),
  actor: z.string(),
  correlationId: z.string(),
  causationId: z.string().nullable(),
  occurredAt: at,
  schemaVersion: z.number().int().min(1),
});

/** Turns zod issues into the contract's `errors: [{ path, message }]`. */
export const issuesToErrors = (
  issues: readonly z.core.$ZodIssue[],
  prefix = '',
): { path: string; message: string }[] =>
  issues.map((i) => ({
    path: [prefix, ...i.path.map(String)].filter(Boolean).join('.') || '(root)',
    message: i.message,
  }));

import { createHash } from 'node:crypto';
import { z } from 'zod';
import { VARIANTS } from '../../domain/experiment-spec.js';
import { analysisSchema, storedSpecSchema } from '../schemas.js';

/**
 * The message bus of the sagas: commands go to one queue per kind of worker (competing consumers share
 * them), results come back on one queue the saga reads. Adapters: NATS JetStream and in-process.
 *
 * Delivery is at least once. Every message carries an id; a message re-sent with an id the bus has
 * already taken within its de-duplication window is dropped. A handler that resolves acknowledges its
 * message; one that throws (or whose consumer dies before resolving) gets it again, up to
 * `maxDeliveries` times in all, after which the message goes to the dead letters.
 *
 * Ids end to end: the saga derives each command's `commandId` from the event that caused it
 * ({@link deriveCommandId}), so re-running the saga over the same event re-sends the same id and the bus
 * drops the copy. A worker's result carries the `commandId` back and is published with the message id
 * {@link resultMessageId}(commandId), so a worker that runs a redelivered command again publishes an
 * answer the bus drops too; one that slips through (outside the window) is the saga's to ignore.
 */

const variant = z.enum(VARIANTS);
const id = z.string().min(1).max(200);
const experimentId = z.string().min(1).max(63);
/** An experiment id as every message carries it (a worker checks what it lists against it). */
export const busExperimentIdSchema = experimentId;

export const deployVariantSchema = z.object({
  type: z.literal('DeployVariant'),
  commandId: id,
  experimentId,
  variant,
  template: z.string().min(1),
  params: z.record(z.string(), z.unknown()).default({}),
  criticalProcesses: z.array(z.string()).default([]),
  hosts: z.number().int().min(1),
  namespace: z.string().min(1),
  nodeSelector: z.record(z.string(), z.string()).default({}),
  /** Id of the event that caused the command (for the saga's bookkeeping and tracing). */
  causationId: z.string().optional(),
  correlationId: z.string().optional(),
});

export const teardownExperimentSchema = z.object({
  type: z.literal('TeardownExperiment'),
  commandId: id,
  experimentId,
  namespace: z.string().min(1),
  causationId: z.string().optional(),
  correlationId: z.string().optional(),
});

/**
 * Reconciliation after a restart: which of the experiment's variants does the deployer hold? The
 * answer is a DeploymentVerified result; what to do about it is the saga's decision.
 */
export const verifyDeploymentSchema = z.object({
  type: z.literal('VerifyDeployment'),
  commandId: id,
  experimentId,
  namespace: z.string().min(1),
  causationId: z.string().optional(),
  correlationId: z.string().optional(),
});

/**
 * The saga's sweep (at start, then periodically): which experiments have objects in the namespace? The answer is a DeploymentsHeld
 * result; the saga tears down those of experiments that ended (their teardown never happened) and
 * leaves the rest. Not an experiment's command: it names none.
 */
export const sweepDeploymentsSchema = z.object({
  type: z.literal('SweepDeployments'),
  commandId: id,
  namespace: z.string().min(1),
  correlationId: z.string().optional(),
});

/** The run's window; the analyzer measures both variants over the same part of it, warm-up excluded. */
export const analysisWindowSchema = z
  .object({ start: z.iso.datetime({ offset: true }), end: z.iso.datetime({ offset: true }) })
  .refine((w) => Date.parse(w.end) > Date.parse(w.start), 'end must be after start');

export const analyzeExperimentSchema = z.object({
  type: z.literal('AnalyzeExperiment'),
  commandId: id,
  experimentId,
  spec: storedSpecSchema,
  window: analysisWindowSchema,
  causationId: z.string().optional(),
  correlationId: z.string().optional(),
});

/** A variant as it ran in the experiment, with the tuning its deployment reported (keepList, thresholds). */
const promotedVariantSchema = z.object({
  variant,
  template: z.string().min(1),
  params: z.record(z.string(), z.unknown()).default({}),
  tuning: z.record(z.string(), z.unknown()).optional(),
});

/** The promoter: commit the candidate's configs and the evidence to the GitOps repository, and push. */
export const commitPromotionSchema = z.object({
  type: z.literal('CommitPromotion'),
  commandId: id,
  experimentId,
  actor: z.string().min(1),
  spec: storedSpecSchema,
  analysis: analysisSchema,
  candidate: promotedVariantSchema,
  requestedAt: z.iso.datetime({ offset: true }),
  causationId: z.string().optional(),
  correlationId: z.string().optional(),
});

/** The promoter: revert a promotion's commit and push the revert (compensation, or a rollback). */
export const revertPromotionSchema = z.object({
  type: z.literal('RevertPromotion'),
  commandId: id,
  experimentId,
  step: z.enum(['compensate', 'rollback']),
  commit: z.string().regex(/^[0-9a-f]{7,64}$/),
  actor: z.string().min(1),
  cause: z.string().optional(),
  causationId: z.string().optional(),
  correlationId: z.string().optional(),
});

/** The deployer: run one variant over the whole target in place of what runs there. */
export const rolloutTargetSchema = z.object({
  type: z.literal('RolloutTarget'),
  commandId: id,
  experimentId,
  step: z.enum(['promote', 'rollback']),
  rollout: promotedVariantSchema,
  criticalProcesses: z.array(z.string()).default([]),
  hosts: z.number().int().min(1),
  namespace: z.string().min(1),
  nodeSelector: z.record(z.string(), z.string()).default({}),
  commit: z.string().min(1),
  causationId: z.string().optional(),
  correlationId: z.string().optional(),
});

/** A look at a running experiment for early abort: the answer is a ProbeCompleted result. */
export const probeExperimentSchema = z.object({
  type: z.literal('ProbeExperiment'),
  commandId: id,
  experimentId,
  spec: storedSpecSchema,
  runStartedAt: z.iso.datetime({ offset: true }),
  causationId: z.string().optional(),
  correlationId: z.string().optional(),
});

export const busCommandSchema = z.discriminatedUnion('type', [
  deployVariantSchema,
  teardownExperimentSchema,
  analyzeExperimentSchema,
  verifyDeploymentSchema,
  sweepDeploymentsSchema,
  commitPromotionSchema,
  revertPromotionSchema,
  rolloutTargetSchema,
  probeExperimentSchema,
]);

const resultBase = {
  /** The command this answers. */
  commandId: id,
  experimentId,
  /** When the worker finished (the saga passes it on as the domain command's `at`). */
  at: z.iso.datetime({ offset: true }),
  correlationId: z.string().optional(),
};

export const variantDeployedSchema = z.object({
  type: z.literal('VariantDeployed'),
  ...resultBase,
  variant,
  detail: z.record(z.string(), z.unknown()).default({}),
});

export const variantDeployFailedSchema = z.object({
  type: z.literal('VariantDeployFailed'),
  ...resultBase,
  variant,
  reason: z.string(),
});

export const experimentTornDownSchema = z.object({
  type: z.literal('ExperimentTornDown'),
  ...resultBase,
  /** The variants that are gone now (both, whether this answer removed them or an earlier one did). */
  variants: z.array(variant),
  detail: z.record(z.string(), z.unknown()).default({}),
});

export const deploymentVerifiedSchema = z.object({
  type: z.literal('DeploymentVerified'),
  ...resultBase,
  /** The variants the deployer holds. */
  present: z.array(variant),
  /** The variants it does not hold. */
  missing: z.array(variant),
});

/** The answer to SweepDeployments: the experiments the deployer holds objects of in the namespace. */
export const deploymentsHeldSchema = z.object({
  type: z.literal('DeploymentsHeld'),
  commandId: id,
  namespace: z.string().min(1),
  experimentIds: z.array(experimentId),
  at: z.iso.datetime({ offset: true }),
  correlationId: z.string().optional(),
});

export const analysisCompletedSchema = z.object({
  type: z.literal('AnalysisCompleted'),
  ...resultBase,
  analysis: analysisSchema,
});

export const analysisFailedSchema = z.object({
  type: z.literal('AnalysisFailed'),
  ...resultBase,
  reason: z.string(),
});

export const promotionCommittedSchema = z.object({
  type: z.literal('PromotionCommitted'),
  ...resultBase,
  repository: z.string(),
  path: z.string(),
  commit: z.string(),
});

export const promotionRevertedSchema = z.object({
  type: z.literal('PromotionReverted'),
  ...resultBase,
  step: z.enum(['compensate', 'rollback']),
  /** The revert commit. */
  commit: z.string(),
  /** The promotion's commit it reverts. */
  reverted: z.string(),
  cause: z.string().optional(),
});

export const gitopsFailedSchema = z.object({
  type: z.literal('GitopsFailed'),
  ...resultBase,
  step: z.enum(['promote', 'compensate', 'rollback']),
  reason: z.string(),
  cause: z.string().optional(),
});

export const targetRolledOutSchema = z.object({
  type: z.literal('TargetRolledOut'),
  ...resultBase,
  step: z.enum(['promote', 'rollback']),
  detail: z.record(z.string(), z.unknown()).default({}),
});

export const targetRolloutFailedSchema = z.object({
  type: z.literal('TargetRolloutFailed'),
  ...resultBase,
  step: z.enum(['promote', 'rollback']),
  reason: z.string(),
  commit: z.string(),
});

const collectorHealthSchema = z.object({
  restarts: z.number().nullable(),
  droppedPoints: z.number().nullable(),
});

/** What a probe found (domain/early-abort.ts ProbeFindings). */
export const probeFindingsSchema = z.object({
  at: z.iso.datetime({ offset: true }),
  missingCriticalProcesses: z.array(z.string()).nullable(),
  collectorHealth: z.object({ baseline: collectorHealthSchema, candidate: collectorHealthSchema }),
  detail: z.record(z.string(), z.unknown()).optional(),
});

export const probeCompletedSchema = z.object({
  type: z.literal('ProbeCompleted'),
  ...resultBase,
  findings: probeFindingsSchema,
});

export const busResultSchema = z.discriminatedUnion('type', [
  probeCompletedSchema,
  variantDeployedSchema,
  variantDeployFailedSchema,
  experimentTornDownSchema,
  deploymentVerifiedSchema,
  deploymentsHeldSchema,
  analysisCompletedSchema,
  analysisFailedSchema,
  promotionCommittedSchema,
  promotionRevertedSchema,
  gitopsFailedSchema,
  targetRolledOutSchema,
  targetRolloutFailedSchema,
]);

export type DeployVariant = z.infer<typeof deployVariantSchema>;
export type TeardownExperiment = z.infer<typeof teardownExperimentSchema>;
export type AnalyzeExperiment = z.infer<typeof analyzeExperimentSchema>;
export type VerifyDeployment = z.infer<typeof verifyDeploymentSchema>;
export type SweepDeployments = z.infer<typeof sweepDeploymentsSchema>;
export type CommitPromotion = z.infer<typeof commitPromotionSchema>;
export type RevertPromotion = z.infer<typeof revertPromotionSchema>;
export type RolloutTarget = z.infer<typeof rolloutTargetSchema>;
export type ProbeExperiment = z.infer<typeof probeExperimentSchema>;
export type ProbeCompletedResult = z.infer<typeof probeCompletedSchema>;
export type AnalysisWindow = z.infer<typeof analysisWindowSchema>;
export type BusCommand = z.infer<typeof busCommandSchema>;
/** What a sender writes: defaults (empty params, no critical processes…) may be left out. */
export type BusCommandInput = z.input<typeof busCommandSchema>;
export type VariantDeployedResult = z.infer<typeof variantDeployedSchema>;
export type VariantDeployFailedResult = z.infer<typeof variantDeployFailedSchema>;
export type ExperimentTornDownResult = z.infer<typeof experimentTornDownSchema>;
export type DeploymentVerifiedResult = z.infer<typeof deploymentVerifiedSchema>;
export type DeploymentsHeldResult = z.infer<typeof deploymentsHeldSchema>;
export type AnalysisCompletedResult = z.infer<typeof analysisCompletedSchema>;
export type AnalysisFailedResult = z.infer<typeof analysisFailedSchema>;
export type BusResult = z.infer<typeof busResultSchema>;
export type BusResultInput = z.input<typeof busResultSchema>;

/** The workers a command is for; each kind has its own queue. */
export type CommandQueue = 'deployer' | 'analyzer' | 'promoter';

export const queueOf = (type: BusCommand['type']): CommandQueue => {
  switch (type) {
    case 'DeployVariant':
    case 'TeardownExperiment':
    case 'VerifyDeployment':
    case 'SweepDeployments':
    case 'RolloutTarget':
      return 'deployer';
    case 'CommitPromotion':
    case 'RevertPromotion':
      return 'promoter';
    case 'AnalyzeExperiment':
    case 'ProbeExperiment':
      return 'analyzer';
    default: {
      const _never: never = type;
      return _never;
    }
  }
};

/** A message that kept failing, as the dead letters keep it. */
export interface DeadLetter {
  /** `command.<queue>` or `result`. */
  readonly source: string;
  readonly messageId: string;
  /** The message as it was sent (parsed JSON, or the raw text when it was not JSON). */
  readonly message: unknown;
  readonly deliveries: number;
  /** The last handler error, or why the message could not be handled at all. */
  readonly error: string;
  readonly at: string;
}

export interface Delivery {
  readonly messageId: string;
  /** 1 on first delivery, 2 on the first redelivery, … */
  readonly attempt: number;
  /** Whether this is the last delivery before the message goes to the dead letters if the handler throws. */
  readonly lastAttempt: boolean;
}

export type Handler<M> = (message: M, delivery: Delivery) => Promise<void>;

export interface HandleOptions {
  /** Messages this consumer handles at once; default 1. */
  readonly concurrency?: number;
}

/** A running consumer. */
export interface Consumer {
  /** Takes no new messages, waits for the handlers in flight, then detaches. */
  stop(): Promise<void>;
}

export interface Bus {
  /** Sends a command to its queue; resolves once the bus has taken it (durably, where the bus is durable). */
  send(command: BusCommandInput): Promise<void>;
  /** Consumes one queue's commands, competing with every other consumer of that queue. */
  handleCommands(
    queue: CommandQueue,
    handler: Handler<BusCommand>,
    options?: HandleOptions,
  ): Promise<Consumer>;
  /** Publishes a worker's result (message id {@link resultMessageId} of its command id). */
  publish(result: BusResultInput): Promise<void>;
  /** Consumes results, competing with every other result consumer (one saga instance gets each). */
  handleResults(handler: Handler<BusResult>, options?: HandleOptions): Promise<Consumer>;
  /** Consumes the dead letters (of every queue). */
  handleDeadLetters(handler: Handler<DeadLetter>, options?: HandleOptions): Promise<Consumer>;
  /** Cheap liveness probe of the backing service (for readiness). */
  ping(): Promise<void>;
  /**
   * Stops every consumer of this client, waiting up to `graceMs` (default 10 s) for handlers in flight;
   * messages still unacknowledged then are redelivered to other consumers.
   */
  close(options?: { readonly graceMs?: number }): Promise<void>;
}

/** A command or result that does not match its schema: never redelivered, it goes to the dead letters. */
export class MalformedMessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MalformedMessageError';
  }
}

const uuidFromHash = (text: string): string => {
  const h = createHash('sha256').update(text).digest();
  // An RFC 4122 layout (version 5-like, variant 10xx), so the id reads as a UUID wherever one is expected.
  h[6] = ((h[6] as number) & 0x0f) | 0x50;
  h[8] = ((h[8] as number) & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
};

/**
 * A command id derived from the event that caused the command and what the command is for
 * (e.g. `deploy:baseline`): the same event always yields the same id, different purposes different ids.
 */
export const deriveCommandId = (causationEventId: string, purpose: string): string =>
  uuidFromHash(`phoenix.command\u0000${causationEventId}\u0000${purpose}`);

/** The message id a command's result is published with: the same for every answer to one command. */
export const resultMessageId = (commandId: string): string => `result:${commandId}`;

/** The message id a command is sent with. */
export const commandMessageId = (commandId: string): string => `command:${commandId}`;

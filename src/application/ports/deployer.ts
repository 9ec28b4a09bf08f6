import type { Variant } from '../../domain/experiment-spec.js';
import type { CollectorConfig, ProcessUsageTable, TemplateName } from '../../domain/pipelines/index.js';

/**
 * What the deployer worker needs to put a variant's collector on the data plane (the local simulation
 * or a Kubernetes cluster) and to take an experiment's variants away again.
 */

export interface VariantDeployment {
  readonly experimentId: string;
  readonly variant: Variant;
  readonly template: TemplateName;
  /** The validated template parameters (with defaults), for labels and the record. */
  readonly params: Readonly<Record<string, unknown>>;
  /** The rendered collector config, exactly what runs. */
  readonly config: CollectorConfig;
  readonly namespace: string;
  readonly nodeSelector: Readonly<Record<string, string>>;
  /** Nodes of the target (sizes the local data plane; a cluster's node selector decides there). */
  readonly hosts: number;
  readonly criticalProcesses: readonly string[];
}

/**
 * A deploy that ran to its end: ready, or refused for a reason that trying again will not change
 * (an invalid object, a missing permission, a readiness timeout), in the API's own words.
 */
export type DeployOutcome =
  | { readonly ok: true; readonly detail: Readonly<Record<string, unknown>> }
  | { readonly ok: false; readonly reason: string };

export interface DeployOptions {
  /** Aborted when the worker gives the deploy up (shutdown); the deployer stops waiting and throws. */
  readonly signal?: AbortSignal;
}

export interface Deployer {
  /**
   * Applies the variant and waits until it is ready. Idempotent: deploying the same variant again
   * converges on the same objects. Throws on transient trouble (the API unreachable, a 5xx), which
   * the worker retries; a permanent refusal is an outcome, not an exception.
   */
  deploy(deployment: VariantDeployment, options?: DeployOptions): Promise<DeployOutcome>;
  /** Removes every object of the experiment; removing what is already gone succeeds. */
  teardown(experimentId: string, namespace: string): Promise<{ readonly variants: readonly Variant[] }>;
  /** Whether the variant's objects exist (for recovery of experiments stuck in initializing). */
  isDeployed(experimentId: string, variant: Variant, namespace: string): Promise<boolean>;
  /**
   * The variants of the experiment this deployer holds now, for reconciliation after a restart: a
   * data plane that restarted may have lost what its events say was deployed (the local one always
   * does), a cluster keeps it.
   */
  deployedVariants(experimentId: string, namespace: string): Promise<readonly Variant[]>;
}

/**
 * Per-process usage a deployed variant observed (normally the baseline's), for the templates that are
 * completed from it (top-k, intelligent, adaptive); undefined while the variant has reported nothing.
 */
export interface UsageSource {
  usage(experimentId: string, variant: Variant): Promise<ProcessUsageTable | undefined>;
}

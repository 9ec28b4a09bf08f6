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

/**
 * A promotion's rollout: one variant of a finished experiment, run over the whole target (its
 * namespace and node selector) in place of whatever collector runs there. What runs is the target's,
 * not the experiment's: objects are named and labelled for the target, and a later rollout (another
 * promotion, or a rollback) replaces them.
 */
export interface TargetRollout {
  /** The experiment the config comes from (recorded on the objects, never part of their names). */
  readonly experimentId: string;
  readonly variant: Variant;
  readonly template: TemplateName;
  readonly params: Readonly<Record<string, unknown>>;
  /** The rendered collector config, exactly what the promotion committed. */
  readonly config: CollectorConfig;
  readonly namespace: string;
  readonly nodeSelector: Readonly<Record<string, string>>;
  readonly hosts: number;
  readonly criticalProcesses: readonly string[];
  /** The GitOps commit this rollout carries out. */
  readonly commit: string;
}

/** The key of a target: its namespace and node selector, in a stable order. */
export const targetKeyOf = (namespace: string, nodeSelector: Readonly<Record<string, string>>): string => {
  const selector = Object.keys(nodeSelector)
    .sort()
    .map((k) => `${k}=${nodeSelector[k]}`)
    .join(',');
  return selector === '' ? namespace : `${namespace}/${selector}`;
};

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
  /**
   * The experiments that have objects in the namespace now, each once, for the saga's sweep (at start,
   * then periodically):
   * an experiment that ended while its teardown never happened left objects nothing else removes. A
   * promotion's rollout runs the target's objects, not an experiment's: they are never listed.
   */
  heldExperiments(namespace: string): Promise<readonly string[]>;
  /**
   * Runs the rollout's variant over its whole target in place of what runs there, and waits until it
   * is ready. Idempotent: rolling the same config out again converges on the same objects. Throws on
   * transient trouble; a permanent refusal (a deployer that cannot roll out, an invalid object) is
   * an outcome.
   */
  rollout(rollout: TargetRollout, options?: DeployOptions): Promise<DeployOutcome>;
}

/**
 * Per-process usage a deployed variant observed (normally the baseline's), for the templates that are
 * completed from it (top-k, intelligent, adaptive); undefined while the variant has reported nothing.
 */
export interface UsageSource {
  usage(experimentId: string, variant: Variant): Promise<ProcessUsageTable | undefined>;
}

import {
  type Deployer,
  type DeployOutcome,
  type TargetRollout,
  targetKeyOf,
  type UsageSource,
  type VariantDeployment,
} from '../application/ports/deployer.js';
import type { Variant } from '../domain/experiment-spec.js';
import { VARIANTS } from '../domain/experiment-spec.js';
import type { ProcessUsageTable } from '../domain/pipelines/index.js';
import { type LocalDataPlane, LocalDataPlaneError } from './local-dataplane.js';
import { fleetSeedOf } from './local-dataplane-fleet.js';

export interface LocalDeployerOptions {
  /** Simulated processes per host; the data plane's default (500) when absent. */
  readonly processesPerHost?: number;
}

/**
 * The `local` deployer: starts the variant's emulated collector on the local data plane and reports it
 * ready, as a cluster reports a DaemonSet ready before its collectors have scraped: the first scrape
 * comes at the data plane's next tick, or when the baseline's usage is first asked for (to tune a
 * candidate). Deploying again replaces the variant with the same config: redelivered commands are
 * harmless.
 */
/** What runs over a target of the local data plane since a promotion's rollout. */
export interface LocalTargetRollout {
  readonly target: string;
  readonly experimentId: string;
  readonly variant: Variant;
  readonly template: string;
  readonly commit: string;
  readonly hosts: number;
}

export class LocalDeployer implements Deployer, UsageSource {
  /** Rollouts by target key: the collector that runs over each target in place of its baseline. */
  readonly #targets = new Map<string, LocalTargetRollout>();
  /**
   * The namespace each experiment was deployed to: the data plane itself has none, and the sweep asks
   * by namespace. What the plane holds without an entry here was not deployed through this deployer.
   */
  readonly #namespaces = new Map<string, string>();

  constructor(
    private readonly plane: LocalDataPlane,
    private readonly options: LocalDeployerOptions = {},
  ) {}

  async deploy(d: VariantDeployment): Promise<DeployOutcome> {
    try {
      const started = this.plane.startVariant({
        experimentId: d.experimentId,
        variant: d.variant,
        config: d.config,
        hosts: d.hosts,
        seed: fleetSeedOf(d.experimentId),
        criticalProcesses: d.criticalProcesses,
        ...(this.options.processesPerHost ? { processesPerHost: this.options.processesPerHost } : {}),
      });
      this.#namespaces.set(d.experimentId, d.namespace);
      return {
        ok: true,
        detail: {
          dataPlane: 'local',
          hosts: started.hosts,
          collectionIntervalSeconds: started.collectionIntervalSeconds,
          ...(started.endpoint ? { endpoint: started.endpoint } : {}),
        },
      };
    } catch (err) {
      if (err instanceof LocalDataPlaneError) return { ok: false, reason: err.message };
      throw err;
    }
  }

  async teardown(experimentId: string): Promise<{ readonly variants: readonly Variant[] }> {
    const variants = VARIANTS.filter((v) => this.plane.isDeployed(experimentId, v));
    this.plane.teardown(experimentId);
    this.#namespaces.delete(experimentId);
    return { variants };
  }

  async isDeployed(experimentId: string, variant: Variant): Promise<boolean> {
    return this.plane.isDeployed(experimentId, variant);
  }

  async deployedVariants(experimentId: string): Promise<readonly Variant[]> {
    return VARIANTS.filter((v) => this.plane.isDeployed(experimentId, v));
  }

  /** Rollouts run under `target:<key>` ids, never entered in #namespaces: they are not listed. */
  async heldExperiments(namespace: string): Promise<readonly string[]> {
    return [...this.#namespaces]
      .filter(([id, ns]) => ns === namespace && VARIANTS.some((v) => this.plane.isDeployed(id, v)))
      .map(([id]) => id);
  }

  async usage(experimentId: string, variant: Variant): Promise<ProcessUsageTable | undefined> {
    return this.plane.usage(experimentId, variant);
  }

  /**
   * The simulated target runs one collector (as a cluster's DaemonSet would), on the data plane under
   * the target's key: a rollout replaces it (collectors restart with the new config over the same
   * fleet, whose processes are the target's, not an experiment's).
   */
  async rollout(r: TargetRollout): Promise<DeployOutcome> {
    const target = targetKeyOf(r.namespace, r.nodeSelector);
    const planeId = `target:${target}`;
    const current = this.#targets.get(target);
    if (
      current?.commit === r.commit &&
      current.variant === r.variant &&
      this.plane.isDeployed(planeId, 'baseline')
    )
      return { ok: true, detail: { dataPlane: 'local', target, hosts: current.hosts, unchanged: true } };
    try {
      this.plane.teardown(planeId);
      const started = this.plane.startVariant({
        experimentId: planeId,
        variant: 'baseline',
        config: r.config,
        hosts: r.hosts,
        seed: fleetSeedOf(planeId),
        criticalProcesses: r.criticalProcesses,
        ...(this.options.processesPerHost ? { processesPerHost: this.options.processesPerHost } : {}),
      });
      this.#targets.set(target, {
        target,
        experimentId: r.experimentId,
        variant: r.variant,
        template: r.template,
        commit: r.commit,
        hosts: started.hosts,
      });
      return {
        ok: true,
        detail: {
          dataPlane: 'local',
          target,
          hosts: started.hosts,
          ...(started.endpoint ? { endpoint: started.endpoint } : {}),
          ...(current ? { replaced: { experimentId: current.experimentId, variant: current.variant } } : {}),
        },
      };
    } catch (err) {
      if (err instanceof LocalDataPlaneError) return { ok: false, reason: err.message };
      throw err;
    }
  }

  /** What runs over a target since its last rollout (undefined: nothing was rolled out there). */
  targetRollout(
    namespace: string,
    nodeSelector: Readonly<Record<string, string>>,
  ): LocalTargetRollout | undefined {
    return this.#targets.get(targetKeyOf(namespace, nodeSelector));
  }
}

import type {
  Deployer,
  DeployOutcome,
  UsageSource,
  VariantDeployment,
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
export class LocalDeployer implements Deployer, UsageSource {
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
    return { variants };
  }

  async isDeployed(experimentId: string, variant: Variant): Promise<boolean> {
    return this.plane.isDeployed(experimentId, variant);
  }

  async deployedVariants(experimentId: string): Promise<readonly Variant[]> {
    return VARIANTS.filter((v) => this.plane.isDeployed(experimentId, v));
  }

  async usage(experimentId: string, variant: Variant): Promise<ProcessUsageTable | undefined> {
    return this.plane.usage(experimentId, variant);
  }
}

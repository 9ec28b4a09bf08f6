import type { VariantSpec } from '../../domain/experiment-spec.js';

/**
 * Runs an experiment's two pipelines over a sample of the fleet it would run on, once, before it
 * starts: what the preview estimates from. An implementation renders each variant as the deployer
 * worker does (a tuned candidate from the baseline's usage on the same sample), runs both over the
 * same hosts at the same moment, and reports what each would export.
 */
export interface FleetSampleRequest {
  /** The experiment's id: the fleet is the one the run would get (the same seed). */
  readonly experimentId: string;
  /** Hosts to run: the first `hosts` of the target's fleet. */
  readonly hosts: number;
  readonly baseline: VariantSpec;
  readonly candidate: VariantSpec;
  readonly criticalProcesses: readonly string[];
}

export interface VariantSample {
  /** Process series exported over the sampled hosts. */
  readonly series: number;
  readonly datapointsPerMinute: number;
  /** Critical (node, executable) pairs present in the output, as `node/executable`. */
  readonly critical: readonly string[];
}

export type FleetSampleOutcome =
  | {
      readonly ok: true;
      readonly hosts: number;
      readonly baseline: VariantSample;
      readonly candidate: VariantSample;
    }
  /** The spec cannot be run (a config the data plane refuses, a tuning without usage): the user's input. */
  | { readonly ok: false; readonly reason: string };

export interface FleetSampler {
  /**
   * Samples the fleet. Throws when the sampling itself failed (it ran out of time or memory, or
   * its worker died), which is not the spec's fault.
   */
  sample(
    request: FleetSampleRequest,
    options?: { readonly signal?: AbortSignal },
  ): Promise<FleetSampleOutcome>;
}

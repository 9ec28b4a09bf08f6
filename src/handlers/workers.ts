import { EventEmitter, once } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import pLimit from 'p-limit';
import type { Logger } from 'pino';
import type { Analyzer } from '../application/ports/analyzer.js';
import {
  type AnalyzeExperiment,
  type Bus,
  type BusCommand,
  busExperimentIdSchema,
  type Consumer,
  type Delivery,
  type DeployVariant,
  type ProbeExperiment,
  type RolloutTarget,
  type SweepDeployments,
  type TeardownExperiment,
  type VerifyDeployment,
} from '../application/ports/bus.js';
import type { Deployer, UsageSource } from '../application/ports/deployer.js';
import { withCost } from '../application/pricing.js';
import type { PricingProfile } from '../domain/cost.js';
import type { ProbeFindings } from '../domain/early-abort.js';
import type { Variant } from '../domain/experiment-spec.js';
import { VARIANTS } from '../domain/experiment-spec.js';
import {
  computeTuning,
  parseTemplateParams,
  type RenderedVariant,
  renderVariant,
  type Tuning,
  type ValidationIssue,
} from '../domain/pipelines/index.js';
import { judge } from '../domain/verdict.js';
import { renderPromoted } from './promoted-render.js';

/**
 * The saga's workers. Each takes commands from its queue on the bus, does the work through a port and
 * publishes one result carrying the command's id. Both are idempotent under redelivery: deploying and
 * tearing down converge on the same state, analysing measures again, and the answer to one command is
 * always published with the same message id, so the bus drops a repeat.
 *
 * A command answers with a result whatever happens, so the saga is never left waiting: a permanent
 * failure (invalid config, the API's refusal, readiness timeout) is a *Failed result at once; a transient
 * one (the API or Prometheus unreachable) is thrown for redelivery, and on the last delivery becomes a
 * *Failed result. Only a teardown that keeps failing ends in the dead letters (there is no failed-teardown
 * result: the saga's recovery retries it).
 */

export type WorkerLogger = Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;

export interface DeployerWorkerDeps {
  readonly bus: Bus;
  readonly deployer: Deployer;
  /**
   * Where a candidate tuned from the baseline (top-k, intelligent, adaptive) reads the baseline's usage;
   * without one, such a candidate fails at once with the reason.
   */
  readonly usage?: UsageSource;
  readonly logger: WorkerLogger;
  readonly clock?: () => Date;
  /**
   * Deploys and teardowns carried out at once; default 4. The worker takes more commands than that
   * off the queue (DEPLOY_COMMANDS_PER_SLOT per slot), so a tuned candidate waiting for its
   * baseline's usage holds no slot, and the baseline it waits for is never queued behind it.
   */
  readonly concurrency?: number;
  /** How long a tuned candidate waits for the baseline's usage; default 5 minutes. */
  readonly tuningWaitMs?: number;
  /** Longest pause between looks at the baseline's usage (they start at 50 ms and double); default 1 s. */
  readonly tuningPollMs?: number;
  /** Where the rendered collectors send OTLP (the render's in-cluster default when absent). */
  readonly otlpEndpoint?: string;
}

export interface AnalyzerWorkerDeps {
  readonly bus: Bus;
  readonly analyzer: Analyzer;
  readonly logger: WorkerLogger;
  readonly clock?: () => Date;
  /** The pricing profiles every analysis is priced with (analysis.cost); none: no cost. */
  readonly pricingProfiles?: readonly PricingProfile[];
  /** Default 2. */
  readonly concurrency?: number;
}

const describeIssues = (errors: readonly ValidationIssue[]): string =>
  errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join('; ');

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** A deploy that could not even start: the config does not render or tuning found no baseline data. */
class PermanentDeployFailure extends Error {}

/** Commands the deployer holds per deploy slot: most of them wait (for a baseline, for a slot). */
const DEPLOY_COMMANDS_PER_SLOT = 8;

/** Starts the deployer worker: the `deployer` queue's commands (deploy, teardown, verify, sweep, rollout). */
export async function startDeployerWorker(deps: DeployerWorkerDeps): Promise<Consumer> {
  const clock = deps.clock ?? (() => new Date());
  const stopping = new AbortController();
  const slots = pLimit(deps.concurrency ?? 4);
  // Teardowns have slots of their own: an experiment that ended never waits behind a hundred deploys
  // still waiting for readiness (seen at 100 experiments on a 1,000-node cluster).
  const teardownSlots = pLimit(deps.concurrency ?? 4);
  // A baseline this worker deploys wakes its candidate at once; one deployed elsewhere is found by
  // the candidate's next look at the usage source.
  const baselines = new EventEmitter();
  baselines.setMaxListeners(0);
  const untilBaselineOrTimeout = async (experimentId: string, ms: number): Promise<void> => {
    // Whichever ends first aborts the other (its AbortError goes to the settled race); a stopping
    // worker ends both, and its caller looks at `stopping`.
    const over = new AbortController();
    const signal = AbortSignal.any([stopping.signal, over.signal]);
    try {
      await Promise.race([once(baselines, experimentId, { signal }), delay(ms, undefined, { signal })]);
    } catch (err) {
      if (!signal.aborted) throw err;
    } finally {
      over.abort();
    }
  };
  const render = (
    command: DeployVariant,
    tuning: Tuning | undefined,
  ): Extract<RenderedVariant, { ok: true }> => {
    const rendered = renderVariant({
      experimentId: command.experimentId,
      variant: command.variant,
      template: command.template,
      params: command.params,
      criticalProcesses: command.criticalProcesses,
      ...(tuning?.keepList ? { keepList: tuning.keepList } : {}),
      ...(tuning?.thresholds ? { thresholds: tuning.thresholds } : {}),
      ...(deps.otlpEndpoint ? { otlpEndpoint: deps.otlpEndpoint } : {}),
    });
    if (!rendered.ok)
      throw new PermanentDeployFailure(
        `the ${command.variant} config is invalid: ${describeIssues(rendered.errors)}`,
      );
    return rendered;
  };

  /** Waits for the baseline's usage and computes the candidate's keep-list or thresholds from it. */
  const tune = async (command: DeployVariant): Promise<Tuning | undefined> => {
    const parsed = parseTemplateParams(command.template, command.params);
    if (!parsed.ok) throw new PermanentDeployFailure(describeIssues(parsed.errors));
    const source = deps.usage;
    if (source === undefined)
      throw new PermanentDeployFailure(
        `${command.template} is tuned from the baseline's process usage, and nothing provides it here (set PROMETHEUS_URL)`,
      );
    const waitMs = deps.tuningWaitMs ?? 300_000;
    const deadline = Date.now() + waitMs;
    let logged = false;
    // The baseline is usually being deployed at the same moment: look again soon, then less often.
    let pollMs = 50;
    for (;;) {
      const usage = await source.usage(command.experimentId, 'baseline');
      if (usage !== undefined && usage.length > 0)
        return computeTuning(parsed.value, usage, command.criticalProcesses);
      if (Date.now() >= deadline || stopping.signal.aborted) break;
      if (!logged) {
        logged = true;
        deps.logger.info(
          { commandId: command.commandId, experimentId: command.experimentId },
          "waiting for the baseline's usage to tune the candidate",
        );
      }
      await untilBaselineOrTimeout(command.experimentId, Math.min(pollMs, deps.tuningPollMs ?? 1_000));
      pollMs *= 2;
    }
    if (stopping.signal.aborted) throw new Error('worker stopping');
    throw new PermanentDeployFailure(
      `the baseline reported no process usage within ${Math.round(waitMs / 1000)} s; ${command.template} is tuned from it`,
    );
  };

  const deploy = async (command: DeployVariant, delivery: Delivery): Promise<void> => {
    const base = {
      commandId: command.commandId,
      experimentId: command.experimentId,
      variant: command.variant,
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    };
    const fail = (reason: string) =>
      deps.bus.publish({ type: 'VariantDeployFailed', ...base, at: clock().toISOString(), reason });
    try {
      let rendered = render(command, undefined);
      let tuning: Tuning | undefined;
      if (rendered.pendingTuning && command.variant === 'candidate') {
        tuning = await tune(command);
        rendered = render(command, tuning);
      }
      const outcome = await slots(() =>
        deps.deployer.deploy(
          {
            experimentId: command.experimentId,
            variant: command.variant,
            template: rendered.template,
            params: rendered.params as Readonly<Record<string, unknown>>,
            config: rendered.config,
            namespace: command.namespace,
            nodeSelector: command.nodeSelector,
            hosts: command.hosts,
            criticalProcesses: command.criticalProcesses,
          },
          { signal: stopping.signal },
        ),
      );
      if (!outcome.ok) {
        deps.logger.warn({ ...base, reason: outcome.reason }, 'variant deployment failed');
        await fail(outcome.reason);
        return;
      }
      deps.logger.info({ ...base, attempt: delivery.attempt }, 'variant deployed');
      if (command.variant === 'baseline') baselines.emit(command.experimentId);
      await deps.bus.publish({
        type: 'VariantDeployed',
        ...base,
        at: clock().toISOString(),
        detail: {
          ...outcome.detail,
          template: rendered.template,
          ...(tuning?.keepList ? { keepList: tuning.keepList } : {}),
          ...(tuning?.thresholds ? { thresholds: tuning.thresholds } : {}),
        },
      });
    } catch (err) {
      if (err instanceof PermanentDeployFailure) {
        deps.logger.warn({ ...base, reason: err.message }, 'variant deployment failed');
        await fail(err.message);
        return;
      }
      if (!delivery.lastAttempt || stopping.signal.aborted) throw err;
      deps.logger.error({ ...base, err: errorText(err) }, 'variant deployment failed on its last attempt');
      await fail(`gave up after ${delivery.attempt} attempts: ${errorText(err)}`);
    }
  };

  const teardown = async (command: TeardownExperiment): Promise<void> => {
    const { variants } = await teardownSlots(() =>
      deps.deployer.teardown(command.experimentId, command.namespace),
    );
    deps.logger.info({ experimentId: command.experimentId, removed: variants }, 'experiment torn down');
    await deps.bus.publish({
      type: 'ExperimentTornDown',
      commandId: command.commandId,
      experimentId: command.experimentId,
      at: clock().toISOString(),
      variants: [...VARIANTS] as Variant[],
      detail: { removed: variants },
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    });
  };

  const verify = async (command: VerifyDeployment): Promise<void> => {
    const present = await deps.deployer.deployedVariants(command.experimentId, command.namespace);
    const missing = VARIANTS.filter((v) => !present.includes(v));
    deps.logger.info({ experimentId: command.experimentId, present, missing }, 'deployment verified');
    await deps.bus.publish({
      type: 'DeploymentVerified',
      commandId: command.commandId,
      experimentId: command.experimentId,
      at: clock().toISOString(),
      present: [...present],
      missing,
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    });
  };

  /**
   * The experiments with objects in the namespace. An id the result's schema would refuse (a label
   * set by hand on a cluster object, say) cannot be one of the saga's experiments: it is logged and
   * left out, so the answer is not lost to the dead letters.
   */
  const sweep = async (command: SweepDeployments): Promise<void> => {
    const held = await deps.deployer.heldExperiments(command.namespace);
    const valid = held.filter((id) => busExperimentIdSchema.safeParse(id).success);
    if (valid.length < held.length)
      deps.logger.warn(
        { namespace: command.namespace, ids: held.filter((id) => !valid.includes(id)).slice(0, 10) },
        'objects labelled with ids that are not experiment ids; left out of the sweep',
      );
    deps.logger.info({ namespace: command.namespace, experiments: valid.length }, 'deployments listed');
    await deps.bus.publish({
      type: 'DeploymentsHeld',
      commandId: command.commandId,
      namespace: command.namespace,
      experimentIds: [...new Set(valid)],
      at: clock().toISOString(),
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    });
  };

  /** A promotion's rollout (or a rollback's): the variant over the whole target, in place of what runs there. */
  const rollout = async (command: RolloutTarget, delivery: Delivery): Promise<void> => {
    const base = {
      commandId: command.commandId,
      experimentId: command.experimentId,
      step: command.step,
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    };
    const fail = (reason: string) =>
      deps.bus.publish({
        type: 'TargetRolloutFailed',
        ...base,
        at: clock().toISOString(),
        reason,
        commit: command.commit,
      });
    const rendered = renderPromoted(
      command.experimentId,
      command.rollout,
      command.criticalProcesses,
      deps.otlpEndpoint,
    );
    if (!rendered.ok) {
      await fail(rendered.reason);
      return;
    }
    try {
      const outcome = await slots(() =>
        deps.deployer.rollout(
          {
            experimentId: command.experimentId,
            variant: command.rollout.variant,
            template: rendered.rendered.template,
            params: rendered.rendered.params as Readonly<Record<string, unknown>>,
            config: rendered.rendered.config,
            namespace: command.namespace,
            nodeSelector: command.nodeSelector,
            hosts: command.hosts,
            criticalProcesses: command.criticalProcesses,
            commit: command.commit,
          },
          { signal: stopping.signal },
        ),
      );
      if (!outcome.ok) {
        deps.logger.warn({ ...base, reason: outcome.reason }, 'rollout failed');
        await fail(outcome.reason);
        return;
      }
      deps.logger.info({ ...base, variant: command.rollout.variant }, 'rolled out over the target');
      await deps.bus.publish({
        type: 'TargetRolledOut',
        ...base,
        at: clock().toISOString(),
        detail: { ...outcome.detail, variant: command.rollout.variant, commit: command.commit },
      });
    } catch (err) {
      if (!delivery.lastAttempt || stopping.signal.aborted) throw err;
      deps.logger.error({ ...base, err: errorText(err) }, 'rollout failed on its last attempt');
      await fail(`gave up after ${delivery.attempt} attempts: ${errorText(err)}`);
    }
  };

  const consumer = await deps.bus.handleCommands(
    'deployer',
    async (command: BusCommand, delivery) => {
      switch (command.type) {
        case 'DeployVariant':
          return deploy(command, delivery);
        case 'TeardownExperiment':
          return teardown(command);
        case 'VerifyDeployment':
          return verify(command);
        case 'SweepDeployments':
          return sweep(command);
        case 'RolloutTarget':
          return rollout(command, delivery);
        case 'AnalyzeExperiment':
        case 'CommitPromotion':
        case 'RevertPromotion':
        case 'ProbeExperiment':
          throw new Error(`${command.type} is not a deployer command`);
        default: {
          const _never: never = command;
          return _never;
        }
      }
    },
    { concurrency: (deps.concurrency ?? 4) * DEPLOY_COMMANDS_PER_SLOT },
  );
  return {
    async stop() {
      stopping.abort();
      await consumer.stop();
    },
  };
}

/** Starts the analyzer worker: AnalyzeExperiment from the `analyzer` queue. */
export async function startAnalyzerWorker(deps: AnalyzerWorkerDeps): Promise<Consumer> {
  const clock = deps.clock ?? (() => new Date());
  const analyze = async (command: AnalyzeExperiment, delivery: Delivery): Promise<void> => {
    const base = {
      commandId: command.commandId,
      experimentId: command.experimentId,
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    };
    let analysis: ReturnType<typeof judge>;
    try {
      const measurements = await deps.analyzer.measure({
        experimentId: command.experimentId,
        spec: command.spec,
        window: { start: new Date(command.window.start), end: new Date(command.window.end) },
      });
      analysis = judge({
        criteria: command.spec.successCriteria,
        criticalProcesses: command.spec.criticalProcesses,
        compatibilityQueries: command.spec.compatibilityQueries,
        measurements,
      });
      analysis = withCost(analysis, {
        profiles: deps.pricingProfiles ?? [],
        spec: command.spec,
        measurements,
      });
    } catch (err) {
      if (!delivery.lastAttempt) throw err;
      deps.logger.error({ ...base, err: errorText(err) }, 'analysis failed on its last attempt');
      await deps.bus.publish({
        type: 'AnalysisFailed',
        ...base,
        at: clock().toISOString(),
        reason: `gave up after ${delivery.attempt} attempts: ${errorText(err)}`,
      });
      return;
    }
    deps.logger.info({ ...base, verdict: analysis.verdict }, 'experiment analysed');
    await deps.bus.publish({
      type: 'AnalysisCompleted',
      ...base,
      at: clock().toISOString(),
      analysis: {
        ...analysis,
        reasons: [...analysis.reasons],
        missingCriticalProcesses: [...analysis.missingCriticalProcesses],
      },
    });
  };
  /**
   * A probe is cheap and comes again next interval: one that cannot be made is logged and dropped, not
   * retried (a retry would only answer with stale findings).
   */
  const probe = async (command: ProbeExperiment): Promise<void> => {
    const base = {
      commandId: command.commandId,
      experimentId: command.experimentId,
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    };
    let findings: ProbeFindings;
    try {
      findings = await deps.analyzer.probe({
        experimentId: command.experimentId,
        spec: command.spec,
        runStartedAt: new Date(command.runStartedAt),
      });
    } catch (err) {
      deps.logger.warn({ ...base, err: errorText(err) }, 'probe failed; the next one will look again');
      return;
    }
    await deps.bus.publish({
      type: 'ProbeCompleted',
      ...base,
      at: findings.at,
      findings: {
        ...findings,
        missingCriticalProcesses:
          findings.missingCriticalProcesses === null ? null : [...findings.missingCriticalProcesses],
        ...(findings.detail ? { detail: { ...findings.detail } } : {}),
      },
    });
  };
  return deps.bus.handleCommands(
    'analyzer',
    async (command, delivery) => {
      if (command.type === 'ProbeExperiment') return probe(command);
      if (command.type !== 'AnalyzeExperiment') throw new Error(`${command.type} is not an analyzer command`);
      await analyze(command, delivery);
    },
    { concurrency: deps.concurrency ?? 2 },
  );
}

export interface WorkersDeps
  extends Omit<DeployerWorkerDeps, 'concurrency'>,
    Omit<AnalyzerWorkerDeps, 'concurrency'> {
  /** The deployer worker's concurrency (DeployerWorkerDeps.concurrency). */
  readonly deployerConcurrency?: number;
}

/** Both workers in this process (the embedded default, or a server that also works). */
export async function startWorkers(deps: WorkersDeps): Promise<{ stop(): Promise<void> }> {
  const { deployerConcurrency, ...rest } = deps;
  const deployer = await startDeployerWorker({
    ...rest,
    ...(deployerConcurrency ? { concurrency: deployerConcurrency } : {}),
  });
  const analyzer = await startAnalyzerWorker(deps);
  return {
    async stop() {
      await Promise.all([deployer.stop(), analyzer.stop()]);
    },
  };
}

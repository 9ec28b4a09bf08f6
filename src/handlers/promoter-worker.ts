import type {
  Bus,
  BusCommand,
  CommitPromotion,
  Consumer,
  Delivery,
  RevertPromotion,
} from '../application/ports/bus.js';
import { targetKeyOf } from '../application/ports/deployer.js';
import {
  GitopsRefusedError,
  type GitopsRepository,
  IDEMPOTENCY_TRAILER,
} from '../application/ports/gitops.js';
import type { Analysis, ExperimentSpec } from '../domain/experiment-spec.js';
import { promotionFiles, targetFolderOf } from '../domain/gitops-layout.js';
import { buildKubernetesObjects, toYaml } from '../domain/pipelines/index.js';
import { renderPromoted } from './promoted-render.js';
import type { WorkerLogger } from './workers.js';

/**
 * The promoter worker: CommitPromotion and RevertPromotion from the `promoter` queue, against the
 * GitOps repository. Idempotent under redelivery: every commit carries the command's id as a trailer,
 * and a command whose commit is on the branch already answers with it. A refusal (a conflict, a
 * commit not on the branch, an invalid config) is answered at once with GitopsFailed; transient
 * trouble (the remote unreachable, a branch that kept moving) is thrown for redelivery, and on the
 * last delivery answered with GitopsFailed too, so the saga is never left waiting.
 */
export interface PromoterWorkerDeps {
  readonly bus: Bus;
  readonly repository: GitopsRepository;
  readonly logger: WorkerLogger;
  readonly clock?: () => Date;
  /** Where the rendered collectors send OTLP (as the deployer renders them). */
  readonly otlpEndpoint?: string;
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export async function startPromoterWorker(deps: PromoterWorkerDeps): Promise<Consumer> {
  const clock = deps.clock ?? (() => new Date());
  const { repository: repo } = deps;

  const commit = async (command: CommitPromotion): Promise<void> => {
    const spec = command.spec as unknown as ExperimentSpec;
    const analysis = command.analysis as unknown as Analysis;
    const rendered = renderPromoted(
      command.experimentId,
      command.candidate,
      spec.criticalProcesses,
      deps.otlpEndpoint,
    );
    if (!rendered.ok) throw new GitopsRefusedError(rendered.reason);
    const target = targetKeyOf(spec.target.namespace, spec.target.nodeSelector);
    const objects = buildKubernetesObjects({
      experimentId: command.experimentId,
      variant: 'candidate',
      template: rendered.rendered.template,
      config: rendered.rendered.config,
      namespace: spec.target.namespace,
      nodeSelector: spec.target.nodeSelector,
      mode: 'daemonset',
      promotion: { target },
    });
    if (objects.errors.length > 0)
      throw new GitopsRefusedError(
        `invalid objects: ${objects.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`,
      );
    const path = targetFolderOf(spec);
    const outcome = await repo.commitFolder({
      path,
      files: promotionFiles({
        experimentId: command.experimentId,
        spec,
        analysis,
        actor: command.actor,
        requestedAt: command.requestedAt,
        manifests: objects.yaml,
        collectorConfig: toYaml(rendered.rendered.config),
        tuning: command.candidate.tuning,
      }),
      subject: `Promote ${spec.candidate.template} over ${target} (experiment ${command.experimentId})`,
      body: [
        `${spec.name}: verdict ${analysis.verdict}; cardinality ${fmt(analysis.cardinalityReductionPct)}, datapoints ${fmt(analysis.datapointReductionPct)} fewer than ${spec.baseline.template}.`,
        `Requested by ${command.actor} at ${command.requestedAt}.`,
      ].join('\n'),
      trailers: {
        'Phoenix-Experiment': command.experimentId,
        'Phoenix-Step': 'promote',
        'Phoenix-Actor': command.actor,
        [IDEMPOTENCY_TRAILER]: command.commandId,
      },
    });
    deps.logger.info(
      { experimentId: command.experimentId, commit: outcome.commit, created: outcome.created, path },
      'promotion committed',
    );
    await deps.bus.publish({
      type: 'PromotionCommitted',
      commandId: command.commandId,
      experimentId: command.experimentId,
      at: clock().toISOString(),
      repository: repo.repository,
      path,
      commit: outcome.commit,
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    });
  };

  const revert = async (command: RevertPromotion): Promise<void> => {
    const outcome = await repo.revert({
      commit: command.commit,
      subject: `Revert the promotion of experiment ${command.experimentId} (${command.step === 'rollback' ? 'rollback' : 'its rollout failed'})`,
      body: [
        command.cause ? `Why: ${command.cause}` : '',
        `This reverts commit ${command.commit}.`,
        `Requested by ${command.actor}.`,
      ]
        .filter(Boolean)
        .join('\n'),
      trailers: {
        'Phoenix-Experiment': command.experimentId,
        'Phoenix-Step': command.step,
        'Phoenix-Actor': command.actor,
        'Phoenix-Reverts': command.commit,
        [IDEMPOTENCY_TRAILER]: command.commandId,
      },
    });
    deps.logger.info(
      {
        experimentId: command.experimentId,
        step: command.step,
        commit: outcome.commit,
        reverted: command.commit,
      },
      'promotion reverted',
    );
    await deps.bus.publish({
      type: 'PromotionReverted',
      commandId: command.commandId,
      experimentId: command.experimentId,
      at: clock().toISOString(),
      step: command.step,
      commit: outcome.commit,
      reverted: command.commit,
      ...(command.cause !== undefined ? { cause: command.cause } : {}),
      ...(command.correlationId ? { correlationId: command.correlationId } : {}),
    });
  };

  const handle = async (command: CommitPromotion | RevertPromotion, delivery: Delivery): Promise<void> => {
    const step = command.type === 'CommitPromotion' ? 'promote' : command.step;
    const fail = (reason: string) =>
      deps.bus.publish({
        type: 'GitopsFailed',
        commandId: command.commandId,
        experimentId: command.experimentId,
        at: clock().toISOString(),
        step,
        reason,
        ...(command.type === 'RevertPromotion' && command.cause !== undefined
          ? { cause: command.cause }
          : {}),
        ...(command.correlationId ? { correlationId: command.correlationId } : {}),
      });
    try {
      if (command.type === 'CommitPromotion') await commit(command);
      else await revert(command);
    } catch (err) {
      if (err instanceof GitopsRefusedError) {
        deps.logger.warn(
          { experimentId: command.experimentId, step, reason: err.message },
          'gitops change refused',
        );
        await fail(err.message);
        return;
      }
      if (!delivery.lastAttempt) throw err;
      deps.logger.error(
        { experimentId: command.experimentId, step, err: errorText(err) },
        'gitops change gave up',
      );
      await fail(`gave up after ${delivery.attempt} attempts: ${errorText(err)}`);
    }
  };

  return deps.bus.handleCommands(
    'promoter',
    async (command: BusCommand, delivery) => {
      if (command.type !== 'CommitPromotion' && command.type !== 'RevertPromotion')
        throw new Error(`${command.type} is not a promoter command`);
      await handle(command, delivery);
    },
    // One clone, one change at a time (the repository serialises them anyway).
    { concurrency: 1 },
  );
}

const fmt = (v: number | null): string => (v === null ? 'n/a' : `${v.toFixed(1)} %`);

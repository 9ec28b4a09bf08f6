import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { GitCliRepository } from '../src/adapters/git-gitops.js';
import { InProcessBroker, InProcessBus } from '../src/adapters/inprocess-bus.js';
import type { BusResult } from '../src/application/ports/bus.js';
import type { Deployer } from '../src/application/ports/deployer.js';
import type { Analysis, ExperimentSpec } from '../src/domain/experiment-spec.js';
import { react, type WorkerCommand } from '../src/domain/lifecycle-saga.js';
import { startPromoterWorker } from '../src/handlers/promoter-worker.js';
import { startDeployerWorker } from '../src/handlers/workers.js';

/**
 * A failed rollout is compensated, through the real workers and a real Git remote: the promoter
 * commits, the deployer's rollout fails, the saga's answer to that is a revert, the promoter reverts
 * (pushed), and the saga records the failure with the revert commit. Redelivered commits and reverts
 * find their commits instead of adding new ones.
 */
const run = promisify(execFile);
const git = async (cwd: string, ...args: string[]) => (await run('git', args, { cwd })).stdout.trim();
const logger = pino({ level: 'silent' });
const ID = '3f1e0c1a-5b7d-4c1e-9a2b-6d8f0e4c2a11';

const spec: ExperimentSpec = {
  name: 'minimal on pool b',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-minimal-v1', params: {} },
  target: { namespace: 'phoenix-experiments', nodeSelector: { pool: 'b' }, hosts: 2 },
  durationSeconds: 1,
  criticalProcesses: ['^postgres$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};
const analysis: Analysis = {
  verdict: 'pass',
  reasons: [],
  baseline: { series: 100, datapointsPerMinute: 100 },
  candidate: { series: 10, datapointsPerMinute: 10 },
  cardinalityReductionPct: 90,
  datapointReductionPct: 90,
  criticalProcessLossPct: 0,
  missingCriticalProcesses: [],
};

/** A deployer whose rollouts the cluster refuses (every other call is unused here). */
const refusing: Deployer = {
  deploy: async () => ({ ok: false, reason: 'unused' }),
  teardown: async () => ({ variants: [] }),
  isDeployed: async () => false,
  deployedVariants: async () => [],
  heldExperiments: async () => [],
  rollout: async () => ({ ok: false, reason: 'DaemonSet phx-target is scheduled on no node' }),
};

describe('a failed rollout is compensated by a pushed revert', () => {
  let dir: string;
  let bare: string;
  let bus: InProcessBus;
  const results: BusResult[] = [];
  const stops: (() => Promise<void>)[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phoenix-compensation-'));
    bare = join(dir, 'fleet.git');
    await run('git', ['init', '--quiet', '--bare', '--initial-branch=main', bare]);
    // No de-duplication window: the test redelivers a command as a bus would after it forgot its id.
    bus = new InProcessBus(new InProcessBroker({ duplicateWindowMs: 0 }));
    const repository = new GitCliRepository({ url: bare, workDir: join(dir, 'work') });
    for (const consumer of [
      await startPromoterWorker({ bus, repository, logger }),
      await startDeployerWorker({ bus, deployer: refusing, logger }),
      await bus.handleResults(async (r) => {
        results.push(r);
      }),
    ])
      stops.push(() => consumer.stop());
  });
  after(async () => {
    for (const stop of stops) await stop();
    await bus?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const answer = async (commandId: string): Promise<BusResult> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const found = results.find((r) => r.commandId === commandId);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no answer to ${commandId}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  /** What the saga's outbox would send for a worker command. */
  const send = async (c: WorkerCommand & { commandId: string }) => {
    const { purpose: _p, causationId: _c, ...rest } = c;
    await bus.send(rest as never);
    return answer(c.commandId);
  };

  it('commit → rollout refused → revert pushed → PromotionFailed with the revert', async () => {
    const ids = { experimentId: ID, causationId: 'evt-1', correlationId: ID };
    const committed = await send({
      type: 'CommitPromotion',
      ...ids,
      purpose: 'promote',
      commandId: 'cmd-commit',
      actor: 'olga',
      spec,
      analysis,
      candidate: { variant: 'candidate', template: 'process-minimal-v1', params: {} },
      requestedAt: new Date().toISOString(),
    });
    assert.equal(committed.type, 'PromotionCommitted', JSON.stringify(committed));
    assert.ok(committed.type === 'PromotionCommitted');
    assert.equal(await git(bare, 'rev-parse', 'main'), committed.commit);

    const failed = await send({
      type: 'RolloutTarget',
      ...ids,
      purpose: 'rollout:promote',
      commandId: 'cmd-rollout',
      step: 'promote',
      rollout: { variant: 'candidate', template: 'process-minimal-v1', params: {} },
      criticalProcesses: spec.criticalProcesses,
      hosts: 2,
      namespace: spec.target.namespace,
      nodeSelector: spec.target.nodeSelector,
      commit: committed.commit,
    });
    assert.equal(failed.type, 'TargetRolloutFailed');

    // The saga's answer to the failure: revert the commit.
    const [order] = react(undefined, { type: 'result', result: failed }).commands;
    assert.ok(order?.kind === 'worker' && order.command.type === 'RevertPromotion');
    const reverted = await send({ ...order.command, commandId: 'cmd-revert' });
    assert.ok(reverted.type === 'PromotionReverted', JSON.stringify(reverted));
    assert.equal(reverted.reverted, committed.commit);
    assert.equal(await git(bare, 'rev-parse', 'main'), reverted.commit);
    assert.equal(await git(bare, 'rev-parse', 'main~1'), committed.commit);
    assert.match(await git(bare, 'log', '-1', '--format=%B', 'main'), /^Phoenix-Step: compensate$/m);
    await assert.rejects(git(bare, 'show', 'main:targets/phoenix-experiments/pool=b/evidence.json'));

    const [record] = react(undefined, { type: 'result', result: reverted }).commands;
    assert.ok(record?.kind === 'experiment');
    assert.deepEqual(record.command, {
      type: 'RecordPromotionFailed',
      reason: 'rollout failed: DaemonSet phx-target is scheduled on no node',
      reverted: reverted.commit,
      at: reverted.at,
    });

    // Redelivered (the answers lost): the same commits, nothing new on the branch.
    results.length = 0;
    const again = await send({
      type: 'RevertPromotion',
      ...ids,
      purpose: 'compensate',
      commandId: 'cmd-revert',
      step: 'compensate',
      commit: committed.commit,
      actor: 'phoenix-saga',
    });
    assert.ok(again.type === 'PromotionReverted');
    assert.equal(again.commit, reverted.commit);
    assert.equal((await git(bare, 'rev-list', '--count', 'main')).trim(), '2');
  });
});

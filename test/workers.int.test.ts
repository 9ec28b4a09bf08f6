import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { LocalAnalyzer } from '../src/adapters/local-analyzer.js';
import { LocalDataPlane } from '../src/adapters/local-dataplane.js';
import { LocalDeployer } from '../src/adapters/local-deployer.js';
import type { Analyzer } from '../src/application/ports/analyzer.js';
import type { Bus, BusResult } from '../src/application/ports/bus.js';
import type { Deployer } from '../src/application/ports/deployer.js';
import { startDeployerWorker, startWorkers } from '../src/handlers/workers.js';
import {
  type BusFixture,
  type BusInstallation,
  busFixtures,
  sleep,
  waitFor,
} from './support/bus-fixtures.js';

/**
 * The deployer and analyzer workers end to end over each bus, with the local data plane: commands in,
 * one result per command out, the work done on the data plane, and redelivery harmless.
 */
const logger = pino({ level: 'silent' });
const CRITICAL = ['^sshd$', '^kubelet$'];

const spec = {
  name: 'topk vs baseline',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-topk-v1', params: { k: 10 } },
  target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 },
  durationSeconds: 60,
  criticalProcesses: CRITICAL,
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
};

const deploy = (experimentId: string, variant: 'baseline' | 'candidate', commandId: string) => ({
  type: 'DeployVariant' as const,
  commandId,
  experimentId,
  variant,
  template: spec[variant].template,
  params: spec[variant].params,
  criticalProcesses: CRITICAL,
  hosts: spec.target.hosts,
  namespace: spec.target.namespace,
});

for (const fixture of busFixtures()) {
  describe(`workers over the ${fixture.name} bus`, { skip: fixture.skip }, () => {
    if (!fixture.skip) suite(fixture);
  });
}

function suite(fixture: BusFixture): void {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  const harness = async (
    wrap: { deployer?: (d: Deployer) => Deployer; analyzer?: (a: Analyzer) => Analyzer } = {},
    settings: { maxDeliveries?: number } = {},
  ) => {
    const installation: BusInstallation = await fixture.setup({ backoffMs: 50, ...settings });
    const plane = new LocalDataPlane({ tickMs: 0, defaultProcessesPerHost: 80 });
    const local = new LocalDeployer(plane);
    const workerBus = await installation.open();
    const workers = await startWorkers({
      bus: workerBus,
      deployer: wrap.deployer ? wrap.deployer(local) : local,
      usage: local,
      analyzer: wrap.analyzer ? wrap.analyzer(new LocalAnalyzer(plane)) : new LocalAnalyzer(plane),
      logger,
      tuningWaitMs: 5_000,
      tuningPollMs: 50,
    });
    const saga: Bus = await installation.open();
    const results: BusResult[] = [];
    await saga.handleResults(async (r) => {
      results.push(r);
    });
    cleanups.push(async () => {
      await workers.stop();
      await installation.teardown();
      await plane.close();
    });
    return { saga, results, plane };
  };

  it('deploys both variants (the candidate tuned from the baseline), analyses and tears down', async () => {
    const { saga, results, plane } = await harness();
    const id = 'exp-workers-1';
    // The candidate first: it waits for the baseline's usage to build its keep-list.
    await saga.send(deploy(id, 'candidate', 'c-deploy-candidate'));
    await sleep(150);
    await saga.send(deploy(id, 'baseline', 'c-deploy-baseline'));
    await waitFor('both deployments', () => results.length === 2, 15_000);
    const byCommand = new Map(results.map((r) => [r.commandId, r]));
    const candidate = byCommand.get('c-deploy-candidate');
    assert.equal(candidate?.type, 'VariantDeployed');
    assert.equal(byCommand.get('c-deploy-baseline')?.type, 'VariantDeployed');
    if (candidate?.type !== 'VariantDeployed') return;
    const keepList = candidate.detail.keepList as string[];
    assert.ok(Array.isArray(keepList) && keepList.length > 0, 'the candidate was rendered with a keep-list');
    assert.ok(plane.isDeployed(id, 'baseline') && plane.isDeployed(id, 'candidate'));

    const now = Date.now();
    await saga.send({
      type: 'AnalyzeExperiment',
      commandId: 'c-analyze',
      experimentId: id,
      spec,
      window: { start: new Date(now - 60_000).toISOString(), end: new Date(now).toISOString() },
    });
    await waitFor('the analysis', () => results.length === 3, 15_000);
    const analysis = results[2];
    assert.equal(analysis?.type, 'AnalysisCompleted');
    if (analysis?.type !== 'AnalysisCompleted') return;
    const b = plane.snapshot(id, 'baseline')!;
    const c = plane.snapshot(id, 'candidate')!;
    assert.equal(analysis.analysis.baseline.series, b.series);
    assert.equal(analysis.analysis.candidate.series, c.series);
    assert.equal(
      analysis.analysis.cardinalityReductionPct,
      Math.round((10000 * (b.series - c.series)) / b.series) / 100,
    );
    assert.deepEqual(analysis.analysis.missingCriticalProcesses, [], 'top-k keeps critical processes');
    assert.equal(analysis.analysis.criticalProcessLossPct, 0);
    assert.ok(['pass', 'fail'].includes(analysis.analysis.verdict), analysis.analysis.reasons.join('; '));

    await saga.send({
      type: 'TeardownExperiment',
      commandId: 'c-teardown',
      experimentId: id,
      namespace: 'x',
    });
    await waitFor('the teardown', () => results.length === 4, 15_000);
    const torn = results[3];
    assert.equal(torn?.type, 'ExperimentTornDown');
    if (torn?.type === 'ExperimentTornDown') {
      assert.deepEqual(torn.variants, ['baseline', 'candidate']);
      assert.deepEqual(torn.detail.removed, ['baseline', 'candidate']);
    }
    assert.equal(plane.isDeployed(id, 'baseline'), false);
  });

  it('with one deploy slot, candidates waiting for their baselines do not hold it: all deploy', async () => {
    const installation: BusInstallation = await fixture.setup({ backoffMs: 50 });
    const plane = new LocalDataPlane({ tickMs: 0, defaultProcessesPerHost: 80 });
    const local = new LocalDeployer(plane);
    const worker = await startDeployerWorker({
      bus: await installation.open(),
      deployer: local,
      usage: local,
      logger,
      concurrency: 1,
      tuningWaitMs: 4_000,
      tuningPollMs: 50,
    });
    const saga: Bus = await installation.open();
    const results: BusResult[] = [];
    await saga.handleResults(async (r) => {
      results.push(r);
    });
    cleanups.push(async () => {
      await worker.stop();
      await installation.teardown();
      await plane.close();
    });
    const ids = ['exp-slots-1', 'exp-slots-2', 'exp-slots-3'];
    // Every candidate first: each waits for a baseline that is queued behind it.
    for (const id of ids) await saga.send(deploy(id, 'candidate', `${id}-candidate`));
    await sleep(100);
    for (const id of ids) await saga.send(deploy(id, 'baseline', `${id}-baseline`));
    await waitFor('six answers', () => results.length === 6, 15_000);
    for (const r of results) assert.equal(r.type, 'VariantDeployed', JSON.stringify(r));
  });

  it('a teardown never waits behind deploys that hold every deploy slot', async () => {
    const installation: BusInstallation = await fixture.setup({ backoffMs: 50 });
    const plane = new LocalDataPlane({ tickMs: 0, defaultProcessesPerHost: 80 });
    const local = new LocalDeployer(plane);
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    // A deploy that waits (for readiness, on a slow cluster) until the test lets it go.
    const waiting = new Proxy(local, {
      get(target, key) {
        if (key === 'deploy')
          return async (d: Parameters<Deployer['deploy']>[0]) => {
            await released;
            return target.deploy(d);
          };
        const value = Reflect.get(target, key, target) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as Deployer;
    const worker = await startDeployerWorker({
      bus: await installation.open(),
      deployer: waiting,
      usage: local,
      logger,
      concurrency: 1,
    });
    const saga: Bus = await installation.open();
    const results: BusResult[] = [];
    await saga.handleResults(async (r) => {
      results.push(r);
    });
    cleanups.push(async () => {
      release();
      await worker.stop();
      await installation.teardown();
      await plane.close();
    });
    await saga.send(deploy('exp-busy', 'baseline', 'exp-busy-baseline'));
    await sleep(100);
    await saga.send({
      type: 'TeardownExperiment',
      commandId: 'c-ended-down',
      experimentId: 'exp-ended',
      namespace: 'x',
    });
    await waitFor(
      'the teardown answered while the deploy holds the only slot',
      () => results.some((r) => r.type === 'ExperimentTornDown'),
      15_000,
    );
    assert.equal(
      results.filter((r) => r.type === 'VariantDeployed').length,
      0,
      'the deploy is still waiting',
    );
    release();
    await waitFor('the deploy', () => results.some((r) => r.type === 'VariantDeployed'), 15_000);
  });

  it('answers an invalid variant with VariantDeployFailed, naming the problem', async () => {
    const { saga, results } = await harness();
    await saga.send({
      ...deploy('exp-invalid', 'baseline', 'c-bad'),
      params: { collectionIntervalSeconds: -1 },
    });
    await waitFor('the answer', () => results.length === 1);
    const r = results[0];
    assert.equal(r?.type, 'VariantDeployFailed');
    if (r?.type === 'VariantDeployFailed') assert.match(r.reason, /collectionIntervalSeconds/);
  });

  it('answers VerifyDeployment with the variants the data plane holds and those it does not', async () => {
    const { saga, results } = await harness();
    const id = 'exp-verify';
    await saga.send(deploy(id, 'baseline', 'c-verify-deploy'));
    await waitFor('the deployment', () => results.length === 1, 10_000);
    await saga.send({ type: 'VerifyDeployment', commandId: 'c-verify', experimentId: id, namespace: 'ns' });
    await waitFor('the answer', () => results.length === 2, 10_000);
    const answer = results[1];
    assert.equal(answer?.type, 'DeploymentVerified');
    if (answer?.type !== 'DeploymentVerified') return;
    assert.equal(answer.commandId, 'c-verify');
    assert.deepEqual(answer.present, ['baseline']);
    assert.deepEqual(answer.missing, ['candidate']);
  });

  it('answers SweepDeployments with the experiments holding objects in the namespace, not the target’s', async () => {
    const { saga, results } = await harness();
    await saga.send(deploy('exp-held-a', 'baseline', 'c-held-a'));
    await saga.send({ ...deploy('exp-held-b', 'baseline', 'c-held-b'), namespace: 'elsewhere' });
    // A promotion's rollout over the same namespace: the target's collector, no experiment's.
    await saga.send({
      type: 'RolloutTarget',
      commandId: 'c-held-rollout',
      experimentId: 'exp-promoted',
      step: 'promote',
      rollout: { variant: 'candidate', template: 'process-minimal-v1', params: {} },
      criticalProcesses: CRITICAL,
      hosts: 2,
      namespace: spec.target.namespace,
      nodeSelector: {},
      commit: 'abc1234',
    });
    await waitFor('the deployments', () => results.length === 3, 10_000);
    assert.deepEqual(
      results.map((r) => r.type).sort(),
      ['TargetRolledOut', 'VariantDeployed', 'VariantDeployed'],
      JSON.stringify(results),
    );
    await saga.send({ type: 'SweepDeployments', commandId: 'c-sweep', namespace: spec.target.namespace });
    await waitFor('the answer', () => results.length === 4, 10_000);
    const answer = results[3];
    assert.equal(answer?.type, 'DeploymentsHeld');
    if (answer?.type !== 'DeploymentsHeld') return;
    assert.equal(answer.commandId, 'c-sweep');
    assert.equal(answer.namespace, spec.target.namespace);
    assert.deepEqual(answer.experimentIds, ['exp-held-a']);

    await saga.send({
      type: 'TeardownExperiment',
      commandId: 'c-held-down',
      experimentId: 'exp-held-a',
      namespace: 'x',
    });
    await waitFor('the teardown', () => results.some((r) => r.commandId === 'c-held-down'), 10_000);
    await saga.send({ type: 'SweepDeployments', commandId: 'c-sweep-2', namespace: spec.target.namespace });
    await waitFor('the second answer', () => results.some((r) => r.commandId === 'c-sweep-2'), 10_000);
    const second = results.find((r) => r.commandId === 'c-sweep-2');
    assert.ok(second?.type === 'DeploymentsHeld');
    assert.deepEqual(second.experimentIds, [], 'torn down: held no more');
  });

  it('is idempotent under redelivery: a deploy that failed once is retried and answered once', async () => {
    let calls = 0;
    const { saga, results } = await harness({
      deployer: (d) => ({
        deploy: async (x, o) => {
          calls++;
          const outcome = await d.deploy(x, o);
          if (calls === 1) throw new Error('connection reset after the apply');
          return outcome;
        },
        teardown: (e, n) => d.teardown(e, n),
        isDeployed: (e, v, n) => d.isDeployed(e, v, n),
        deployedVariants: (e, n) => d.deployedVariants(e, n),
        heldExperiments: (n) => d.heldExperiments(n),
        rollout: (r, o) => d.rollout(r, o),
      }),
    });
    await saga.send(deploy('exp-redeliver', 'baseline', 'c-redeliver'));
    await waitFor('the answer', () => results.length === 1, 10_000);
    await sleep(300);
    assert.equal(calls, 2);
    assert.deepEqual(
      results.map((r) => [r.type, r.commandId]),
      [['VariantDeployed', 'c-redeliver']],
    );
  });

  it('answers AnalysisFailed when measuring keeps failing, on the last delivery', async () => {
    let calls = 0;
    const { saga, results } = await harness(
      {
        analyzer: () => ({
          measure: async () => {
            calls++;
            throw new Error('prometheus unreachable');
          },
          probe: async () => {
            throw new Error('prometheus unreachable');
          },
        }),
      },
      { maxDeliveries: 2 },
    );
    const now = Date.now();
    await saga.send({
      type: 'AnalyzeExperiment',
      commandId: 'c-analyze-fails',
      experimentId: 'exp-nodata',
      spec,
      window: { start: new Date(now - 60_000).toISOString(), end: new Date(now).toISOString() },
    });
    await waitFor('the answer', () => results.length === 1, 10_000);
    assert.equal(calls, 2);
    const r = results[0];
    assert.equal(r?.type, 'AnalysisFailed');
    if (r?.type === 'AnalysisFailed')
      assert.match(r.reason, /gave up after 2 attempts: prometheus unreachable/);
  });

  it('analyses an experiment that was never deployed as inconclusive, not as a pass', async () => {
    const { saga, results } = await harness();
    const now = Date.now();
    await saga.send({
      type: 'AnalyzeExperiment',
      commandId: 'c-analyze-empty',
      experimentId: 'exp-never-deployed',
      spec,
      window: { start: new Date(now - 60_000).toISOString(), end: new Date(now).toISOString() },
    });
    await waitFor('the answer', () => results.length === 1, 10_000);
    const r = results[0];
    assert.equal(r?.type, 'AnalysisCompleted');
    if (r?.type === 'AnalysisCompleted') {
      assert.equal(r.analysis.verdict, 'inconclusive');
      assert.equal(r.analysis.cardinalityReductionPct, null);
    }
  });
}

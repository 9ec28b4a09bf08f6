import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { InProcessBroker, type InProcessBus } from '../src/adapters/inprocess-bus.js';
import { LocalDataPlane } from '../src/adapters/local-dataplane.js';
import { LocalDeployer } from '../src/adapters/local-deployer.js';
import { handleExperimentCommand, streamIdOf } from '../src/application/experiment-commands.js';
import type { DeadLetter } from '../src/application/ports/bus.js';
import type { Deployer } from '../src/application/ports/deployer.js';
import type { ExistingExperiment, ExperimentCommand } from '../src/domain/experiment.js';
import { fold } from '../src/domain/experiment.js';
import type { ExperimentSpec, Variant } from '../src/domain/experiment-spec.js';
import { renderVariant } from '../src/domain/pipelines/index.js';
import { lifecycleSagaHandler, SagaEffects } from '../src/handlers/experiment-saga.js';
import { startDeployerWorker } from '../src/handlers/workers.js';
import { ProjectionRunner } from '../src/projections/runner.js';
import { pgliteTestDatabase, postgresTestDatabase } from './support/databases.js';
import { openFixture, until } from './support/projection-fixtures.js';

/**
 * The saga's sweep at start (issue 18 §2, restart reconciliation): objects an experiment that ended
 * left on the data plane are removed when the saga starts again; those of a running experiment and
 * of an experiment the saga does not know stay. The saga and the deployer worker run as in a server
 * (projection runner, SagaEffects, in-process bus) on a real database; the local data plane and its
 * deployer outlive the saga's restart, as a cluster outlives Phoenix.
 */

const NAMESPACE = 'phoenix-sweep';

const spec = (durationSeconds: number): ExperimentSpec => ({
  name: 'sweep',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-minimal-v1', params: {} },
  target: { namespace: NAMESPACE, nodeSelector: {}, hosts: 2 },
  durationSeconds,
  criticalProcesses: ['^kubelet$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 100,
  },
});

/** The saga's log lines, as JSON: what an operator reads of the sweep. */
const captured = () => {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
};

for (const db of [postgresTestDatabase(), pgliteTestDatabase()]) {
  describe(`the sweep: ${db.name}`, { skip: db.skip }, () => {
    const cleanups: (() => Promise<void>)[] = [];
    after(async () => {
      for (const c of cleanups.reverse()) await c();
    });

    /**
     * A saga as a server runs it and a deployer worker, over an in-process broker; the local data
     * plane's deployer refuses teardowns while `refuse(true)`, so they dead-letter.
     */
    const setUp = async () => {
      const { database, store, log, close } = await openFixture(db);
      cleanups.push(close);
      const broker = new InProcessBroker({ maxDeliveries: 2, backoffMs: 20 });
      cleanups.push(async () => broker.close());
      const plane = new LocalDataPlane({ tickMs: 0, defaultProcessesPerHost: 20 });
      cleanups.push(() => plane.close());
      const local = new LocalDeployer(plane);

      // The data plane refuses teardowns while `refuse` holds: the experiment's teardown dead-letters.
      let refuse = false;
      const deployer: Deployer = {
        deploy: (d) => local.deploy(d),
        teardown: async (e) => {
          if (refuse) throw new Error('the data plane is out of reach');
          return local.teardown(e);
        },
        isDeployed: (e, v) => local.isDeployed(e, v),
        deployedVariants: (e) => local.deployedVariants(e),
        heldExperiments: (n) => local.heldExperiments(n),
        rollout: (r) => local.rollout(r),
      };
      const silent = pino({ level: 'silent' });
      const startWorker = async () => {
        const bus = broker.connect();
        const worker = await startDeployerWorker({ bus, deployer, usage: local, logger: silent });
        return async () => {
          await worker.stop();
          await bus.close();
        };
      };
      let stopWorker = await startWorker();
      cleanups.push(() => stopWorker());
      const letters: DeadLetter[] = [];
      const dlqBus = broker.connect();
      await dlqBus.handleDeadLetters(async (l) => {
        letters.push(l);
      });
      cleanups.push(() => dlqBus.close());

      /** A saga as a server runs it: the checkpointed subscriber decides, the effects carry it out. */
      const startSaga = async (logger = silent, sweepIntervalMs = 0) => {
        const bus: InProcessBus = broker.connect();
        const effects = new SagaEffects({
          db: database.db,
          store,
          bus,
          logger,
          idleMs: 100,
          probeIntervalMs: 0,
          sweepIntervalMs,
        });
        const runner = new ProjectionRunner({
          database,
          log,
          store,
          logger: silent,
          handler: lifecycleSagaHandler(store),
          lockRetryMs: 100,
        });
        runner.on('applied', (_position, wrote) => {
          if (wrote) effects.wake();
        });
        runner.start();
        await effects.start();
        return async () => {
          await effects.stop();
          await runner.stop();
          await bus.close();
        };
      };

      const run = (id: string, command: ExperimentCommand) =>
        handleExperimentCommand(store, id, command, { actor: 'olga', correlationId: id });
      const now = () => new Date().toISOString();
      const stateOf = async (id: string) =>
        fold(await store.readStream(streamIdOf(id))) as ExistingExperiment;
      const eventsOf = async (id: string) => (await store.readStream(streamIdOf(id))).map((e) => e.type);
      const startExperiment = async (durationSeconds: number) => {
        const id = randomUUID();
        await run(id, { type: 'CreateExperiment', experimentId: id, spec: spec(durationSeconds), at: now() });
        await run(id, { type: 'StartExperiment', at: now() });
        await until(async () => (await stateOf(id)).status === 'running', 60_000, `${id} running`);
        return id;
      };
      const holds = (id: string) =>
        (['baseline', 'candidate'] as Variant[]).filter((v) => plane.isDeployed(id, v));

      return {
        store,
        plane,
        local,
        letters,
        startSaga,
        refuse: (on: boolean) => {
          refuse = on;
        },
        /**
         * Cancels the experiment with the data plane refusing teardowns (until `refuse(false)`): its
         * teardown dead-letters.
         */
        cancelIntoDeadLetters: async (id: string) => {
          refuse = true;
          await run(id, { type: 'CancelExperiment', reason: 'enough', at: now() });
          await until(
            () =>
              letters.some(
                (l) =>
                  (l.message as { type?: string; experimentId?: string }).type === 'TeardownExperiment' &&
                  (l.message as { experimentId?: string }).experimentId === id,
              ),
            60_000,
            'the teardown in the dead letters',
          );
        },
        /** Stops the worker (once: the cleanup then does nothing). */
        stopWorker: async () => {
          const stop = stopWorker;
          stopWorker = async () => {};
          await stop();
        },
        run,
        now,
        stateOf,
        eventsOf,
        startExperiment,
        holds,
      };
    };

    it('removes what ended experiments left; keeps a running experiment’s and an unknown one’s', {
      timeout: 180_000,
    }, async () => {
      const { plane, local, startSaga, run, now, stateOf, eventsOf, startExperiment, holds, ...h } =
        await setUp();
      let stopSaga = await startSaga();
      // Its teardown kept failing: dead-lettered, the objects stayed.
      const deadLettered = await startExperiment(3600);
      await h.cancelIntoDeadLetters(deadLettered);
      h.refuse(false);
      // Torn down and recorded so, then made again (by hand, a redelivered deploy from another install…).
      const remade = await startExperiment(3600);
      await run(remade, { type: 'CancelExperiment', reason: 'enough', at: now() });
      await until(
        async () => (await eventsOf(remade)).filter((t) => t === 'VariantTornDown').length === 2,
        60_000,
        'the teardown recorded',
      );
      const running = await startExperiment(3600);
      await stopSaga();

      const rendered = renderVariant({
        experimentId: remade,
        variant: 'baseline',
        template: 'process-baseline-v1',
        criticalProcesses: ['^kubelet$'],
      });
      assert.ok(rendered.ok);
      const deployment = {
        variant: 'baseline' as const,
        template: rendered.template,
        params: {},
        config: rendered.config,
        namespace: NAMESPACE,
        nodeSelector: {},
        hosts: 2,
        criticalProcesses: [],
      };
      assert.equal((await local.deploy({ ...deployment, experimentId: remade })).ok, true);
      const unknown = 'exp-not-ours';
      assert.equal((await local.deploy({ ...deployment, experimentId: unknown })).ok, true);

      const before = {
        deadLettered: await eventsOf(deadLettered),
        remade: await eventsOf(remade),
        running: await eventsOf(running),
      };
      assert.deepEqual(holds(deadLettered), ['baseline', 'candidate'], 'left behind');
      assert.deepEqual(holds(remade), ['baseline']);
      assert.equal(before.deadLettered.filter((t) => t === 'VariantTornDown').length, 0);

      // The restart.
      const { lines, logger } = captured();
      stopSaga = await startSaga(logger);
      cleanups.push(() => stopSaga());
      await until(
        () => lines.some((l) => l.msg === 'tearing down what experiments that ended left on the data plane'),
        60_000,
        'the sweep',
      );
      await until(
        async () => (await eventsOf(deadLettered)).filter((t) => t === 'VariantTornDown').length === 2,
        60_000,
        'the dead-lettered teardown recorded',
      );
      // Every command sent by now is carried out once the worker stops, and every answer handled once
      // the saga stops: what follows is the whole of what the sweep did.
      await h.stopWorker();
      await stopSaga();
      stopSaga = async () => {};

      assert.deepEqual(holds(deadLettered), [], 'its objects are gone');
      assert.deepEqual(holds(remade), [], 'its objects are gone');
      assert.deepEqual(holds(running), ['baseline', 'candidate'], 'a running experiment keeps its objects');
      assert.equal(plane.isDeployed(unknown, 'baseline'), true, 'an unknown experiment is left alone');

      const swept = lines.find(
        (l) => l.msg === 'tearing down what experiments that ended left on the data plane',
      );
      assert.deepEqual([...((swept?.experimentIds ?? []) as string[])].sort(), [deadLettered, remade].sort());
      const leftAlone = lines.find((l) => String(l.msg).includes('has no record of'));
      assert.deepEqual(leftAlone?.experimentIds, [unknown]);

      // The events: the dead-lettered teardown is recorded, once per variant; nothing else changes.
      assert.deepEqual(await eventsOf(deadLettered), [
        ...before.deadLettered,
        'VariantTornDown',
        'VariantTornDown',
      ]);
      assert.deepEqual(await eventsOf(remade), before.remade, 'already recorded torn down: nothing new');
      assert.deepEqual(await eventsOf(running), before.running);
      assert.equal((await stateOf(deadLettered)).status, 'cancelled');
      assert.equal((await stateOf(running)).status, 'running');
      const torn = (await stateOf(deadLettered)).deployments;
      assert.equal(torn.baseline?.status, 'torn_down');
      assert.equal(torn.candidate?.status, 'torn_down');
    });

    it('sweeps again while it runs: a teardown that dead-lettered is carried out without a restart', {
      timeout: 180_000,
    }, async () => {
      const { startSaga, stateOf, eventsOf, startExperiment, holds, ...h } = await setUp();
      const { lines, logger } = captured();
      const stopSaga = await startSaga(logger, 300);
      cleanups.push(() => stopSaga());
      const id = await startExperiment(3600);
      await h.cancelIntoDeadLetters(id);
      assert.deepEqual(holds(id), ['baseline', 'candidate'], 'left behind');
      // The data plane is back; the saga is not restarted: a later sweep of the same process finds it.
      h.refuse(false);
      await until(
        async () => (await eventsOf(id)).filter((t) => t === 'VariantTornDown').length === 2,
        60_000,
        'the teardown recorded by a later sweep',
      );
      assert.deepEqual(holds(id), [], 'its objects are gone');
      assert.equal((await stateOf(id)).status, 'cancelled');
      const swept = lines.filter(
        (l) => l.msg === 'tearing down what experiments that ended left on the data plane',
      );
      assert.ok(swept.length >= 1);
      assert.ok(swept.every((l) => (l.experimentIds as string[]).includes(id)));
    });
  });
}

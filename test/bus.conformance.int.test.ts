import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { BusCommand, BusResult, DeadLetter, Delivery } from '../src/application/ports/bus.js';
import { deriveCommandId, resultMessageId } from '../src/application/ports/bus.js';
import {
  type BusFixture,
  type BusInstallation,
  busFixtures,
  deployCommand,
  sleep,
  waitFor,
} from './support/bus-fixtures.js';

/** One conformance suite for every Bus adapter: the in-process bus and NATS JetStream. */
for (const fixture of busFixtures()) {
  describe(`Bus conformance: ${fixture.name}`, { skip: fixture.skip }, () => {
    if (fixture.skip) {
      it(`skipped: ${fixture.skip}`, { skip: fixture.skip }, () => {});
      return;
    }
    conformance(fixture);
  });
}

function conformance(fixture: BusFixture): void {
  const installations: BusInstallation[] = [];
  const install = async (settings?: Parameters<BusFixture['setup']>[0]) => {
    const i = await fixture.setup(settings);
    installations.push(i);
    return i;
  };
  after(async () => {
    await Promise.all(installations.map((i) => i.teardown()));
  });

  it('delivers a sent command to its queue, parsed with defaults, and a published result to the result consumer', async () => {
    const bus = await (await install()).open();
    const commands: BusCommand[] = [];
    const analyzerCommands: BusCommand[] = [];
    const results: BusResult[] = [];
    await bus.handleCommands('deployer', async (c) => {
      commands.push(c);
    });
    await bus.handleCommands('analyzer', async (c) => {
      analyzerCommands.push(c);
    });
    await bus.handleResults(async (r) => {
      results.push(r);
    });
    const sent = deployCommand({ experimentId: 'exp-send' });
    await bus.send(sent);
    await waitFor('the command', () => commands.length === 1);
    const got = commands[0] as Extract<BusCommand, { type: 'DeployVariant' }>;
    assert.equal(got.commandId, sent.commandId);
    assert.equal(got.experimentId, 'exp-send');
    assert.deepEqual(got.params, {});
    assert.deepEqual(got.criticalProcesses, []);
    await bus.publish({
      type: 'VariantDeployed',
      commandId: sent.commandId,
      experimentId: 'exp-send',
      variant: 'baseline',
      at: new Date().toISOString(),
    });
    await waitFor('the result', () => results.length === 1);
    assert.equal(results[0]?.type, 'VariantDeployed');
    assert.equal(results[0]?.commandId, sent.commandId);
    await sleep(200);
    assert.equal(analyzerCommands.length, 0, 'a deployer command never reaches the analyzer queue');
  });

  it('refuses to send a command that does not match its schema', async () => {
    const bus = await (await install()).open();
    await assert.rejects(bus.send({ ...deployCommand(), hosts: 0 }));
  });

  it('lets competing consumers share the work, each message handled once', async () => {
    const installation = await install();
    const sender = await installation.open();
    const handledBy = new Map<string, string[]>();
    const consumer = async (name: string) => {
      const bus = await installation.open();
      await bus.handleCommands('deployer', async (c) => {
        await sleep(30);
        handledBy.set(c.commandId, [...(handledBy.get(c.commandId) ?? []), name]);
      });
    };
    await consumer('a');
    await consumer('b');
    const ids: string[] = [];
    for (let i = 0; i < 16; i++) {
      const c = deployCommand();
      ids.push(c.commandId);
      await sender.send(c);
    }
    await waitFor('every command', () => handledBy.size === ids.length, 15_000);
    await sleep(200);
    for (const id of ids) assert.equal(handledBy.get(id)?.length, 1, `${id} handled once`);
    const byA = [...handledBy.values()].filter((h) => h[0] === 'a').length;
    assert.ok(byA > 0 && byA < ids.length, `both consumers took work (a: ${byA}, b: ${ids.length - byA})`);
  });

  it('handles messages concurrently up to the concurrency asked for', async () => {
    const bus = await (await install()).open();
    let running = 0;
    let peak = 0;
    let done = 0;
    await bus.handleCommands(
      'deployer',
      async () => {
        running++;
        peak = Math.max(peak, running);
        await sleep(150);
        running--;
        done++;
      },
      { concurrency: 3 },
    );
    for (let i = 0; i < 6; i++) await bus.send(deployCommand());
    await waitFor('all six', () => done === 6, 10_000);
    assert.equal(peak, 3);
  });

  it('redelivers a message whose handler threw, with the attempt number', async () => {
    const bus = await (await install()).open();
    const attempts: Delivery[] = [];
    let handled = 0;
    await bus.handleCommands('deployer', async (_c, delivery) => {
      attempts.push(delivery);
      if (delivery.attempt === 1) throw new Error('transient trouble');
      handled++;
    });
    const sent = deployCommand();
    await bus.send(sent);
    await waitFor('the redelivery', () => handled === 1);
    await sleep(300);
    assert.deepEqual(
      attempts.map((a) => a.attempt),
      [1, 2],
    );
    assert.equal(attempts[0]?.messageId, attempts[1]?.messageId);
    assert.equal(handled, 1);
  });

  it('redelivers to another consumer a message whose consumer died without acknowledging it', async () => {
    const installation = await install({ ackWaitMs: 1_500 });
    const sender = await installation.open();
    const doomed = await installation.open();
    let started = false;
    await doomed.handleCommands('deployer', () => {
      started = true;
      return new Promise<void>(() => {}); // never settles: the worker dies mid-command
    });
    const sent = deployCommand();
    await sender.send(sent);
    await waitFor('the first delivery', () => started);
    await doomed.close({ graceMs: 0 });
    const survivor = await installation.open();
    const got: { command: BusCommand; delivery: Delivery }[] = [];
    await survivor.handleCommands('deployer', async (command, delivery) => {
      got.push({ command, delivery });
    });
    await waitFor('the redelivery', () => got.length === 1, 10_000);
    assert.equal(got[0]?.command.commandId, sent.commandId);
    assert.equal(got[0]?.delivery.attempt, 2);
  });

  it('drops a command re-sent with the same id, and a result published twice', async () => {
    const bus = await (await install()).open();
    const commands: string[] = [];
    const results: string[] = [];
    await bus.handleCommands('analyzer', async (c) => {
      commands.push(c.commandId);
    });
    await bus.handleResults(async (r) => {
      results.push(r.commandId);
    });
    const commandId = deriveCommandId('event-123', 'analyze');
    assert.equal(commandId, deriveCommandId('event-123', 'analyze'), 'derived ids are stable');
    assert.notEqual(commandId, deriveCommandId('event-123', 'deploy:baseline'));
    const analyze = {
      type: 'AnalyzeExperiment' as const,
      commandId,
      experimentId: 'exp-dedup',
      spec: {
        name: 'dedup',
        baseline: { template: 'process-baseline-v1' },
        candidate: { template: 'process-topk-v1', params: { k: 5 } },
        target: { hosts: 2 },
        durationSeconds: 60,
      },
      window: { start: '2025-01-01T00:00:00.000Z', end: '2025-01-01T00:01:00.000Z' },
    };
    await bus.send(analyze);
    await bus.send(analyze);
    const result = {
      type: 'AnalysisFailed' as const,
      commandId,
      experimentId: 'exp-dedup',
      at: new Date().toISOString(),
      reason: 'x',
    };
    await bus.publish(result);
    await bus.publish({ ...result, reason: 'a second answer to the same command' });
    await waitFor('the command and the result', () => commands.length >= 1 && results.length >= 1);
    await sleep(500);
    assert.deepEqual(commands, [commandId]);
    assert.deepEqual(results, [commandId]);
    assert.equal(resultMessageId(commandId), `result:${commandId}`);
  });

  it('moves a message that keeps failing to the dead letters after the maximum deliveries', async () => {
    const installation = await install({ maxDeliveries: 3 });
    const bus = await installation.open();
    const attempts: Delivery[] = [];
    await bus.handleCommands('deployer', async (_c, delivery) => {
      attempts.push(delivery);
      throw new Error(`boom ${delivery.attempt}`);
    });
    const letters: DeadLetter[] = [];
    await bus.handleDeadLetters(async (letter) => {
      letters.push(letter);
    });
    const sent = deployCommand({ experimentId: 'exp-dlq' });
    await bus.send(sent);
    await waitFor('the dead letter', () => letters.length === 1, 10_000);
    await sleep(400);
    assert.deepEqual(
      attempts.map((a) => [a.attempt, a.lastAttempt]),
      [
        [1, false],
        [2, false],
        [3, true],
      ],
    );
    const letter = letters[0] as DeadLetter;
    assert.equal(letter.source, 'command.deployer');
    assert.equal(letter.deliveries, 3);
    assert.equal(letter.error, 'boom 3');
    assert.equal((letter.message as { commandId: string }).commandId, sent.commandId);
    assert.equal(letters.length, 1);
  });

  it('stop() waits for the handler in flight, and the message is not redelivered', async () => {
    const bus = await (await install()).open();
    let finished = 0;
    let started = 0;
    const consumer = await bus.handleCommands('deployer', async () => {
      started++;
      await sleep(300);
      finished++;
    });
    await bus.send(deployCommand());
    await waitFor('the start', () => started === 1);
    await consumer.stop();
    assert.equal(finished, 1);
    const again: string[] = [];
    await bus.handleCommands('deployer', async (c) => {
      again.push(c.commandId);
    });
    await sleep(500);
    assert.deepEqual(again, []);
  });
}

describe('deriveCommandId', () => {
  it('is a UUID-shaped id, stable for an event and purpose', () => {
    const id = deriveCommandId('4f1c0d7e-0000-4000-8000-000000000001', 'deploy:candidate');
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(id, deriveCommandId('4f1c0d7e-0000-4000-8000-000000000001', 'deploy:candidate'));
  });
});

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { NatsBus } from '../src/adapters/nats-bus.js';
import type { BusResult } from '../src/application/ports/bus.js';
import { natsSkipReason, natsUrl, uniquePrefix, waitFor } from './support/bus-fixtures.js';

/**
 * Faults with real processes: a deployer worker killed with SIGKILL in the middle of a deploy, over a
 * real NATS; the command is redelivered to the worker that replaces it, which finishes the job.
 */

interface Worker {
  readonly child: ChildProcess;
  readonly output: () => string;
  readonly exited: Promise<number | null>;
}

const baseEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    LOG_LEVEL: 'info',
    PHOENIX_DEPLOYER: 'local',
    PHOENIX_ANALYZER: 'local',
  };
  delete env.PROMETHEUS_URL;
  delete env.NODE_TEST_CONTEXT;
  return env;
};

const startWorker = (args: readonly string[], env: NodeJS.ProcessEnv = baseEnv()): Worker => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/bus-worker-child.ts', ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
};

describe('phoenix worker without NATS', () => {
  it('refuses to start with a one-line error and exit code 2', async () => {
    const env = baseEnv();
    delete env.NATS_URL;
    const worker = startWorker(['worker', 'deployer'], env);
    const code = await worker.exited;
    assert.equal(code, 2);
    assert.equal(
      worker.output().trim(),
      'phoenix: NATS_URL is required for a standalone deployer worker (without NATS the server runs the workers in-process)',
    );
  });
});

const skip = natsSkipReason();

describe('a deployer worker killed mid-deploy (SIGKILL) over NATS', { skip }, () => {
  if (skip) {
    it(`skipped: ${skip}`, { skip }, () => {});
    return;
  }
  const prefix = uniquePrefix('phxfault');
  const workers: Worker[] = [];
  let saga: NatsBus | undefined;
  after(async () => {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    await saga?.destroy();
    await saga?.close({ graceMs: 0 });
  });

  it('is finished by the worker that replaces it, which gets the command again', {
    timeout: 120_000,
  }, async () => {
    saga = await NatsBus.connect({ servers: natsUrl()!, prefix, ackWaitMs: 2_000 });
    const results: BusResult[] = [];
    await saga.handleResults(async (r) => {
      results.push(r);
    });
    const args = ['worker', 'deployer', '--ack-wait-seconds', '2', '--subject-prefix', prefix];
    const first = startWorker(args);
    workers.push(first);
    await waitFor('the first worker', () => first.output().includes('deployer worker consuming'), 60_000);

    const experimentId = 'exp-fault-1';
    const common = {
      type: 'DeployVariant' as const,
      experimentId,
      criticalProcesses: ['^sshd$'],
      hosts: 2,
      namespace: 'phoenix-experiments',
    };
    // A top-k candidate waits for the baseline's usage: the worker is mid-deploy until the baseline exists.
    await saga.send({
      ...common,
      commandId: 'fault-candidate',
      variant: 'candidate',
      template: 'process-topk-v1',
      params: { k: 5 },
    });
    await waitFor(
      'the first worker to be mid-deploy',
      () => first.output().includes("waiting for the baseline's usage"),
      30_000,
    );
    first.child.kill('SIGKILL');
    assert.equal(await first.exited, null, 'killed, not exited');
    assert.equal(results.length, 0, 'the killed worker answered nothing');

    const second = startWorker(args);
    workers.push(second);
    await waitFor('the second worker', () => second.output().includes('deployer worker consuming'), 60_000);
    await saga.send({
      ...common,
      commandId: 'fault-baseline',
      variant: 'baseline',
      template: 'process-baseline-v1',
    });

    await waitFor('both answers', () => results.length === 2, 60_000);
    const candidate = results.find((r) => r.commandId === 'fault-candidate');
    assert.equal(candidate?.type, 'VariantDeployed', JSON.stringify(candidate));
    if (candidate?.type === 'VariantDeployed') assert.ok((candidate.detail.keepList as string[]).length > 0);
    assert.equal(results.find((r) => r.commandId === 'fault-baseline')?.type, 'VariantDeployed');
    // The second worker logged the candidate's redelivery (attempt 2) and its deploy.
    const deployed = second
      .output()
      .split('\n')
      .filter((l) => l.includes('"msg":"variant deployed"') && l.includes('fault-candidate'));
    assert.equal(deployed.length, 1);
    assert.match(deployed[0] as string, /"attempt":2/);

    // A graceful stop: SIGTERM lets the worker finish and exit 0.
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
    assert.match(second.output(), /deployer worker stopped/);
  });
});

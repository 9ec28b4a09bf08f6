import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { type AddressInfo, createServer } from 'node:net';
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
  // 'close', not 'exit': by then both pipes are read to their end, so the output is whole.
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
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

    // The replacement serves its health, as the workers' Deployment probes it (deploy/kubernetes/base).
    const second = startWorker([...args, '--health-port', '0']);
    workers.push(second);
    await waitFor('the second worker', () => second.output().includes('deployer worker consuming'), 60_000);
    const healthUrl = /health on (http:\/\/\S+);/.exec(second.output())?.[1];
    assert.ok(healthUrl, second.output());
    const readyz = await fetch(`${healthUrl}/readyz`);
    assert.equal(readyz.status, 200);
    assert.deepEqual(await readyz.json(), { status: 'ready', checks: { bus: { ok: true } } });
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
    // The second worker logged the candidate's redelivery (attempt 2) and its deploy. The log line comes
    // through the child's stdout pipe and may arrive after the answer came over NATS: wait for it.
    const deployedLines = () =>
      second
        .output()
        .split('\n')
        .filter((l) => l.includes('"msg":"variant deployed"') && l.includes('fault-candidate'));
    await waitFor('the candidate deploy logged', () => deployedLines().length > 0, 10_000);
    const deployed = deployedLines();
    assert.equal(deployed.length, 1, second.output());
    assert.match(deployed[0] as string, /"attempt":2/);

    // A graceful stop: SIGTERM lets the worker finish and exit 0.
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
    assert.match(second.output(), /deployer worker stopped/);
    await assert.rejects(fetch(`${healthUrl}/healthz`), 'the health server stopped with the worker');
  });

  it('exits when it cannot start after its health server opened, in one line, the server closed with it', {
    timeout: 60_000,
  }, async () => {
    // The Kubernetes deployer's adapters fail to build (no kubeconfig there): after the health server
    // opened, before any consumer.
    const env = { ...baseEnv(), PHOENIX_DEPLOYER: 'kubernetes', KUBECONFIG: '/nonexistent/kubeconfig' };
    const worker = startWorker(['worker', 'deployer', '--subject-prefix', prefix, '--health-port', '0'], env);
    workers.push(worker);
    assert.equal(await worker.exited, 1, 'exited: nothing left open keeps it alive');
    assert.ok(
      worker
        .output()
        .trim()
        .split('\n')
        .includes("phoenix: ENOENT: no such file or directory, open '/nonexistent/kubeconfig'"),
      worker.output(),
    );
    assert.doesNotMatch(worker.output(), /worker consuming/);
  });

  it('refuses a health port it cannot have, in one line with exit code 2, before taking any command', {
    timeout: 60_000,
  }, async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const env = { ...baseEnv(), HOST: '127.0.0.1' };
      const worker = startWorker(
        ['worker', 'deployer', '--subject-prefix', prefix, '--health-port', String(port)],
        env,
      );
      workers.push(worker);
      assert.equal(await worker.exited, 2);
      const lines = worker.output().trim().split('\n');
      assert.ok(
        lines.includes(
          `phoenix: cannot serve the worker's health on 127.0.0.1:${port} (EADDRINUSE); set --health-port or HOST`,
        ),
        worker.output(),
      );
      assert.doesNotMatch(worker.output(), /worker consuming/);
    } finally {
      taken.close();
    }
  });
});

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type RunningServer, startServer } from './support/server.js';
import { validSpec } from './support/system.js';

/**
 * The lifecycle over NATS JetStream with the workers in a process of their own, and its faults: the
 * server killed with SIGKILL mid-run and restarted, and NATS itself restarted mid-run. Uses the real
 * PostgreSQL (DATABASE_URL) and a NATS server this suite starts on a free port (nats-server binary).
 */
const NATS_BIN = ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find(
  (p) => spawnSync(p, ['--version']).status === 0,
);
const skip = !process.env.DATABASE_URL
  ? 'DATABASE_URL is not set: the restart tests need a database that outlives the server (CI sets it)'
  : !NATS_BIN
    ? 'no nats-server binary on this machine'
    : undefined;

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });

class Nats {
  process: ChildProcess | undefined;
  constructor(
    readonly port: number,
    readonly dir: string,
  ) {}
  get url() {
    return `nats://127.0.0.1:${this.port}`;
  }
  async start() {
    this.process = spawn(NATS_BIN!, ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.dir], {
      stdio: 'ignore',
    });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const ok = await new Promise<boolean>((resolve) => {
        const socket = connect(this.port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('nats-server did not start');
  }
  async stop() {
    const p = this.process;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await exited;
  }
}

function startWorker(env: Record<string, string>): {
  process: ChildProcess;
  output: () => string;
  stop(): Promise<void>;
} {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/bin.ts', 'worker', 'all'], {
    env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => {
    output += d;
  });
  child.stderr!.on('data', (d) => {
    output += d;
  });
  return {
    process: child,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Baseline vs minimal on 3 hosts, kubelet critical (every simulated node runs it): a pass. */
const minimalVsBaseline = (durationSeconds: number) =>
  validSpec({
    candidate: { template: 'process-minimal-v1', params: {} },
    target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 },
    criticalProcesses: ['^kubelet$'],
    durationSeconds,
    successCriteria: {
      minCardinalityReductionPct: 50,
      maxCriticalProcessLossPct: 0,
      maxCollectorCpuOverheadPct: 100,
    },
  });

describe('lifecycle over NATS with separate worker processes', { skip }, () => {
  let nats: Nats;
  let natsDir: string;
  let server: RunningServer;
  let restarted: RunningServer | undefined;
  let worker: ReturnType<typeof startWorker>;
  let env: Record<string, string>;
  let operator: string;

  const api = async (s: RunningServer, method: string, path: string, body?: unknown) => {
    const res = await fetch(`${s.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${operator}`,
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: () => JSON.parse(text), text };
  };
  const events = async (s: RunningServer, id: string) =>
    (await api(s, 'GET', `/api/v1/experiments/${id}/events?limit=1000`)).json().items as {
      type: string;
      metadata: { occurredAt: string };
      data: Record<string, unknown>;
    }[];
  const waitForEvent = async (s: () => RunningServer, id: string, type: string, timeoutMs = 40_000) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const found = (await events(s(), id)).find((e) => e.type === type);
        if (found) return found;
      } catch {
        // the server is restarting
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${type} not seen for ${id} within ${timeoutMs} ms`);
  };

  /** The experiment's terminal event (completed or failed), whichever comes. */
  const waitForEnd = (s: () => RunningServer, id: string, timeoutMs = 40_000) =>
    Promise.race([
      waitForEvent(s, id, 'ExperimentCompleted', timeoutMs),
      waitForEvent(s, id, 'ExperimentFailed', timeoutMs),
    ]);

  before(async () => {
    natsDir = mkdtempSync(join(tmpdir(), 'phoenix-nats-'));
    nats = new Nats(await freePort(), natsDir);
    await nats.start();
    const prefix = `phx${randomBytes(4).toString('hex')}`;
    server = await startServer({
      NATS_URL: nats.url,
      PHOENIX_NATS_PREFIX: prefix,
      PHOENIX_INPROCESS_WORKERS: 'false',
    });
    env = { ...server.env };
    worker = startWorker({
      NATS_URL: nats.url,
      PHOENIX_NATS_PREFIX: prefix,
      PHOENIX_DATA_DIR: env.PHOENIX_DATA_DIR!,
    });
    operator = await server.token('operator', 'nats-e2e');
  });
  after(async () => {
    await worker?.stop();
    await restarted?.dispose();
    await server?.dispose();
    await nats?.stop();
    rmSync(natsDir, { recursive: true, force: true });
  });

  it('create → start → running → analyzing → completed, the work done by the worker process', async () => {
    const spec = minimalVsBaseline(1);
    const { id } = (await api(server, 'POST', '/api/v1/experiments', spec)).json();
    assert.equal((await api(server, 'POST', `/api/v1/experiments/${id}/start`)).status, 202);
    const end = await waitForEnd(() => server, id);
    assert.equal(end.type, 'ExperimentCompleted', `${JSON.stringify(end.data)}\n${worker.output()}`);
    const types = (await events(server, id)).map((e) => e.type);
    assert.deepEqual(
      types.filter((t) =>
        ['ExperimentStarted', 'ExperimentRunStarted', 'ExperimentRunCompleted', 'AnalysisRecorded'].includes(
          t,
        ),
      ),
      ['ExperimentStarted', 'ExperimentRunStarted', 'ExperimentRunCompleted', 'AnalysisRecorded'],
    );
    assert.equal(types.filter((t) => t === 'VariantDeployed').length, 2);
  });

  it('NATS restarted mid-run: the flow resumes and the experiment completes', async () => {
    const spec = minimalVsBaseline(3);
    const { id } = (await api(server, 'POST', '/api/v1/experiments', spec)).json();
    await api(server, 'POST', `/api/v1/experiments/${id}/start`);
    await waitForEvent(() => server, id, 'ExperimentRunStarted');
    await nats.stop();
    await new Promise((r) => setTimeout(r, 1500));
    await nats.start();
    const end = await waitForEnd(() => server, id, 60_000);
    assert.equal(end.type, 'ExperimentCompleted', JSON.stringify(end.data));
    const types = (await events(server, id)).map((e) => e.type);
    assert.equal(types.filter((t) => t === 'ExperimentRunCompleted').length, 1);
    assert.equal(types.filter((t) => t === 'AnalysisRecorded').length, 1);
  });

  it('the server killed with SIGKILL mid-run and restarted: the run ends on time, no step repeated or lost', async () => {
    const duration = 4;
    const spec = minimalVsBaseline(duration);
    const { id } = (await api(server, 'POST', '/api/v1/experiments', spec)).json();
    await api(server, 'POST', `/api/v1/experiments/${id}/start`);
    const runStarted = await waitForEvent(() => server, id, 'ExperimentRunStarted');
    await server.stop('SIGKILL');
    restarted = await startServer({}, { env });
    const end = await waitForEnd(() => restarted!, id, 60_000);
    assert.equal(end.type, 'ExperimentCompleted', JSON.stringify(end.data));
    const all = await events(restarted, id);
    const count = (t: string) => all.filter((e) => e.type === t).length;
    for (const t of [
      'ExperimentStarted',
      'ExperimentRunStarted',
      'ExperimentRunCompleted',
      'AnalysisRecorded',
      'ExperimentCompleted',
    ]) {
      assert.equal(count(t), 1, `${t} once`);
    }
    assert.equal(count('VariantDeployed'), 2);
    // The durable timer fired once the run was due, not a full duration after the restart.
    const completedAt = Date.parse(all.find((e) => e.type === 'ExperimentRunCompleted')!.metadata.occurredAt);
    const endsAt = Date.parse(String(runStarted.data.runEndsAt));
    assert.ok(completedAt >= endsAt, 'not before the end of the run');
    assert.ok(completedAt - endsAt < 15_000, `completed ${completedAt - endsAt} ms after the run's end`);
  });
});

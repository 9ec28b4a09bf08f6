import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * The real third-party client: grpcurl (scripts/install-grpcurl.sh puts it in .phoenix-grpcurl/, or
 * PHOENIX_GRPCURL names one) finds the services by reflection alone (no .proto files given), and drives
 * a whole experiment: create → start → Watch until it ends, with the token in its -H header.
 */

const run = promisify(execFile);

const grpcurlPath = (): string | undefined => {
  const given = process.env.PHOENIX_GRPCURL;
  if (given) return existsSync(given) ? given : undefined;
  const local = join(import.meta.dirname, '..', '.phoenix-grpcurl', 'grpcurl');
  return existsSync(local) ? local : undefined;
};
const grpcurl = grpcurlPath();
const skip = grpcurl
  ? undefined
  : 'grpcurl not found: run `bash scripts/install-grpcurl.sh` (needs Go) or set PHOENIX_GRPCURL';
if (skip) console.log(`# grpcurl tests skipped: ${skip}`);

const TERMINAL = ['ExperimentCompleted', 'ExperimentFailed', 'ExperimentCancelled'];

describe('grpcurl drives the gRPC API by reflection', { skip, timeout: 180_000 }, () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let address: string;
  let token: string;
  const children = new Set<ChildProcess>();

  before(async () => {
    system = await startTestSystem();
    address = `127.0.0.1:${await system.grpc!.listen('127.0.0.1', 0)}`;
    token = await tokenFor(system, 'operator', 'grpcurl-user');
  });
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await system?.dispose();
  });

  /** One grpcurl call; resolves with its output, whatever its exit code. */
  const call = async (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const { stdout, stderr } = await run(grpcurl!, ['-plaintext', '-max-time', '30', ...args], {
        timeout: 60_000,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof e.code === 'number' ? e.code : -1,
        stdout: e.stdout ?? '',
        stderr: e.stderr ?? '',
      };
    }
  };
  const auth = () => ['-H', `authorization: Bearer ${token}`];

  it('lists the services and describes one', async () => {
    const listed = await call([address, 'list']);
    assert.equal(listed.code, 0, listed.stderr);
    const services = listed.stdout.trim().split('\n');
    for (const s of [
      'phoenix.v1.ExperimentService',
      'phoenix.v1.TemplateService',
      'phoenix.v1.AuditService',
      'grpc.health.v1.Health',
    ]) {
      assert.ok(services.includes(s), `${s} in ${services.join(', ')}`);
    }
    const described = await call([address, 'describe', 'phoenix.v1.ExperimentService']);
    assert.equal(described.code, 0, described.stderr);
    assert.match(described.stdout, /phoenix\.v1\.ExperimentService is a service/);
    assert.match(
      described.stdout,
      /rpc Watch \( \.phoenix\.v1\.WatchRequest \) returns \( stream \.phoenix\.v1\.WatchResponse \)/,
    );
    const health = await call([address, 'grpc.health.v1.Health/Check']);
    assert.equal(health.code, 0, health.stderr);
    assert.equal(JSON.parse(health.stdout).status, 'SERVING');
  });

  it('refuses without a token, and shows the field violations of a bad request', async () => {
    const anonymous = await call(['-d', '{}', address, 'phoenix.v1.TemplateService/ListTemplates']);
    assert.notEqual(anonymous.code, 0);
    assert.match(anonymous.stderr, /Code: Unauthenticated/);
    const bad = await call([
      ...auth(),
      '-d',
      JSON.stringify({ spec: { name: 'x', durationSeconds: 0 } }),
      address,
      'phoenix.v1.ExperimentService/CreateExperiment',
    ]);
    assert.match(bad.stderr, /Code: InvalidArgument/);
    // grpcurl decodes google.rpc.BadRequest through reflection: the third-party client reads the details.
    assert.match(bad.stderr, /"field": "spec\.duration_seconds"/);
  });

  it('create → start → Watch until the experiment ends', async () => {
    const spec = validSpec({
      name: 'driven by grpcurl',
      candidate: { template: 'process-minimal-v1', params: {} },
      target: { nodeSelector: {}, hosts: 4 },
      durationSeconds: 1,
      criticalProcesses: ['^postgres$'],
      successCriteria: {
        minCardinalityReductionPct: 50,
        maxCriticalProcessLossPct: 0,
        maxCollectorCpuOverheadPct: 100,
      },
    });
    const created = await call([
      ...auth(),
      '-d',
      JSON.stringify({ spec, idempotency_key: 'grpcurl-create-1' }),
      address,
      'phoenix.v1.ExperimentService/CreateExperiment',
    ]);
    assert.equal(created.code, 0, created.stderr);
    const outcome = JSON.parse(created.stdout).outcome;
    assert.equal(outcome.state, 'EXPERIMENT_STATE_PENDING');
    const id: string = outcome.experimentId;

    // The feed from the start of this experiment's stream, opened before the start.
    const watcher = spawn(
      grpcurl!,
      [
        '-plaintext',
        '-max-time',
        '120',
        ...auth(),
        '-d',
        JSON.stringify({ experiment_id: id, from: '0' }),
        address,
        'phoenix.v1.ExperimentService/Watch',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.add(watcher);
    let out = '';
    let err = '';
    watcher.stderr!.on('data', (d) => {
      err += d;
    });
    const ended = new Promise<string[]>((resolve, reject) => {
      watcher.stdout!.on('data', (d) => {
        out += d;
        const types = [...out.matchAll(/"type": "(\w+)"/g)].map((m) => m[1]!);
        if (types.some((t) => TERMINAL.includes(t))) resolve(types);
      });
      watcher.once('exit', (code) =>
        reject(new Error(`grpcurl Watch exited (${code}) early:\n${out}\n${err}`)),
      );
    });
    // Once the backlog is there, start the experiment.
    for (let n = 0; n < 200 && !out.includes('"live"'); n++) await new Promise((r) => setTimeout(r, 50));
    assert.match(out, /"live"/, err);

    const started = await call([
      ...auth(),
      '-d',
      JSON.stringify({ id }),
      address,
      'phoenix.v1.ExperimentService/StartExperiment',
    ]);
    assert.equal(started.code, 0, started.stderr);
    assert.equal(JSON.parse(started.stdout).outcome.state, 'EXPERIMENT_STATE_INITIALIZING');

    const types = await ended;
    watcher.kill('SIGTERM');
    children.delete(watcher);
    assert.equal(types[0], 'ExperimentCreated');
    assert.ok(types.includes('ExperimentStarted'));
    assert.ok(types.includes('ExperimentRunStarted'), types.join(', '));
    assert.equal(
      new Set(out.match(/"position": "[^"]+"/g)).size,
      out.match(/"position": "[^"]+"/g)!.length - 1,
      'each event once (the live message repeats one position at most)',
    );

    const got = await call([
      ...auth(),
      '-d',
      JSON.stringify({ id }),
      address,
      'phoenix.v1.ExperimentService/GetExperiment',
    ]);
    assert.equal(got.code, 0, got.stderr);
    const experiment = JSON.parse(got.stdout).experiment;
    assert.ok(
      ['EXPERIMENT_STATE_COMPLETED', 'EXPERIMENT_STATE_FAILED', 'EXPERIMENT_STATE_ANALYZING'].includes(
        experiment.state,
      ),
      experiment.state,
    );
  });
});

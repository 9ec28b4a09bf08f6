import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type RunningServer, startServer } from './support/server.js';
import { validSpec } from './support/system.js';

/**
 * A new user's first hour, through the CLI only: a token from `phoenix token`, then create → start →
 * watch to the verdict → get / list, against a started server on the embedded database whose secret
 * the server made itself (no PHOENIX_JWT_SECRET), as `npm start` runs it.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'src/bin.ts');
// By its resolved location: a child that runs in another folder finds no tsx from there.
const tsx = import.meta.resolve('tsx');

/** The environment of a child CLI: this process's, without the variables a test sets on purpose. */
const baseEnv = () =>
  Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) =>
        ![
          'DATABASE_URL',
          'NATS_URL',
          'EVENTSTORE_URL',
          'PHOENIX_DATA_DIR',
          'PHOENIX_JWT_SECRET',
          'PHOENIX_URL',
          'PHOENIX_TOKEN',
        ].includes(k),
    ),
  ) as Record<string, string>;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The built CLI as its own process (its real exit code), in `cwd`. */
const spawnCli = (
  args: string[],
  options: {
    env?: Record<string, string>;
    cwd?: string;
    stdin?: string;
    onStdout?: (s: string) => void;
  } = {},
): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', tsx, bin, ...args], {
      cwd: options.cwd ?? root,
      env: { ...baseEnv(), ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      options.onStdout?.(stdout);
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.stdin ?? '');
  });

/** The CLI with the server's address and an operator token (or what `env` says instead). */
const cli = (args: string[], env: Record<string, string> = {}): Promise<Run> => spawnCli(args, { env });

/**
 * A TCP proxy that can cut every connection through it, and says when a WebSocket upgrade has been
 * answered (so a test cuts a live feed, not a connection attempt).
 */
class CuttingProxy {
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  #upgrades = 0;
  #waiters: (() => void)[] = [];
  port = 0;

  constructor(readonly targetPort: number) {}

  /** Listens (again, on the same port after `pause`). */
  async start(): Promise<void> {
    this.#server = createServer((client) => {
      const upstream = connect(this.targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => s.destroy());
      }
      upstream.on('data', (chunk: Buffer) => {
        if (chunk.subarray(0, 12).toString('latin1') === 'HTTP/1.1 101') {
          this.#upgrades++;
          for (const w of this.#waiters.splice(0)) w();
        }
      });
      client.pipe(upstream).pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => this.#server!.listen(this.port, '127.0.0.1', () => resolve()));
    this.port = (this.#server.address() as { port: number }).port;
  }

  /** Cuts every connection and refuses new ones until `start`. */
  async pause(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const s of this.#sockets) s.destroy();
    if (server) await new Promise((r) => server.close(r));
  }

  /** Resolves once `n` upgrades have been answered through the proxy. */
  upgrades(n: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => (this.#upgrades >= n ? resolve() : this.#waiters.push(check));
      check();
    });
  }

  stop(): Promise<void> {
    return this.pause();
  }
}

const passingSpec = (name: string) =>
  validSpec({
    name,
    candidate: { template: 'process-minimal-v1', params: {} },
    target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 4 },
    durationSeconds: 1,
    criticalProcesses: ['^postgres$', '^kubelet$'],
    successCriteria: {
      minCardinalityReductionPct: 50,
      maxCriticalProcessLossPct: 0,
      maxCollectorCpuOverheadPct: 100,
    },
  });

describe('the CLI against a started server', { timeout: 600_000 }, () => {
  let server: RunningServer;
  let dataDir: string;
  let elsewhere: string;
  let operator: string;
  let apiEnv: () => Record<string, string>;

  before(async () => {
    // As `npm start` runs: embedded database, and the secret the server creates in its data dir.
    server = await startServer({ DATABASE_URL: '', PHOENIX_JWT_SECRET: '' });
    dataDir = server.env.PHOENIX_DATA_DIR!;
    elsewhere = mkdtempSync(join(tmpdir(), 'phoenix-cwd-'));
    apiEnv = () => ({ PHOENIX_URL: server.url, PHOENIX_TOKEN: operator });
    const minted = await spawnCli(['token', '--role', 'operator', '--sub', 'alice'], {
      env: { PHOENIX_DATA_DIR: dataDir },
    });
    assert.equal(minted.code, 0, minted.stderr);
    operator = minted.stdout.trim();
  });
  after(async () => {
    await server?.dispose();
    if (elsewhere) rmSync(elsewhere, { recursive: true, force: true });
  });

  it("phoenix token from another folder signs with the server's secret when PHOENIX_DATA_DIR names it", async () => {
    const minted = await spawnCli(['token', '--role', 'operator', '--sub', 'alice'], {
      cwd: elsewhere,
      env: { PHOENIX_DATA_DIR: dataDir },
    });
    assert.equal(minted.code, 0, minted.stderr);
    const token = minted.stdout.trim();
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
    assert.equal(claims.sub, 'alice');
    // Without --ttl the token expires (12 h), rather than living for ever.
    assert.equal(claims.exp - claims.iat, 12 * 3600);
    const res = await fetch(`${server.url}/api/v1/templates`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(readdirSync(elsewhere), [], 'nothing written where it ran');
  });

  it('phoenix token where no server has a secret fails with why, and creates none', async () => {
    const run = await spawnCli(['token', '--role', 'operator', '--sub', 'alice'], { cwd: elsewhere });
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.match(
      run.stderr,
      /^phoenix: no JWT secret in .*\.phoenix: [^\n]*PHOENIX_DATA_DIR[^\n]*PHOENIX_JWT_SECRET[^\n]*\n$/,
    );
    assert.equal(existsSync(join(elsewhere, '.phoenix')), false);
  });

  it('token → create → start → watch through a dropped feed to the verdict → get and list', async () => {
    const created = await cli(
      [
        'experiments',
        'create',
        '--name',
        'minimal vs baseline',
        '--candidate',
        'process-minimal-v1',
        '--hosts',
        '4',
        '--duration',
        '1s',
        '--critical',
        '^postgres$',
        '--critical',
        '^kubelet$',
        '--max-cpu-overhead',
        '100',
        '-q',
      ],
      apiEnv(),
    );
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    assert.match(id, /^[0-9a-f-]{36}$/);

    // The feed goes through a proxy that cuts it once it is live; watch must resume with `from`.
    const proxy = new CuttingProxy(Number(new URL(server.url).port));
    await proxy.start();
    try {
      const watching = spawnCli(['experiments', 'watch', id, '--json'], {
        env: { PHOENIX_URL: `http://127.0.0.1:${proxy.port}`, PHOENIX_TOKEN: operator },
      });
      // Live on the feed, then cut off while the experiment starts: what it missed comes after `from`.
      await proxy.upgrades(1);
      await proxy.pause();
      const started = await cli(['experiments', 'start', id], apiEnv());
      assert.equal(started.code, 0, started.stderr);
      assert.match(started.stdout, new RegExp(`^${id}\\s+initializing\\s+version 2\\n$`));
      await proxy.start();

      const watched = await watching;
      assert.equal(watched.code, 0, `${watched.stdout}\n${watched.stderr}`);
      assert.match(watched.stderr, /live feed .*; reconnecting from /);
      const lines = watched.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      const events = lines.filter((l) => l.kind === 'event');
      assert.deepEqual(
        events.map((e) => e.version),
        events.map((_, i) => i + 1),
        'every event once, in order, none lost across the drop',
      );
      assert.equal(events.at(-1).type, 'ExperimentCompleted');
      const end = lines.at(-1);
      assert.equal(end.kind, 'end');
      assert.equal(end.verdict, 'pass');
      assert.equal(end.experiment.state, 'completed');
    } finally {
      await proxy.stop();
    }

    // watch returned after the read models had the verdict: get and list show it at once.
    const got = await cli(['experiments', 'get', id], apiEnv());
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /^state:\s+completed$/m);
    assert.match(got.stdout, /^verdict: pass$/m);
    const gotJson = JSON.parse((await cli(['experiments', 'get', id, '--json'], apiEnv())).stdout);
    assert.equal(gotJson.analysis.verdict, 'pass');
    assert.equal(gotJson.name, 'minimal vs baseline');

    const listed = await cli(['experiments', 'list'], apiEnv());
    assert.equal(listed.code, 0, listed.stderr);
    const [header, ...rows] = listed.stdout.trim().split('\n');
    assert.match(header!, /^ID\s+NAME\s+STATE\s+CANDIDATE\s+VERDICT\s+CREATED$/);
    assert.ok(
      rows.some((r) => r.startsWith(id) && /\scompleted\s+process-minimal-v1\s+pass\s/.test(r)),
      listed.stdout,
    );
    const listedJson = JSON.parse(
      (await cli(['experiments', 'list', '--json', '--state', 'completed'], apiEnv())).stdout,
    );
    assert.ok(listedJson.items.some((e: { id: string }) => e.id === id));
    assert.ok('nextCursor' in listedJson);

    const history = await cli(['experiments', 'history', id], apiEnv());
    assert.equal(history.code, 0, history.stderr);
    assert.match(history.stdout, /\banalyzing\s+completed\s+phoenix-saga\b/);
  });

  it('a body from stdin; cancel; watch of a cancelled experiment exits with its own code', async () => {
    const created = await spawnCli(['experiments', 'create', '-f', '-', '--json'], {
      env: apiEnv(),
      stdin: JSON.stringify(validSpec({ name: 'to cancel', durationSeconds: 3600 })),
    });
    assert.equal(created.code, 0, created.stderr);
    const answer = JSON.parse(created.stdout);
    assert.equal(answer.state, 'pending');
    assert.equal(answer.version, 1);

    const cancelled = await cli(
      ['experiments', 'cancel', answer.id, '--reason', 'not today', '--json'],
      apiEnv(),
    );
    assert.equal(cancelled.code, 0, cancelled.stderr);
    assert.equal(JSON.parse(cancelled.stdout).state, 'cancelled');

    const watched = await spawnCli(['experiments', 'watch', answer.id], { env: apiEnv() });
    assert.equal(watched.code, 5, watched.stderr);
    assert.match(watched.stdout, /ExperimentCancelled {2}not today\ncancelled: not today\n$/);

    // Cancelling again is refused by the server: one line, a 4xx, exit 2.
    const again = await cli(['experiments', 'cancel', answer.id], apiEnv());
    assert.equal(again.code, 2);
    assert.match(again.stderr, /^phoenix: 409 [^\n]+\n$/);
  });

  it('a failing candidate: watch exits 3', async () => {
    const spec = {
      ...passingSpec('cannot cut 99.9%'),
      candidate: { template: 'process-priority-filter-v1', params: {} },
      successCriteria: {
        minCardinalityReductionPct: 99.9,
        maxCriticalProcessLossPct: 0,
        maxCollectorCpuOverheadPct: 100,
      },
    };
    const file = join(elsewhere, 'spec.json');
    writeFileSync(file, JSON.stringify(spec));
    const created = await cli(
      ['experiments', 'create', '-f', file, '--name', 'from a file, renamed', '-q'],
      apiEnv(),
    );
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    assert.equal((await cli(['experiments', 'start', id], apiEnv())).code, 0);
    const watched = await spawnCli(['experiments', 'watch', id], { env: apiEnv() });
    assert.equal(watched.code, 3, `${watched.stdout}\n${watched.stderr}`);
    assert.match(watched.stdout, /^verdict: fail$/m);
    const got = JSON.parse((await cli(['experiments', 'get', id, '--json'], apiEnv())).stdout);
    assert.equal(got.name, 'from a file, renamed');
  });

  it('a problem+json error is one line with its status and field, exit 2', async () => {
    const run = await cli(
      [
        'experiments',
        'create',
        '--name',
        ' ',
        '--candidate',
        'process-topk-v1',
        '--hosts',
        '2',
        '--duration',
        '60',
      ],
      apiEnv(),
    );
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^phoenix: 400 body\.name: [^\n]+\n$/);
  });

  it('templates lists every template the server offers', async () => {
    const run = await cli(['templates'], apiEnv());
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^process-topk-v1\s+.*\bk\b/m);
    const json = JSON.parse((await cli(['templates', '--json'], apiEnv())).stdout);
    assert.equal(json.items.length, 7);
  });

  it('preview: a spec from a file, or a created experiment; a refusal is one line', async () => {
    const file = join(elsewhere, 'preview.json');
    writeFileSync(file, JSON.stringify(passingSpec('to preview')));
    const run = await cli(['experiments', 'preview', '-f', file], apiEnv());
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^series: [\d,]+ → [\d,]+ \(removes [\d,]+, [\d.]+ %\)$/m);
    assert.match(run.stdout, /^critical processes dropped: none$/m);
    const created = await cli(['experiments', 'create', '-f', file, '-q'], apiEnv());
    assert.equal(created.code, 0, created.stderr);
    const byId = await cli(['experiments', 'preview', created.stdout.trim(), '--json'], apiEnv());
    assert.equal(byId.code, 0, byId.stderr);
    assert.equal(JSON.parse(byId.stdout).hosts, 4);
    const neither = await cli(['experiments', 'preview'], apiEnv());
    assert.equal(neither.code, 2);
    assert.match(neither.stderr, /^phoenix: give an experiment id or -f/);
    const bad = await cli(['experiments', 'preview', 'not-a-uuid'], apiEnv());
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^phoenix: 400 [^\n]+\n$/);
  });

  it('migrate refuses while the server holds the embedded database', async () => {
    const run = await cli(['migrate'], { PHOENIX_DATA_DIR: dataDir });
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^phoenix: the embedded database in .* is in use by process \d+; [^\n]*\n$/);
    // The server is unharmed.
    const res = await fetch(`${server.url}/api/v1/experiments`, {
      headers: { authorization: `Bearer ${operator}` },
    });
    assert.equal(res.status, 200);
  });
});

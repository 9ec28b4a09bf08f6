import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startServer } from './support/server.js';
import { TEST_SECRET } from './support/system.js';

/**
 * What a supervisor (systemd, Kubernetes, a script) relies on: a server that cannot listen exits at
 * once and non-zero, holding nothing; a SIGTERM to what it started (`npm start`) stops the server and
 * frees the port and the embedded database; the banner gives a line to paste into a shell.
 */

const occupiedPort = () =>
  new Promise<{ server: Server; port: number }>((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, port: (server.address() as { port: number }).port }),
    );
  });

const freePort = async () => {
  const { server, port } = await occupiedPort();
  await new Promise((r) => server.close(r));
  return port;
};

/** Whether something accepts connections on the port. */
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

/** Collects a child's output and resolves with its exit code once it has exited. */
const watch = (child: ChildProcess) => {
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { output: () => output, exited };
};

const inherited = () =>
  Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !['DATABASE_URL', 'NATS_URL', 'EVENTSTORE_URL', 'PORT', 'HOST'].includes(k),
    ),
  ) as Record<string, string>;

describe('start-up and shutdown as a supervisor expects', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'phoenix-startup-'));
    dirs.push(dir);
    return dir;
  };
  after(() => {
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const dir of dirs) {
      // A server left behind (the failure this suite guards against) is named by its lock file.
      const lock = join(dir, 'phoenix.lock');
      const holder = existsSync(lock) ? Number(readFileSync(lock, 'utf8').trim()) : 0;
      if (holder > 0) {
        try {
          process.kill(holder, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a taken PORT: exits non-zero at once with one line naming the address, holding nothing', {
    timeout: 90_000,
  }, async () => {
    const { server, port } = await occupiedPort();
    try {
      const dir = tempDir();
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/bin.ts', 'serve'], {
        env: {
          ...inherited(),
          PHOENIX_DATA_DIR: dir,
          PHOENIX_JWT_SECRET: TEST_SECRET,
          LOG_LEVEL: 'silent',
          HOST: '127.0.0.1',
          PORT: String(port),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      const { output, exited } = watch(child);
      const code = await exited;
      assert.notEqual(code, 0, output());
      assert.notEqual(code, null, output());
      const lines = output().trim().split('\n');
      assert.equal(lines.length, 1, output());
      assert.match(lines[0]!, new RegExp(`127\\.0\\.0\\.1:${port}.*EADDRINUSE`));
      assert.equal(existsSync(join(dir, 'phoenix.lock')), false, 'the embedded database is unlocked');
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('SIGTERM to `npm start` stops the server: the port is free and the data dir unlocked', {
    timeout: 120_000,
    skip: existsSync('dist/bin.js') ? undefined : 'dist/ is not built (npm run build)',
  }, async () => {
    const dir = tempDir();
    const port = await freePort();
    // What `npm start` runs, without its prestart build: dist/ is what the build made.
    const child = spawn('npm', ['start', '--ignore-scripts', '--silent'], {
      env: {
        ...inherited(),
        PHOENIX_DATA_DIR: dir,
        PHOENIX_JWT_SECRET: TEST_SECRET,
        LOG_LEVEL: 'warn',
        HOST: '127.0.0.1',
        PORT: String(port),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    const { output, exited } = watch(child);
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (/serving on http/.test(output())) resolve();
      };
      child.stdout!.on('data', check);
      child.once('exit', (code) => reject(new Error(`npm start exited with ${code}:\n${output()}`)));
    });
    assert.equal(existsSync(join(dir, 'phoenix.lock')), true);
    child.kill('SIGTERM');
    await exited;
    // npm has exited; the server it started must be gone with it, not left serving, and its database
    // unlocked. npm may exit as soon as it has passed the signal on, while the server still closes its
    // listener and then its database: both are waited for (10 s at most), not read at once.
    const locked = () => existsSync(join(dir, 'phoenix.lock'));
    let serving = await listening(port);
    for (let i = 0; (serving || locked()) && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 100));
      serving = await listening(port);
    }
    assert.equal(serving, false, `something still serves on ${port}:\n${output()}`);
    assert.equal(locked(), false, `the embedded database is still locked:\n${output()}`);
  });

  it('a second SIGTERM while it stops does not cut the shutdown short: exit 0, the data dir unlocked', {
    timeout: 120_000,
  }, async () => {
    // What a supervisor or `npm start` may do: pass a signal on that was also sent to the process, or
    // signal again. Before, the first signal's listener was a `once`: the second took the default
    // action and killed the server mid-shutdown, with the embedded database still locked.
    const dir = tempDir();
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/bin.ts', 'serve'], {
      env: {
        ...inherited(),
        PHOENIX_DATA_DIR: dir,
        PHOENIX_JWT_SECRET: TEST_SECRET,
        LOG_LEVEL: 'info',
        HOST: '127.0.0.1',
        PORT: String(port),
        GRPC_PORT: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    const { output } = watch(child);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('close', (code, signal) => resolve({ code, signal })),
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', () => {
        if (/serving on http/.test(output())) resolve();
      });
      child.once('exit', (code) => reject(new Error(`the server exited with ${code}:\n${output()}`)));
    });
    child.kill('SIGTERM');
    // The second signal once the first is being handled: the shutdown has begun.
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    await new Promise<void>((resolve) => {
      const check = () => (gone || /"shutting down"/.test(output()) ? resolve() : setTimeout(check, 1));
      check();
    });
    child.kill('SIGTERM');
    assert.deepEqual(await exited, { code: 0, signal: null }, output());
    assert.equal(existsSync(join(dir, 'phoenix.lock')), false, 'the embedded database is unlocked');
    assert.match(output(), /"msg":"stopped"/);
  });

  it('the banner keeps the URL line and gives an `export TOKEN=…` line a user can paste', {
    timeout: 90_000,
  }, async () => {
    const server = await startServer();
    try {
      const out = server.output();
      assert.match(out, /^Phoenix is serving on http:\/\/\S+$/m);
      const token = /^\s*export TOKEN=(\S+)$/m.exec(out)?.[1];
      assert.ok(token, out);
      const res = await fetch(`${server.url}/api/v1/templates`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 200);
    } finally {
      await server.dispose();
    }
  });
});

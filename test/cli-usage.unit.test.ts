import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * What a script relies on when it calls the CLI wrongly: one line on stderr naming the problem, exit
 * code 2, nothing on stdout and no stack trace. Nothing here reaches a server.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'phoenix-cli-usage-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const SECRET = 'a-secret-of-at-least-32-bytes-for-the-usage-tests';

const cli = (
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    const inherited = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('PHOENIX_') && k !== 'DATABASE_URL'),
    );
    execFile(
      process.execPath,
      ['--import', import.meta.resolve('tsx'), join(root, 'src/bin.ts'), ...args],
      { cwd: dir, env: { ...inherited, PHOENIX_DATA_DIR: join(dir, 'data'), ...env } },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });

const api = { PHOENIX_URL: 'http://127.0.0.1:9', PHOENIX_TOKEN: 'x.y.z' };

describe('phoenix usage', () => {
  it("--version prints package.json's version", async () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    const run = await cli(['--version']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${version}\n`);
  });

  it('token --ttl never mints a token without expiry; the default one expires', async () => {
    const never = await cli(['token', '--role', 'viewer', '--sub', 'bot', '--ttl', 'never'], {
      PHOENIX_JWT_SECRET: SECRET,
    });
    assert.equal(never.code, 0, never.stderr);
    const claims = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString());
    assert.equal(claims(never.stdout.trim()).exp, undefined);
    const plain = await cli(['token', '--role', 'viewer', '--sub', 'bot'], { PHOENIX_JWT_SECRET: SECRET });
    const c = claims(plain.stdout.trim());
    assert.equal(c.exp - c.iat, 12 * 3600);
  });

  it('token --help says what the default lifetime is', async () => {
    const run = await cli(['token', '--help']);
    assert.match(run.stdout, /--ttl <duration>[\s\S]*'never'[\s\S]*\(default: 12h\)/);
  });

  it('experiments watch --help documents the exit codes', async () => {
    const run = await cli(['experiments', 'watch', '--help']);
    assert.equal(run.code, 0);
    for (const line of [
      /0\s+verdict pass/,
      /3\s+verdict fail/,
      /4\s+verdict inconclusive/,
      /5\s+cancelled/,
      /6\s+failed/,
    ])
      assert.match(run.stdout, line);
    assert.match(run.stdout, /2\s+bad usage, or the server refused the request \(4xx\)/);
  });

  const badJson = join(dir, 'bad.json');
  writeFileSync(badJson, '{ "name": ');
  for (const [what, args, env, says] of [
    ['an unknown role', ['token', '--role', 'root', '--sub', 'x'], {}, /--role/],
    [
      'a bad --ttl',
      ['token', '--role', 'admin', '--sub', 'x', '--ttl', 'soon'],
      { PHOENIX_JWT_SECRET: SECRET },
      /--ttl/,
    ],
    ['an empty --sub', ['token', '--role', 'admin', '--sub', ' '], { PHOENIX_JWT_SECRET: SECRET }, /--sub/],
    ['an unknown command', ['bogus'], {}, /bogus/],
    ['get without an id', ['experiments', 'get'], api, /id/],
    ['watch without an id', ['experiments', 'watch'], api, /id/],
    ['zero hosts', ['experiments', 'create', '--hosts', '0'], api, /--hosts/],
    ['a bad duration', ['experiments', 'create', '--duration', 'long'], api, /--duration/],
    [
      'a missing body file',
      ['experiments', 'create', '-f', join(dir, 'none.json')],
      api,
      /none\.json: ENOENT/,
    ],
    ['a body file that is not JSON', ['experiments', 'create', '-f', badJson], api, /bad\.json: not JSON/],
    [
      'a malformed --node-selector',
      ['experiments', 'create', '--node-selector', 'pool'],
      api,
      /--node-selector/,
    ],
    ['a bad --limit', ['experiments', 'list', '--limit', 'lots'], api, /--limit/],
    ['no PHOENIX_TOKEN', ['experiments', 'list'], { PHOENIX_URL: api.PHOENIX_URL }, /PHOENIX_TOKEN/],
    ['a PHOENIX_URL that is not http', ['templates'], { ...api, PHOENIX_URL: 'ftp://x' }, /PHOENIX_URL/],
    ['a bad configuration for migrate', ['migrate'], { LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
  ] as const) {
    it(`exits 2 with one line for ${what}`, async () => {
      const run = await cli([...args], { ...env });
      assert.equal(run.code, 2, run.stderr);
      assert.equal(run.stdout, '');
      assert.match(run.stderr, /^[^\n]+\n$/, 'one line');
      assert.match(run.stderr, says);
      assert.doesNotMatch(run.stderr, /\bat .*:\d+:\d+/, 'no stack trace');
    });
  }

  it('a server that cannot be reached: one line, exit 1', async () => {
    const run = await cli(['experiments', 'list'], api);
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      /^phoenix: cannot reach http:\/\/127\.0\.0\.1:9 \([^)]+\); is the server running\? \(PHOENIX_URL\)\n$/,
    );
  });
});

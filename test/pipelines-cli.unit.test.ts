import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The real CLI (src/bin.ts), as a user runs it: its own process, its own exit code. */
const cli = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(root, 'src/bin.ts'), ...args],
      { cwd: root },
      (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });

describe('phoenix render / simulate', () => {
  it('renders a template as YAML the collector can read', async () => {
    const { code, stdout } = await cli(
      'render',
      'process-topk-v1',
      '--param',
      'k=5',
      '--critical',
      '^postgres$',
      '--keep',
      'java',
    );
    assert.equal(code, 0);
    const config = parse(stdout) as { processors: Record<string, unknown> };
    assert.ok(config.processors['filter/topk']);
  });

  it('renders Kubernetes objects', async () => {
    const { code, stdout } = await cli(
      'render',
      'process-minimal-v1',
      '--kubernetes',
      '--mode',
      'daemonset',
      '--node-selector',
      'pool=a',
    );
    assert.equal(code, 0);
    assert.deepEqual(
      stdout.split(/^---$/m).map((d) => (parse(d) as { kind: string }).kind),
      ['ConfigMap', 'DaemonSet'],
    );
  });

  it('simulates baseline and candidate and prints the reduction', async () => {
    const { code, stdout } = await cli(
      'simulate',
      '--template',
      'process-minimal-v1',
      '--hosts',
      '3',
      '--processes',
      '200',
      '--json',
    );
    assert.equal(code, 0);
    const result = JSON.parse(stdout) as {
      baseline: { series: number };
      candidate: { series: number };
      cardinalityReductionPct: number;
      criticalProcessLossPct: number;
    };
    assert.equal(result.baseline.series, 3 * 200 * 7);
    assert.ok(result.cardinalityReductionPct > 90);
    assert.equal(result.criticalProcessLossPct, 0);
  });

  it('simulate says --template is required and gives the fleet defaults', async () => {
    const help = await cli('simulate', '--help');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--template <template>\s+candidate template[^\n]*\(required\)/);
    assert.match(help.stdout, /--hosts <n>\s+simulated nodes \(default: 10\)/);
    assert.match(help.stdout, /--processes <n>\s+processes per node \(default: 500\)/);

    const { code, stdout, stderr } = await cli('simulate', '--template', 'process-minimal-v1', '--json');
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout) as { fleet: { hosts: number; processesPerHost: number } };
    assert.deepEqual([result.fleet.hosts, result.fleet.processesPerHost], [10, 500]);
  });

  it('simulate without options names what is missing, on one line, exit 2', async () => {
    const { code, stdout, stderr } = await cli('simulate');
    assert.equal(code, 2);
    assert.equal(stdout, '');
    assert.match(stderr, /^[^\n]*--template[^\n]*\n$/);
  });

  for (const [what, args] of [
    ['a negative k', ['render', 'process-topk-v1', '--param', 'k=-3']],
    ['an unknown template', ['render', 'process-nope-v1']],
    [
      'a bad regex',
      ['simulate', '--template', 'process-topk-v1', '--critical', '(', '--hosts', '1', '--processes', '10'],
    ],
    ['a malformed --param', ['render', 'process-topk-v1', '--param', 'k']],
    ['zero hosts', ['simulate', '--template', 'process-topk-v1', '--hosts', '0', '--processes', '10']],
    ['a missing option', ['simulate', '--hosts', '1', '--processes', '10']],
  ] as const) {
    it(`exits 2 with one line on stderr for ${what}`, async () => {
      const { code, stderr, stdout } = await cli(...args);
      assert.equal(code, 2);
      assert.equal(stdout, '');
      const lines = stderr.split('\n').filter((l) => l !== '' && !l.startsWith('npm warn'));
      assert.equal(lines.length, 1, stderr);
      assert.doesNotMatch(stderr, /\bat .*\(.*:\d+:\d+\)/, 'no stack trace');
    });
  }
});

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse } from 'yaml';

const dir = mkdtempSync(join(tmpdir(), 'phoenix-cli-'));
const script = join(dir, 'cli.mts');
const cliModule = fileURLToPath(new URL('../src/handlers/cli-pipelines.ts', import.meta.url));
// The throwaway entry lives outside the project, so it names commander by its resolved path.
const commander = pathToFileURL(createRequire(import.meta.url).resolve('commander')).href;
writeFileSync(
  script,
  `import { Command } from ${JSON.stringify(commander)};
import { registerPipelineCommands } from ${JSON.stringify(cliModule)};
const program = new Command('phoenix');
registerPipelineCommands(program);
await program.parseAsync(process.argv);
`,
);
after(() => rmSync(dir, { recursive: true, force: true }));

const cli = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', script, ...args],
      { cwd: fileURLToPath(new URL('..', import.meta.url)) },
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

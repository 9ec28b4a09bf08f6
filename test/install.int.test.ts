import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import semver from 'semver';

const root = join(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string } };
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { version?: string; optional?: boolean; engines?: { node?: string } | string[] }>;
};

describe('install', () => {
  it('declares engines that every locked package supports (npm install warns EBADENGINE otherwise)', () => {
    const oldest = semver.minVersion(pkg.engines.node);
    assert.ok(oldest, `engines.node ${pkg.engines.node} names no version`);
    const refused: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (!path || Array.isArray(entry.engines)) continue;
      const range = entry.engines?.node;
      if (!range) continue;
      for (const node of [oldest.version, process.versions.node]) {
        if (!semver.satisfies(node, range))
          refused.push(`${path}@${entry.version} needs node ${range}, not ${node}`);
      }
    }
    assert.deepEqual(refused, []);
  });

  it('has a lock file that npm ci accepts as it is', async () => {
    await promisify(execFile)('npm', ['ci', '--dry-run', '--ignore-scripts', '--no-audit', '--no-fund'], {
      cwd: root,
      timeout: 120_000,
    });
  });
});

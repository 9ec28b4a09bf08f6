import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const cli = join(import.meta.dirname, 'projection-cli.ts');

/**
 * `phoenix <args>` in a child process on the embedded database in `dataDir` (no DATABASE_URL), as a
 * user runs it: its exit code, stdout and stderr, whether it succeeded or not.
 */
export const runPhoenix = (
  dataDir: string,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> =>
  run(process.execPath, ['--import', 'tsx', cli, ...args], {
    env: { ...process.env, DATABASE_URL: '', PHOENIX_DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
    timeout: 60_000,
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({
      code: err.code,
      stdout: err.stdout,
      stderr: err.stderr,
    }),
  );

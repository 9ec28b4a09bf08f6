import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The embedded default's JWT secret: generated once, kept in the data dir, readable by its owner only.
 * `flag: 'wx'` makes two processes starting at once agree on one secret. Only the server calls this;
 * tools that merely need the server's secret use `findSecret`, which never creates one.
 */
export function loadOrCreateSecret(dataDir: string, name = 'jwt-secret'): string {
  const file = join(dataDir, name);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  try {
    writeFileSync(file, randomBytes(48).toString('base64url'), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readSecret(file);
}

/**
 * The secret a server keeps in `dataDir`, or undefined when there is none yet (no server has started
 * on that data dir). Creates nothing: a secret made here would sign tokens no server accepts.
 */
export function findSecret(dataDir: string, name = 'jwt-secret'): string | undefined {
  const file = join(dataDir, name);
  try {
    return readSecret(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

const readSecret = (file: string): string => {
  const secret = readFileSync(file, 'utf8').trim();
  if (Buffer.byteLength(secret) < 32) throw new Error(`${file} holds a secret shorter than 32 bytes`);
  return secret;
};

import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { buildSystem } from '../main.js';

/**
 * `phoenix serve`: builds the system, listens, prints the URL and an admin token, and shuts down
 * cleanly on SIGINT/SIGTERM (the HTTP server stops taking requests, then the background parts stop,
 * then the connections close).
 */
export async function serve(config: Config): Promise<void> {
  const releaseLock = config.DATABASE_URL ? () => undefined : lockEmbeddedDatabase(config.PHOENIX_DATA_DIR);
  const system = await buildSystem(config);
  const { app, logger } = system;
  await system.start();
  const address = await app.listen({ host: config.HOST, port: config.PORT });
  const url = address.replace('[::1]', 'localhost');
  const adminToken = await system.tokens.mint({ sub: 'admin', role: 'admin' }, 12 * 3600);
  process.stdout.write(
    `Phoenix is serving on ${url}\n` +
      `  events: ${config.EVENTSTORE_URL ? 'EventStoreDB' : config.DATABASE_URL ? 'PostgreSQL' : `embedded PostgreSQL (PGlite) in ${config.PHOENIX_DATA_DIR}`}\n` +
      `  admin token (12 h): ${adminToken}\n` +
      `  try: curl -H "Authorization: Bearer $TOKEN" ${url}/api/v1/templates\n`,
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    let code = 0;
    try {
      await system.stop();
    } catch (err) {
      logger.error({ err }, 'shutdown failed');
      code = 1;
    } finally {
      releaseLock();
    }
    logger.info('stopped');
    // Everything is closed; do not wait on a stray timer of some library.
    process.exit(code);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
}

/**
 * PGlite is one process's database: a second process opening the same folder would corrupt it. The
 * lock file names the holder; a stale one (its process is gone) is taken over.
 */
export function lockEmbeddedDatabase(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, 'phoenix.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(file, 'utf8').trim());
      if (holder && holder !== process.pid && isAlive(holder)) {
        throw new Error(
          `the embedded database in ${dataDir} is in use by process ${holder}; stop it, or set DATABASE_URL to share a PostgreSQL`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  throw new Error(`could not lock ${file}`);
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

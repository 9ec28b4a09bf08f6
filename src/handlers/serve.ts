import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { TokenService } from './auth.js';
import { CliError } from './cli-error.js';

/** What `serve` needs of the system the composition root (src/main.ts `buildSystem`) builds. */
export interface ServedSystem {
  readonly logger: Logger;
  readonly tokens: TokenService;
  readonly app: FastifyInstance;
  /** The gRPC API, when GRPC_PORT is not 0: listens on HOST:GRPC_PORT next to HTTP. */
  readonly grpc?: { listen(host: string, port: number): Promise<number> } | undefined;
  /** Starts the background parts (projections, sagas, workers). */
  start(): Promise<void>;
  /** Stops everything, in reverse order, and closes connections. */
  stop(): Promise<void>;
}

export interface ServeDeps {
  /** Builds the whole system without listening: src/main.ts `buildSystem`. */
  readonly buildSystem: (config: Config) => Promise<ServedSystem>;
}

/**
 * `phoenix serve`: builds the system, listens, starts the background parts, prints the URL and an
 * admin token, and shuts down cleanly on SIGINT/SIGTERM (the HTTP server stops taking requests, then
 * the background parts stop, then the connections close).
 *
 * It listens before anything starts working: a taken address is a one-line error and a non-zero exit,
 * with the workers never started, the connections closed and the embedded database's lock released.
 */
export async function serve(config: Config, deps: ServeDeps): Promise<void> {
  await probeAddress(config);
  const releaseLock = config.DATABASE_URL ? () => undefined : lockEmbeddedDatabase(config.PHOENIX_DATA_DIR);
  let system: ServedSystem;
  try {
    system = await deps.buildSystem(config);
  } catch (err) {
    releaseLock();
    throw err;
  }
  let url: string;
  let grpcAddress: string | undefined;
  try {
    url = await listen(system, config);
    grpcAddress = await listenGrpc(system, config);
    await system.start();
  } catch (err) {
    // Whatever was opened is closed again, so the process ends instead of serving half a system.
    await system.stop().catch((stopErr: unknown) => system.logger.error({ err: stopErr }, 'stop failed'));
    releaseLock();
    throw err;
  }
  const { logger } = system;
  const adminToken = await system.tokens.mint({ sub: 'admin', role: 'admin' }, 12 * 3600);
  let stopping = false;
  const stop = async (signal: string) => {
    // A second signal while stopping (a supervisor or `npm start` passing one on, a second Ctrl-C) is
    // taken and ignored: with the default action it would kill the process mid-shutdown, the embedded
    // database still locked.
    if (stopping) {
      logger.info({ signal }, 'already shutting down');
      return;
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      logger.error('shutdown took more than 15 s; exiting anyway');
      releaseLock();
      process.exit(1);
    }, 15_000);
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
  // Before the banner: a supervisor (or a test) takes the banner as "up" and may signal at once; a
  // signal that came before the listeners would kill the process with the database still locked.
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));

  process.stdout.write(
    `Phoenix is serving on ${url}\n` +
      `  events: ${config.EVENTSTORE_URL ? 'EventStoreDB' : config.DATABASE_URL ? 'PostgreSQL' : `embedded PostgreSQL (PGlite) in ${config.PHOENIX_DATA_DIR}`}\n` +
      '  admin token (12 h), for the shell:\n' +
      `  export TOKEN=${adminToken}\n` +
      `  try: curl -H "Authorization: Bearer $TOKEN" ${url}/api/v1/templates\n` +
      (grpcAddress
        ? `  gRPC on ${grpcAddress}: grpcurl -plaintext -H "authorization: Bearer $TOKEN" ${grpcAddress} list\n`
        : ''),
  );
}

/** Listens on HOST:PORT; a taken or forbidden address becomes a one-line CliError naming it. */
async function listen(system: ServedSystem, config: Config): Promise<string> {
  try {
    const address = await system.app.listen({ host: config.HOST, port: config.PORT });
    return address.replace('[::1]', 'localhost');
  } catch (err) {
    throw listenError(err, config);
  }
}

/** Listens for gRPC on HOST:GRPC_PORT (none when it is 0); a taken address is a one-line CliError. */
async function listenGrpc(system: ServedSystem, config: Config): Promise<string | undefined> {
  if (!system.grpc || config.GRPC_PORT === 0) return undefined;
  const host = config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST;
  try {
    return `${host}:${await system.grpc.listen(config.HOST, config.GRPC_PORT)}`;
  } catch (err) {
    throw new CliError(
      `cannot listen for gRPC on ${host}:${config.GRPC_PORT}: ${(err as Error).message}; set GRPC_PORT (0 disables gRPC)`,
    );
  }
}

/**
 * Fails fast when HOST:PORT cannot be listened on, before the database is opened (which takes
 * seconds on the embedded one). `listen` still handles the address being taken in between.
 */
async function probeAddress(config: Config): Promise<void> {
  if (config.PORT === 0) return;
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen({ host: config.HOST, port: config.PORT, exclusive: true }, () => resolve());
  }).catch((err: unknown) => {
    throw listenError(err, config);
  });
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}

const listenError = (err: unknown, config: Config): unknown => {
  const code = (err as NodeJS.ErrnoException).code;
  const where = `${config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST}:${config.PORT}`;
  if (code === 'EADDRINUSE')
    return new CliError(
      `cannot listen on ${where}: the address is already in use (EADDRINUSE); set PORT or HOST`,
    );
  if (code === 'EACCES' || code === 'EADDRNOTAVAIL')
    return new CliError(`cannot listen on ${where}: ${code}; set PORT or HOST`);
  return err;
};

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

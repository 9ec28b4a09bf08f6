import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { findSecret } from './adapters/secret-file.js';
import { type Config, ConfigError, loadConfig } from './config.js';
import { parseTtl, ROLES, type Role, TokenService } from './handlers/auth.js';
import { registerApiCommands } from './handlers/cli-api.js';
import { registerAuditCommands } from './handlers/cli-audit.js';
import { CliError } from './handlers/cli-error.js';
import { registerPipelineCommands } from './handlers/cli-pipelines.js';
import { registerReplayCommands } from './handlers/cli-replay.js';
import { registerWorkerCommands } from './handlers/cli-workers.js';
import { serve } from './handlers/serve.js';
import {
  buildSystem,
  createBus,
  createGitops,
  createLogger,
  createWorkerAdapters,
  isSimulatorRefusal,
  openCommandDatabase,
  openCommandStorage,
  openSimulator,
} from './main.js';

/**
 * `phoenix <command>`: the server and the operator tooling, and the process's entry. Bad input is a
 * one-line message on stderr and exit code 2; a failure while running is a one-line message and exit
 * code 1 (CliError, which the commands throw).
 */
export { CliError };

/**
 * The environment, read and validated once, when the first command that needs it asks (so `render`,
 * `--version` or the API commands run whatever the server's variables hold); a bad value is bad input.
 */
const configOnce = (env: NodeJS.ProcessEnv): (() => Config) => {
  let config: Config | undefined;
  return () => {
    if (config) return config;
    try {
      config = loadConfig(env);
      return config;
    } catch (err) {
      if (err instanceof ConfigError) throw new CliError(`invalid configuration: ${err.message}`, 2);
      throw err;
    }
  };
};

/** Tokens minted without `--ttl` live this long: a working day, like the server's start-up token. */
const DEFAULT_TTL = '12h';

/** package.json sits one folder above both src/cli.ts and dist/cli.js. */
const version = (): string =>
  (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string })
    .version;

/**
 * The server's secret, never a new one: PHOENIX_JWT_SECRET, else the one the server keeps in the data
 * dir (PHOENIX_DATA_DIR or its default, resolved against the working directory as the server does).
 */
const serverSecret = (c: Config): string => {
  if (c.PHOENIX_JWT_SECRET) return c.PHOENIX_JWT_SECRET;
  const secret = findSecret(c.PHOENIX_DATA_DIR);
  if (secret !== undefined) return secret;
  throw new CliError(
    `no JWT secret in ${resolve(c.PHOENIX_DATA_DIR)}: the server creates it there when it first starts; ` +
      'run this where the server runs (after starting it once), or set PHOENIX_DATA_DIR to its data dir ' +
      'or PHOENIX_JWT_SECRET to its secret',
  );
};

/**
 * Every command, wired: the configuration getter, the logger factory and the openers of the
 * composition root (src/main.ts) are passed to each as arguments.
 */
export function buildProgram(env: NodeJS.ProcessEnv = process.env): Command {
  const config = configOnce(env);
  const program = new Command('phoenix')
    .description('Phoenix control plane: telemetry-cost A/B experiments')
    .version(version(), '-V, --version', 'print the version')
    // `phoenix --version` before a command, a command's own options after it: `state <id> --version 2`
    // is the state at version 2, not the program's version (commander takes program options anywhere).
    .enablePositionalOptions()
    .exitOverride();

  program
    .command('serve')
    .description('run the server (what `npm start` runs)')
    .action(async () => {
      await serve(config(), { buildSystem: (c) => buildSystem(c) });
    });

  program
    .command('migrate')
    .description('apply migrations/ to the database')
    .action(async () => {
      // Opening migrates; the embedded database is one process's: never opened under a running server.
      const opened = await openCommandDatabase(config(), createLogger({ LOG_LEVEL: 'warn' }));
      await opened.close();
      process.stdout.write('migrations applied\n');
    });

  program
    .command('token')
    .description(
      "print a JWT for the API, signed with the server's secret (PHOENIX_JWT_SECRET, or the one in PHOENIX_DATA_DIR)",
    )
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`, (v: string) => {
      if (!(ROLES as readonly string[]).includes(v))
        throw new InvalidArgumentError(`must be one of ${ROLES.join(', ')}`);
      return v as Role;
    })
    .requiredOption('--sub <subject>', 'the actor the token names')
    .option(
      '--ttl <duration>',
      `lifetime: 90s, 15m, 1h, 7d, or 'never' for a token that does not expire (default: ${DEFAULT_TTL})`,
      DEFAULT_TTL,
    )
    .action(async (options: { role: Role; sub: string; ttl: string }) => {
      if (!options.sub.trim()) throw new CliError('--sub must not be empty', 2);
      let ttl: number | undefined;
      if (options.ttl !== 'never') {
        try {
          ttl = parseTtl(options.ttl);
        } catch (err) {
          throw new CliError(`--ttl: ${(err as Error).message}, or 'never'`, 2);
        }
      }
      const tokens = new TokenService(serverSecret(config()));
      process.stdout.write(`${await tokens.mint({ sub: options.sub, role: options.role }, ttl)}\n`);
    });

  registerReplayCommands(program, { config, createLogger, openStorage: openCommandStorage });
  registerAuditCommands(program, { config, createLogger, openDatabase: openCommandDatabase });
  registerPipelineCommands(program, { openSimulator, isSimulatorRefusal });
  registerWorkerCommands(program, { config, createLogger, createBus, createWorkerAdapters, createGitops });
  registerApiCommands(program);
  return program;
}

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const program = buildProgram(env);
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof CliError) {
      // An empty message: the command has said everything already (watch's outcome, say).
      if (err.message) process.stderr.write(`phoenix: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`phoenix: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { ConfigError, loadConfig } from './config.js';
import { parseTtl, ROLES, type Role, TokenService } from './handlers/auth.js';
import { registerAuditCommands } from './handlers/cli-audit.js';
import { registerPipelineCommands } from './handlers/cli-pipelines.js';
import { registerReplayCommands } from './handlers/cli-replay.js';
import { registerWorkerCommands } from './handlers/cli-workers.js';
import { serve } from './handlers/serve.js';
import { createLogger, jwtSecret, openDatabase } from './main.js';

/**
 * `phoenix <command>`: the server and the operator tooling. Bad input is a one-line message on
 * stderr and exit code 2; a failure while running is a one-line message and exit code 1.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

const config = () => {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`invalid configuration: ${err.message}`, 2);
    throw err;
  }
};

export function buildProgram(): Command {
  const program = new Command('phoenix')
    .description('Phoenix control plane: telemetry-cost A/B experiments')
    .exitOverride();

  program
    .command('serve')
    .description('run the server (what `npm start` runs)')
    .action(async () => {
      await serve(config());
    });

  program
    .command('migrate')
    .description('apply migrations/ to the database')
    .action(async () => {
      const c = config();
      const logger = createLogger({ LOG_LEVEL: 'warn' });
      const database = await openDatabase(c, logger);
      await database.close();
      process.stdout.write('migrations applied\n');
    });

  program
    .command('token')
    .description('print a JWT for the API')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`, (v: string) => {
      if (!(ROLES as readonly string[]).includes(v))
        throw new InvalidArgumentError(`must be one of ${ROLES.join(', ')}`);
      return v as Role;
    })
    .requiredOption('--sub <subject>', 'the actor the token names')
    .option('--ttl <duration>', 'lifetime, e.g. 15m, 1h, 7d (default: no expiry)', (v: string) => {
      try {
        return parseTtl(v);
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    })
    .action(async (options: { role: Role; sub: string; ttl?: number }) => {
      if (!options.sub.trim()) throw new CliError('--sub must not be empty', 2);
      const tokens = new TokenService(jwtSecret(config()));
      process.stdout.write(`${await tokens.mint({ sub: options.sub, role: options.role }, options.ttl)}\n`);
    });

  registerReplayCommands(program);
  registerAuditCommands(program);
  registerPipelineCommands(program);
  registerWorkerCommands(program);
  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof CliError) {
      process.stderr.write(`phoenix: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`phoenix: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

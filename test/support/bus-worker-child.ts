/**
 * A worker process for the fault tests: the `worker` command exactly as `phoenix worker …` runs it,
 * with the CLI's error handling (a CliError is one stderr line and its exit code).
 */
import { Command, CommanderError } from 'commander';
import { CliError } from '../../src/cli.js';
import { registerWorkerCommands } from '../../src/handlers/cli-workers.js';

const program = new Command('phoenix').exitOverride();
registerWorkerCommands(program);
try {
  await program.parseAsync(process.argv);
  process.exitCode = 0;
} catch (err) {
  if (err instanceof CommanderError) process.exitCode = err.exitCode === 0 ? 0 : 2;
  else if (err instanceof CliError) {
    process.stderr.write(`phoenix: ${err.message}\n`);
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`phoenix: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}

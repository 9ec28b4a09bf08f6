/**
 * `phoenix` with the replay commands registered, as `src/cli.ts` runs them (a CliError is one line on
 * stderr and its exit code; commander's own usage errors exit 2), for the CLI tests to spawn.
 */
import { Command, CommanderError } from 'commander';
import { CliError } from '../../src/cli.js';
import { registerReplayCommands } from '../../src/handlers/cli-replay.js';

const program = new Command('phoenix').exitOverride();
registerReplayCommands(program);
try {
  await program.parseAsync(process.argv);
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

/**
 * `phoenix` exactly as src/bin.ts runs it (src/cli.ts `main`: the configuration read once, the
 * composition root's openers passed to the commands, a CliError one line on stderr and its exit code,
 * commander's own usage errors exit 2), for the replay CLI tests to spawn.
 */
import { main } from '../../src/cli.js';

process.exitCode = await main(process.argv);

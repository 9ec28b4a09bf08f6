/**
 * A worker process for the fault tests: the `worker` command exactly as `phoenix worker …` runs it,
 * with the CLI's error handling (a CliError is one stderr line and its exit code).
 */
import { main } from '../../src/cli.js';

process.exitCode = await main(process.argv);

/**
 * A command's failure as `phoenix` reports it: one line on stderr and this exit code (2: bad input,
 * 1: a failure while running). Its own module so that the commands in src/handlers throw it without
 * importing the entry (src/cli.ts), which imports them.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

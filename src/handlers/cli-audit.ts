import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { READ_MODELS } from '../projections/experiment-read-models.js';
import { PostgresReadModels } from '../projections/read-models.js';
import { CliError } from './cli-error.js';
import type { CommandDatabase } from './cli-replay.js';
import { auditFilterOf, auditQuerySchema, csvLines } from './http/audit.js';

/** What `audit` is given by the entry (src/cli.ts), which takes them from src/main.ts. */
export interface AuditCommandDeps {
  /** The configuration, read and validated once by the entry (a CliError with exit code 2 when invalid). */
  readonly config: () => Config;
  readonly createLogger: (config: Pick<Config, 'LOG_LEVEL'>) => Logger;
  /** Opens the read-model database; the embedded one only while no server holds it. */
  readonly openDatabase: (config: Config, logger: Logger) => Promise<CommandDatabase>;
}

interface AuditOptions {
  experimentId?: string;
  actor?: string;
  fromState?: string;
  toState?: string;
  since?: string;
  until?: string;
  format: string;
}

/**
 * `phoenix audit [filters] [--format csv|jsonl]`: the audit trail, streamed from the read model to
 * stdout page by page (never held whole), with the same filters and checks as `GET /api/v1/audit`.
 */
export function registerAuditCommands(program: Command, deps: AuditCommandDeps): void {
  program
    .command('audit')
    .description('export the audit trail of state transitions (oldest first)')
    .option('--experiment-id <uuid>', 'only this experiment')
    .option('--actor <sub>', 'only transitions made by this actor')
    .option('--from-state <state>', 'only transitions out of this state')
    .option('--to-state <state>', 'only transitions into this state')
    .option('--since <iso>', 'only transitions at or after this time')
    .option('--until <iso>', 'only transitions at or before this time')
    .option('--format <format>', 'csv or jsonl', 'jsonl')
    .action(async (options: AuditOptions) => {
      if (options.format !== 'csv' && options.format !== 'jsonl') {
        throw new CliError(`--format must be csv or jsonl, not '${options.format}'`, 2);
      }
      const { format, ...filters } = options;
      const parsed = auditQuerySchema.safeParse(
        Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== undefined)),
      );
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        const flag = `--${String(issue.path[0] ?? '').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
        throw new CliError(`${flag}: ${issue.message}`, 2);
      }
      const { database, close } = await deps.openDatabase(
        deps.config(),
        deps.createLogger({ LOG_LEVEL: 'warn' }),
      );
      try {
        const readModels = new PostgresReadModels(database.db, { checkpoint: READ_MODELS });
        const entries = readModels.streamAudit(auditFilterOf(parsed.data));
        const lines =
          format === 'csv'
            ? csvLines(entries)
            : (async function* () {
                for await (const entry of entries) yield `${JSON.stringify(entry)}\n`;
              })();
        await pipeline(Readable.from(lines), process.stdout, { end: false });
      } finally {
        await close();
      }
    });
}

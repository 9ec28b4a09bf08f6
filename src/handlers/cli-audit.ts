import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { CliError } from '../cli.js';
import { loadConfig } from '../config.js';
import { createLogger, openDatabase } from '../main.js';
import { READ_MODELS } from '../projections/experiment-read-models.js';
import { PostgresReadModels } from '../projections/read-models.js';
import { auditFilterOf, auditQuerySchema, csvLines } from './http/audit.js';
import { lockEmbeddedDatabase } from './serve.js';

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
export function registerAuditCommands(program: Command): void {
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
      let config: ReturnType<typeof loadConfig>;
      try {
        config = loadConfig();
      } catch (err) {
        throw new CliError(`invalid configuration: ${(err as Error).message}`, 2);
      }
      const release = config.DATABASE_URL ? () => undefined : lockEmbeddedDatabase(config.PHOENIX_DATA_DIR);
      try {
        const database = await openDatabase(config, createLogger({ LOG_LEVEL: 'warn' }));
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
          await database.close();
        }
      } finally {
        release();
      }
    });
}

/**
 * `phoenix replay [--verify]`, `phoenix events <id>` and `phoenix state <id> [--version N | --at ISO]`:
 * the event log and the read models from a terminal. Every read goes through the codec-equipped event
 * store, so old event schemas are upcast here as everywhere else. Bad input is one line on stderr and
 * exit code 2 (CliError); a verification that finds differences (in the read models, or a stream that
 * reads back out of version order or with a gap) exits 1.
 */
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { streamIdOf } from '../application/experiment-commands.js';
import type { EventStore, StoredEvent } from '../application/ports/event-store.js';
import type { LogReader } from '../application/ports/log-reader.js';
import type { Config } from '../config.js';
import { type ExistingExperiment, type ExperimentEvent, fold } from '../domain/experiment.js';
import {
  RebuildInProgressError,
  type RebuildOptions,
  type RebuildProgress,
  rebuildReadModels,
} from '../projections/rebuild.js';
import { CliError } from './cli-error.js';
import { eventsUpTo, eventView, stateView } from './experiment-views.js';

/** The read-model database, as the projections take it. */
export type Database = RebuildOptions['database'];

/** The database a one-shot command opened; `close` closes it (and releases the embedded one's lock). */
export interface CommandDatabase {
  readonly database: Database;
  close(): Promise<void>;
}

/** The database and the event store a one-shot command opened, as the server opens them. */
export interface CommandStorage extends CommandDatabase {
  readonly store: EventStore<ExperimentEvent>;
  /** The store's log reader: what a replay reads. */
  readonly log: LogReader<ExperimentEvent>;
}

/** What the replay commands are given by the entry (src/cli.ts), which takes them from src/main.ts. */
export interface ReplayCommandDeps {
  /** The configuration, read and validated once by the entry (a CliError with exit code 2 when invalid). */
  readonly config: () => Config;
  readonly createLogger: (config: Pick<Config, 'LOG_LEVEL'>) => Logger;
  /** Opens the database and the store; the embedded database only while no server holds it. */
  readonly openStorage: (config: Config, logger: Logger) => Promise<CommandStorage>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;

const experimentId = (id: string): string => {
  if (!UUID.test(id)) throw new CliError(`'${id}' is not an experiment id (a UUID)`, 2);
  return id.toLowerCase();
};

/** Runs `run` on the opened store, closing it after. */
async function withStore<T>(
  deps: ReplayCommandDeps,
  run: (storage: CommandStorage) => Promise<T>,
): Promise<T> {
  const storage = await deps.openStorage(deps.config(), deps.createLogger({ LOG_LEVEL: 'warn' }));
  try {
    return await run(storage);
  } finally {
    await storage.close();
  }
}

export const eventLine = (e: StoredEvent<ExperimentEvent>): string => JSON.stringify(eventView(e));

const progressLine = (p: RebuildProgress): string => {
  const done = p.events.toLocaleString('en-US');
  const of = p.total !== undefined ? ` of ~${p.total.toLocaleString('en-US')}` : '';
  const left =
    p.secondsLeft !== undefined && p.phase === 'replaying' ? `, ~${Math.ceil(p.secondsLeft)} s left` : '';
  return `replay: ${p.phase}: ${done}${of} events, ${Math.round(p.perSecond).toLocaleString('en-US')} events/s${left}`;
};

export function registerReplayCommands(program: Command, deps: ReplayCommandDeps): void {
  program
    .command('replay')
    .description(
      'rebuild every read model from the event store into new tables, then swap them in (the API keeps serving)',
    )
    .option(
      '--verify',
      'compare the rebuilt read models with the live ones row by row instead of swapping, and read every stream back in version order; exit 1 on any difference',
    )
    .option('--batch-size <n>', 'events per transaction', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 100_000)
        throw new CliError(`--batch-size must be 1..100000, got '${v}'`, 2);
      return n;
    })
    .option(
      '--workers <n|auto>',
      'worker threads for the bulk load on a PostgreSQL server (0: in log order on one thread)',
      (v: string) => {
        if (v === 'auto') return v;
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 16)
          throw new CliError(`--workers must be auto or 0..16, got '${v}'`, 2);
        return n;
      },
      'auto',
    )
    .action(async (options: { verify?: boolean; batchSize?: number; workers: number | 'auto' }) => {
      const tty = process.stderr.isTTY;
      const report = await withStore(deps, ({ store, log, database }) =>
        rebuildReadModels({
          database,
          log,
          store,
          verify: options.verify === true,
          workers: options.workers,
          ...(options.batchSize ? { batchSize: options.batchSize } : {}),
          progressEveryMs: tty ? 500 : 5_000,
          onProgress: (p) =>
            process.stderr.write(tty ? `\r${progressLine(p)}\u001b[K` : `${progressLine(p)}\n`),
        }).catch((err: unknown) => {
          if (err instanceof RebuildInProgressError) throw new CliError(err.message, 1);
          throw err;
        }),
      );
      if (tty) process.stderr.write('\n');
      const rate = Math.round(report.events / Math.max(report.seconds, 1e-3)).toLocaleString('en-US');
      const summary = `${report.events.toLocaleString('en-US')} events in ${report.seconds.toFixed(1)} s (${rate} events/s), up to position ${report.position}`;
      if (!options.verify) {
        process.stdout.write(`replay: rebuilt and swapped in: ${summary}\n`);
        return;
      }
      const streams = report.streams ?? { checked: 0, bad: 0, samples: [] };
      if (report.differences.length === 0 && streams.bad === 0) {
        process.stdout.write(
          `replay --verify: the rebuilt read models equal the live ones, and ${streams.checked.toLocaleString('en-US')} streams read back in version order (${summary})\n`,
        );
        return;
      }
      for (const d of report.differences) {
        process.stdout.write(
          `${d.table}: ${d.onlyLive} rows only in the live table, ${d.onlyRebuilt} only in the rebuilt one\n`,
        );
        for (const s of d.samples) process.stdout.write(`  ${s}\n`);
      }
      if (streams.bad > 0) {
        process.stdout.write(
          `event store: ${streams.bad} of ${streams.checked} streams read back out of version order or with a gap\n`,
        );
        for (const s of streams.samples) process.stdout.write(`  ${s}\n`);
      }
      const failed = [
        ...(report.differences.length > 0
          ? [
              `${report.differences.length} read model(s) differ from a rebuild (${report.differences.map((d) => d.table).join(', ')})`,
            ]
          : []),
        ...(streams.bad > 0 ? [`${streams.bad} stream(s) read back out of version order or with a gap`] : []),
      ];
      throw new CliError(`replay --verify: ${failed.join('; ')}`, 1);
    });

  program
    .command('events <id>')
    .description("an experiment's events, as JSON lines, oldest first")
    .action(async (id: string) => {
      const streamId = streamIdOf(experimentId(id));
      await withStore(deps, async ({ store }) => {
        let fromVersion = 1;
        let any = false;
        for (;;) {
          const page = await store.readStream(streamId, { fromVersion, limit: 1_000 });
          for (const e of page) process.stdout.write(`${eventLine(e)}\n`);
          any ||= page.length > 0;
          if (page.length < 1_000) break;
          fromVersion = page[page.length - 1]!.version + 1;
        }
        if (!any) throw new CliError(`no experiment ${id}`, 1);
      });
    });

  program
    .command('state <id>')
    .description('the experiment folded from its events up to a version or a time (default: now)')
    .option('--version <n>', 'fold the first N events', (v: string) => {
      const n = Number(v);
      if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) {
        throw new CliError(`--version must be a positive integer, got '${v}'`, 2);
      }
      return n;
    })
    .option('--at <time>', 'fold the events that occurred at or before this ISO 8601 time', (v: string) => {
      if (!ISO.test(v) || Number.isNaN(Date.parse(v))) {
        throw new CliError(
          `--at must be an ISO 8601 time with a zone, e.g. 2025-01-31T12:00:00Z, got '${v}'`,
          2,
        );
      }
      return v;
    })
    .action(async (id: string, options: { version?: number; at?: string }) => {
      if (options.version !== undefined && options.at !== undefined) {
        throw new CliError('give --version or --at, not both', 2);
      }
      const streamId = streamIdOf(experimentId(id));
      await withStore(deps, async ({ store }) => {
        const events = await store.readStream(streamId);
        if (events.length === 0) throw new CliError(`no experiment ${id}`, 1);
        if (options.version !== undefined && options.version > events.length) {
          throw new CliError(
            `experiment ${id} has ${events.length} events; there is no version ${options.version}`,
            1,
          );
        }
        const upTo = eventsUpTo(events, options);
        if (upTo.length === 0) throw new CliError(`experiment ${id} did not exist at ${options.at}`, 1);
        const state = fold(upTo) as ExistingExperiment;
        process.stdout.write(`${JSON.stringify(stateView(state, upTo), null, 2)}\n`);
      });
    });
}

import type { Logger } from 'pino';
import type { SqlDatabase } from '../application/ports/database.js';
import type { EventStore } from '../application/ports/event-store.js';
import type { LogReader } from '../application/ports/log-reader.js';
import type { ReadSideMetrics } from '../application/ports/metrics.js';
import type { ReadModels } from '../application/ports/read-models.js';
import type { ExperimentEvent } from '../domain/experiment.js';
import { STATUSES } from '../domain/experiment.js';
import { experimentReadModels, READ_MODELS } from './experiment-read-models.js';
import { PostgresReadModels } from './read-models.js';
import { type RebuildOptions, type RebuildReport, rebuildReadModels } from './rebuild.js';
import { type Lag, ProjectionRunner, type RunnerOptions } from './runner.js';

export type { RebuildProgress, RebuildReport, TableDifference } from './rebuild.js';
export { RebuildInProgressError, rebuildReadModels } from './rebuild.js';
export type { ApplyContext, Lag, ProjectionHandler, RunnerStatus } from './runner.js';
export { CheckpointMovedError, ProjectionFailedError, ProjectionRunner } from './runner.js';

/**
 * The read side, as the composition root builds it: the ReadModels port over the live tables, the
 * live projection runner that keeps them current, the metrics they feed, and blue/green rebuilds.
 */
export interface Projections {
  readonly readModels: ReadModels;
  readonly runner: ProjectionRunner<ExperimentEvent>;
  /** Starts the runner (standby until it holds the lock) and the metrics refresh. */
  start(): Promise<void>;
  /** Stops both; the batch in flight commits or rolls back first. */
  stop(): Promise<void>;
  /** Events and seconds the read models are behind the head of the log. */
  lag(): Promise<Lag>;
  /** `phoenix replay` in-process: rebuild (or, with `verify`, compare) without stopping the live runner. */
  rebuild(
    options?: Pick<
      RebuildOptions,
      'verify' | 'onProgress' | 'batchSize' | 'pageSize' | 'cacheSize' | 'indexConcurrency' | 'workers'
    >,
  ): Promise<RebuildReport>;
}

export interface ProjectionsOptions {
  readonly database: SqlDatabase;
  /** The log the read models follow (and a rebuild reads). */
  readonly log: LogReader<ExperimentEvent>;
  readonly store: Pick<EventStore<ExperimentEvent>, 'readStream'>;
  readonly metrics?: ReadSideMetrics | undefined;
  readonly logger?: Logger | undefined;
  /** Signs pagination cursors (the JWT secret will do); without it cursors are only tamper-evident. */
  readonly cursorSecret?: string | undefined;
  /** How often lag and the by-state counts are refreshed into the metrics (default 5 s). */
  readonly metricsEveryMs?: number;
  /** Runner tuning (batch size, lock retry…), mostly for tests. */
  readonly runner?: Partial<
    Omit<RunnerOptions<ExperimentEvent>, 'database' | 'log' | 'store' | 'handler' | 'logger'>
  >;
}

export function createProjections(options: ProjectionsOptions): Projections {
  const { database, log, store, metrics, logger } = options;
  const runner = new ProjectionRunner<ExperimentEvent>({
    database,
    log,
    store,
    logger,
    handler: experimentReadModels(),
    ...options.runner,
  });
  const readModels = new PostgresReadModels(database.db, {
    checkpoint: runner.name,
    cursorSecret: options.cursorSecret,
    applied: runner,
  });
  let timer: NodeJS.Timeout | undefined;
  let countsDue = false;
  let countsTimer: NodeJS.Timeout | undefined;

  const refreshCounts = async () => {
    if (!metrics) return;
    const counts = await readModels.countByState();
    for (const state of STATUSES) metrics.experimentsInState(state, counts[state]);
  };
  const refreshLag = async () => {
    if (!metrics) return;
    const lag = await runner.lag();
    metrics.projectionLag(READ_MODELS, lag.events, lag.seconds);
  };
  const refresh = () =>
    Promise.all([refreshCounts(), refreshLag()]).catch((err: unknown) =>
      logger?.warn({ err }, 'could not refresh the read-model metrics'),
    );
  // The counts gauge follows the runner closely, at most every 250 ms.
  const onApplied = () => {
    if (!metrics || countsTimer) {
      countsDue = true;
      return;
    }
    void refreshCounts().catch(() => undefined);
    countsTimer = setTimeout(() => {
      countsTimer = undefined;
      if (countsDue) {
        countsDue = false;
        onApplied();
      }
    }, 250);
    countsTimer.unref();
  };

  return {
    readModels,
    runner,
    async start() {
      runner.on('applied', onApplied);
      runner.start();
      await refresh();
      timer = setInterval(() => void refresh(), options.metricsEveryMs ?? 5_000);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      if (countsTimer) clearTimeout(countsTimer);
      runner.off('applied', onApplied);
      await runner.stop();
    },
    lag: () => runner.lag(),
    rebuild: (rebuildOptions = {}) => rebuildReadModels({ database, log, store, logger, ...rebuildOptions }),
  };
}

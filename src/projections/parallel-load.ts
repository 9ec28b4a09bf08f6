import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Position } from '../application/ports/event-store.js';
import { STREAM_SLICES, type StreamSlice } from '../application/ports/log-reader.js';
import type { ExperimentStatus } from '../domain/experiment.js';

/**
 * The bulk phase of a rebuild on a PostgreSQL server, spread over worker threads: the log is split
 * into slices of streams (STREAM_SLICES), and each worker reads whole slices, stream after stream
 * (every experiment's events together, in version order), folds them and writes their rows by COPY
 * on connections of its own (parallel-load-worker.ts). An experiment's events all land in one
 * worker, so its row is written once, when its stream ends, and nothing is ever read back; what the
 * workers share are the counts by state, which they hand back here to be written once.
 *
 * In log order, one thread decoded, folded and encoded every event while PostgreSQL wrote on the
 * other core; the slices put both cores to work on both.
 */

/** What the main thread tells a worker when it starts (its workerData). */
export interface LoadWorkerSetup {
  readonly url: string;
  readonly suffix: string;
  readonly upTo: Position;
  readonly pageSize: number;
  readonly batchSize: number;
}

export type ToWorker = { kind: 'slice'; slice: StreamSlice } | { kind: 'finish' };
export type FromWorker =
  | { kind: 'progress'; events: number }
  | { kind: 'sliceDone' }
  | { kind: 'finished'; counts: [ExperimentStatus, number][] }
  | { kind: 'failed'; message: string };

export interface ParallelLoadOptions extends LoadWorkerSetup {
  readonly workers: number;
  readonly slices?: readonly StreamSlice[];
  /** Called with the events each worker has just loaded. */
  readonly onEvents?: (events: number) => void;
}

/** This module's twin: the worker's entry point, in whichever form (built .js or source .ts) runs now. */
const WORKER_URL = new URL(
  `./parallel-load-worker${extname(fileURLToPath(import.meta.url))}`,
  import.meta.url,
);

/**
 * Run from the TypeScript sources (tests, benchmarks: `node --import tsx`), a worker thread does not
 * inherit tsx's loader: it registers it first (tsx found from here, whatever the working directory).
 * The built service runs the .js twin as it is, and never looks for tsx.
 */
const WORKER_ENTRY: URL | string = WORKER_URL.pathname.endsWith('.ts')
  ? `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then(({ register }) => { register(); return import(${JSON.stringify(WORKER_URL.href)}); });`
  : WORKER_URL;

/**
 * Loads every event up to `upTo` into the (empty, unindexed but for `experiments`' key) tables of
 * `suffix`, on `workers` threads. Returns the count changes by state, for the caller to write. On any
 * failure every worker is stopped and the error names what failed; the tables are then half-filled.
 */
export async function loadInParallel(options: ParallelLoadOptions): Promise<Map<ExperimentStatus, number>> {
  const queue = [...(options.slices ?? STREAM_SLICES)];
  const setup: LoadWorkerSetup = {
    url: options.url,
    suffix: options.suffix,
    upTo: options.upTo,
    pageSize: options.pageSize,
    batchSize: options.batchSize,
  };
  const counts = new Map<ExperimentStatus, number>();
  const workers: Worker[] = [];
  const runOne = (worker: Worker) =>
    new Promise<void>((resolve, reject) => {
      let finished = false;
      const next = () => {
        const slice = queue.shift();
        const message: ToWorker = slice ? { kind: 'slice', slice } : { kind: 'finish' };
        worker.postMessage(message);
      };
      worker.on('message', (message: FromWorker) => {
        switch (message.kind) {
          case 'progress':
            options.onEvents?.(message.events);
            return;
          case 'sliceDone':
            next();
            return;
          case 'finished':
            finished = true;
            for (const [state, delta] of message.counts) counts.set(state, (counts.get(state) ?? 0) + delta);
            resolve();
            return;
          case 'failed':
            reject(new Error(message.message));
            return;
        }
      });
      worker.on('error', reject);
      worker.on('exit', (code) => {
        if (!finished) reject(new Error(`a rebuild worker exited (code ${code}) before it finished`));
      });
      next();
    });
  const runs: Promise<void>[] = [];
  for (let i = 0; i < Math.max(1, options.workers); i++) {
    const worker = new Worker(WORKER_ENTRY, {
      eval: WORKER_ENTRY !== WORKER_URL,
      workerData: setup,
      // a roomier young generation: most of what a worker allocates (rows, events, COPY text) dies
      // young, and fewer scavenges promote less of it
      resourceLimits: { maxYoungGenerationSizeMb: 64 },
    });
    workers.push(worker);
    runs.push(runOne(worker));
  }
  try {
    await Promise.all(runs);
    return counts;
  } finally {
    // after a failure the others are stopped mid-slice; after success they have exited already
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

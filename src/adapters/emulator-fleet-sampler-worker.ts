import { parentPort, workerData } from 'node:worker_threads';
import { sampleFleet } from './emulator-fleet-sampler.js';

/** The preview's worker thread: one fleet sample, answered once (emulator-fleet-sampler.ts). */
try {
  parentPort?.postMessage({ kind: 'done', outcome: sampleFleet(workerData) });
} catch (err) {
  parentPort?.postMessage({ kind: 'failed', message: err instanceof Error ? err.message : String(err) });
}

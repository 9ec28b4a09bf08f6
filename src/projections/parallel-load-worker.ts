import { parentPort, workerData } from 'node:worker_threads';
import { openPostgres } from '../adapters/postgres-database.js';
import { readSlice } from '../adapters/postgres-log-reader.js';
import { experimentCodec } from '../application/experiment-codec.js';
import { BulkLoader } from './bulk-load.js';
import type { FromWorker, LoadWorkerSetup, ToWorker } from './parallel-load.js';

/**
 * A rebuild worker thread (see parallel-load.ts): loads the slices of streams it is given, one at a
 * time, into the tables of `suffix`, then hands back its count changes. Its streams come whole and in
 * order, so the loader keeps one experiment in memory: the one whose stream the last page ended in.
 */
const setup = workerData as LoadWorkerSetup;
const port = parentPort!;
const send = (message: FromWorker) => port.postMessage(message);

// a reader, and COPY into the three tables at once while the next pages are folded
const database = openPostgres({ url: setup.url, poolSize: 4, applicationName: 'phoenix-replay' });
const loader = new BulkLoader(database.db, setup.suffix, 1, database.copyFrom);
let unsent = 0;

async function load(message: ToWorker): Promise<void> {
  if (message.kind === 'finish') {
    const counts = await loader.finish(false);
    await database.close();
    send({ kind: 'finished', counts: [...counts] });
    port.close();
    return;
  }
  for await (const events of readSlice(
    database,
    experimentCodec,
    message.slice,
    setup.upTo,
    setup.pageSize,
  )) {
    await loader.add(events);
    unsent += events.length;
    if (unsent >= setup.batchSize) {
      await loader.flush();
      unsent = 0;
    }
    send({ kind: 'progress', events: events.length });
  }
  send({ kind: 'sliceDone' });
}

port.on('message', (message: ToWorker) => {
  load(message).catch(async (err: unknown) => {
    send({ kind: 'failed', message: err instanceof Error ? err.message : String(err) });
    await database.close().catch(() => undefined);
    port.close();
  });
});

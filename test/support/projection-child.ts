/**
 * A projection runner in a process of its own, for the crash test: it follows the log of the schema
 * named by PROJECTION_URL (search_path included) and, inside every batch transaction after the rows are
 * written and before the checkpoint commits, says `in-batch <n>` on stdout and lingers, so that the
 * parent can `kill -9` it in the middle of a batch.
 */
import { openPostgres } from '../../src/adapters/postgres-database.js';
import { PostgresEventStore } from '../../src/adapters/postgres-event-store.js';
import { PostgresLogReader } from '../../src/adapters/postgres-log-reader.js';
import { experimentCodec } from '../../src/application/experiment-codec.js';
import type { ExperimentEvent } from '../../src/domain/experiment.js';
import { experimentReadModels } from '../../src/projections/experiment-read-models.js';
import { ProjectionRunner } from '../../src/projections/runner.js';

const url = process.env.PROJECTION_URL;
if (!url) throw new Error('PROJECTION_URL is required');
const lingerMs = Number(process.env.PROJECTION_LINGER_MS ?? 150);
const database = openPostgres({ url, poolSize: 4 });
const store = new PostgresEventStore<ExperimentEvent>(database, { codec: experimentCodec, idlePollMs: 100 });
let batches = 0;
const runner = new ProjectionRunner<ExperimentEvent>({
  database,
  log: new PostgresLogReader(store, database, experimentCodec),
  store,
  handler: experimentReadModels(),
  batchSize: 50,
  lockRetryMs: 200,
  beforeCommit: async () => {
    batches++;
    process.stdout.write(`in-batch ${batches}\n`);
    await new Promise((r) => setTimeout(r, lingerMs));
  },
});
runner.on('status', (s) => process.stdout.write(`status ${s}\n`));
runner.start();
process.on('SIGTERM', () => {
  void runner.stop().then(async () => {
    await store.close();
    await database.close();
    process.exit(0);
  });
});

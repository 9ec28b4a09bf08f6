import { sql } from 'kysely';
import { PostgresEventStore } from '../../src/adapters/postgres-event-store.js';
import { PostgresLogReader } from '../../src/adapters/postgres-log-reader.js';
import { experimentCodec } from '../../src/application/experiment-codec.js';
import type { SqlDatabase } from '../../src/application/ports/database.js';
import type { Position } from '../../src/application/ports/event-store.js';
import type { ExperimentEvent } from '../../src/domain/experiment.js';
import { tableNames } from '../../src/projections/experiment-read-models.js';
import type { ProjectionRunner } from '../../src/projections/runner.js';
import type { TestDatabase } from './databases.js';

/** A database of the suite with a codec-equipped store and its log reader on it; `close()` closes both. */
export async function openFixture(db: TestDatabase) {
  const database: SqlDatabase = await db.open();
  const store = new PostgresEventStore<ExperimentEvent>(database, {
    codec: experimentCodec,
    idlePollMs: 100,
  });
  const log = new PostgresLogReader(store, database, experimentCodec);
  return {
    database,
    store,
    log,
    async close() {
      await store.close();
      await database.close();
    },
  };
}

/** Every row of every live read-model table, in a stable order: what "nothing changed" compares. */
export async function snapshot(database: SqlDatabase): Promise<Record<string, unknown[]>> {
  const out: Record<string, unknown[]> = {};
  for (const table of Object.values(tableNames(''))) {
    const { rows } = await sql<{ r: string }>`
      select row_to_json(t)::text as r from ${sql.table(table)} t order by 1`.execute(database.db);
    out[table] = rows.map((x) => x.r);
  }
  return out;
}

/** Resolves once `runner` has applied `position` (rejects after `timeoutMs`, or when the runner fails). */
export function applied(runner: ProjectionRunner<ExperimentEvent>, position: Position, timeoutMs = 60_000) {
  return new Promise<void>((resolve, reject) => {
    if (runner.position >= position) return resolve();
    const timer = setTimeout(() => {
      cleanup();
      reject(
        new Error(`runner at ${runner.position}, not ${position}, after ${timeoutMs} ms (${runner.status})`),
      );
    }, timeoutMs);
    const onApplied = (p: Position) => {
      if (p >= position) {
        cleanup();
        resolve();
      }
    };
    const onStatus = (s: string) => {
      if (s === 'failed') {
        cleanup();
        reject(runner.failure);
      }
    };
    const cleanup = () => {
      clearTimeout(timer);
      runner.off('applied', onApplied);
      runner.off('status', onStatus);
    };
    runner.on('applied', onApplied);
    runner.on('status', onStatus);
  });
}

export const until = async (condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

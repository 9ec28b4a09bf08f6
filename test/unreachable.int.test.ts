import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { sql } from 'kysely';
import { openPGlite, openPostgres, pingDatabase } from '../src/adapters/postgres-database.js';
import { StoreUnavailableError } from '../src/application/ports/event-store.js';

/**
 * An unreachable database is reported in the port's terms: whatever pg or PGlite call it, every path
 * through a SqlDatabase (Kysely, raw statements) throws StoreUnavailableError, so the edges never read
 * driver codes. A statement that is wrong is not "unavailable".
 */

/** A port nothing listens on: bound, then closed. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('an unreachable database is a StoreUnavailableError', () => {
  it('PostgreSQL refusing connections: Kysely queries, transactions and raw statements', async () => {
    const database = openPostgres({ url: `postgres://postgres@127.0.0.1:${await deadPort()}/nothing` });
    try {
      await assert.rejects(pingDatabase(database.db), StoreUnavailableError);
      await assert.rejects(
        database.db.transaction().execute((trx) => sql`select 1`.execute(trx)),
        StoreUnavailableError,
      );
      await assert.rejects(database.query('select 1', []), StoreUnavailableError);
      const err = await database.query('select 1', []).catch((e: unknown) => e);
      assert.equal((err as Error).cause && ((err as Error).cause as { code?: string }).code, 'ECONNREFUSED');
    } finally {
      await database.close();
    }
  });

  it('an embedded database after close; a wrong statement stays what it is', async () => {
    const database = await openPGlite(undefined);
    await assert.rejects(sql`select * from no_such_table`.execute(database.db), (err: unknown) => {
      assert.ok(!(err instanceof StoreUnavailableError));
      assert.equal((err as { code?: string }).code, '42P01');
      return true;
    });
    await assert.rejects(
      database.query('select nonsense(', []),
      (err: unknown) => !(err instanceof StoreUnavailableError),
    );
    await database.close();
    await assert.rejects(database.query('select 1', []), StoreUnavailableError);
  });
});

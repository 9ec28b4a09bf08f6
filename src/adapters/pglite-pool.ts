import type { PGlite } from '@electric-sql/pglite';
import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';

/**
 * A pool-shaped face for PGlite so that Kysely's own PostgresDialect drives it, exactly as it drives
 * `pg.Pool`. PGlite is one connection: `connect()` hands it out to one caller at a time (FIFO), which
 * keeps transactions whole; everything else waits its turn.
 */
export class PGlitePool implements PostgresPool {
  #tail: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(readonly pglite: PGlite) {}

  async connect(): Promise<PostgresPoolClient> {
    if (this.#closed) throw new Error('the embedded database is closed');
    let release!: () => void;
    const turn = new Promise<void>((resolve) => {
      release = resolve;
    });
    const previous = this.#tail;
    this.#tail = previous.then(() => turn);
    await previous;
    let released = false;
    const pglite = this.pglite;
    const client = {
      async query<R>(sql: string, parameters: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>> {
        if (parameters.length === 0) {
          // No parameters: the simple protocol, which also runs several statements (migrations).
          const results = await pglite.exec(sql);
          const last = results[results.length - 1];
          return {
            command: commandOf(sql),
            rowCount: last?.affectedRows ?? 0,
            rows: (last?.rows ?? []) as R[],
          };
        }
        const result = await pglite.query<R>(sql, [...parameters]);
        return {
          command: commandOf((result as { command?: string }).command ?? sql),
          rowCount: result.affectedRows ?? result.rows.length,
          rows: result.rows,
        };
      },
      release() {
        if (released) return;
        released = true;
        release();
      },
    };
    return client as PostgresPoolClient;
  }

  async end(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#tail;
    await this.pglite.close();
  }
}

/** The command tag Kysely needs to count affected rows; PGlite reports it, else the first word. */
const commandOf = (tagOrSql: string): PostgresQueryResult<unknown>['command'] => {
  const word = /^\s*(\w+)/.exec(tagOrSql)?.[1]?.toUpperCase();
  switch (word) {
    case 'INSERT':
    case 'UPDATE':
    case 'DELETE':
    case 'MERGE':
      return word;
    default:
      return 'SELECT';
  }
};

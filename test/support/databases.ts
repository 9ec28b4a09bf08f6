import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { openPGlite, openPostgres } from '../../src/adapters/postgres-database.js';
import { migrateToLatest } from '../../src/adapters/postgres-migrations.js';
import type { SqlDatabase } from '../../src/application/ports/database.js';

/**
 * The databases a suite runs against: the real PostgreSQL named by DATABASE_URL (each suite in a
 * schema of its own, dropped afterwards) and PGlite in memory. A suite that cannot run one says why.
 */
export interface TestDatabase {
  readonly name: string;
  /** Why this database is not available here; undefined when it is. */
  readonly skip: string | undefined;
  open(): Promise<SqlDatabase>;
}

export const postgresTestDatabase = (): TestDatabase => {
  const base = process.env.DATABASE_URL;
  return {
    name: 'PostgreSQL',
    skip: base ? undefined : 'DATABASE_URL is not set: no real PostgreSQL to test against (CI sets it)',
    async open() {
      const schema = `phoenix_test_${randomBytes(6).toString('hex')}`;
      const admin = openPostgres({ url: base!, poolSize: 1 });
      await sql`create schema ${sql.id(schema)}`.execute(admin.db);
      await admin.close();
      const url = withSearchPath(base!, schema);
      const database = openPostgres({ url, poolSize: 24 });
      await migrateToLatest(database.db);
      return {
        ...database,
        async close() {
          await database.close();
          const dropper = openPostgres({ url: base!, poolSize: 1 });
          await sql`drop schema ${sql.id(schema)} cascade`.execute(dropper.db);
          await dropper.close();
        },
      };
    },
  };
};

export const pgliteTestDatabase = (): TestDatabase => ({
  name: 'PGlite',
  skip: undefined,
  async open() {
    const database = await openPGlite(undefined);
    await migrateToLatest(database.db);
    return database;
  },
});

export const withSearchPath = (url: string, schema: string): string => {
  const u = new URL(url);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return u.toString();
};

/**
 * Where a whole system runs in a test: the embedded default (PGlite, `env` empty) and, with
 * DATABASE_URL, the real PostgreSQL in a schema of its own, which `drop` removes.
 */
export interface SystemTarget {
  readonly name: string;
  readonly skip: string | undefined;
  env(): Promise<{ env: Record<string, string>; drop(): Promise<void> }>;
}

export const systemTargets = (): SystemTarget[] => {
  const base = process.env.DATABASE_URL;
  return [
    { name: 'PGlite', skip: undefined, env: async () => ({ env: {}, drop: async () => {} }) },
    {
      name: 'PostgreSQL',
      skip: base ? undefined : 'DATABASE_URL is not set: no real PostgreSQL to test against (CI sets it)',
      env: async () => {
        const schema = `phoenix_test_${randomBytes(6).toString('hex')}`;
        const admin = openPostgres({ url: base!, poolSize: 1 });
        await sql`create schema ${sql.id(schema)}`.execute(admin.db);
        await admin.close();
        return {
          env: { DATABASE_URL: withSearchPath(base!, schema) },
          drop: async () => {
            const dropper = openPostgres({ url: base!, poolSize: 1 });
            await sql`drop schema ${sql.id(schema)} cascade`.execute(dropper.db);
            await dropper.close();
          },
        };
      },
    },
  ];
};

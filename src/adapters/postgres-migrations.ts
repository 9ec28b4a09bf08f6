import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { type Migration, type MigrationProvider, type MigrationResult, Migrator, sql } from 'kysely';
import type { Db } from '../application/ports/database.js';

/** `migrations/` at the top of the project, from `src/adapters` and from `dist/adapters` alike. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

/** Numbered, forward-only SQL files: `NNN_name.sql`, each applied once, in order, in a transaction. */
export class SqlFileMigrationProvider implements MigrationProvider {
  constructor(private readonly dir: string = MIGRATIONS_DIR) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const files = (await readdir(this.dir)).filter((f) => /^\d{3}_[\w-]+\.sql$/.test(f)).sort();
    const migrations: Record<string, Migration> = {};
    for (const file of files) {
      const text = await readFile(`${this.dir}/${file}`, 'utf8');
      migrations[file.replace(/\.sql$/, '')] = {
        up: async (db) => {
          await sql.raw(text).execute(db);
        },
      };
    }
    return migrations;
  }
}

/**
 * Applies every pending migration; safe to call from several processes at once (Kysely holds an
 * advisory lock around the run). Throws with the failing migration's name.
 */
export async function migrateToLatest(db: Db, dir?: string): Promise<MigrationResult[]> {
  // Kysely looks for its bookkeeping tables in every schema unless told which: name the current one, so
  // databases holding several Phoenix schemas (tests, blue/green) each keep their own.
  const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
  const migrator = new Migrator({
    db,
    migrationTableSchema: rows[0]?.schema ?? 'public',
    provider: new SqlFileMigrationProvider(dir),
    migrationTableName: 'phoenix_migrations',
    migrationLockTableName: 'phoenix_migrations_lock',
  });
  const { error, results = [] } = await migrator.migrateToLatest();
  if (error) {
    const failed = results.find((r) => r.status === 'Error');
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`migration ${failed?.migrationName ?? '(unknown)'} failed: ${message}`, { cause: error });
  }
  return results;
}

import { sql } from 'kysely';
import type { Db } from '../application/ports/database.js';
import type { IdempotencyClaim, IdempotencyStore, StoredOutcome } from '../application/ports/idempotency.js';

/**
 * Idempotency-Key records in PostgreSQL (migrations/010 and 053). A key is claimed with its command's
 * hash before the command runs, in one insert that the primary key makes atomic: of requests racing
 * with one key, exactly one claims it, and the others compare their hash with the one it stored.
 *
 * The table was made for HTTP answers (status, headers, body); the outcome is kept in `body` in the
 * shape the HTTP answer had (`{id, state, version, position}`), so rows written before the command
 * service read back the same. `status` only says that the command has answered: ANSWERED.
 */
export class PostgresIdempotencyStore implements IdempotencyStore {
  constructor(private readonly db: Db) {}

  async claim(actor: string, key: string, requestHash: string): Promise<IdempotencyClaim> {
    // A claim released between the insert and the read leaves nothing to read: claim again.
    for (let attempt = 0; attempt < 10; attempt++) {
      const inserted = await sql`
        insert into phoenix_idempotency_keys (actor, key, request_hash)
        values (${actor}, ${key}, ${requestHash})
        on conflict (actor, key) do nothing
        returning 1 as claimed`.execute(this.db);
      if (inserted.rows.length > 0) return { kind: 'claimed' };
      const { rows } = await sql<{
        request_hash: string;
        status: number | null;
        body: OutcomeRow | null;
      }>`
        select request_hash, status, body from phoenix_idempotency_keys
        where actor = ${actor} and key = ${key}`.execute(this.db);
      const row = rows[0];
      if (!row) continue;
      return row.status === null || row.body === null
        ? { kind: 'held', requestHash: row.request_hash }
        : { kind: 'held', requestHash: row.request_hash, outcome: outcomeOf(row.body) };
    }
    throw new Error(`Idempotency-Key ${key}: claimed and released repeatedly; gave up`);
  }

  /**
   * Stores the outcome for the key's command. The first outcome stays: a concurrent run of the same
   * command that answers later changes nothing, and another command's claim is never overwritten.
   */
  async complete(actor: string, key: string, requestHash: string, outcome: StoredOutcome): Promise<void> {
    const body: OutcomeRow = {
      id: outcome.experimentId,
      state: outcome.state,
      version: outcome.version,
      position: outcome.position,
    };
    await sql`
      insert into phoenix_idempotency_keys (actor, key, request_hash, status, headers, body)
      values (${actor}, ${key}, ${requestHash}, ${ANSWERED}, '{}'::jsonb, ${JSON.stringify(body)}::jsonb)
      on conflict (actor, key) do update
        set status = excluded.status, headers = excluded.headers, body = excluded.body
        where phoenix_idempotency_keys.status is null
          and phoenix_idempotency_keys.request_hash = excluded.request_hash`.execute(this.db);
  }

  /** Gives up a claim whose command failed, so that the key serves the next request. */
  async release(actor: string, key: string, requestHash: string): Promise<void> {
    await sql`
      delete from phoenix_idempotency_keys
      where actor = ${actor} and key = ${key} and request_hash = ${requestHash} and status is null`.execute(
      this.db,
    );
  }

  /** Forgets keys older than `maxAgeSeconds`; returns how many. */
  async purge(maxAgeSeconds: number): Promise<number> {
    const result = await sql`
      delete from phoenix_idempotency_keys where created_at < now() - make_interval(secs => ${maxAgeSeconds})`.execute(
      this.db,
    );
    return Number(result.numAffectedRows ?? 0);
  }
}

/** The status of an answered row (the column predates transport-neutral outcomes; see the class). */
const ANSWERED = 200;

/** An outcome as the body column holds it. */
interface OutcomeRow {
  readonly id: string;
  readonly state: string;
  readonly version: number;
  readonly position: string;
}

const outcomeOf = (row: OutcomeRow): StoredOutcome => ({
  experimentId: row.id,
  state: row.state,
  version: row.version,
  position: row.position,
});

import { type Kysely, sql } from 'kysely';

/** A stored answer to a command sent with an Idempotency-Key. */
export interface StoredResponse {
  readonly requestHash: string;
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: unknown;
}

/**
 * What claiming a key found. `claimed`: this request now holds the key and runs the command, then
 * completes or releases it. `held`: the key already belongs to the request with `requestHash`; with
 * `response` when that request has answered, without while it runs (or died before answering).
 */
export type IdempotencyClaim =
  | { readonly kind: 'claimed' }
  | { readonly kind: 'held'; readonly requestHash: string; readonly response?: StoredResponse };

/**
 * Idempotency-Key records in PostgreSQL (migrations/010 and 053). A key is claimed with its request's
 * hash before the command runs, in one insert that the primary key makes atomic: of requests racing
 * with one key, exactly one claims it, and the others compare their hash with the one it stored.
 */
export class PostgresIdempotencyStore {
  // biome-ignore lint/suspicious/noExplicitAny: raw SQL only
  constructor(private readonly db: Kysely<any>) {}

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
        headers: Record<string, string> | null;
        body: unknown;
      }>`
        select request_hash, status, headers, body from phoenix_idempotency_keys
        where actor = ${actor} and key = ${key}`.execute(this.db);
      const row = rows[0];
      if (!row) continue;
      return row.status === null
        ? { kind: 'held', requestHash: row.request_hash }
        : {
            kind: 'held',
            requestHash: row.request_hash,
            response: {
              requestHash: row.request_hash,
              status: row.status,
              headers: row.headers ?? {},
              body: row.body,
            },
          };
    }
    throw new Error(`Idempotency-Key ${key}: claimed and released repeatedly; gave up`);
  }

  /**
   * Stores the answer for the key's request. The first answer stays: a concurrent run of the same
   * request that answers later changes nothing, and another request's claim is never overwritten.
   */
  async complete(actor: string, key: string, response: StoredResponse): Promise<void> {
    await sql`
      insert into phoenix_idempotency_keys (actor, key, request_hash, status, headers, body)
      values (${actor}, ${key}, ${response.requestHash}, ${response.status}, ${JSON.stringify(response.headers)}::jsonb,
              ${JSON.stringify(response.body)}::jsonb)
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

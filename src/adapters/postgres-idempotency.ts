import { type Kysely, sql } from 'kysely';

/** A stored answer to a command sent with an Idempotency-Key. */
export interface StoredResponse {
  readonly requestHash: string;
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: unknown;
}

/** Idempotency-Key records in PostgreSQL (migrations/010_idempotency_keys.sql). */
export class PostgresIdempotencyStore {
  // biome-ignore lint/suspicious/noExplicitAny: raw SQL only
  constructor(private readonly db: Kysely<any>) {}

  async find(actor: string, key: string): Promise<StoredResponse | undefined> {
    const { rows } = await sql<{
      request_hash: string;
      status: number;
      headers: Record<string, string>;
      body: unknown;
    }>`
      select request_hash, status, headers, body from phoenix_idempotency_keys
      where actor = ${actor} and key = ${key}`.execute(this.db);
    const row = rows[0];
    return row
      ? { requestHash: row.request_hash, status: row.status, headers: row.headers, body: row.body }
      : undefined;
  }

  /** Keeps the first answer: a concurrent request with the same key that finished first wins. */
  async save(actor: string, key: string, response: StoredResponse): Promise<void> {
    await sql`
      insert into phoenix_idempotency_keys (actor, key, request_hash, status, headers, body)
      values (${actor}, ${key}, ${response.requestHash}, ${response.status}, ${JSON.stringify(response.headers)}::jsonb,
              ${JSON.stringify(response.body)}::jsonb)
      on conflict (actor, key) do nothing`.execute(this.db);
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

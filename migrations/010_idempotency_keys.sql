-- Responses to commands sent with an Idempotency-Key, so a retry gets the first answer and writes
-- nothing. Keyed by actor: two users' keys never collide. Kept for a day (the server purges older).
CREATE TABLE phoenix_idempotency_keys (
  actor text NOT NULL,
  key text NOT NULL,
  request_hash text NOT NULL,
  status int NOT NULL,
  headers jsonb NOT NULL,
  body jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (actor, key)
);

CREATE INDEX phoenix_idempotency_keys_created_at ON phoenix_idempotency_keys (created_at);

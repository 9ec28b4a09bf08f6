-- An Idempotency-Key is claimed, with the hash of its request, before the command runs: a row without
-- a status is a claim whose command has not answered yet. Concurrent requests with the key then see
-- which request it belongs to, so a different body is refused (422) even while the first still runs.
ALTER TABLE phoenix_idempotency_keys
  ALTER COLUMN status DROP NOT NULL,
  ALTER COLUMN headers DROP NOT NULL,
  ALTER COLUMN body DROP NOT NULL;

ALTER TABLE phoenix_idempotency_keys
  ADD CONSTRAINT phoenix_idempotency_keys_answered
  CHECK ((status IS NULL) = (headers IS NULL) AND (status IS NULL) = (body IS NULL));

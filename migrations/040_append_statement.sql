-- The fast path of an append batch is now one statement that the event store sends itself
-- (src/adapters/postgres-event-store.ts, APPEND_BATCH). phoenix_append_batch, PL/pgSQL, planned each
-- of its statements on every call (plan_cache_mode = force_custom_plan, so that no plan made while
-- the tables were small outlives that), which cost more than the work itself. phoenix_append_each
-- stays: it is the careful path for retries, clashes and refused versions.
DROP FUNCTION phoenix_append_batch(jsonb);

-- The event store on PostgreSQL (and on PGlite, the embedded default).
--
-- Global order is (transaction_id, global_position), not global_position alone: a bigserial is taken
-- at insert time but transactions commit in another order, so a reader that followed the bigserial
-- could pass a position whose transaction commits later and never see that event. Readers only take
-- rows whose transaction is older than every transaction still running
-- (transaction_id < pg_snapshot_xmin(pg_current_snapshot())): that set can no longer change, so
-- reading it in (transaction_id, global_position) order never skips a row. A long-open transaction
-- holds readers back: it shows up as lag, never as loss.

CREATE TABLE phoenix_streams (
  stream_id text PRIMARY KEY,
  version bigint NOT NULL CHECK (version >= 0)
);

CREATE TABLE phoenix_events (
  global_position bigserial NOT NULL,
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  stream_id text NOT NULL,
  version bigint NOT NULL CHECK (version >= 1),
  event_id uuid NOT NULL,
  type text NOT NULL,
  data jsonb NOT NULL,
  metadata jsonb NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT phoenix_events_stream_version PRIMARY KEY (stream_id, version),
  CONSTRAINT phoenix_events_event_id UNIQUE (event_id)
);

CREATE INDEX phoenix_events_log_order ON phoenix_events (transaction_id, global_position);

-- One round trip per append: checks the expected version, answers a retried append from what is
-- stored (idempotent on event id), and inserts the events, all in the caller's transaction.
-- p_expected: 'any' | 'no_stream' | 'stream_exists' | a version number (events in the stream).
-- Errors: PX409 wrong expected version (DETAIL: the actual version); PX422 an event id is stored,
-- but not as this same append.
CREATE FUNCTION phoenix_append(p_stream text, p_expected text, p_events jsonb)
RETURNS TABLE (out_version bigint, out_position text, out_idempotent boolean)
LANGUAGE plpgsql AS $$
DECLARE
  v_count int := jsonb_array_length(p_events);
  v_last uuid := (p_events -> (v_count - 1) -> 'metadata' ->> 'eventId')::uuid;
  v_found int;
  v_before bigint;
  v_actual bigint;
BEGIN
  SELECT count(*) INTO v_found
    FROM phoenix_events e
   WHERE e.event_id IN (SELECT (x -> 'metadata' ->> 'eventId')::uuid FROM jsonb_array_elements(p_events) x);
  IF v_found > 0 THEN
    IF v_found = v_count THEN
      RETURN QUERY
        SELECT e.version,
               lpad(e.transaction_id::text, 20, '0') || '-' || lpad(e.global_position::text, 20, '0'),
               true
          FROM phoenix_events e
         WHERE e.event_id = v_last AND e.stream_id = p_stream;
      IF FOUND THEN RETURN; END IF;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'PX422', MESSAGE = 'event id already stored', DETAIL = v_last::text;
  END IF;

  IF p_expected = 'any' THEN
    INSERT INTO phoenix_streams AS s (stream_id, version) VALUES (p_stream, v_count)
      ON CONFLICT (stream_id) DO UPDATE SET version = s.version + v_count
      RETURNING s.version - v_count INTO v_before;
  ELSIF p_expected = 'no_stream' OR p_expected = '0' THEN
    INSERT INTO phoenix_streams (stream_id, version) VALUES (p_stream, v_count)
      ON CONFLICT (stream_id) DO NOTHING;
    IF NOT FOUND THEN
      SELECT s.version INTO v_actual FROM phoenix_streams s WHERE s.stream_id = p_stream;
      RAISE EXCEPTION USING ERRCODE = 'PX409', MESSAGE = 'wrong expected version', DETAIL = coalesce(v_actual, 0)::text;
    END IF;
    v_before := 0;
  ELSIF p_expected = 'stream_exists' THEN
    UPDATE phoenix_streams s SET version = s.version + v_count WHERE s.stream_id = p_stream
      RETURNING s.version - v_count INTO v_before;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'PX409', MESSAGE = 'wrong expected version', DETAIL = '0';
    END IF;
  ELSE
    UPDATE phoenix_streams s SET version = s.version + v_count
     WHERE s.stream_id = p_stream AND s.version = p_expected::bigint
      RETURNING s.version - v_count INTO v_before;
    IF NOT FOUND THEN
      SELECT s.version INTO v_actual FROM phoenix_streams s WHERE s.stream_id = p_stream;
      RAISE EXCEPTION USING ERRCODE = 'PX409', MESSAGE = 'wrong expected version', DETAIL = coalesce(v_actual, 0)::text;
    END IF;
  END IF;

  RETURN QUERY
    WITH inserted AS (
      INSERT INTO phoenix_events (stream_id, version, event_id, type, data, metadata)
      SELECT p_stream, v_before + x.ord, (x.e -> 'metadata' ->> 'eventId')::uuid, x.e ->> 'type', x.e -> 'data', x.e -> 'metadata'
        FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, ord)
       ORDER BY x.ord
      RETURNING phoenix_events.version, phoenix_events.transaction_id, phoenix_events.global_position
    )
    SELECT i.version, lpad(i.transaction_id::text, 20, '0') || '-' || lpad(i.global_position::text, 20, '0'), false
      FROM inserted i ORDER BY i.version DESC LIMIT 1;
END;
$$;

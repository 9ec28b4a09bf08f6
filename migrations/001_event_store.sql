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

-- One round trip for many appends: the store groups the appends that arrive while earlier ones are
-- being written and sends them in one call, so they share one commit (group commit). Each append is
-- still checked and applied on its own: one that fails writes nothing and does not fail the others.
--
-- p_appends: [{ "stream": text, "expected": 'any' | 'no_stream' | 'stream_exists' | '<version>',
--               "events": [{ "type", "data", "metadata": { "eventId", ... } }] }]
-- Returns one row per append (out_index is its place in p_appends):
--   ok / idempotent (a retry of an append already stored: answered as the first time, nothing written)
--   wrong_version (out_version: the actual version) / duplicate_id (an event id is stored elsewhere).
--
-- phoenix_append_batch is the fast path: set-based, a few statements per batch. When an event id is
-- already stored (a retry) or a concurrent batch created one of its streams first, the unique index
-- says so; the fast path rolls back to its savepoint and the slow path, phoenix_append_each, takes
-- the appends one at a time and answers each precisely. Both take streams in stream order, so two
-- batches do not deadlock each other.

CREATE FUNCTION phoenix_append_each(p_appends jsonb)
RETURNS TABLE (out_index int, out_status text, out_version bigint, out_position text)
LANGUAGE plpgsql
-- Plan each statement for the arrays it is given: a plan cached while the tables were small would
-- keep scanning them whole as they grow.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  a record;
  v_count int;
  v_ids uuid[];
  v_found int;
  v_before bigint;
  v_actual bigint;
BEGIN
  FOR a IN
    SELECT (x.ord - 1)::int AS idx, x.e ->> 'stream' AS stream, x.e ->> 'expected' AS expected, x.e -> 'events' AS events
      FROM jsonb_array_elements(p_appends) WITH ORDINALITY AS x(e, ord)
     ORDER BY x.e ->> 'stream', x.ord
  LOOP
    out_index := a.idx;
    v_count := jsonb_array_length(a.events);
    v_ids := ARRAY(SELECT (y -> 'metadata' ->> 'eventId')::uuid FROM jsonb_array_elements(a.events) y);

    SELECT count(*) INTO v_found FROM phoenix_events e WHERE e.event_id = ANY (v_ids);
    IF v_found > 0 THEN
      out_status := 'duplicate_id'; out_version := NULL; out_position := NULL;
      IF v_found = v_count THEN
        SELECT e.version, lpad(e.transaction_id::text, 20, '0') || '-' || lpad(e.global_position::text, 20, '0')
          INTO out_version, out_position
          FROM phoenix_events e
         WHERE e.event_id = v_ids[v_count] AND e.stream_id = a.stream;
        IF FOUND THEN out_status := 'idempotent'; END IF;
      END IF;
      RETURN NEXT;
      CONTINUE;
    END IF;

    v_before := NULL;
    IF a.expected = 'any' THEN
      INSERT INTO phoenix_streams AS s (stream_id, version) VALUES (a.stream, v_count)
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + v_count
        RETURNING s.version - v_count INTO v_before;
    ELSIF a.expected = 'no_stream' OR a.expected = '0' THEN
      INSERT INTO phoenix_streams (stream_id, version) VALUES (a.stream, v_count)
        ON CONFLICT (stream_id) DO NOTHING;
      IF FOUND THEN v_before := 0; END IF;
    ELSIF a.expected = 'stream_exists' THEN
      UPDATE phoenix_streams s SET version = s.version + v_count WHERE s.stream_id = a.stream
        RETURNING s.version - v_count INTO v_before;
    ELSE
      UPDATE phoenix_streams s SET version = s.version + v_count
       WHERE s.stream_id = a.stream AND s.version = a.expected::bigint
        RETURNING s.version - v_count INTO v_before;
    END IF;

    IF v_before IS NULL THEN
      SELECT s.version INTO v_actual FROM phoenix_streams s WHERE s.stream_id = a.stream;
      out_status := 'wrong_version'; out_version := coalesce(v_actual, 0); out_position := NULL;
      RETURN NEXT;
      CONTINUE;
    END IF;

    WITH inserted AS (
      INSERT INTO phoenix_events (stream_id, version, event_id, type, data, metadata)
      SELECT a.stream, v_before + y.ord, (y.e -> 'metadata' ->> 'eventId')::uuid, y.e ->> 'type', y.e -> 'data', y.e -> 'metadata'
        FROM jsonb_array_elements(a.events) WITH ORDINALITY AS y(e, ord)
       ORDER BY y.ord
      RETURNING phoenix_events.version, phoenix_events.transaction_id, phoenix_events.global_position
    )
    SELECT i.version, lpad(i.transaction_id::text, 20, '0') || '-' || lpad(i.global_position::text, 20, '0')
      INTO out_version, out_position
      FROM inserted i ORDER BY i.version DESC LIMIT 1;
    out_status := 'ok';
    RETURN NEXT;
  END LOOP;
END;
$$;

CREATE FUNCTION phoenix_append_batch(p_appends jsonb)
RETURNS TABLE (out_index int, out_status text, out_version bigint, out_position text)
LANGUAGE plpgsql
-- Plan each statement for the arrays it is given: a plan cached while the tables were small would
-- keep scanning them whole as they grow.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  v_streams text[];
  v_expected text[];
  v_counts int[];
  v_n int;
  v_known text[];
  v_known_versions bigint[];
  v_touched boolean[];
  v_before bigint[];
  v_status text[];
  v_result bigint[];
  v_positions text[];
  i int;
  k int;
  cur bigint;
  ok boolean;
BEGIN
  SELECT array_agg(a.x ->> 'stream' ORDER BY a.ord), array_agg(a.x ->> 'expected' ORDER BY a.ord),
         array_agg(jsonb_array_length(a.x -> 'events') ORDER BY a.ord)
    INTO v_streams, v_expected, v_counts
    FROM jsonb_array_elements(p_appends) WITH ORDINALITY a(x, ord);
  v_n := coalesce(array_length(v_streams, 1), 0);

  BEGIN
    SELECT coalesce(array_agg(s.stream_id ORDER BY s.stream_id), '{}'), coalesce(array_agg(s.version ORDER BY s.stream_id), '{}')
      INTO v_known, v_known_versions
      FROM (SELECT st.stream_id, st.version FROM phoenix_streams st
             WHERE st.stream_id = ANY (v_streams) ORDER BY st.stream_id FOR UPDATE) s;
    v_touched := array_fill(false, ARRAY[greatest(array_length(v_known, 1), 0)]);

    -- Decide each append in order, against the versions the earlier ones of this batch left.
    FOR i IN 1 .. v_n LOOP
      k := array_position(v_known, v_streams[i]);
      cur := CASE WHEN k IS NULL THEN 0 ELSE v_known_versions[k] END;
      ok := CASE v_expected[i]
              WHEN 'any' THEN true
              WHEN 'no_stream' THEN cur = 0
              WHEN 'stream_exists' THEN cur > 0
              ELSE cur = v_expected[i]::bigint END;
      IF ok THEN
        v_status[i] := 'ok';
        v_before[i] := cur;
        v_result[i] := cur + v_counts[i];
        IF k IS NULL THEN
          v_known := v_known || v_streams[i];
          v_known_versions := v_known_versions || (cur + v_counts[i]);
          v_touched := v_touched || true;
        ELSE
          v_known_versions[k] := cur + v_counts[i];
          v_touched[k] := true;
        END IF;
      ELSE
        v_status[i] := 'wrong_version';
        v_result[i] := cur;
      END IF;
    END LOOP;

    -- An append refused for its version may be the retry of one already stored: the slow path
    -- answers those as the first time.
    IF 'wrong_version' = ANY (v_status) AND EXISTS (
      SELECT 1 FROM phoenix_events e
       WHERE e.event_id = ANY (ARRAY(
         SELECT (y.e -> 'metadata' ->> 'eventId')::uuid
           FROM jsonb_array_elements(p_appends) WITH ORDINALITY a(x, ord), jsonb_array_elements(a.x -> 'events') y(e)
          WHERE v_status[a.ord] = 'wrong_version'))
    ) THEN
      RETURN QUERY SELECT * FROM phoenix_append_each(p_appends);
      RETURN;
    END IF;

    INSERT INTO phoenix_streams AS st (stream_id, version)
    SELECT t.s, t.v FROM unnest(v_known, v_known_versions, v_touched) AS t(s, v, touched)
     WHERE t.touched ORDER BY t.s
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version;

    WITH inserted AS (
      INSERT INTO phoenix_events (stream_id, version, event_id, type, data, metadata)
      SELECT v_streams[a.ord], v_before[a.ord] + y.ord, (y.e -> 'metadata' ->> 'eventId')::uuid,
             y.e ->> 'type', y.e -> 'data', y.e -> 'metadata'
        FROM jsonb_array_elements(p_appends) WITH ORDINALITY a(x, ord),
             jsonb_array_elements(a.x -> 'events') WITH ORDINALITY y(e, ord)
       WHERE v_status[a.ord] = 'ok'
       ORDER BY a.ord, y.ord
      RETURNING phoenix_events.stream_id, phoenix_events.version,
                lpad(phoenix_events.transaction_id::text, 20, '0') || '-' || lpad(phoenix_events.global_position::text, 20, '0') AS position
    )
    SELECT array_agg(ins.position ORDER BY i2.i)
      INTO v_positions
      FROM generate_series(1, v_n) AS i2(i)
      LEFT JOIN inserted ins ON ins.stream_id = v_streams[i2.i] AND ins.version = v_result[i2.i] AND v_status[i2.i] = 'ok';
  EXCEPTION WHEN unique_violation OR deadlock_detected THEN
    RETURN QUERY SELECT * FROM phoenix_append_each(p_appends);
    RETURN;
  END;

  RETURN QUERY
    SELECT (g.i - 1)::int, v_status[g.i], v_result[g.i], v_positions[g.i]
      FROM generate_series(1, v_n) AS g(i);
END;
$$;

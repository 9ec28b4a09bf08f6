-- Readers of the log take rows of transactions that can no longer change: below the horizon.
--
-- 041 made the horizon skip the transactions of other databases. Transactions of this one that write
-- no events (the projection runner's and the saga's, a report, a psql session) still held every
-- reader back while they stayed open: under load, a read-model batch left "idle in transaction" for
-- a second held the live feed and the saga back for that second.
--
-- Now every transaction that writes phoenix_events first takes the append mark, a shared advisory
-- transaction lock (key: 'PHNX', hashtext(schema || ':append')), before it has a transaction id: the
-- append statement of the event store (src/adapters/postgres-event-store.ts) and phoenix_append_each
-- below. Anything else that writes phoenix_events while readers read must take it too.
--
-- The horizon then skips every running transaction that pg_locks shows holding its transaction id
-- WITHOUT the mark: it has an id, so it would have taken the mark already, were it an append. A
-- transaction it cannot see (ended since the snapshot, say) still holds the horizon back, for that
-- one read: wrongly holding back is lag, wrongly letting go would be loss. pg_locks is read once, so
-- a transaction's id and its mark are seen together.
--
-- STABLE: it uses the calling statement's snapshot, the one that statement's rows are read with.
CREATE OR REPLACE FUNCTION phoenix_log_horizon() RETURNS xid8
-- PL/pgSQL keeps its plans for the session: an SQL function would be planned again on every call.
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  snap pg_snapshot := pg_current_snapshot();
  horizon xid8;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(snap)) THEN
    RETURN pg_snapshot_xmax(snap);
  END IF;
  WITH locks AS MATERIALIZED (
    SELECT l.locktype, l.transactionid, l.virtualtransaction, l.classid, l.objid, l.objsubid, l.mode, l.granted
      FROM pg_locks l
     WHERE l.locktype IN ('transactionid', 'advisory')
  ),
  unmarked AS (
    SELECT t.transactionid AS xid
      FROM locks t
     WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
       AND NOT EXISTS (
         SELECT 1 FROM locks m
          WHERE m.locktype = 'advisory' AND m.virtualtransaction = t.virtualtransaction
            AND m.classid = 1347964504::oid
            AND m.objid = (hashtext(current_schema() || ':append')::int8 & 4294967295)::oid
            AND m.objsubid = 2)
  )
  SELECT min(x) INTO horizon
    FROM pg_snapshot_xip(snap) AS x
   WHERE NOT EXISTS (SELECT 1 FROM unmarked u WHERE u.xid = x::xid);
  RETURN least(pg_snapshot_xmax(snap), horizon);
END;
$$;

-- The careful path takes the mark too.
CREATE OR REPLACE FUNCTION phoenix_append_each(p_appends jsonb)
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
  -- The append mark, before this transaction writes anything (and so before it has an id).
  PERFORM pg_advisory_xact_lock_shared(1347964504, hashtext(current_schema() || ':append'));
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

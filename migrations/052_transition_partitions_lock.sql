-- phoenix_ensure_transition_partitions (migrations/002) checks for a month's partition, then creates
-- it: two callers at once could both find it missing, and the second CREATE would fail. Until now one
-- writer per set of tables called it (the live runner, or a rebuild's single loader); a rebuild now
-- fills its tables from several worker threads at once. A transaction-scoped advisory lock per parent
-- table makes the check and the creation one step (to_regclass sees a partition committed by the
-- caller that held the lock before).
CREATE OR REPLACE FUNCTION phoenix_ensure_transition_partitions(p_suffix text, p_from timestamptz, p_to timestamptz)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  parent text := 'state_transitions' || p_suffix;
  m timestamp := date_trunc('month', p_from AT TIME ZONE 'UTC');
  last_month timestamp := date_trunc('month', p_to AT TIME ZONE 'UTC');
  part text;
  made int := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('phoenix_ensure_transition_partitions'), hashtext(current_schema() || '.' || parent));
  WHILE m <= last_month LOOP
    part := parent || '_p' || to_char(m, 'YYYYMM');
    IF to_regclass(quote_ident(part)) IS NULL THEN
      EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                     part, parent, (m AT TIME ZONE 'UTC')::text, ((m + interval '1 month') AT TIME ZONE 'UTC')::text);
      made := made + 1;
    END IF;
    m := m + interval '1 month';
  END LOOP;
  RETURN made;
END;
$$;

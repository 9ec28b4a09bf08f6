-- The read models' indexes (migrations/002) as a list of statements, so that a rebuild can build them
-- side by side on a few connections: each CREATE INDEX sorts on one core, and the tables (and the
-- indexes of one table, which CREATE INDEX only share-locks) are independent. A primary key, added by
-- ALTER TABLE, has its table to itself: the table's other indexes come after it.
-- phoenix_index_read_models runs the same statements one after the other, so both ways build exactly
-- the same indexes.
CREATE FUNCTION phoenix_read_model_index_ddl(p_suffix text)
RETURNS TABLE (table_name text, is_primary_key boolean, ddl text)
LANGUAGE plpgsql AS $$
DECLARE
  e text := 'experiments' || p_suffix;
  s text := 'experiment_states' || p_suffix;
  t text := 'state_transitions' || p_suffix;
BEGIN
  -- the largest first
  is_primary_key := true;
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(t)) AND contype = 'p') THEN
    table_name := t;
    ddl := format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (experiment_id, version, created_at)', t, t || '_pkey');
    RETURN NEXT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(s)) AND contype = 'p') THEN
    table_name := s;
    ddl := format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (experiment_id, version)', s, s || '_pkey');
    RETURN NEXT;
  END IF;

  is_primary_key := false;
  table_name := t;
  -- GET /audit: oldest first on (created_at, experiment_id, version), filtered by any of these
  ddl := format('CREATE INDEX IF NOT EXISTS %I ON %I (created_at, experiment_id, version)', t || '_time', t);
  RETURN NEXT;
  -- (filtered by experiment, the primary key (experiment_id, version, created_at) finds the few rows)
  ddl := format('CREATE INDEX IF NOT EXISTS %I ON %I (actor, created_at, experiment_id, version)', t || '_actor', t);
  RETURN NEXT;
  ddl := format('CREATE INDEX IF NOT EXISTS %I ON %I (from_state, created_at, experiment_id, version)', t || '_from', t);
  RETURN NEXT;
  ddl := format('CREATE INDEX IF NOT EXISTS %I ON %I (to_state, created_at, experiment_id, version)', t || '_to', t);
  RETURN NEXT;
  -- seed 000 §2.2: idx_experiment_states_experiment
  table_name := s;
  ddl := format('CREATE INDEX IF NOT EXISTS %I ON %I (experiment_id, created_at DESC)', s || '_experiment', s);
  RETURN NEXT;
  -- GET /experiments: newest first, optionally by state
  table_name := e;
  ddl := format('CREATE INDEX IF NOT EXISTS %I ON %I (created_at DESC, id DESC)', e || '_newest', e);
  RETURN NEXT;
  ddl := format('CREATE INDEX IF NOT EXISTS %I ON %I (state, created_at DESC, id DESC)', e || '_state_newest', e);
  RETURN NEXT;
END;
$$;

CREATE OR REPLACE FUNCTION phoenix_index_read_models(p_suffix text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT * FROM phoenix_read_model_index_ddl(p_suffix) LOOP
    EXECUTE r.ddl;
  END LOOP;
END;
$$;

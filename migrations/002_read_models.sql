-- Read models (CQRS query side), built from the events by the projection runner (src/projections/).
--
-- Every read-model table belongs to a "set" named by a suffix: the live set has the empty suffix
-- (experiments, experiment_states, …); a rebuild (`phoenix replay`) fills a second set ('__next') from
-- position zero while the live one keeps serving, then phoenix_swap_read_models() drops the live set
-- and strips the suffix from every relation of the new one (tables, partitions, indexes, sequences),
-- in the transaction that moves the checkpoint. The DDL is therefore written once, in functions that
-- take the suffix, so both sets are identical by construction.
--
-- Timestamps are the events' own `data.at` (never now()), so a rebuild reproduces every row exactly.
-- There are no foreign keys between the read-model tables: the projection is their only writer and
-- writes a batch's rows together in one transaction; a foreign key would only slow the rebuild.

-- One row per projection (and per saga process manager): the global position it has applied. Written
-- in the same transaction as the projection's own rows; the row lock is also what serialises a
-- runner's batches with the blue/green swap.
CREATE TABLE projection_checkpoints (
  name text PRIMARY KEY,
  position text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION phoenix_create_read_models(p_suffix text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  -- The current state of each experiment: everything GET /api/v1/experiments[/{id}] returns, plus what
  -- the projection needs to fold the next event (analysis_attempts, state_entered_at).
  EXECUTE format($sql$
    CREATE TABLE %I (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      state text NOT NULL,
      version int NOT NULL,
      spec jsonb NOT NULL,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL,
      started_at timestamptz,
      run_started_at timestamptz,
      run_ends_at timestamptz,
      ended_at timestamptz,
      status_reason text,
      deployments jsonb NOT NULL,
      analysis jsonb,
      analysis_attempts int NOT NULL,
      -- when the current state was entered: the start of the next transition's duration
      state_entered_at timestamptz NOT NULL,
      -- the global position of the last event applied to this row
      position text NOT NULL
    ) WITH (fillfactor = 80)$sql$, 'experiments' || p_suffix);

  -- Seed 000 §2.2: the state history of each experiment, one row per transition.
  EXECUTE format($sql$
    CREATE TABLE %I (
      experiment_id uuid NOT NULL,
      version int NOT NULL,
      state text NOT NULL,
      previous_state text,
      transition_reason text NOT NULL,
      duration_ms bigint,
      metadata jsonb NOT NULL,
      created_at timestamptz NOT NULL,
      created_by text NOT NULL
    )$sql$, 'experiment_states' || p_suffix);

  -- Seed 000 §2.2: the audit trail, partitioned by month on the transition's time. Partitions are made
  -- by phoenix_ensure_transition_partitions (ahead of time, and on demand for historical events).
  EXECUTE format($sql$
    CREATE TABLE %I (
      experiment_id uuid NOT NULL,
      version int NOT NULL,
      experiment_name text NOT NULL,
      from_state text,
      to_state text NOT NULL,
      actor text NOT NULL,
      reason text NOT NULL,
      duration_ms bigint,
      correlation_id text NOT NULL,
      success boolean NOT NULL,
      error_message text,
      metadata jsonb NOT NULL,
      created_at timestamptz NOT NULL
    ) PARTITION BY RANGE (created_at)$sql$, 'state_transitions' || p_suffix);

  -- Experiments by state, kept as counts (phoenix_experiments_by_state). Every state has a row from
  -- the start, so the live and a rebuilt set hold the same rows whatever their batch boundaries.
  EXECUTE format($sql$
    CREATE TABLE %I (
      state text PRIMARY KEY,
      count bigint NOT NULL
    )$sql$, 'experiment_state_counts' || p_suffix);
  EXECUTE format($sql$
    INSERT INTO %I (state, count)
    SELECT s, 0 FROM unnest(ARRAY['pending', 'initializing', 'running', 'analyzing', 'completed',
                                  'failed', 'cancelled']) AS s$sql$, 'experiment_state_counts' || p_suffix);
END;
$$;

-- The indexes, and the primary keys of the two history tables (only ever appended to; the projection
-- never looks rows up in them). Separate so that a rebuild can bulk-load first and index once at the
-- end, which is several times faster than maintaining them row by row. On a partitioned table the
-- index is created on every partition, present and future.
CREATE FUNCTION phoenix_index_read_models(p_suffix text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  e text := 'experiments' || p_suffix;
  s text := 'experiment_states' || p_suffix;
  t text := 'state_transitions' || p_suffix;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(s)) AND contype = 'p') THEN
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (experiment_id, version)', s, s || '_pkey');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(t)) AND contype = 'p') THEN
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (experiment_id, version, created_at)', t, t || '_pkey');
  END IF;
  -- GET /experiments: newest first, optionally by state
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (created_at DESC, id DESC)', e || '_newest', e);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (state, created_at DESC, id DESC)', e || '_state_newest', e);
  -- seed 000 §2.2: idx_experiment_states_experiment
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (experiment_id, created_at DESC)', s || '_experiment', s);
  -- GET /audit: oldest first on (created_at, experiment_id, version), filtered by any of these
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (created_at, experiment_id, version)', t || '_time', t);
  -- (filtered by experiment, the primary key (experiment_id, version, created_at) finds the few rows)
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (actor, created_at, experiment_id, version)', t || '_actor', t);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (from_state, created_at, experiment_id, version)', t || '_from', t);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (to_state, created_at, experiment_id, version)', t || '_to', t);
END;
$$;

-- One partition per calendar month (UTC) of state_transitions<suffix>, for every month from p_from to
-- p_to inclusive that has none yet. Idempotent; the projection calls it before inserting rows of a
-- month it has not seen, and ahead of time for the coming months.
CREATE FUNCTION phoenix_ensure_transition_partitions(p_suffix text, p_from timestamptz, p_to timestamptz)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  parent text := 'state_transitions' || p_suffix;
  m timestamp := date_trunc('month', p_from AT TIME ZONE 'UTC');
  last_month timestamp := date_trunc('month', p_to AT TIME ZONE 'UTC');
  part text;
  made int := 0;
BEGIN
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

CREATE FUNCTION phoenix_drop_read_models(p_suffix text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TABLE IF EXISTS %I, %I, %I, %I',
                 'experiments' || p_suffix, 'experiment_states' || p_suffix,
                 'state_transitions' || p_suffix, 'experiment_state_counts' || p_suffix);
END;
$$;

-- Blue/green: drops the live set and renames every relation of set p_suffix (tables, partitions,
-- indexes and the constraints behind them, sequences) to its live name. Runs inside the caller's
-- transaction, which holds the live projection's checkpoint row and moves it; queries blocked on the
-- dropped tables meanwhile resolve the names again and read the new ones.
CREATE FUNCTION phoenix_swap_read_models(p_suffix text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  r record;
  cmd text;
BEGIN
  IF p_suffix = '' THEN
    RAISE EXCEPTION 'cannot swap the live read models with themselves';
  END IF;
  PERFORM phoenix_drop_read_models('');
  FOR r IN
    SELECT c.relname, c.relkind
      FROM pg_class c
     WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
       AND (starts_with(c.relname, 'experiments' || p_suffix)
            OR starts_with(c.relname, 'experiment_states' || p_suffix)
            OR starts_with(c.relname, 'state_transitions' || p_suffix)
            OR starts_with(c.relname, 'experiment_state_counts' || p_suffix))
     ORDER BY c.relname
  LOOP
    cmd := CASE WHEN r.relkind IN ('i', 'I') THEN 'INDEX' WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END;
    EXECUTE format('ALTER %s %I RENAME TO %I', cmd, r.relname, replace(r.relname, p_suffix, ''));
  END LOOP;
END;
$$;

SELECT phoenix_create_read_models('');
SELECT phoenix_index_read_models('');
SELECT phoenix_ensure_transition_partitions('', now() - interval '1 month', now() + interval '3 months');

-- Issue 20 §3: an experiment's re-judgements (AnalysisRejudged: other criteria applied to its stored
-- evidence, oldest first) are part of GET /api/v1/experiments/{id}, so the experiments read model keeps
-- them in a column of their own (null: none). Tables made from now on (a rebuild's shadow set) get it
-- from phoenix_create_read_models, which now adds it after the tables of 002; the tables that exist get
-- it here; phoenix_apply_read_models (050) writes it.

ALTER FUNCTION phoenix_create_read_models(text) RENAME TO phoenix_create_read_models_002;

CREATE FUNCTION phoenix_create_read_models(p_suffix text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM phoenix_create_read_models_002(p_suffix);
  EXECUTE format('ALTER TABLE %I ADD COLUMN rejudgements jsonb', 'experiments' || p_suffix);
END;
$$;

DO $$
DECLARE
  t record;
BEGIN
  -- every experiments table there is: the live one and any rebuild's shadow (experiments_<suffix>)
  FOR t IN
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
       AND (c.relname = 'experiments' OR c.relname LIKE 'experiments\_%')
       AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'analysis_attempts')
  LOOP
    EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS rejudgements jsonb', t.relname);
  END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION phoenix_apply_read_models(
  p_suffix text,
  p_checkpoint text,       -- null: the caller's own transaction keeps the checkpoint
  p_expected text,
  p_position text,         -- the checkpoint's new position; null leaves it
  p_created jsonb,         -- new rows of experiments<suffix>
  p_changed jsonb,         -- changed rows of experiments<suffix>, each with the version it was folded from
  -- new rows of state_transitions<suffix> and experiment_states<suffix>, a column each (arrays parse
  -- at about half the cost of the same rows as JSON, which matters to a rebuild)
  p_t_experiment_id uuid[],
  p_t_version int[],
  p_t_experiment_name text[],
  p_t_from_state text[],
  p_t_to_state text[],
  p_t_actor text[],
  p_t_reason text[],
  p_t_duration_ms bigint[],
  p_t_correlation_id text[],
  p_t_causation_id text[],
  p_t_event_id text[],
  p_t_event_type text[],
  p_t_position text[],
  p_t_created_at timestamptz[],
  p_counts jsonb,          -- [{ state, delta }] for experiment_state_counts<suffix>
  p_partitions_from timestamptz,  -- months of state_transitions<suffix> to make sure exist (null: none)
  p_partitions_to timestamptz
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  v_stored text;
  v_rows bigint;
  v_want bigint;
  v_ids uuid[];
BEGIN
  IF p_checkpoint IS NOT NULL THEN
    -- Derived data: a crash may lose the last few commits, and the checkpoint with them (commits stay
    -- atomic and in order), so the runner applies them again; not waiting for the WAL flush cuts the lag.
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT cp.position INTO v_stored FROM projection_checkpoints cp WHERE cp.name = p_checkpoint FOR UPDATE;
    IF NOT FOUND THEN
      v_stored := '0';
    END IF;
    IF v_stored IS DISTINCT FROM p_expected THEN
      RETURN v_stored;
    END IF;
  END IF;

  IF p_partitions_from IS NOT NULL THEN
    PERFORM phoenix_ensure_transition_partitions(p_suffix, p_partitions_from, p_partitions_to);
  END IF;

  v_want := jsonb_array_length(p_created);
  IF v_want > 0 THEN
    EXECUTE format($sql$
      INSERT INTO %I (id, name, state, version, spec, created_at, updated_at, started_at, run_started_at,
        run_ends_at, ended_at, status_reason, deployments, analysis, analysis_attempts, state_entered_at, position,
        rejudgements)
      SELECT id, name, state, version, spec, created_at, updated_at, started_at, run_started_at,
             run_ends_at, ended_at, status_reason, deployments, analysis, analysis_attempts, state_entered_at, position,
             rejudgements
        FROM jsonb_to_recordset($1) AS r(id uuid, name text, state text, version int, spec jsonb,
          created_at timestamptz, updated_at timestamptz, started_at timestamptz, run_started_at timestamptz,
          run_ends_at timestamptz, ended_at timestamptz, status_reason text, deployments jsonb, analysis jsonb,
          analysis_attempts int, state_entered_at timestamptz, position text, rejudgements jsonb)
      ON CONFLICT (id) DO NOTHING$sql$, 'experiments' || p_suffix) USING p_created;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows <> v_want THEN
      RAISE EXCEPTION 'experiments%: % of % new rows exist already', p_suffix, v_want - v_rows, v_want
        USING ERRCODE = 'PH409';
    END IF;
  END IF;

  v_want := jsonb_array_length(p_changed);
  IF v_want > 0 THEN
    -- the id list lets the planner reach the rows by primary key whatever it thinks of the table
    v_ids := ARRAY(SELECT (x ->> 'id')::uuid FROM jsonb_array_elements(p_changed) AS x);
    -- the spec never changes after creation: updates leave it out (it is most of the payload)
    EXECUTE format($sql$
      UPDATE %I AS e SET
        state = r.state, version = r.version, updated_at = r.updated_at, started_at = r.started_at,
        run_started_at = r.run_started_at, run_ends_at = r.run_ends_at, ended_at = r.ended_at,
        status_reason = r.status_reason, deployments = r.deployments, analysis = r.analysis,
        analysis_attempts = r.analysis_attempts, state_entered_at = r.state_entered_at, position = r.position,
        rejudgements = r.rejudgements
        FROM jsonb_to_recordset($1) AS r(id uuid, from_version int, state text, version int,
          updated_at timestamptz, started_at timestamptz, run_started_at timestamptz, run_ends_at timestamptz,
          ended_at timestamptz, status_reason text, deployments jsonb, analysis jsonb, analysis_attempts int,
          state_entered_at timestamptz, position text, rejudgements jsonb)
       WHERE e.id = r.id AND e.version = r.from_version AND e.id = ANY ($2)$sql$, 'experiments' || p_suffix)
      USING p_changed, v_ids;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows <> v_want THEN
      RAISE EXCEPTION 'experiments%: % of % rows are not at the version they were folded from',
        p_suffix, v_want - v_rows, v_want
        USING ERRCODE = 'PH409';
    END IF;
  END IF;

  IF cardinality(p_t_experiment_id) > 0 THEN
    EXECUTE format($sql$
      WITH x AS (
        SELECT r.*, jsonb_build_object('eventId', r.event_id, 'type', r.event_type, 'correlationId',
                 r.correlation_id, 'causationId', r.causation_id, 'position', r.position) AS metadata
          FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            AS r(experiment_id, version, experiment_name, from_state, to_state, actor, reason, duration_ms,
                 correlation_id, causation_id, event_id, event_type, position, created_at)
      ),
      history AS (
        INSERT INTO %I (experiment_id, version, state, previous_state, transition_reason, duration_ms,
          metadata, created_at, created_by)
        SELECT experiment_id, version, to_state, from_state, reason, duration_ms, metadata, created_at, actor
          FROM x
      )
      INSERT INTO %I (experiment_id, version, experiment_name, from_state, to_state, actor, reason,
        duration_ms, correlation_id, success, error_message, metadata, created_at)
      SELECT experiment_id, version, experiment_name, from_state, to_state, actor, reason, duration_ms,
             correlation_id, to_state <> 'failed', CASE WHEN to_state = 'failed' THEN reason END, metadata,
             created_at
        FROM x$sql$, 'experiment_states' || p_suffix, 'state_transitions' || p_suffix)
      USING p_t_experiment_id, p_t_version, p_t_experiment_name, p_t_from_state, p_t_to_state, p_t_actor,
            p_t_reason, p_t_duration_ms, p_t_correlation_id, p_t_causation_id, p_t_event_id, p_t_event_type,
            p_t_position, p_t_created_at;
  END IF;

  IF jsonb_array_length(p_counts) > 0 THEN
    EXECUTE format($sql$
      UPDATE %I AS c SET count = c.count + d.delta
        FROM jsonb_to_recordset($1) AS d(state text, delta bigint)
       WHERE c.state = d.state$sql$, 'experiment_state_counts' || p_suffix)
      USING p_counts;
  END IF;

  IF p_checkpoint IS NOT NULL AND p_position IS NOT NULL THEN
    INSERT INTO projection_checkpoints (name, position, updated_at) VALUES (p_checkpoint, p_position, now())
      ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at;
  END IF;
  RETURN p_expected;
END;
$$;

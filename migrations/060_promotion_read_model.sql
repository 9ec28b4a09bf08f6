-- Issue 20 §4: the experiment resource shows its promotion (`promotion` on the experiments row, the
-- Promotion the aggregate folds). Added around the functions as 054 left them rather than by copying
-- them: the new phoenix_create_read_models adds the column to the tables the old one creates, and the
-- new phoenix_apply_read_models writes `promotion` of the rows that carry one after the old one wrote
-- the rest, in the same statement (so in the same transaction, and only when the checkpoint moved).
ALTER FUNCTION phoenix_create_read_models(text) RENAME TO phoenix_create_read_models_054;

CREATE FUNCTION phoenix_create_read_models(p_suffix text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM phoenix_create_read_models_054(p_suffix);
  EXECUTE format('ALTER TABLE %I ADD COLUMN promotion jsonb', 'experiments' || p_suffix);
END;
$$;

ALTER TABLE experiments ADD COLUMN IF NOT EXISTS promotion jsonb;
DO $$
BEGIN
  IF to_regclass('experiments__next') IS NOT NULL THEN
    ALTER TABLE experiments__next ADD COLUMN IF NOT EXISTS promotion jsonb;
  END IF;
END;
$$;

ALTER FUNCTION phoenix_apply_read_models(text, text, text, text, jsonb, jsonb, uuid[], int[], text[], text[],
  text[], text[], text[], bigint[], text[], text[], text[], text[], text[], timestamptz[], jsonb, timestamptz,
  timestamptz) RENAME TO phoenix_apply_read_models_054;

CREATE FUNCTION phoenix_apply_read_models(
  p_suffix text,
  p_checkpoint text,
  p_expected text,
  p_position text,
  p_created jsonb,
  p_changed jsonb,
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
  p_counts jsonb,
  p_partitions_from timestamptz,
  p_partitions_to timestamptz
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  v_stored text;
BEGIN
  v_stored := phoenix_apply_read_models_054(p_suffix, p_checkpoint, p_expected, p_position, p_created,
    p_changed, p_t_experiment_id, p_t_version, p_t_experiment_name, p_t_from_state, p_t_to_state, p_t_actor,
    p_t_reason, p_t_duration_ms, p_t_correlation_id, p_t_causation_id, p_t_event_id, p_t_event_type,
    p_t_position, p_t_created_at, p_counts, p_partitions_from, p_partitions_to);
  IF p_checkpoint IS NOT NULL AND v_stored IS DISTINCT FROM p_expected THEN
    RETURN v_stored;
  END IF;
  -- Only rows with a promotion carry the key (a promotion is never taken away again).
  EXECUTE format($sql$
    UPDATE %I AS e SET promotion = x.value -> 'promotion'
      FROM jsonb_array_elements($1 || $2) AS x
     WHERE x.value ? 'promotion' AND e.id = (x.value ->> 'id')::uuid$sql$, 'experiments' || p_suffix)
    USING p_created, p_changed;
  RETURN v_stored;
END;
$$;

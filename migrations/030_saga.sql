-- The lifecycle saga's durable state, written in the same transaction as its checkpoint (the saga is a
-- checkpointed subscriber like a projection): what it knows of each experiment, the commands it has
-- decided to send (an outbox, relayed to the bus), and its deadlines (timers), so a restart loses none.

CREATE TABLE phoenix_saga_experiments (
  experiment_id text PRIMARY KEY,
  spec jsonb NOT NULL,
  started boolean NOT NULL DEFAULT false,
  run_started_at timestamptz,
  ended boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE phoenix_saga_outbox (
  id bigserial PRIMARY KEY,
  command_id text NOT NULL UNIQUE,
  experiment_id text NOT NULL,
  command jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- A relay that takes a row leases it; a relay that dies leaves it to another after the lease.
  leased_until timestamptz,
  attempts int NOT NULL DEFAULT 0
);

CREATE TABLE phoenix_saga_timers (
  experiment_id text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('deploy-timeout', 'run-end', 'analysis-timeout')),
  due_at timestamptz NOT NULL,
  -- The event that set the deadline: commands a timer sends derive their ids from it.
  cause_id text NOT NULL,
  leased_until timestamptz,
  PRIMARY KEY (experiment_id, kind)
);

CREATE INDEX phoenix_saga_timers_due ON phoenix_saga_timers (due_at);

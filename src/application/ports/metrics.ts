/**
 * What the command service reports, in the words of the use case; an adapter turns it into the
 * exported metrics (phoenix_state_transition_duration_seconds, phoenix_state_lock_contention_total).
 */
export interface CommandMetrics {
  /**
   * A command finished after `seconds`: `from` the status before it (`none` for a new experiment),
   * `to` the status after it; a failed command has `to` `unknown` and `from` what the domain found,
   * `unknown` when it found nothing.
   */
  transition(from: string, to: string, success: boolean, seconds: number): void;
  /** A command lost a race for a stream of `resource` and was retried (or gave up). */
  conflict(resource: 'experiment'): void;
}

/**
 * What the read side reports of itself; an adapter turns it into phoenix_experiments_by_state and
 * phoenix_projection_lag_events / _seconds.
 */
export interface ReadSideMetrics {
  /** How many experiments the read model holds in `state`. */
  experimentsInState(state: string, count: number): void;
  /** How far `projection` is behind the log, in events and in seconds. */
  projectionLag(projection: string, events: number, seconds: number): void;
}

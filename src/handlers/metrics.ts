import client from 'prom-client';
import type { CommandMetrics, ReadSideMetrics } from '../application/ports/metrics.js';

/**
 * Every metric Phoenix exports, on a registry of its own (built by the composition root, never a
 * module singleton). Names follow seed 000 §8.1.
 */
export interface Metrics {
  readonly registry: client.Registry;
  readonly stateTransitionDuration: client.Histogram<'from_state' | 'to_state' | 'success'>;
  readonly experimentsByState: client.Gauge<'state'>;
  readonly lockContention: client.Counter<'resource_type'>;
  readonly projectionLagEvents: client.Gauge<'projection'>;
  readonly projectionLagSeconds: client.Gauge<'projection'>;
  readonly commandDuration: client.Histogram<'route' | 'method' | 'status'>;
  readonly grpcDuration: client.Histogram<'method' | 'code'>;
}

export function createMetrics(options: { collectDefaults?: boolean } = {}): Metrics {
  const registry = new client.Registry();
  if (options.collectDefaults ?? true)
    client.collectDefaultMetrics({ register: registry, prefix: 'phoenix_' });
  const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
  return {
    registry,
    stateTransitionDuration: new client.Histogram({
      name: 'phoenix_state_transition_duration_seconds',
      help: 'Duration of state transitions (the command that made them), by from/to state and outcome',
      labelNames: ['from_state', 'to_state', 'success'],
      buckets: latencyBuckets,
      registers: [registry],
    }),
    experimentsByState: new client.Gauge({
      name: 'phoenix_experiments_by_state',
      help: 'Current distribution of experiments by state (from the read model)',
      labelNames: ['state'],
      registers: [registry],
    }),
    lockContention: new client.Counter({
      name: 'phoenix_state_lock_contention_total',
      help: 'Optimistic concurrency conflicts: a command lost a race and was retried',
      labelNames: ['resource_type'],
      registers: [registry],
    }),
    projectionLagEvents: new client.Gauge({
      name: 'phoenix_projection_lag_events',
      help: 'Events in the log that a projection has not applied yet',
      labelNames: ['projection'],
      registers: [registry],
    }),
    projectionLagSeconds: new client.Gauge({
      name: 'phoenix_projection_lag_seconds',
      help: 'Age of the oldest event a projection has not applied yet',
      labelNames: ['projection'],
      registers: [registry],
    }),
    commandDuration: new client.Histogram({
      name: 'phoenix_http_request_duration_seconds',
      help: 'HTTP request latency by route, method and status',
      labelNames: ['route', 'method', 'status'],
      buckets: latencyBuckets,
      registers: [registry],
    }),
    grpcDuration: new client.Histogram({
      name: 'phoenix_grpc_request_duration_seconds',
      help: 'gRPC call latency by method and status code (a Watch: how long the stream lasted)',
      labelNames: ['method', 'code'],
      buckets: latencyBuckets,
      registers: [registry],
    }),
  };
}

/** The command service's metrics port, recorded on the exported metrics. */
export const readSideMetricsOf = (metrics: Metrics): ReadSideMetrics => ({
  experimentsInState: (state, count) => metrics.experimentsByState.set({ state }, count),
  projectionLag: (projection, events, seconds) => {
    metrics.projectionLagEvents.set({ projection }, events);
    metrics.projectionLagSeconds.set({ projection }, seconds);
  },
});

export const commandMetricsOf = (metrics: Metrics): CommandMetrics => ({
  transition: (from, to, success, seconds) =>
    metrics.stateTransitionDuration.labels(from, to, String(success)).observe(seconds),
  conflict: (resource) => metrics.lockContention.labels(resource).inc(),
});

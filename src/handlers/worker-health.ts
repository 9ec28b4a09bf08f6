/**
 * A standalone worker's health endpoints (`phoenix worker … --health-port`, PHOENIX_WORKER_HEALTH_PORT),
 * for a process manager's probes and a Prometheus scrape:
 *
 * - `GET /healthz`: 200 while the process serves at all (liveness);
 * - `GET /readyz`: 200 when the worker's consumers run and the bus answers a ping within 3 s, else 503
 *   with the reason: `starting` until {@link WorkerHealth.running}, `stopping` after
 *   {@link WorkerHealth.stopping} (while the worker finishes what it holds), `not ready` when the bus
 *   does not answer;
 * - `GET /metrics`: the process's own metrics (prom-client's defaults, prefixed `phoenix_`).
 *
 * A worker has no API: anything else is a 404.
 */
import Fastify from 'fastify';
import type { Logger } from 'pino';
import client from 'prom-client';
import type { Bus } from '../application/ports/bus.js';

export interface WorkerHealthOptions {
  readonly host: string;
  /** 0: any free port (the address is returned). */
  readonly port: number;
  readonly bus: Pick<Bus, 'ping'>;
  readonly logger: Logger;
  /** How long /readyz waits for the bus's answer; default 3 s. */
  readonly pingTimeoutMs?: number;
}

export interface WorkerHealth {
  /** `http://host:port`, as listened on. */
  readonly url: string;
  /** The consumers run: /readyz may answer 200 from now on. */
  running(): void;
  /** From now on /readyz answers 503 (stopping). */
  stopping(): void;
  close(): Promise<void>;
}

const withTimeout = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
};

export async function startWorkerHealth(options: WorkerHealthOptions): Promise<WorkerHealth> {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'phoenix_' });
  const pingTimeoutMs = options.pingTimeoutMs ?? 3_000;
  let state: 'starting' | 'running' | 'stopping' = 'starting';
  // Probes every few seconds would flood the log at info: the app logs nothing of its own.
  const app = Fastify({ logger: false });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    if (state !== 'running') {
      reply.code(503).header('retry-after', '5');
      return { status: state, checks: {} };
    }
    try {
      await withTimeout(options.bus.ping(), pingTimeoutMs, 'the bus');
      return { status: 'ready', checks: { bus: { ok: true } } };
    } catch (err) {
      options.logger.warn({ err, check: 'bus' }, 'readiness check failed');
      reply.code(503).header('retry-after', '5');
      return { status: 'not ready', checks: { bus: { ok: false, error: 'unreachable' } } };
    }
  });
  app.get('/metrics', async (_request, reply) => {
    reply.type(registry.contentType);
    return registry.metrics();
  });
  const url = await app.listen({ host: options.host, port: options.port });
  return {
    url,
    running: () => {
      if (state === 'starting') state = 'running';
    },
    stopping: () => {
      state = 'stopping';
    },
    close: async () => {
      await app.close();
      registry.clear();
    },
  };
}

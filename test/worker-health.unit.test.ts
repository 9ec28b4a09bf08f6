import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { startWorkerHealth, type WorkerHealth } from '../src/handlers/worker-health.js';

/** A standalone worker's /healthz, /readyz and /metrics, with a bus whose ping the test decides. */
describe('worker health endpoints', () => {
  let answer: () => Promise<void> = async () => {};
  const started: WorkerHealth[] = [];
  after(async () => {
    for (const h of started) await h.close();
  });
  const start = async () => {
    const health = await startWorkerHealth({
      host: '127.0.0.1',
      port: 0,
      bus: { ping: () => answer() },
      logger: pino({ level: 'silent' }),
      pingTimeoutMs: 300,
    });
    started.push(health);
    return health;
  };
  const get = async (health: WorkerHealth, path: string) => {
    const res = await fetch(`${health.url}${path}`);
    return { status: res.status, retryAfter: res.headers.get('retry-after'), text: await res.text() };
  };

  it('is live at once, ready only once running and the bus answers, and not ready while stopping', async () => {
    answer = async () => {};
    const health = await start();
    assert.equal((await get(health, '/healthz')).status, 200);
    const starting = await get(health, '/readyz');
    assert.equal(starting.status, 503);
    assert.equal(starting.retryAfter, '5');
    assert.equal(JSON.parse(starting.text).status, 'starting');

    health.running();
    const ready = await get(health, '/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(JSON.parse(ready.text), { status: 'ready', checks: { bus: { ok: true } } });

    health.stopping();
    health.running(); // a late call does not make a stopping worker ready again
    const stopping = await get(health, '/readyz');
    assert.equal(stopping.status, 503);
    assert.equal(JSON.parse(stopping.text).status, 'stopping');
    assert.equal((await get(health, '/healthz')).status, 200, 'still live while it finishes');
  });

  it('is not ready when the bus fails its ping or does not answer in time', async () => {
    const health = await start();
    health.running();
    answer = () => Promise.reject(new Error('the NATS connection is closed'));
    const failing = await get(health, '/readyz');
    assert.equal(failing.status, 503);
    assert.deepEqual(JSON.parse(failing.text), {
      status: 'not ready',
      checks: { bus: { ok: false, error: 'unreachable' } },
    });

    answer = () => new Promise(() => {}); // a bus that never answers
    const hanging = await get(health, '/readyz');
    assert.equal(hanging.status, 503);
    assert.equal(JSON.parse(hanging.text).checks.bus.ok, false);

    answer = async () => {};
    assert.equal((await get(health, '/readyz')).status, 200, 'ready again once the bus answers');
  });

  it('exports the process metrics with the phoenix_ prefix, and nothing else is served', async () => {
    const health = await start();
    const metrics = await get(health, '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.text, /^phoenix_process_cpu_user_seconds_total \d/m);
    assert.match(metrics.text, /^phoenix_nodejs_eventloop_lag_seconds /m);
    assert.equal((await get(health, '/api/v1/experiments')).status, 404);
  });
});

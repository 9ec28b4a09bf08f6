import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type RunningServer, startServer } from './support/server.js';
import { validSpec } from './support/system.js';
import { TcpProxy } from './support/tcp-proxy.js';

/**
 * PostgreSQL goes away under a running server (a proxy in between is cut): commands answer 503 with
 * Retry-After and write nothing, readiness says not ready; when it is back, the server recovers by
 * itself, without a restart.
 */
const base = process.env.DATABASE_URL;

describe('PostgreSQL down mid-flight', {
  skip: base ? undefined : 'DATABASE_URL is not set: no real PostgreSQL to cut off',
}, () => {
  let proxy: TcpProxy;
  let server: RunningServer;
  let operator: string;
  const api = async (method: string, path: string, body?: unknown, token = operator) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(20_000),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
  };

  before(async () => {
    const target = new URL(base!);
    proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
    const port = await proxy.up();
    server = await startServer({}, undefined, {
      rewriteDatabaseUrl: (url) => {
        const u = new URL(url);
        u.hostname = '127.0.0.1';
        u.port = String(port);
        return u.toString();
      },
    });
    operator = await server.token('operator', 'outage');
  });
  after(async () => {
    await proxy?.up().catch(() => undefined);
    await server?.dispose();
    await proxy?.down();
  });

  it('503 with Retry-After while it is down, nothing half-written, and recovery without a restart', async () => {
    const before = await api(
      'POST',
      '/api/v1/experiments',
      validSpec({ name: 'before the outage', durationSeconds: 3600 }),
    );
    assert.equal(before.status, 201, before.text);

    await proxy.down();
    const during = await api(
      'POST',
      '/api/v1/experiments',
      validSpec({ name: 'during the outage' }),
      operator,
    );
    assert.equal(during.status, 503, during.text);
    assert.match(during.headers.get('content-type') ?? '', /problem\+json/);
    assert.ok(Number(during.headers.get('retry-after')) > 0);
    assert.doesNotMatch(during.text, /ECONN|stack|at \//, 'no internals in the body');
    const start = await api('POST', `/api/v1/experiments/${before.json().id}/start`);
    assert.equal(start.status, 503, start.text);
    const read = await api('GET', `/api/v1/experiments/${before.json().id}`);
    assert.equal(read.status, 503, read.text);
    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 503);
    // The adapters report the lost connection in the port's terms (StoreUnavailableError): "unreachable".
    const readiness = (await ready.json()) as { checks: Record<string, { ok: boolean; error?: string }> };
    assert.deepEqual(readiness.checks.database, { ok: false, error: 'unreachable' });
    assert.deepEqual(readiness.checks.eventStore, { ok: false, error: 'unreachable' });

    await proxy.up();
    const deadline = Date.now() + 20_000;
    let after = await api('POST', '/api/v1/experiments', validSpec({ name: 'after the outage' }));
    while (after.status !== 201 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      after = await api('POST', '/api/v1/experiments', validSpec({ name: 'after the outage' }));
    }
    assert.equal(after.status, 201, after.text);
    // The start refused during the outage wrote nothing: the experiment is still pending, at version 1.
    const events = (await api('GET', `/api/v1/experiments/${before.json().id}/events`)).json().items;
    assert.deepEqual(
      events.map((e: { type: string }) => e.type),
      ['ExperimentCreated'],
    );
    let readyAgain = 503;
    while (readyAgain !== 200 && Date.now() < deadline) {
      readyAgain = (await fetch(`${server.url}/readyz`)).status;
      if (readyAgain !== 200) await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(readyAgain, 200);
  });
});

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { craftedToken, startTestSystem, tokenFor, unsignedToken, validSpec } from './support/system.js';

type TestSystem = Awaited<ReturnType<typeof startTestSystem>>;

const isProblem = (res: LightMyRequestResponse, status: number) => {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const body = res.json() as { type: string; title: string; status: number; detail: string };
  assert.equal(body.status, status);
  assert.equal(typeof body.type, 'string');
  assert.equal(typeof body.title, 'string');
  assert.equal(typeof body.detail, 'string');
  return body as typeof body & { errors?: { path: string; message: string }[] };
};

describe('REST API in-process (app.inject)', () => {
  let system: TestSystem;
  let operator: string;
  let viewer: string;
  let admin: string;

  before(async () => {
    system = await startTestSystem();
    operator = await tokenFor(system, 'operator', 'alice');
    viewer = await tokenFor(system, 'viewer', 'victor');
    admin = await tokenFor(system, 'admin', 'ada');
  });
  after(() => system.dispose());

  const create = (body: unknown = validSpec(), headers: Record<string, string> = {}) =>
    system.app.inject({
      method: 'POST',
      url: '/api/v1/experiments',
      headers: { authorization: `Bearer ${operator}`, ...headers },
      payload: body as object,
    });
  const command = (
    id: string,
    verb: 'start' | 'cancel',
    headers: Record<string, string> = {},
    payload?: object,
  ) =>
    system.app.inject({
      method: 'POST',
      url: `/api/v1/experiments/${id}/${verb}`,
      headers: { authorization: `Bearer ${operator}`, ...headers },
      ...(payload ? { payload } : {}),
    });
  const get = (url: string, token = viewer, headers: Record<string, string> = {}) =>
    system.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}`, ...headers } });

  describe('commands', () => {
    it('create → 201 with Location, ETag and { id, state, version, position }', async () => {
      const res = await create();
      assert.equal(res.statusCode, 201, res.body);
      const body = res.json();
      assert.match(body.id, /^[0-9a-f-]{36}$/);
      assert.equal(body.state, 'pending');
      assert.equal(body.version, 1);
      assert.equal(typeof body.position, 'string');
      assert.equal(res.headers.location, `/api/v1/experiments/${body.id}`);
      assert.equal(res.headers.etag, '"1"');
    });

    it('start → 202 initializing; start again → 409 naming the state', async () => {
      const { id } = (await create()).json();
      const started = await command(id, 'start');
      assert.equal(started.statusCode, 202, started.body);
      assert.deepEqual(
        { ...(started.json() as object), position: 'x' },
        { id, state: 'initializing', version: 2, position: 'x' },
      );
      const again = await command(id, 'start');
      const problem = isProblem(again, 409);
      assert.match(problem.detail, /initializing|running|failed/);
    });

    it('cancel with a reason → 202 cancelled; the reason and actor are in the events', async () => {
      const { id } = (await create()).json();
      const res = await command(id, 'cancel', {}, { reason: 'wrong pool' });
      assert.equal(res.statusCode, 202, res.body);
      assert.equal(res.json().state, 'cancelled');
      const events = (await get(`/api/v1/experiments/${id}/events`)).json().items;
      assert.deepEqual(
        events.map((e: { type: string }) => e.type),
        ['ExperimentCreated', 'ExperimentCancelled'],
      );
      assert.equal(events[1].data.reason, 'wrong pool');
      assert.equal(events[1].metadata.actor, 'alice');
      for (const key of ['eventId', 'actor', 'correlationId', 'causationId', 'occurredAt', 'schemaVersion']) {
        assert.ok(key in events[1].metadata, key);
      }
    });

    it('a command on an unknown experiment → 404', async () => {
      isProblem(await command(randomUUID(), 'start'), 404);
    });

    it('If-Match with the current version passes; another → 412; garbage → 400', async () => {
      const { id } = (await create()).json();
      isProblem(await command(id, 'start', { 'if-match': '"7"' }), 412);
      isProblem(await command(id, 'start', { 'if-match': 'seven' }), 400);
      assert.equal((await command(id, 'start', { 'if-match': '"1"' })).statusCode, 202);
    });

    it('Idempotency-Key: a retry returns the first response and writes nothing; another body → 422', async () => {
      const key = `k-${randomUUID()}`;
      const first = await create(validSpec({ name: 'idem' }), { 'idempotency-key': key });
      const second = await create(validSpec({ name: 'idem' }), { 'idempotency-key': key });
      assert.equal(first.statusCode, 201);
      assert.equal(second.statusCode, 201);
      assert.deepEqual(second.json(), first.json());
      const events = (await get(`/api/v1/experiments/${first.json().id}/events`)).json().items;
      assert.equal(events.length, 1);
      isProblem(await create(validSpec({ name: 'something else' }), { 'idempotency-key': key }), 422);
    });

    it('concurrent retries with one Idempotency-Key create one experiment', async () => {
      const key = `k-${randomUUID()}`;
      const results = await Promise.all(
        Array.from({ length: 8 }, () => create(validSpec(), { 'idempotency-key': key })),
      );
      const ids = new Set(results.map((r) => r.json().id));
      assert.equal(ids.size, 1);
      for (const r of results) assert.equal(r.statusCode, 201);
      const events = (await get(`/api/v1/experiments/${[...ids][0]}/events`)).json().items;
      assert.equal(events.length, 1);
    });
  });

  describe('validation → 400 problem+json with errors[]', () => {
    const cases: [string, unknown][] = [
      ['unknown template', validSpec({ candidate: { template: 'process-nope-v1', params: {} } })],
      ['bad regex', validSpec({ criticalProcesses: ['(unclosed'] })],
      ['out-of-range number', validSpec({ durationSeconds: 0 })],
      ['negative k', validSpec({ candidate: { template: 'process-topk-v1', params: { k: -1 } } })],
      ['unknown field', { ...validSpec(), colour: 'blue' }],
      [
        'unknown template param',
        validSpec({ candidate: { template: 'process-topk-v1', params: { kk: 3 } } }),
      ],
      ['missing name', { ...validSpec(), name: undefined }],
      ['hosts out of range', validSpec({ target: { namespace: 'a', nodeSelector: {}, hosts: 100000 } })],
      ['wrong type', validSpec({ durationSeconds: 'ten' })],
      ['body not an object', [1, 2, 3]],
    ];
    for (const [name, body] of cases) {
      it(name, async () => {
        const problem = isProblem(await create(body), 400);
        assert.ok(Array.isArray(problem.errors) && problem.errors.length > 0, JSON.stringify(problem));
        for (const e of problem.errors!) {
          assert.equal(typeof e.path, 'string');
          assert.equal(typeof e.message, 'string');
        }
      });
    }

    it('malformed JSON → 400', async () => {
      const res = await system.app.inject({
        method: 'POST',
        url: '/api/v1/experiments',
        headers: { authorization: `Bearer ${operator}`, 'content-type': 'application/json' },
        payload: '{"name": ',
      });
      isProblem(res, 400);
    });

    it('a path id that is not a UUID → 400', async () => {
      isProblem(await command('not-a-uuid', 'start'), 400);
      isProblem(await get('/api/v1/experiments/123'), 400);
    });

    it('a body over 1 MiB → 413', async () => {
      const res = await create({ ...validSpec(), description: 'x'.repeat(1024 * 1024 + 10) });
      isProblem(res, 413);
    });
  });

  describe('authentication and roles', () => {
    it('no token → 401 with WWW-Authenticate', async () => {
      const res = await system.app.inject({ method: 'GET', url: '/api/v1/templates' });
      isProblem(res, 401);
      assert.match(String(res.headers['www-authenticate']), /^Bearer/);
    });
    const bad: [string, () => Promise<string>][] = [
      ['alg none', async () => unsignedToken({ sub: 'mallory', role: 'admin' })],
      ['another algorithm (HS512)', () => craftedToken({ sub: 'mallory', role: 'admin' }, { alg: 'HS512' })],
      ['a bad signature', () => craftedToken({ sub: 'mallory', role: 'admin' }, { secret: 'x'.repeat(40) })],
      [
        'expired',
        () => craftedToken({ sub: 'alice', role: 'admin', exp: Math.floor(Date.now() / 1000) - 10 }),
      ],
      ['missing sub', () => craftedToken({ role: 'admin' })],
      ['unknown role', () => craftedToken({ sub: 'alice', role: 'root' })],
      ['garbage', async () => 'not.a.token'],
    ];
    for (const [name, token] of bad) {
      it(`${name} → 401`, async () => {
        isProblem(await get('/api/v1/templates', await token()), 401);
      });
    }
    it('viewer POST → 403; operator audit → 403; admin audit → 200', async () => {
      const res = await system.app.inject({
        method: 'POST',
        url: '/api/v1/experiments',
        headers: { authorization: `Bearer ${viewer}` },
        payload: validSpec(),
      });
      isProblem(res, 403);
      isProblem(await get('/api/v1/audit', operator), 403);
      assert.equal((await get('/api/v1/audit', admin)).statusCode, 200);
    });
  });

  describe('queries', () => {
    it('read-your-writes with minPosition: the experiment, its history and the list', async () => {
      const created = (await create(validSpec({ name: 'ryw' }))).json();
      const started = (await command(created.id, 'start')).json();
      const one = await get(`/api/v1/experiments/${created.id}?minPosition=${started.position}`);
      assert.equal(one.statusCode, 200, one.body);
      const view = one.json();
      assert.equal(view.id, created.id);
      assert.equal(view.name, 'ryw');
      assert.ok(view.version >= 2, 'the start is applied (the saga may have moved it on)');
      assert.ok(['initializing', 'running', 'analyzing', 'completed', 'failed'].includes(view.state));
      assert.deepEqual(view.criticalProcesses, ['^postgres$', '^nginx']);
      assert.equal(one.headers.etag, `"${view.version}"`);

      const history = (
        await get(`/api/v1/experiments/${created.id}/history?minPosition=${started.position}`)
      ).json();
      assert.deepEqual(
        history.items
          .slice(0, 2)
          .map((h: { from: string | null; to: string; actor: string }) => [h.from, h.to, h.actor]),
        [
          [null, 'pending', 'alice'],
          ['pending', 'initializing', 'alice'],
        ],
      );
      const list = (await get(`/api/v1/experiments?limit=500&minPosition=${started.position}`)).json();
      assert.ok(list.items.some((e: { id: string }) => e.id === created.id));
    });

    it('lists newest first, pages with a cursor, filters by state; a bad cursor → 400', async () => {
      for (let i = 0; i < 3; i++) await create(validSpec({ name: `page-${i}` }));
      const head = (await system.store.head()) as string;
      const page1 = (await get(`/api/v1/experiments?limit=2&state=pending&minPosition=${head}`)).json();
      assert.equal(page1.items.length, 2);
      assert.ok(page1.nextCursor);
      const page2 = (
        await get(`/api/v1/experiments?limit=2&state=pending&cursor=${encodeURIComponent(page1.nextCursor)}`)
      ).json();
      const ids1 = page1.items.map((e: { id: string }) => e.id);
      for (const e of page2.items) assert.ok(!ids1.includes(e.id));
      for (const e of [...page1.items, ...page2.items]) assert.equal(e.state, 'pending');
      assert.ok(Date.parse(page1.items[0].createdAt) >= Date.parse(page1.items[1].createdAt));
      isProblem(await get('/api/v1/experiments?cursor=garbage'), 400);
      isProblem(await get('/api/v1/experiments?limit=0'), 400);
      isProblem(await get('/api/v1/experiments?state=sleeping'), 400);
    });

    it('minPosition that is not a position → 400; one not reached in time → 503 with Retry-After', async () => {
      isProblem(await get('/api/v1/experiments?minPosition=abc'), 400);
      // The furthest position there can be (both parts at what their columns hold): valid, never reached.
      const far = '18446744073709551615-09223372036854775807';
      const res = await get(`/api/v1/experiments?minPosition=${far}`);
      isProblem(res, 503);
      assert.ok(res.headers['retry-after']);
    });

    it('an unknown experiment → 404 on every query', async () => {
      const id = randomUUID();
      for (const url of [
        `/api/v1/experiments/${id}`,
        `/api/v1/experiments/${id}/history`,
        `/api/v1/experiments/${id}/events`,
        `/api/v1/experiments/${id}/state`,
        `/api/v1/experiments/${id}/config/baseline`,
      ]) {
        isProblem(await get(url), 404);
      }
    });

    it('state at a version and at a time folds the stream up to that point', async () => {
      const { id } = (await create()).json();
      await command(id, 'cancel');
      const v1 = (await get(`/api/v1/experiments/${id}/state?version=1`)).json();
      assert.equal(v1.state, 'pending');
      assert.equal(v1.version, 1);
      const now = (await get(`/api/v1/experiments/${id}/state`)).json();
      assert.equal(now.state, 'cancelled');
      const events = (await get(`/api/v1/experiments/${id}/events`)).json().items;
      const atCreation = (
        await get(`/api/v1/experiments/${id}/state?at=${encodeURIComponent(events[0].metadata.occurredAt)}`)
      ).json();
      assert.equal(atCreation.state, 'pending');
      isProblem(await get(`/api/v1/experiments/${id}/state?version=9`), 404);
      isProblem(await get(`/api/v1/experiments/${id}/state?at=2000-01-01T00:00:00Z`), 404);
      isProblem(await get(`/api/v1/experiments/${id}/state?version=1&at=2000-01-01T00:00:00Z`), 400);
    });

    it('events page by fromVersion and limit', async () => {
      const { id } = (await create()).json();
      await command(id, 'cancel');
      const page = (await get(`/api/v1/experiments/${id}/events?fromVersion=2&limit=1`)).json().items;
      assert.deepEqual(
        page.map((e: { version: number; type: string }) => [e.version, e.type]),
        [[2, 'ExperimentCancelled']],
      );
    });

    it('config of a variant is the rendered collector YAML', async () => {
      const { id } = (await create()).json();
      const res = await get(`/api/v1/experiments/${id}/config/candidate`);
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers['content-type']), /^text\/yaml/);
      assert.match(res.body, /hostmetrics/);
      assert.match(res.body, new RegExp(id));
      isProblem(await get(`/api/v1/experiments/${id}/config/canary`), 400);
    });

    it('templates lists all seven with their parameters', async () => {
      const body = (await get('/api/v1/templates')).json();
      assert.deepEqual(body.items.map((t: { name: string }) => t.name).sort(), [
        'process-adaptive-v1',
        'process-aggregated-v1',
        'process-baseline-v1',
        'process-intelligent-v1',
        'process-minimal-v1',
        'process-priority-filter-v1',
        'process-topk-v1',
      ]);
      for (const t of body.items) assert.ok(Array.isArray(t.params) && typeof t.description === 'string');
    });
  });

  describe('audit', () => {
    it('filters by experiment and actor, pages, and answers CSV', async () => {
      const { id } = (await create(validSpec({ name: 'audited, "quoted"' }))).json();
      const done = (await command(id, 'cancel', {}, { reason: '=cmd|calc' })).json();
      const json = (
        await get(`/api/v1/audit?experimentId=${id}&actor=alice&minPosition=${done.position}`, admin)
      ).json();
      assert.deepEqual(
        json.items.map((i: { from: string | null; to: string; actor: string; experimentName: string }) => [
          i.from,
          i.to,
          i.actor,
          i.experimentName,
        ]),
        [
          [null, 'pending', 'alice', 'audited, "quoted"'],
          ['pending', 'cancelled', 'alice', 'audited, "quoted"'],
        ],
      );
      assert.equal(json.items[1].reason, '=cmd|calc');
      const csv = await get(`/api/v1/audit?experimentId=${id}`, admin, { accept: 'text/csv' });
      assert.equal(csv.statusCode, 200);
      assert.match(String(csv.headers['content-type']), /^text\/csv/);
      const lines = csv.body.trim().split('\r\n');
      assert.equal(lines[0], 'experimentId,experimentName,from,to,actor,reason,at,durationMs,correlationId');
      assert.equal(lines.length, 3);
      assert.match(lines[1]!, /"audited, ""quoted"""/);
      assert.match(lines[2]!, /'=cmd\|calc/);
      isProblem(await get('/api/v1/audit?fromState=bogus', admin), 400);
      isProblem(await get('/api/v1/audit?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z', admin), 400);
    });
  });

  describe('operations', () => {
    it('healthz, readyz and metrics answer without a token', async () => {
      assert.equal((await system.app.inject({ url: '/healthz' })).statusCode, 200);
      const ready = await system.app.inject({ url: '/readyz' });
      assert.equal(ready.statusCode, 200, ready.body);
      const metrics = await system.app.inject({ url: '/metrics' });
      for (const name of [
        'phoenix_state_transition_duration_seconds',
        'phoenix_experiments_by_state',
        'phoenix_projection_lag_events',
        'phoenix_http_request_duration_seconds',
      ]) {
        assert.match(metrics.body, new RegExp(name));
      }
    });
    it('an unknown route → 404 problem', async () => {
      isProblem(await get('/api/v1/nothing-here'), 404);
    });
    it('OpenAPI document is generated from the schemas', async () => {
      const res = await system.app.inject({ url: '/docs/json' });
      assert.equal(res.statusCode, 200);
      const doc = res.json();
      assert.ok(doc.paths['/api/v1/experiments']);
      assert.ok(doc.paths['/api/v1/experiments/{id}/start']);
    });
  });
});

describe('rate limiting per token', () => {
  let system: TestSystem;
  before(async () => {
    system = await startTestSystem({ PHOENIX_RATE_LIMIT_PER_MINUTE: '5' });
  });
  after(() => system.dispose());

  it('the sixth request in a minute → 429 with Retry-After; another token is not affected', async () => {
    const a = await tokenFor(system, 'viewer', 'busy');
    const b = await tokenFor(system, 'viewer', 'calm');
    const statuses: number[] = [];
    let last: LightMyRequestResponse | undefined;
    for (let i = 0; i < 6; i++) {
      last = await system.app.inject({ url: '/api/v1/templates', headers: { authorization: `Bearer ${a}` } });
      statuses.push(last.statusCode);
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429]);
    isProblem(last!, 429);
    assert.ok(Number(last!.headers['retry-after']) > 0);
    assert.equal(
      (await system.app.inject({ url: '/api/v1/templates', headers: { authorization: `Bearer ${b}` } }))
        .statusCode,
      200,
    );
  });
});

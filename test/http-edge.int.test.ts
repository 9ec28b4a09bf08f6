import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import pino from 'pino';
import { z } from 'zod';
import { StoreUnavailableError } from '../src/application/ports/event-store.js';
import { TokenService } from '../src/handlers/auth.js';
import { buildApp } from '../src/handlers/http/app.js';
import type { App, TypedApp } from '../src/handlers/http/typed-app.js';
import { createMetrics } from '../src/handlers/metrics.js';
import { startTestSystem, TEST_SECRET, tokenFor, validSpec } from './support/system.js';

/** The HTTP edge: what every answer carries, whatever route or error it comes from. */

const isProblem = (res: LightMyRequestResponse, status: number) => {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const body = res.json() as { type: string; title: string; status: number; detail: string };
  assert.equal(body.status, status);
  return body as typeof body & { errors?: { path: string; message: string }[] };
};

describe('HTTP edge, the whole API in-process', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let viewer: string;
  let operator: string;
  before(async () => {
    system = await startTestSystem();
    viewer = await tokenFor(system, 'viewer');
    operator = await tokenFor(system, 'operator');
  });
  after(() => system.dispose());

  const call = (method: string, url: string, token?: string, payload?: object) =>
    system.app.inject({
      method: method as 'GET',
      url,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      ...(payload ? { payload } : {}),
    });

  describe('validation problems name the part of the request as a user does', () => {
    // [case, request, the part, one path that must be among errors[], detail]
    const cases: [string, () => Promise<LightMyRequestResponse>, string, string, RegExp][] = [
      [
        'query',
        () => call('GET', '/api/v1/experiments?limit=many', viewer),
        'query',
        'query.limit',
        /^the query is invalid: query\.limit: /,
      ],
      [
        'unknown query field',
        () => call('GET', '/api/v1/experiments?colour=blue', viewer),
        'query',
        'query',
        /^the query is invalid: query: .*colour/,
      ],
      [
        'path',
        () => call('GET', '/api/v1/experiments/not-a-uuid', viewer),
        'path',
        'path.id',
        /^the path is invalid: path\.id: /,
      ],
      [
        'body',
        () => call('POST', '/api/v1/experiments', operator, validSpec({ durationSeconds: 0 })),
        'body',
        'body.durationSeconds',
        /^the body is invalid: body\.durationSeconds: /,
      ],
    ];
    for (const [name, send, part, path, detail] of cases) {
      it(name, async () => {
        const problem = isProblem(await send(), 400);
        assert.match(problem.detail, detail);
        const paths = (problem.errors ?? []).map((e) => e.path);
        assert.ok(paths.includes(path), JSON.stringify(problem));
        for (const p of paths) assert.ok(p === part || p.startsWith(`${part}.`), p);
      });
    }
  });

  describe('an unsupported method on a known route', () => {
    it('is 405 problem+json with Allow, not 404', async () => {
      const id = randomUUID();
      for (const [method, url, allow] of [
        ['DELETE', '/api/v1/experiments', 'GET, HEAD, OPTIONS, POST'],
        ['PUT', `/api/v1/experiments/${id}/start`, 'OPTIONS, POST'],
        ['POST', '/api/v1/templates', 'GET, HEAD, OPTIONS'],
        ['PATCH', `/api/v1/experiments/${id}?x=1`, 'GET, HEAD, OPTIONS'],
      ] as const) {
        const res = await call(method, url, operator);
        const problem = isProblem(res, 405);
        assert.equal(res.headers.allow, allow, `${method} ${url}`);
        assert.match(problem.detail, new RegExp(`^${method} is not allowed`));
      }
    });

    it('OPTIONS answers with the Allow of the path; an unknown path is still 404', async () => {
      const options = await call('OPTIONS', '/api/v1/experiments');
      assert.equal(options.statusCode, 204, options.body);
      assert.equal(options.headers.allow, 'GET, HEAD, OPTIONS, POST');
      isProblem(await call('DELETE', '/api/v1/nothing-here', operator), 404);
      isProblem(await call('GET', `/api/v1/experiments/${randomUUID()}/nothing`, viewer), 404);
    });
  });

  describe('headers on every answer', () => {
    it('nosniff everywhere; no-store on the API and the operational endpoints', async () => {
      const answers = [
        await call('GET', '/api/v1/templates', viewer),
        await call('GET', '/api/v1/templates'), // 401
        await call('POST', '/api/v1/experiments', operator, { name: 1 }), // 400
        await call('DELETE', '/api/v1/templates', viewer), // 405
        await call('GET', '/api/v1/nothing'), // 404
        await call('GET', '/readyz'),
        await call('GET', '/healthz'),
        await call('GET', '/metrics'),
      ];
      for (const res of answers) {
        const what = `${res.statusCode} ${res.body.slice(0, 80)}`;
        assert.equal(res.headers['x-content-type-options'], 'nosniff', what);
        assert.equal(res.headers['cache-control'], 'no-store', what);
      }
    });
  });
});

/** Collects a logger's lines for the test to read. */
function capturedLogger() {
  const lines: string[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    }),
  );
  return { logger, lines };
}

/** The app alone, with a route of each kind of input, fake readiness checks and a small rate limit. */
async function edgeApp(options: {
  corsOrigins?: readonly string[];
  readiness?: Record<string, () => Promise<void>>;
  rateLimitPerMinute?: number;
  logger?: pino.Logger;
}): Promise<App> {
  const routes = (app: TypedApp) => {
    const schema = {
      params: z.object({ id: z.uuid() }),
      headers: z.object({ 'x-colour': z.enum(['red', 'blue']) }),
    };
    app.get('/api/v1/things/:id', { config: { role: 'viewer' }, schema }, async () => ({ ok: true }));
    app.post(
      '/api/v1/things/:id',
      { config: { role: 'operator' }, schema: { ...schema, body: z.strictObject({ n: z.number() }) } },
      async (_request, reply) => reply.code(201).header('etag', '"1"').send({ ok: true }),
    );
  };
  return buildApp({
    logger: options.logger ?? pino({ level: 'silent' }),
    metrics: createMetrics({ collectDefaults: false }),
    tokens: new TokenService(TEST_SECRET),
    readiness: options.readiness ?? {},
    ...(options.rateLimitPerMinute ? { rateLimitPerMinute: options.rateLimitPerMinute } : {}),
    ...(options.corsOrigins ? { corsOrigins: options.corsOrigins } : {}),
    routes: [routes],
  });
}

describe('HTTP edge, the app alone', () => {
  const tokens = new TokenService(TEST_SECRET);
  const thing = `/api/v1/things/${randomUUID()}`;

  it('headers that fail validation are "the headers", at headers.<name>', async () => {
    const app = await edgeApp({});
    const token = await tokens.mint({ sub: 'v', role: 'viewer' }, 3600);
    const res = await app.inject({
      url: thing,
      headers: { authorization: `Bearer ${token}`, 'x-colour': 'green' },
    });
    const problem = isProblem(res, 400);
    assert.match(problem.detail, /^the headers are invalid: headers\.x-colour: /);
    assert.deepEqual(
      problem.errors?.map((e) => e.path),
      ['headers.x-colour'],
    );
    await app.close();
  });

  it('requests without a valid token are rate-limited by address: 429 with Retry-After', async () => {
    const app = await edgeApp({ rateLimitPerMinute: 5 });
    const forged = `${(await tokens.mint({ sub: 'm', role: 'admin' }, 3600)).slice(0, -4)}AAAA`;
    const statuses: number[] = [];
    let last: LightMyRequestResponse | undefined;
    for (let i = 0; i < 6; i++) {
      last = await app.inject({
        url: thing,
        headers: i % 2 ? { authorization: `Bearer ${forged}` } : {}, // bad and missing tokens alike
      });
      statuses.push(last.statusCode);
    }
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429]);
    isProblem(last!, 429);
    assert.ok(Number(last!.headers['retry-after']) > 0);
    // Another address is not affected, nor a valid token from this one (it is counted by subject).
    const elsewhere = await app.inject({ url: thing, remoteAddress: '10.9.8.7' });
    assert.equal(elsewhere.statusCode, 401);
    const valid = await tokens.mint({ sub: 'v', role: 'viewer' }, 3600);
    const served = await app.inject({
      url: thing,
      headers: { authorization: `Bearer ${valid}`, 'x-colour': 'red' },
    });
    assert.equal(served.statusCode, 200, served.body);
    await app.close();
  });

  it('/readyz says which check failed and a generic reason; the detail goes to the log', async () => {
    const { logger, lines } = capturedLogger();
    const secret = 'postgres://phoenix:hunter2@db.internal.example:5432/phoenix';
    const app = await edgeApp({
      logger,
      readiness: {
        database: async () => {
          throw new StoreUnavailableError(
            `database unavailable: connect ECONNREFUSED 10.20.30.40:5432 (${secret})`,
          );
        },
        readModels: async () => {
          throw new Error(`read models are behind; last error from ${secret}`);
        },
        bus: async () => undefined,
        // A driver's own error is not read at the edge: only the port's StoreUnavailableError says "unreachable".
        raw: async () => {
          throw Object.assign(new Error('connect ECONNREFUSED 10.20.30.40:5432'), { code: 'ECONNREFUSED' });
        },
      },
    });
    const res = await app.inject({ url: '/readyz' });
    assert.equal(res.statusCode, 503);
    assert.equal(res.headers['retry-after'], '5');
    assert.deepEqual(res.json(), {
      status: 'not ready',
      checks: {
        database: { ok: false, error: 'unreachable' },
        readModels: { ok: false, error: 'not ready' },
        bus: { ok: true },
        raw: { ok: false, error: 'not ready' },
      },
    });
    assert.doesNotMatch(res.body, /10\.20\.30\.40|hunter2|db\.internal/);
    const log = lines.join('');
    assert.match(log, /10\.20\.30\.40/, 'the detail is logged');
    assert.match(log, /"check":"readModels"/);
    await app.close();
  });

  it('a header section over the limit is 431 problem+json', async () => {
    const app = await edgeApp({});
    const base = new URL(await app.listen({ host: '127.0.0.1', port: 0 }));
    const answer = await new Promise<{ status: number; type: string; body: string; nosniff: unknown }>(
      (resolve, reject) => {
        const req = httpRequest(
          {
            host: base.hostname,
            port: base.port,
            path: '/api/v1/templates',
            headers: { 'x-big': 'x'.repeat(40_000) },
          },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c) => {
              body += c;
            });
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                type: String(res.headers['content-type']),
                body,
                nosniff: res.headers['x-content-type-options'],
              }),
            );
          },
        );
        req.on('error', reject);
        req.end();
      },
    );
    await app.close();
    assert.equal(answer.status, 431);
    assert.match(answer.type, /^application\/problem\+json/);
    assert.equal(answer.nosniff, 'nosniff');
    const problem = JSON.parse(answer.body);
    assert.equal(problem.status, 431);
    assert.equal(problem.title, 'Request Header Fields Too Large');
    assert.equal(typeof problem.detail, 'string');
    assert.equal(typeof problem.type, 'string');
  });

  describe('CORS: PHOENIX_CORS_ORIGINS names the browser origins; none by default', () => {
    const allowed = 'https://dash.example.com';
    const preflight = (app: App, origin: string) =>
      app.inject({
        method: 'OPTIONS',
        url: thing,
        headers: {
          origin,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization, content-type, idempotency-key',
        },
      });

    it('an allowed origin gets its preflight and may read answers, errors too', async () => {
      const app = await edgeApp({ corsOrigins: [allowed, 'http://localhost:3000'] });
      const pre = await preflight(app, allowed);
      assert.equal(pre.statusCode, 204);
      assert.equal(pre.headers['access-control-allow-origin'], allowed);
      assert.match(String(pre.headers['access-control-allow-methods']), /POST/);
      assert.match(String(pre.headers['access-control-allow-headers']), /authorization/);
      assert.match(String(pre.headers['access-control-allow-headers']), /idempotency-key/);
      assert.equal(pre.headers['access-control-max-age'], '600');
      assert.match(String(pre.headers.vary), /Origin/i);
      assert.equal(pre.headers['access-control-allow-credentials'], undefined);

      const token = await tokens.mint({ sub: 'o', role: 'operator' }, 3600);
      const created = await app.inject({
        method: 'POST',
        url: thing,
        headers: { origin: allowed, authorization: `Bearer ${token}`, 'x-colour': 'red' },
        payload: { n: 1 },
      });
      assert.equal(created.statusCode, 201, created.body);
      assert.equal(created.headers['access-control-allow-origin'], allowed);
      assert.match(String(created.headers['access-control-expose-headers']), /etag/);
      const refused = await app.inject({ url: thing, headers: { origin: allowed } });
      assert.equal(refused.statusCode, 401);
      assert.equal(refused.headers['access-control-allow-origin'], allowed);
      await app.close();
    });

    it('any other origin, and every origin by default, gets no CORS headers (and no 404)', async () => {
      const listed = await edgeApp({ corsOrigins: [allowed] });
      const unset = await edgeApp({});
      for (const [app, origin] of [
        [listed, 'https://evil.example.com'],
        [listed, 'https://dash.example.com.evil.example'],
        [unset, allowed],
      ] as const) {
        const pre = await preflight(app, origin);
        assert.equal(pre.statusCode, 204, pre.body);
        assert.equal(pre.headers['access-control-allow-origin'], undefined, origin);
        const get = await app.inject({ url: thing, headers: { origin } });
        assert.equal(get.headers['access-control-allow-origin'], undefined, origin);
      }
      await listed.close();
      await unset.close();
    });
  });
});

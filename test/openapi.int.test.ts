import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { z } from 'zod';
import { DOCS_PREFIX, OPERATIONS, operationKey, RESPONSE_SCHEMAS } from '../src/handlers/http/openapi.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

type TestSystem = Awaited<ReturnType<typeof startTestSystem>>;
// biome-ignore lint/suspicious/noExplicitAny: the OpenAPI document is walked as the untyped JSON it is
type Json = Record<string, any>;

const root = join(import.meta.dirname, '..');

/** Every route of the app, as `METHOD /path` (fastify's `:param` form), from fastify's own route tree. */
function routesOf(app: TestSystem['app']): { method: string; url: string }[] {
  const lines = app.printRoutes({ commonPrefix: false }).split('\n').filter(Boolean);
  const stack: string[] = [];
  const routes: { method: string; url: string }[] = [];
  for (const line of lines) {
    const m = /^([│ ]*)[├└]── (.*?)(?: \(([^)]*)\))?$/u.exec(line);
    assert.ok(m, `unparsed route line: ${line}`);
    const depth = m[1]!.length / 4;
    stack.length = depth;
    stack.push(m[2]!);
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim())) {
      if (method && method !== 'HEAD') routes.push({ method, url: stack.join('') });
    }
  }
  return routes;
}

const uuid = '7d444840-9dc0-41a1-b4a9-0000000000aa';
const concrete = (path: string) => path.replace('{id}', uuid).replace('{variant}', 'baseline');

describe('OpenAPI document (/docs/json)', () => {
  let system: TestSystem;
  let doc: Json;
  let tokens: Record<'viewer' | 'operator' | 'admin', string>;
  const operations: { path: string; method: string; op: Json }[] = [];

  before(async () => {
    system = await startTestSystem();
    tokens = {
      viewer: await tokenFor(system, 'viewer', 'vera'),
      operator: await tokenFor(system, 'operator', 'otto'),
      admin: await tokenFor(system, 'admin', 'ada'),
    };
    const res = await system.app.inject({ method: 'GET', url: `${DOCS_PREFIX}/json` });
    assert.equal(res.statusCode, 200, res.body);
    doc = res.json();
    for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
      for (const [method, op] of Object.entries(item)) operations.push({ path, method, op });
    }
  });
  after(() => system?.dispose());

  it('documents every route of the app through the operation table, and nothing else', () => {
    const routes = routesOf(system.app).filter(
      (r) => !r.url.startsWith(DOCS_PREFIX) && r.method !== 'OPTIONS',
    );
    const missing = routes
      .map((r) => operationKey(r.method, r.url))
      .filter((k) => OPERATIONS[k] === undefined);
    assert.deepEqual(missing, [], 'routes without an entry in OPERATIONS (src/handlers/http/openapi.ts)');
    const documented = operations.map((o) => operationKey(o.method, o.path)).sort();
    const expected = routes
      .map((r) => operationKey(r.method, r.url))
      .filter((k) => OPERATIONS[k] !== null)
      .sort();
    assert.deepEqual(documented, expected);
    const stale = Object.keys(OPERATIONS).filter(
      (k) => !routes.some((r) => operationKey(r.method, r.url) === k),
    );
    assert.deepEqual(stale, [], 'OPERATIONS entries for routes that do not exist');
    const ids = operations.map((o) => o.op.operationId);
    assert.ok(
      ids.every((id) => typeof id === 'string'),
      'every operation has an operationId',
    );
    assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
    const tags = new Set((doc.tags as Json[]).map((t) => t.name));
    for (const { op } of operations) assert.ok(op.tags?.length === 1 && tags.has(op.tags[0]), op.operationId);
  });

  it('documents every status each operation can answer, with problem+json errors and the contract headers', async () => {
    const problems: string[] = [];
    for (const { path, method, op } of operations) {
      const name = `${method.toUpperCase()} ${path}`;
      const url = concrete(path);
      const probe = (token?: string) =>
        system.app.inject({
          method: method.toUpperCase() as 'GET' | 'POST',
          url,
          ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
        });
      // What the route really does with tokens, found by asking it.
      const authenticated = (await probe()).statusCode === 401;
      const needsMoreThanViewer = authenticated && (await probe(tokens.viewer)).statusCode === 403;
      const needsAdmin = needsMoreThanViewer && (await probe(tokens.operator)).statusCode === 403;
      const role = !authenticated
        ? undefined
        : needsAdmin
          ? 'admin'
          : needsMoreThanViewer
            ? 'operator'
            : 'viewer';
      assert.equal(op['x-required-role'], role, `${name}: x-required-role`);
      assert.deepEqual(
        op.security,
        authenticated ? op.security : [],
        `${name}: no token needed, no security`,
      );
      if (authenticated) assert.ok(op.security.length > 0, `${name}: security`);

      const params = (op.parameters ?? []) as Json[];
      // A POST that answers 200 is a query sent with a body (a template render, a preview): it writes
      // nothing, so none of a command's statuses and headers.
      const isCommand = method === 'post' && op.responses['200'] === undefined;
      const isLive = path === '/api/v1/live';
      const hasId = path.includes('{id}');
      const takesInput =
        params.some((p) => p.in === 'path' || p.in === 'query') || op.requestBody !== undefined;
      const waitsForReadModels = params.some((p) => p.in === 'query' && p.name === 'minPosition');

      const expected = new Set<number>();
      if (authenticated) for (const s of [401, 429]) expected.add(s);
      if (needsMoreThanViewer) expected.add(403);
      if (takesInput) expected.add(400);
      if (isCommand) for (const s of [409, 412, 413, 415, 422, 503]) expected.add(s);
      if (hasId) expected.add(404);
      if (waitsForReadModels) expected.add(503);
      if (hasId && !isCommand) expected.add(503); // reads of the event store: it can be down
      const success = isLive ? 101 : isCommand ? (hasId ? 202 : 201) : 200;
      expected.add(success);

      const documented = new Set(Object.keys(op.responses).map(Number));
      const absent = [...expected].filter((s) => !documented.has(s));
      if (absent.length > 0) problems.push(`${name} does not document ${absent.join(', ')}`);

      const resolve = (r: Json): Json =>
        r.$ref ? doc.components.responses[String(r.$ref).split('/').pop()!] : r;
      for (const [status, raw] of Object.entries(op.responses as Record<string, Json>)) {
        const response = resolve(raw);
        const headers = Object.keys(response.headers ?? {});
        if (Number(status) >= 400 && path.startsWith('/api/')) {
          const schema = response.content?.['application/problem+json']?.schema;
          if (schema?.$ref !== '#/components/schemas/Problem')
            problems.push(`${name} ${status} is not problem+json`);
        }
        if ((status === '429' || status === '503') && !headers.includes('Retry-After'))
          problems.push(`${name} ${status} lacks Retry-After`);
        if (status === '401' && !headers.includes('WWW-Authenticate'))
          problems.push(`${name} 401 lacks WWW-Authenticate`);
      }
      const ok = resolve(op.responses[String(success)] ?? {});
      const okHeaders = Object.keys(ok.headers ?? {});
      if (isCommand && !okHeaders.includes('ETag')) problems.push(`${name} ${success} lacks ETag`);
      if (isCommand && !hasId && !okHeaders.includes('Location')) problems.push(`${name} lacks Location`);
      if (isCommand) {
        const names = params.filter((p) => p.in === 'header').map((p) => String(p.name).toLowerCase());
        for (const h of ['if-match', 'idempotency-key'])
          if (!names.includes(h)) problems.push(`${name} lacks the ${h} header`);
      }
      if (isCommand) {
        // A command whose route accepts no body must not document one as required, and the reverse.
        const bare = await probe(tokens.operator);
        const bodyRequired = bare.statusCode === 400;
        if (Boolean(op.requestBody?.required) !== bodyRequired)
          problems.push(
            `${name}: requestBody.required should be ${bodyRequired} (it answered ${bare.statusCode})`,
          );
      }
    }
    const problem = doc.components.schemas.Problem;
    assert.deepEqual(problem.required?.slice().sort(), ['detail', 'status', 'title', 'type']);
    assert.ok(problem.properties.errors, 'Problem documents errors');
    assert.deepEqual(problems, []);
  });

  it('documents the live feed: its query, 101/400/401, its messages and its close codes', () => {
    const live = doc.paths['/api/v1/live']?.get as Json;
    assert.ok(live, 'GET /api/v1/live is documented');
    const query = (live.parameters as Json[]).filter((p) => p.in === 'query').map((p) => p.name);
    assert.deepEqual(query.sort(), ['experimentId', 'from']);
    assert.ok(
      live.security.some((s: Json) => 'accessToken' in s),
      'the access_token query parameter is a security scheme',
    );
    assert.equal(doc.components.securitySchemes.accessToken.name, 'access_token');
    for (const s of ['101', '400', '401']) assert.ok(live.responses[s], s);
    for (const code of ['4008', '4401', '1001']) assert.match(live.description, new RegExp(`\`${code}\``));
    assert.match(live.description, /"kind": "event"/);
    assert.match(live.description, /"kind": "live", "position"/);
    assert.equal(live['x-websocket-messages'].$ref, '#/components/schemas/LiveMessage');
    const kinds = (doc.components.schemas.LiveMessage.oneOf as Json[]).map((m) => m.properties.kind.enum[0]);
    assert.deepEqual(kinds.sort(), ['event', 'live']);
    const text = JSON.stringify(doc);
    for (const name of Object.keys(doc.components.schemas))
      assert.ok(text.includes(`"#/components/schemas/${name}"`), `component ${name} is referenced`);
  });

  it('says how to get a token, in info.description and the security scheme, and serves /docs', async () => {
    for (const text of [doc.info.description, doc.components.securitySchemes.bearer.description]) {
      assert.match(text, /npx phoenix token --role operator --sub you/);
      assert.match(text, /admin token that `npm start` prints/);
    }
    assert.ok(doc.servers?.length > 0, 'servers');
    const page = await system.app.inject({ method: 'GET', url: `${DOCS_PREFIX}/` });
    assert.equal(page.statusCode, 200);
    assert.match(page.body, /swagger/i);
  });

  it('passes the Redocly linter with redocly.yaml: no errors, no warnings', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'phoenix-openapi-'));
    try {
      const file = join(dir, 'openapi.json');
      writeFileSync(file, JSON.stringify(doc));
      const run = await promisify(execFile)(
        process.execPath,
        [
          join(root, 'node_modules/@redocly/cli/bin/cli.js'),
          'lint',
          file,
          '--config',
          join(root, 'redocly.yaml'),
          '--format',
          'json',
        ],
        // No telemetry, no update check: the linter works offline.
        {
          cwd: root,
          timeout: 120_000,
          env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
        },
      ).catch((err: { stdout?: string; stderr?: string }) => err);
      const report = JSON.parse(String(run.stdout)) as { totals: Json; problems: Json[] };
      assert.deepEqual(
        report.problems.map((p) => `${p.ruleId}: ${p.message} at ${p.location?.[0]?.pointer}`),
        [],
      );
      assert.deepEqual(report.totals, { errors: 0, warnings: 0, ignored: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('describes what the handlers really answer (bodies parse with the documented schemas)', async () => {
    const as = (role: keyof typeof tokens) => ({ authorization: `Bearer ${tokens[role]}` });
    const fits = (schema: z.ZodType, body: unknown, what: string) => {
      const parsed = schema.safeParse(body);
      assert.ok(parsed.success, `${what}: ${parsed.error?.message}`);
      const shape = (schema as unknown as { shape?: Record<string, unknown> }).shape;
      if (shape && body && typeof body === 'object') {
        const undocumented = Object.keys(body).filter((k) => !(k in shape));
        assert.deepEqual(undocumented, [], `${what}: fields the schema does not document`);
      }
    };
    const created = await system.app.inject({
      method: 'POST',
      url: '/api/v1/experiments',
      headers: as('operator'),
      payload: validSpec(),
    });
    assert.equal(created.statusCode, 201, created.body);
    fits(RESPONSE_SCHEMAS.CommandResult, created.json(), 'create');
    const { id, position } = created.json() as { id: string; position: string };
    const started = await system.app.inject({
      method: 'POST',
      url: `/api/v1/experiments/${id}/start`,
      headers: as('operator'),
    });
    assert.equal(started.statusCode, 202, started.body);
    fits(RESPONSE_SCHEMAS.CommandResult, started.json(), 'start');
    const get = async (url: string, role: keyof typeof tokens = 'viewer') => {
      const res = await system.app.inject({ method: 'GET', url, headers: as(role) });
      assert.equal(res.statusCode, 200, `${url}: ${res.body}`);
      return res.json();
    };
    const after = `minPosition=${encodeURIComponent(started.json().position ?? position)}`;
    fits(RESPONSE_SCHEMAS.Experiment, await get(`/api/v1/experiments/${id}?${after}`), 'experiment');
    const page = await get(`/api/v1/experiments?${after}`);
    fits(RESPONSE_SCHEMAS.ExperimentPage, page, 'list');
    for (const item of page.items) fits(RESPONSE_SCHEMAS.Experiment, item, 'list item');
    fits(RESPONSE_SCHEMAS.History, await get(`/api/v1/experiments/${id}/history?${after}`), 'history');
    fits(RESPONSE_SCHEMAS.EventPage, await get(`/api/v1/experiments/${id}/events`), 'events');
    fits(RESPONSE_SCHEMAS.ExperimentState, await get(`/api/v1/experiments/${id}/state`), 'state');
    fits(RESPONSE_SCHEMAS.Templates, await get('/api/v1/templates'), 'templates');
    fits(RESPONSE_SCHEMAS.AuditPage, await get(`/api/v1/audit?${after}`, 'admin'), 'audit');
    fits(RESPONSE_SCHEMAS.Health, (await system.app.inject({ url: '/healthz' })).json(), 'healthz');
    fits(RESPONSE_SCHEMAS.Readiness, (await system.app.inject({ url: '/readyz' })).json(), 'readyz');
    const missing = await system.app.inject({ url: `/api/v1/experiments/${uuid}`, headers: as('viewer') });
    assert.equal(missing.statusCode, 404);
    fits(RESPONSE_SCHEMAS.Problem, missing.json(), 'problem');
  });
});

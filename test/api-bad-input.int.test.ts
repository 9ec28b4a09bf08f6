import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * A generated corpus of malformed requests: every one must be a 4xx problem+json (never a 5xx), and
 * the server must be healthy afterwards. Deterministic (seeded), so a failure names its case.
 */
function* corpus(seed = 42): Generator<{
  name: string;
  method: 'GET' | 'POST';
  url: string;
  payload?: string;
  headers?: Record<string, string>;
}> {
  let s = seed >>> 0;
  const rand = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const junk: unknown[] = [
    null,
    true,
    false,
    0,
    -1,
    1e308,
    -1e308,
    3.5,
    '',
    'x',
    'x'.repeat(5000),
    [],
    [1],
    {},
    { a: 1 },
    '\u0000',
    '💥',
    'NaN',
  ];
  const badRegexes = [
    '(',
    '[a-',
    '*x',
    '(?<=a)b',
    'a{2,1}',
    '\\',
    '(?!x)',
    '[[:alpha:]',
    ')',
    '\\1',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the collector would expand it; that is the point
    '${HOME}',
  ];
  const badUuids = [
    '123',
    'not-a-uuid',
    '00000000-0000-0000-0000-00000000000g',
    '%00',
    'x'.repeat(300),
    '..%2f..%2fetc',
  ];
  const badPositions = [
    'abc',
    '-1',
    '1-2',
    `${'9'.repeat(25)}`,
    '0-0',
    '00000000000000000001',
    "'; drop table x; --",
    'x'.repeat(100),
  ];
  const badCursors = [
    'garbage',
    '!!!',
    'eyJ9',
    Buffer.from('{"not":"ours"}').toString('base64url'),
    'x'.repeat(600),
    '%ff%fe',
  ];
  // Each field with what it must be; a generated value always breaks that (type, presence or strictness).
  const required = ['name', 'baseline', 'candidate', 'target', 'durationSeconds'] as const;
  const kinds: Record<string, 'string' | 'object' | 'number' | 'array'> = {
    name: 'string',
    description: 'string',
    baseline: 'object',
    candidate: 'object',
    target: 'object',
    durationSeconds: 'number',
    criticalProcesses: 'array',
    successCriteria: 'object',
  };
  const kindOf = (v: unknown) => (Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v);
  const wrongFor = (kind: string) => junk.filter((j) => kindOf(j) !== kind);
  const nested: Record<string, Record<string, string>> = {
    baseline: { template: 'string' },
    candidate: { template: 'string' },
    target: { hosts: 'number', namespace: 'string', nodeSelector: 'object' },
    successCriteria: {
      minCardinalityReductionPct: 'number',
      maxCriticalProcessLossPct: 'number',
      maxCollectorCpuOverheadPct: 'number',
    },
  };

  for (let i = 0; i < 300; i++) {
    const body: Record<string, unknown> = validSpec();
    const mode = i % 4;
    let name: string;
    if (mode === 0) {
      const field = pick(Object.keys(kinds));
      body[field] = pick(wrongFor(kinds[field]!));
      name = `wrong type ${field}`;
    } else if (mode === 1) {
      const field = pick(required);
      delete body[field];
      name = `missing ${field}`;
    } else if (mode === 2) {
      body[`unknown_${i}`] = pick(junk);
      name = 'unknown field';
    } else {
      const outer = pick(Object.keys(nested));
      const inner = { ...(body[outer] as Record<string, unknown>) };
      const strict = rand() < 0.3;
      if (strict) {
        inner[`extra_${i}`] = pick(junk);
      } else {
        const key = pick(Object.keys(nested[outer]!));
        inner[key] = pick(wrongFor(nested[outer]![key]!));
      }
      body[outer] = inner;
      name = `nested ${strict ? 'unknown key' : 'wrong type'} in ${outer}`;
    }
    yield {
      name: `create: ${name}`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload: JSON.stringify(body),
    };
  }
  for (const r of badRegexes) {
    yield {
      name: `create: bad regex ${r}`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload: JSON.stringify(validSpec({ criticalProcesses: [r] })),
    };
    yield {
      name: `create: bad regex param ${r}`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload: JSON.stringify(
        validSpec({
          candidate: { template: 'process-priority-filter-v1', params: { priorityPatterns: [r] } },
        }),
      ),
    };
  }
  const templates = [
    'process-baseline-v1',
    'process-topk-v1',
    'process-adaptive-v1',
    'process-minimal-v1',
    'nope',
    '',
    'PROCESS-TOPK-V1',
  ];
  for (let i = 0; i < 100; i++) {
    const template = pick(templates);
    const params: Record<string, unknown> = {
      [pick(['k', 'collectionIntervalSeconds', 'zzz', 'seriesBudgetPct'])]: pick(wrongFor('number')),
    };
    yield {
      name: `create: params ${template} ${JSON.stringify(params).slice(0, 40)}`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload: JSON.stringify(validSpec({ candidate: { template, params } })),
    };
  }
  const badJson = [
    '{',
    '{"name": }',
    '[',
    'null',
    '"string"',
    '42',
    '{"a":1}}',
    '\u0000',
    'not json',
    '{"name":"x",}',
  ];
  for (const payload of badJson)
    yield {
      name: `create: bad JSON ${JSON.stringify(payload)}`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload,
    };
  yield {
    name: 'create: huge body',
    method: 'POST',
    url: '/api/v1/experiments',
    payload: JSON.stringify({ ...validSpec(), name: 'x'.repeat(2 * 1024 * 1024) }),
  };
  yield {
    name: 'create: wrong content type',
    method: 'POST',
    url: '/api/v1/experiments',
    payload: 'name=x',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  };
  for (const id of badUuids) {
    for (const path of ['', '/history', '/events', '/state', '/config/baseline'])
      yield {
        name: `get ${path || 'experiment'} bad id ${id.slice(0, 20)}`,
        method: 'GET',
        url: `/api/v1/experiments/${id}${path}`,
      };
    for (const verb of ['start', 'cancel'])
      yield {
        name: `${verb} bad id ${id.slice(0, 20)}`,
        method: 'POST',
        url: `/api/v1/experiments/${id}/${verb}`,
        payload: '{}',
      };
  }
  for (const p of badPositions) {
    yield {
      name: `list bad minPosition ${p.slice(0, 20)}`,
      method: 'GET',
      url: `/api/v1/experiments?minPosition=${encodeURIComponent(p)}`,
    };
    yield {
      name: `audit bad minPosition ${p.slice(0, 20)}`,
      method: 'GET',
      url: `/api/v1/audit?minPosition=${encodeURIComponent(p)}`,
    };
  }
  for (const c of badCursors) {
    yield {
      name: `list bad cursor ${c.slice(0, 20)}`,
      method: 'GET',
      url: `/api/v1/experiments?cursor=${encodeURIComponent(c)}`,
    };
    yield {
      name: `audit bad cursor ${c.slice(0, 20)}`,
      method: 'GET',
      url: `/api/v1/audit?cursor=${encodeURIComponent(c)}`,
    };
  }
  const badQueries = [
    'limit=0',
    'limit=-5',
    'limit=abc',
    'limit=100000',
    'state=nope',
    'state=',
    'foo=bar',
    'limit=1.5',
    'limit=1e3',
  ];
  for (const q of badQueries) yield { name: `list ${q}`, method: 'GET', url: `/api/v1/experiments?${q}` };
  const badAudit = [
    'since=yesterday',
    'until=2026-13-01T00:00:00Z',
    'fromState=x',
    'toState=done',
    'experimentId=12',
    `actor=${'a'.repeat(300)}`,
    'limit=5000',
    'since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z',
  ];
  for (const q of badAudit)
    yield { name: `audit ${q.slice(0, 40)}`, method: 'GET', url: `/api/v1/audit?${q}` };
  const id = '11111111-1111-4111-8111-111111111111';
  const badEventQueries = [
    'fromVersion=0',
    'fromVersion=-1',
    'fromVersion=x',
    'limit=0',
    'limit=100000',
    'version=0',
    'version=abc',
    'at=not-a-time',
    'at=2026-01-01',
    'version=1&at=2026-01-01T00:00:00Z',
  ];
  for (const q of badEventQueries) {
    yield { name: `events ${q}`, method: 'GET', url: `/api/v1/experiments/${id}/events?${q}` };
    yield { name: `state ${q}`, method: 'GET', url: `/api/v1/experiments/${id}/state?${q}` };
  }
  for (const v of ['canary', 'BASELINE', '', '..', 'baseline.yaml'])
    yield { name: `config variant ${v}`, method: 'GET', url: `/api/v1/experiments/${id}/config/${v}` };
  for (const body of [
    '{"reason": 5}',
    '{"reason": ""}',
    `{"reason": "${'r'.repeat(2000)}"}`,
    '{"why": "x"}',
    '[]',
    '"x"',
  ]) {
    yield {
      name: `cancel body ${body.slice(0, 30)}`,
      method: 'POST',
      url: `/api/v1/experiments/${id}/cancel`,
      payload: body,
    };
  }
  for (const h of ['"x"', 'W/', '"-1"', '"1', '1"', '"99999999999999999999"']) {
    yield {
      name: `If-Match ${h}`,
      method: 'POST',
      url: `/api/v1/experiments/${id}/start`,
      payload: '{}',
      headers: { 'if-match': h },
    };
  }
  for (const k of ['', ' ', 'k'.repeat(300), 'with space', 'tab\tkey']) {
    yield {
      name: `Idempotency-Key ${JSON.stringify(k).slice(0, 20)}`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload: JSON.stringify(validSpec()),
      headers: { 'idempotency-key': k },
    };
  }
}

describe('bad input: a generated corpus of malformed requests', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let admin: string;
  before(async () => {
    system = await startTestSystem({ PHOENIX_RATE_LIMIT_PER_MINUTE: '100000' });
    admin = await tokenFor(system, 'admin', 'fuzzer');
  });
  after(() => system.dispose());

  it('every request is a 4xx problem+json, and the server stays healthy', async () => {
    const cases = [...corpus()];
    console.log(`# corpus: ${cases.length} malformed requests`);
    assert.ok(cases.length >= 500, `corpus has ${cases.length} cases`);
    const failures: string[] = [];
    for (const c of cases) {
      let res: Awaited<ReturnType<typeof system.app.inject>>;
      try {
        res = await system.app.inject({
          method: c.method,
          url: c.url,
          headers: {
            authorization: `Bearer ${admin}`,
            ...(c.payload !== undefined ? { 'content-type': 'application/json' } : {}),
            ...c.headers,
          },
          ...(c.payload !== undefined ? { payload: c.payload } : {}),
        });
      } catch (err) {
        // A header value Node itself refuses to send never reaches the server: not a server answer.
        if (err instanceof TypeError && /header/i.test(err.message)) continue;
        throw err;
      }
      const type = String(res.headers['content-type'] ?? '');
      if (res.statusCode < 400 || res.statusCode >= 500 || !type.startsWith('application/problem+json')) {
        failures.push(`${c.name} → ${res.statusCode} ${type} ${res.body.slice(0, 200)}`);
        continue;
      }
      const body = res.json();
      if (
        body.status !== res.statusCode ||
        typeof body.detail !== 'string' ||
        typeof body.type !== 'string'
      ) {
        failures.push(`${c.name} → not a problem body: ${res.body.slice(0, 200)}`);
      }
    }
    assert.deepEqual(failures, []);
    assert.equal((await system.app.inject({ url: '/healthz' })).statusCode, 200);
    assert.equal((await system.app.inject({ url: '/readyz' })).statusCode, 200);
    const ok = await system.app.inject({
      method: 'POST',
      url: '/api/v1/experiments',
      headers: { authorization: `Bearer ${admin}` },
      payload: validSpec(),
    });
    assert.equal(ok.statusCode, 201, ok.body);
  });
});

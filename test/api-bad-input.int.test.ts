import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { systemTargets } from './support/databases.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * A generated corpus of malformed requests: every one must be a 4xx problem+json (never a 5xx), and
 * the server must be healthy afterwards. Deterministic (seeded), so a failure names its case.
 */
interface BadRequest {
  name: string;
  method: 'GET' | 'POST';
  url: string;
  payload?: string;
  headers?: Record<string, string>;
  /** A 400 whose `errors` name exactly this path (the field the user sent), when given. */
  path?: string;
}

function* corpus(existingId: string, seed = 42): Generator<BadRequest> {
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

  // Text the database cannot hold (NUL, lone surrogates) in every string a user sends: each is a 400
  // naming the field, never a 500 from the database.
  const unholdable: [string, string][] = [
    ['NUL', 'a\u0000b'],
    ['lone high surrogate', 'a\ud800b'],
    ['lone low surrogate', '\udc00'],
  ];
  const spec = validSpec;
  for (const [what, bad] of unholdable) {
    const bodies: [string, Record<string, unknown>][] = [
      ['body.name', spec({ name: bad })],
      ['body.description', spec({ description: bad })],
      ['body.criticalProcesses.1', spec({ criticalProcesses: ['^ok$', bad] })],
      ['body.baseline.template', spec({ baseline: { template: bad, params: {} } })],
      ['body.candidate.params.k', spec({ candidate: { template: 'process-topk-v1', params: { k: bad } } })],
      [
        'body.candidate.params.priorityPatterns.0',
        spec({ candidate: { template: 'process-priority-filter-v1', params: { priorityPatterns: [bad] } } }),
      ],
      [
        'body.candidate.params.criticalProcesses.0',
        spec({ candidate: { template: 'process-topk-v1', params: { criticalProcesses: [bad] } } }),
      ],
      [
        `body.candidate.params.${bad}`,
        spec({ candidate: { template: 'process-topk-v1', params: { [bad]: 1 } } }),
      ],
      ['body.target.namespace', spec({ target: { hosts: 1, namespace: bad } })],
      [`body.target.nodeSelector.${bad}`, spec({ target: { hosts: 1, nodeSelector: { [bad]: 'a' } } })],
      ['body.target.nodeSelector.pool', spec({ target: { hosts: 1, nodeSelector: { pool: bad } } })],
    ];
    for (const [path, body] of bodies)
      yield {
        name: `create: ${what} in ${path}`,
        method: 'POST',
        url: '/api/v1/experiments',
        payload: JSON.stringify(body),
        path,
      };
    yield {
      name: `cancel: ${what} in the reason`,
      method: 'POST',
      url: `/api/v1/experiments/${existingId}/cancel`,
      payload: JSON.stringify({ reason: bad }),
      path: 'body.reason',
    };
    for (const header of ['idempotency-key', 'if-match']) {
      yield {
        name: `create: ${what} in ${header}`,
        method: 'POST',
        url: '/api/v1/experiments',
        payload: JSON.stringify(spec()),
        headers: { [header]: `k${bad}` },
      };
    }
    // A lone surrogate has no UTF-8 form, so it cannot travel in a URL (its bytes arrive as invalid
    // percent-escapes, which the server keeps as the literal text): only the JSON body can carry it.
    if (/[\uD800-\uDFFF]/u.test(bad)) continue;
    const q = encodeURIComponent(bad);
    for (const accept of ['application/json', 'text/csv']) {
      for (const field of ['actor', 'cursor', 'experimentId', 'since'])
        yield {
          name: `audit (${accept}): ${what} in ${field}`,
          method: 'GET',
          url: `/api/v1/audit?${field}=${q}`,
          headers: { accept },
          path: `query.${field}`,
        };
    }
    for (const field of ['cursor', 'minPosition', 'state'])
      yield {
        name: `list: ${what} in ${field}`,
        method: 'GET',
        url: `/api/v1/experiments?${field}=${q}`,
      };
  }
  // Nesting far deeper than any parameter has: JSON.parse survives it, the checks after it must too.
  const deep = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;
  const deepArray = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
  for (const n of [100, 10_000, 100_000]) {
    const spec = JSON.stringify(validSpec());
    yield {
      name: `create: params nested ${n} deep`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload: spec.replace('"params":{"k":20}', `"params":{"k":20,"deep":${deep(n)}}`),
      path: 'body.candidate.params.deep',
    };
    yield {
      name: `create: params array nested ${n} deep`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload: spec.replace('"params":{"k":20}', `"params":{"criticalProcesses":${deepArray(n)}}`),
    };
    for (const field of ['name', 'description', 'criticalProcesses', 'target', 'successCriteria'])
      yield {
        name: `create: ${field} nested ${n} deep`,
        method: 'POST',
        url: '/api/v1/experiments',
        payload: spec.replace(/}$/, `,"${field}":${deep(n)}}`).replace(`"${field}":`, '"_was":'),
      };
    yield {
      name: `create: unknown field nested ${n} deep`,
      method: 'POST',
      url: '/api/v1/experiments',
      payload: spec.replace(/}$/, `,"extra":${deepArray(n)}}`),
    };
    yield {
      name: `cancel: reason nested ${n} deep`,
      method: 'POST',
      url: `/api/v1/experiments/${existingId}/cancel`,
      payload: `{"reason":${deep(n)}}`,
    };
  }
  // Numbers beyond 2^53: refused, never rounded to a neighbour.
  const huge = ['9007199254740993', '-9007199254740993', '1e300', '18446744073709551616'];
  for (const n of huge) {
    const spec = JSON.stringify(validSpec());
    const at = (from: string, to: string) => spec.replace(from, to);
    const numbers: [string, string][] = [
      ['body.candidate.params.k', at('"k":20', `"k":${n}`)],
      [
        'body.candidate.params.memoryThresholdMiB',
        at(
          '"template":"process-topk-v1","params":{"k":20}',
          `"template":"process-adaptive-v1","params":{"memoryThresholdMiB":${n}}`,
        ),
      ],
      ['body.target.hosts', at('"hosts":10', `"hosts":${n}`)],
      ['body.durationSeconds', at('"durationSeconds":600', `"durationSeconds":${n}`)],
      [
        'body.successCriteria.minCardinalityReductionPct',
        at('"minCardinalityReductionPct":50', `"minCardinalityReductionPct":${n}`),
      ],
      [
        'body.successCriteria.maxCollectorCpuOverheadPct',
        at('"maxCollectorCpuOverheadPct":10', `"maxCollectorCpuOverheadPct":${n}`),
      ],
    ];
    for (const [path, payload] of numbers)
      yield { name: `create: ${n} in ${path}`, method: 'POST', url: '/api/v1/experiments', payload, path };
    for (const url of [
      `/api/v1/experiments?limit=${n}`,
      `/api/v1/audit?limit=${n}`,
      `/api/v1/experiments/${existingId}/events?fromVersion=${n}`,
      `/api/v1/experiments/${existingId}/events?limit=${n}`,
      `/api/v1/experiments/${existingId}/state?version=${n}`,
    ])
      yield { name: `get ${url.replace(existingId, '{id}')}`, method: 'GET', url };
  }
  // Hostile positions, cursors and dates.
  for (const p of ['0000000000000000000a-00000000000000000001', '١٢٣', ' 0', '0 ', '+1', '1e3', '0x10'])
    yield {
      name: `list minPosition ${JSON.stringify(p)}`,
      method: 'GET',
      url: `/api/v1/experiments?minPosition=${encodeURIComponent(p)}`,
    };
  const forged = Buffer.from(JSON.stringify(['audit', 'x', '0000-01-01T00:00:00Z', 'x', 1e300])).toString(
    'base64url',
  );
  for (const c of [`${forged}.AAAAAAAAAAAAAAAAAAAAAA`, '.', '..', 'a.b.c', `${'a'.repeat(511)}.`])
    for (const accept of ['application/json', 'text/csv'])
      yield {
        name: `audit (${accept}) cursor ${c.slice(0, 20)}`,
        method: 'GET',
        url: `/api/v1/audit?cursor=${encodeURIComponent(c)}`,
        headers: { accept },
      };
  const dates = [
    '0000-01-01T00:00:00Z',
    '0000-12-31T23:59:59Z',
    '0001-01-01T00:00:00+01:00',
    '9999-12-31T23:59:59-01:00',
    '2026-02-30T00:00:00Z',
    '2026-01-01T24:00:00Z',
  ];
  for (const d of dates)
    for (const field of ['since', 'until'])
      for (const accept of ['application/json', 'text/csv'])
        yield {
          name: `audit (${accept}) ${field}=${d}`,
          method: 'GET',
          url: `/api/v1/audit?${field}=${encodeURIComponent(d)}`,
          headers: { accept },
          path: `query.${field}`,
        };
}

const targets = systemTargets();

for (const target of targets) {
  describe(`bad input: a generated corpus of malformed requests (${target.name})`, {
    skip: target.skip,
    timeout: 900_000,
  }, () => {
    let system: Awaited<ReturnType<typeof startTestSystem>>;
    let drop: () => Promise<void>;
    let admin: string;
    let existingId: string;
    before(async () => {
      const prepared = await target.env();
      drop = prepared.drop;
      system = await startTestSystem({ PHOENIX_RATE_LIMIT_PER_MINUTE: '1000000', ...prepared.env });
      admin = await tokenFor(system, 'admin', 'fuzzer');
      const created = await create();
      assert.equal(created.statusCode, 201, created.body);
      existingId = created.json().id;
    });
    after(async () => {
      await system?.dispose();
      await drop?.();
    });

    const create = () =>
      system.app.inject({
        method: 'POST',
        url: '/api/v1/experiments',
        headers: { authorization: `Bearer ${admin}` },
        payload: validSpec(),
      });
    /** Good requests of every kind the bad one might disturb: writes, a page read, an export. */
    const burst = () => [
      create(),
      create(),
      system.app.inject({
        method: 'GET',
        url: '/api/v1/experiments?limit=5',
        headers: { authorization: `Bearer ${admin}` },
      }),
      system.app.inject({
        method: 'GET',
        url: '/api/v1/audit?limit=5',
        headers: { authorization: `Bearer ${admin}`, accept: 'text/csv' },
      }),
    ];

    it('every request is a 4xx problem+json, each inside a burst of good ones that all succeed', async () => {
      const cases = [...corpus(existingId)];
      console.log(`# corpus: ${cases.length} malformed requests`);
      assert.ok(cases.length >= 500, `corpus has ${cases.length} cases`);
      const failures: string[] = [];
      for (const c of cases) {
        const good = burst();
        let res: Awaited<ReturnType<typeof system.app.inject>> | undefined;
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
          if (!(err instanceof TypeError && /header/i.test(err.message))) {
            failures.push(`${c.name} → no answer: ${String(err)}`);
          }
        }
        for (const g of await Promise.allSettled(good)) {
          if (g.status === 'rejected')
            failures.push(`${c.name}: a good request beside it failed: ${g.reason}`);
          else if (g.value.statusCode >= 300)
            failures.push(`${c.name}: a good request beside it got ${g.value.statusCode} ${g.value.body}`);
        }
        if (!res) continue;
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
        } else if (c.path !== undefined) {
          // The query's problems are under `query.` (older servers said `querystring.`).
          const paths = ((body.errors ?? []) as { path: string }[]).map((e) =>
            e.path.replace(/^querystring\./, 'query.'),
          );
          if (res.statusCode !== 400 || !paths.includes(c.path)) {
            failures.push(`${c.name} → ${res.statusCode} naming ${JSON.stringify(paths)}, not ${c.path}`);
          }
        }
      }
      assert.deepEqual(failures, []);
      assert.equal((await system.app.inject({ url: '/healthz' })).statusCode, 200);
      assert.equal((await system.app.inject({ url: '/readyz' })).statusCode, 200);
      const ok = await create();
      assert.equal(ok.statusCode, 201, ok.body);
    });

    it('a bad critical-process pattern is reported once, at the path the user sent', async () => {
      const res = await system.app.inject({
        method: 'POST',
        url: '/api/v1/experiments',
        headers: { authorization: `Bearer ${admin}` },
        payload: validSpec({ criticalProcesses: ['^ok$', '('] }),
      });
      assert.equal(res.statusCode, 400, res.body);
      const paths = (res.json().errors as { path: string }[]).map((e) => e.path);
      assert.deepEqual(paths, ['body.criticalProcesses.1']);
    });

    it('a CSV export of a bad filter fails before its first byte, as problem+json', async () => {
      for (const q of ['actor=%00', 'since=0000-01-01T00:00:00Z']) {
        const res = await system.app.inject({
          method: 'GET',
          url: `/api/v1/audit?${q}`,
          headers: { authorization: `Bearer ${admin}`, accept: 'text/csv' },
        });
        assert.equal(res.statusCode, 400, res.body);
        assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
      }
    });
  });
}

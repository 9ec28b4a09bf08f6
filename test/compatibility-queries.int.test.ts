import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/** Compatibility queries at the API: kept with the experiment; bad ones are a 400 naming the field. */
describe('compatibility queries at the API', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let operator: string;
  before(async () => {
    system = await startTestSystem();
    operator = await tokenFor(system, 'operator', 'olga');
  });
  after(() => system?.dispose());

  const create = (body: object) =>
    system.app.inject({
      method: 'POST',
      url: '/api/v1/experiments',
      headers: { authorization: `Bearer ${operator}` },
      payload: body,
    });

  it('keeps them with the experiment', async () => {
    const queries = [
      { name: 'cpu-alert', query: 'sum by (k8s_node_name) (rate(process_cpu_time_seconds_total[5m])) > 2' },
      {
        name: 'sshd-up',
        query: 'count(process_memory_usage_bytes{process_executable_name="sshd"})',
        maxDivergencePct: 0,
      },
    ];
    const res = await create(validSpec({ compatibilityQueries: queries }));
    assert.equal(res.statusCode, 201, res.body);
    const { id } = res.json();
    const head = await system.store.head();
    const got = await system.app.inject({
      url: `/api/v1/experiments/${id}?minPosition=${head}`,
      headers: { authorization: `Bearer ${operator}` },
    });
    assert.deepEqual(got.json().compatibilityQueries, queries);
  });

  it('refuses what does not parse, selects nothing or repeats a name: 400 problem+json naming the field', async () => {
    for (const [queries, field, message] of [
      [[{ name: 'a', query: 'sum(rate(x[5m])' }], 'compatibilityQueries.0.query', /not valid PromQL/],
      [[{ name: 'a', query: 'vector(1)' }], 'compatibilityQueries.0.query', /selects no series/],
      [
        [
          { name: 'a', query: 'up' },
          { name: 'a', query: 'up' },
        ],
        'compatibilityQueries.1.name',
        /duplicate/,
      ],
    ] as const) {
      const res = await create(validSpec({ compatibilityQueries: queries }));
      assert.equal(res.statusCode, 400, res.body);
      assert.match(String(res.headers['content-type']), /application\/problem\+json/);
      const errors = JSON.stringify(res.json());
      assert.ok(errors.includes(field), `${field} in ${errors}`);
      assert.match(errors, message);
    }
  });
});

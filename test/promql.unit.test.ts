import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkPromQL, withLabelMatchers } from '../src/application/promql.js';
import { experimentSpecSchema } from '../src/application/schemas.js';

const scope = { experiment_id: 'e-1', variant: 'candidate' };
const S = 'experiment_id="e-1",variant="candidate"';

describe('PromQL compatibility queries', () => {
  it('adds the variant matchers to every vector selector, on the syntax tree', () => {
    const cases: [string, string][] = [
      ['up', `up{${S}}`],
      ['up{}', `up{${S}}`],
      ['up{job="a"}', `up{job="a",${S}}`],
      ['up{job="a",}', `up{job="a",${S}}`],
      ['{__name__=~"process_.+"}', `{__name__=~"process_.+",${S}}`],
      ['sum by (job) (rate(x_total{a="b"}[5m]))', `sum by (job) (rate(x_total{a="b",${S}}[5m]))`],
      ['a / on(job) b offset 5m', `a{${S}} / on(job) b{${S}} offset 5m`],
      ['max_over_time(rate(x[1m])[10m:1m])', `max_over_time(rate(x{${S}}[1m])[10m:1m])`],
      // A string literal that looks like a selector is left alone.
      [
        'label_replace(up, "dst", "x{y}", "src", "(.*)")',
        `label_replace(up{${S}}, "dst", "x{y}", "src", "(.*)")`,
      ],
    ];
    for (const [query, expected] of cases) assert.equal(withLabelMatchers(query, scope), expected, query);
  });

  it('escapes the values it injects', () => {
    assert.equal(withLabelMatchers('up', { variant: 'a"b\\c' }), 'up{variant="a\\"b\\\\c"}');
  });

  it('reports syntax errors with their position, and counts selectors', () => {
    const bad = checkPromQL('sum(rate(x[5m])');
    assert.equal(bad.ok, false);
    assert.match(bad.ok ? '' : bad.message, /syntax error at character/);
    assert.equal(checkPromQL('foo bar').ok, false);
    assert.deepEqual(checkPromQL('vector(1)'), { ok: true, selectors: 0 });
    assert.deepEqual(checkPromQL('a + b'), { ok: true, selectors: 2 });
    assert.throws(() => withLabelMatchers('sum(', scope), /not valid PromQL/);
  });
});

describe('compatibility queries in the create body', () => {
  const body = (compatibilityQueries: unknown) => ({
    name: 'x',
    baseline: { template: 'process-baseline-v1' },
    candidate: { template: 'process-minimal-v1' },
    target: { hosts: 2 },
    durationSeconds: 60,
    compatibilityQueries,
  });
  const issues = (compatibilityQueries: unknown) => {
    const parsed = experimentSpecSchema.safeParse(body(compatibilityQueries));
    return parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('accepts named, parsed queries', () => {
    assert.deepEqual(
      issues([
        { name: 'cpu-alert', query: 'sum(rate(process_cpu_time_seconds_total[5m])) > 4' },
        { name: 'mem', query: 'process_memory_usage_bytes', maxDivergencePct: 10 },
      ]),
      [],
    );
  });

  it('refuses bad PromQL, selector-less queries, duplicate names, too many and too long', () => {
    assert.match(
      issues([{ name: 'a', query: 'sum(rate(x[5m])' }]).join(),
      /compatibilityQueries.0.query: is not valid PromQL: syntax error/,
    );
    assert.match(issues([{ name: 'a', query: 'vector(1)' }]).join(), /selects no series/);
    assert.match(
      issues([
        { name: 'a', query: 'up' },
        { name: 'a', query: 'down' },
      ]).join(),
      /compatibilityQueries.1.name: duplicate query name "a"/,
    );
    assert.match(issues([{ name: 'bad name', query: 'up' }]).join(), /compatibilityQueries.0.name/);
    assert.match(
      issues(Array.from({ length: 21 }, (_, i) => ({ name: `q${i}`, query: 'up' }))).join(),
      /compatibilityQueries/,
    );
    assert.match(
      issues([{ name: 'a', query: `up${' + up'.repeat(400)}` }]).join(),
      /compatibilityQueries.0.query/,
    );
    assert.match(issues([{ name: 'a', query: 'up', extra: 1 }]).join(), /compatibilityQueries.0/);
  });
});

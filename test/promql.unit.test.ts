import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkPromQL, withLabelMatchers } from '../src/application/promql.js';

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

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import {
  dashboardProblems,
  GRAFANA_DIR,
  loadDashboards,
  parsePromql,
  promtoolProblems,
  provisionedDatasources,
  queriesOf,
  structureProblems,
} from './support/grafana.js';

/**
 * The dashboards in deploy/grafana hold together: the queries parse (Prometheus's lezer grammar, and
 * promtool's parser and type checker when Prometheus is installed), the JSON is a dashboard Grafana
 * provisions. The checker itself is tested on bad input first, so that a pass means something.
 * Which metric names the queries may use is checked against a running Phoenix in the .int test.
 */

const DS = { type: 'prometheus', uid: 'phoenix-prometheus' };
const datasources = new Map([['phoenix-prometheus', 'prometheus']]);
const known = new Set(['phoenix_experiment_verdict', 'otelcol_process_cpu_seconds', 'up']);

const dashboardWith = (exprs: string[], extra: Record<string, unknown> = {}) => ({
  uid: 'test-dashboard',
  title: 'Test',
  templating: { list: [{ name: 'experiment', type: 'custom', query: 'a,b' }] },
  panels: [
    {
      id: 1,
      type: 'timeseries',
      title: 'panel',
      datasource: DS,
      gridPos: { x: 0, y: 0, w: 12, h: 8 },
      targets: exprs.map((expr, i) => ({ refId: String.fromCharCode(65 + i), datasource: DS, expr })),
    },
  ],
  ...extra,
});

describe('the dashboard checker', () => {
  it('finds PromQL syntax errors with the lezer grammar', () => {
    assert.deepEqual(parsePromql('sum by (variant) (rate(otelcol_process_cpu_seconds[5m]))').errors, []);
    for (const bad of ['sum(rate(up[5m])', 'up{job=}', 'up +', 'rate(up[5m]) by', ''])
      assert.ok(parsePromql(bad).errors.length > 0, `"${bad}" should not parse`);
  });

  it('collects the metric names, from identifiers and __name__ matchers', () => {
    assert.deepEqual(
      parsePromql(
        'a_total / on (x) group_left b{x="1"} + count({__name__="c", y="2"}) + count({__name__=~"d(_total)?"})',
      ).names,
      [
        { kind: 'name', name: 'a_total' },
        { kind: 'name', name: 'b' },
        { kind: 'name', name: 'c' },
        { kind: 'regex', regex: 'd(_total)?' },
      ],
    );
    // Label names inside matchers and by-clauses are not metric names.
    assert.deepEqual(
      parsePromql('sum by (experiment_id) (phoenix_experiment_verdict{verdict="fail"})').names.map((n) =>
        n.kind === 'name' ? n.name : n.regex,
      ),
      ['phoenix_experiment_verdict'],
    );
  });

  it('reports a bad query, an unknown metric and an unknown variable in a dashboard', () => {
    const problems = dashboardProblems(
      dashboardWith([
        'phoenix_experiment_verdict{experiment_id=~"$experiment"}',
        'sum(rate(otelcol_process_cpu_seconds[$__rate_interval])',
        'phoenix_experiment_nonsense',
        '{__name__=~"otelcol_nothing_.+"}',
        'up{job="$undefined_variable"}',
      ]),
      { datasources, known },
    );
    assert.equal(problems.length, 4, problems.join('\n'));
    assert.match(problems.join('\n'), /B: syntax error/);
    assert.match(problems.join('\n'), /C: unknown metric phoenix_experiment_nonsense/);
    assert.match(problems.join('\n'), /D: __name__=~"otelcol_nothing_\.\+" matches no known metric/);
    assert.match(problems.join('\n'), /E: unknown variable \$undefined_variable/);
  });

  it('reports duplicate panel ids, a datasource not provisioned and a missing uid', () => {
    const d = dashboardWith(['up']);
    const panel = d.panels[0] as Record<string, unknown>;
    const broken = {
      ...d,
      uid: undefined,
      panels: [
        panel,
        { ...panel, title: 'copy', datasource: { type: 'prometheus', uid: 'elsewhere' } },
        { ...panel, id: 3, gridPos: { x: 20, y: 0, w: 12, h: 8 } },
      ],
    };
    const problems = structureProblems(broken, datasources).join('\n');
    assert.match(problems, /uid undefined is not a Grafana uid/);
    assert.match(problems, /id 1 used twice/);
    assert.match(problems, /datasource uid elsewhere is not provisioned/);
    assert.match(problems, /gridPos must be integers within 24 columns/);
  });

  it('finds with promtool what the grammar accepts but Prometheus refuses (a type error)', async (t) => {
    const problems = await promtoolProblems(['rate(up[5m])', 'rate(up)']);
    if (problems === undefined) return t.skip('promtool is not installed (.ci/run installs prometheus)');
    assert.equal(problems.length, 1);
    assert.match(problems[0] as string, /dashboard:query_1|range vector/);
    assert.deepEqual(await promtoolProblems(['rate(up[5m])', 'sum by (job) (up)']), []);
  });
});

describe('the dashboards in deploy/grafana', () => {
  const dashboards = loadDashboards();
  const provisioned = provisionedDatasources();

  it('are the dashboards the seeds list, each with a unique uid', () => {
    assert.deepEqual(dashboards.map((d) => d.json.title).sort(), [
      'Phoenix / A/B Experiment Comparison',
      'Phoenix / Cardinality Tracking',
      'Phoenix / Cost Analysis',
      'Phoenix / Pipeline Performance',
      'Phoenix / System Health',
    ]);
    assert.equal(new Set(dashboards.map((d) => d.json.uid)).size, dashboards.length);
  });

  it('provision one Prometheus data source and a file provider for the dashboards folder', () => {
    assert.deepEqual([...provisioned], [['phoenix-prometheus', 'prometheus']]);
    const providers = parseYaml(
      readFileSync(join(GRAFANA_DIR, 'provisioning', 'dashboards', 'phoenix.yaml'), 'utf8'),
    ).providers;
    assert.equal(providers.length, 1);
    assert.equal(providers[0].type, 'file');
    assert.equal(providers[0].options.path, '/var/lib/grafana/dashboards/phoenix');
  });

  for (const { file, json } of dashboards) {
    it(`${file}: structure, variables and PromQL syntax`, () => {
      const problems = structureProblems(json, provisioned);
      const queries = queriesOf(json, problems);
      assert.ok(queries.length >= 5, `${file} has ${queries.length} queries`);
      for (const q of queries) for (const e of parsePromql(q.expr).errors) problems.push(`${q.where}: ${e}`);
      assert.deepEqual(problems, []);
    });
  }

  it("every query passes Prometheus's own parser and type checker (promtool)", async (t) => {
    const queries = dashboards.flatMap(({ file, json }) => queriesOf(json, []).map((q) => ({ file, ...q })));
    const problems = await promtoolProblems(queries.map((q) => q.expr));
    if (problems === undefined) return t.skip('promtool is not installed (.ci/run installs prometheus)');
    const byIndex = problems.join('\n').replace(/dashboard:query_(\d+)/g, (_, i) => {
      const q = queries[Number(i)];
      return q ? `${q.file} ${q.where}` : `query ${i}`;
    });
    assert.deepEqual(problems, [], byIndex);
  });
});

import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parser } from '@prometheus-io/lezer-promql';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';

/**
 * Checks of the Grafana dashboards in deploy/grafana: every query parses as PromQL (Prometheus's own
 * lezer grammar, and `promtool check rules` where Prometheus is installed, which also type-checks),
 * names only metrics someone exports, and the JSON holds together (unique panel ids and dashboard
 * uids, data sources that provisioning declares, template variables that are defined).
 */

export const GRAFANA_DIR = join(import.meta.dirname, '..', '..', 'deploy', 'grafana');
export const DASHBOARDS_DIR = join(GRAFANA_DIR, 'dashboards');
export const DATASOURCES_FILE = join(GRAFANA_DIR, 'provisioning', 'datasources', 'prometheus.yaml');

// biome-ignore lint/suspicious/noExplicitAny: dashboards are JSON as Grafana writes it
type Json = any;

export interface Dashboard {
  readonly file: string;
  readonly json: Json;
}

/** A PromQL expression found in a dashboard, where, and as Grafana would send it (variables expanded). */
export interface Query {
  readonly where: string;
  readonly raw: string;
  readonly expr: string;
}

export const loadDashboards = (dir = DASHBOARDS_DIR): Dashboard[] =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, json: JSON.parse(readFileSync(join(dir, file), 'utf8')) }));

/** The data source uids provisioning declares. */
export const provisionedDatasources = (file = DATASOURCES_FILE): Map<string, string> => {
  const doc = parseYaml(readFileSync(file, 'utf8')) as { datasources?: { uid?: string; type?: string }[] };
  return new Map((doc.datasources ?? []).map((d) => [String(d.uid), String(d.type)]));
};

/** Every panel, rows' collapsed children included. */
const panelsOf = (dashboard: Json): Json[] =>
  (dashboard.panels ?? []).flatMap((p: Json) => [p, ...(p.panels ?? [])]);

/** Grafana's interval variables stand for a duration; the others for a value in a label matcher. */
const BUILTIN_DURATIONS = ['__rate_interval', '__interval', '__range'];

/**
 * The expression as Grafana sends it: `$__rate_interval` and friends become a duration, a dashboard
 * variable a plain value (valid inside a string or as an identifier). An unknown variable is a problem.
 */
export const expandVariables = (
  expr: string,
  variables: ReadonlySet<string>,
  problems: string[],
  values: Readonly<Record<string, string>> = {},
): string =>
  expr.replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]/g, (_m, a?: string, b?: string, c?: string) => {
    const name = (a ?? b ?? c) as string;
    if (BUILTIN_DURATIONS.includes(name)) return '5m';
    if (!variables.has(name)) problems.push(`unknown variable $${name}`);
    return values[name] ?? 'x';
  });

/** The queries of one dashboard: its panels' targets and its query variables. */
export const queriesOf = (
  dashboard: Json,
  problems: string[],
  values: Readonly<Record<string, string>> = {},
): Query[] => {
  const variables = new Set<string>((dashboard.templating?.list ?? []).map((v: Json) => String(v.name)));
  const out: Query[] = [];
  const add = (where: string, raw: string) => {
    const local: string[] = [];
    const expr = expandVariables(raw, variables, local, values);
    for (const p of local) problems.push(`${where}: ${p}`);
    out.push({ where, raw, expr });
  };
  for (const panel of panelsOf(dashboard)) {
    for (const target of panel.targets ?? [])
      add(`panel ${panel.id} "${panel.title}" ${target.refId}`, target.expr);
  }
  for (const v of dashboard.templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const q: string = typeof v.query === 'string' ? v.query : v.query?.query;
    // label_values(selector, label) and query_result(expr) are Grafana's; what is inside is PromQL.
    const m = /^\s*(?:label_values\((.*),\s*\w+\s*\)|query_result\((.*)\))\s*$/s.exec(q ?? '');
    add(`variable $${v.name}`, m ? (m[1] ?? m[2] ?? '') : (q ?? ''));
  }
  return out;
};

/** A metric name (or `__name__` matcher) an expression selects. */
export type NameRef =
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: 'regex'; readonly regex: string };

const unquote = (literal: string): string => {
  if (literal.startsWith('`')) return literal.slice(1, -1);
  return JSON.parse(literal.startsWith("'") ? `"${literal.slice(1, -1).replace(/"/g, '\\"')}"` : literal);
};

/** Parses with Prometheus's lezer grammar: syntax errors, and the metric names selected. */
export const parsePromql = (expr: string): { errors: string[]; names: NameRef[] } => {
  const errors: string[] = [];
  const names: NameRef[] = [];
  if (expr.trim() === '') return { errors: ['empty expression'], names };
  const tree = parser.parse(expr);
  tree.iterate({
    enter: (node) => {
      if (node.type.isError) {
        errors.push(
          `syntax error at ${node.from}: …${expr.slice(Math.max(0, node.from - 20), node.from + 20)}…`,
        );
        return;
      }
      if (node.name === 'VectorSelector') {
        const id = node.node.getChild('Identifier');
        if (id) names.push({ kind: 'name', name: expr.slice(id.from, id.to) });
        return;
      }
      if (node.name === 'UnquotedLabelMatcher' || node.name === 'QuotedLabelMatcher') {
        const label = node.node.getChild('LabelName') ?? node.node.getChild('QuotedLabelName');
        const op = node.node.getChild('MatchOp')?.firstChild;
        const value = node.node.getChild('StringLiteral');
        if (!label || !op || !value) return;
        if (expr.slice(label.from, label.to).replace(/"/g, '') !== '__name__') return;
        const text = unquote(expr.slice(value.from, value.to));
        if (op.name === 'EqlSingle') names.push({ kind: 'name', name: text });
        else if (op.name === 'EqlRegex') names.push({ kind: 'regex', regex: text });
        else
          errors.push(
            `a negative __name__ matcher (${expr.slice(node.from, node.to)}) selects unknown metrics`,
          );
      }
    },
  });
  return { errors, names };
};

/** Problems with the names: a plain name must be known; a regex must match (anchored) a known name. */
export const unknownNames = (refs: readonly NameRef[], known: ReadonlySet<string>): string[] =>
  refs.flatMap((ref) => {
    if (ref.kind === 'name') return known.has(ref.name) ? [] : [`unknown metric ${ref.name}`];
    const re = new RegExp(`^(?:${ref.regex})$`);
    return [...known].some((n) => re.test(n)) ? [] : [`__name__=~"${ref.regex}" matches no known metric`];
  });

/** Structure: uids, unique panel ids, grid positions, data sources provisioning declares. */
export const structureProblems = (dashboard: Json, datasources: ReadonlyMap<string, string>): string[] => {
  const problems: string[] = [];
  if (typeof dashboard.uid !== 'string' || !/^[a-zA-Z0-9_-]{1,40}$/.test(dashboard.uid))
    problems.push(`uid ${JSON.stringify(dashboard.uid)} is not a Grafana uid (at most 40 of [a-zA-Z0-9_-])`);
  if (typeof dashboard.title !== 'string' || dashboard.title === '') problems.push('no title');
  if (dashboard.id !== undefined && dashboard.id !== null)
    problems.push('a provisioned dashboard has no numeric id');
  const checkDatasource = (where: string, ds: Json) => {
    if (!ds || typeof ds !== 'object') return problems.push(`${where}: no datasource`);
    if (!datasources.has(ds.uid))
      return problems.push(`${where}: datasource uid ${ds.uid} is not provisioned`);
    if (ds.type !== datasources.get(ds.uid))
      problems.push(`${where}: datasource type ${ds.type}, provisioned as ${datasources.get(ds.uid)}`);
    return undefined;
  };
  const ids = new Set<number>();
  for (const panel of panelsOf(dashboard)) {
    const where = `panel ${panel.id} "${panel.title}"`;
    if (!Number.isInteger(panel.id)) problems.push(`${where}: no integer id`);
    else if (ids.has(panel.id)) problems.push(`${where}: id ${panel.id} used twice`);
    ids.add(panel.id);
    const g = panel.gridPos;
    if (!g || ![g.x, g.y, g.w, g.h].every(Number.isInteger) || g.x + g.w > 24)
      problems.push(`${where}: gridPos must be integers within 24 columns`);
    if (panel.type === 'row') continue;
    const targets: Json[] = panel.targets ?? [];
    if (targets.length === 0 && panel.type !== 'text') problems.push(`${where}: no queries`);
    if (targets.length > 0) checkDatasource(where, panel.datasource);
    const refIds = new Set<string>();
    for (const t of targets) {
      if (typeof t.refId !== 'string' || refIds.has(t.refId))
        problems.push(`${where}: refId ${t.refId} missing or repeated`);
      refIds.add(t.refId);
      checkDatasource(`${where} ${t.refId}`, t.datasource);
      if (typeof t.expr !== 'string') problems.push(`${where} ${t.refId}: no expr`);
    }
  }
  for (const v of dashboard.templating?.list ?? []) {
    if (v.type === 'query') checkDatasource(`variable $${v.name}`, v.datasource);
  }
  return problems;
};

/** Everything wrong with one dashboard (empty when it is fine). */
export const dashboardProblems = (
  dashboard: Json,
  options: { datasources: ReadonlyMap<string, string>; known: ReadonlySet<string> },
): string[] => {
  const problems = structureProblems(dashboard, options.datasources);
  for (const q of queriesOf(dashboard, problems)) {
    const { errors, names } = parsePromql(q.expr);
    for (const e of [...errors, ...unknownNames(names, options.known)])
      problems.push(`${q.where}: ${e} in ${q.raw}`);
  }
  return problems;
};

const run = promisify(execFile);

/**
 * Prometheus's own parser and type checker over the expressions, through `promtool check rules` (each
 * expression a recording rule); undefined when promtool is not installed. Returns promtool's complaints.
 */
export const promtoolProblems = async (exprs: readonly string[]): Promise<string[] | undefined> => {
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-promtool-'));
  try {
    const file = join(dir, 'rules.yaml');
    const rules = exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr }));
    writeFileSync(file, stringifyYaml({ groups: [{ name: 'dashboards', rules }] }));
    try {
      await run('promtool', ['check', 'rules', file], { timeout: 60_000 });
      return [];
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
      if (e.code === 'ENOENT') return undefined;
      return [`${e.stdout ?? ''}${e.stderr ?? ''}`.trim()];
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

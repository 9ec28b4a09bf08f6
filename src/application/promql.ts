import { parser } from '@prometheus-io/lezer-promql';

/**
 * PromQL as Prometheus's own grammar reads it (@prometheus-io/lezer-promql, the parser of
 * Prometheus's UI): checking a user's query and scoping it to one variant of an experiment by adding
 * label matchers to every vector selector — on the syntax tree, never with a regular expression over
 * the text (a regex cannot tell a selector from a string literal, a label in `by (…)` or a comment).
 */

export type PromQLCheck =
  | { readonly ok: true; readonly selectors: number }
  | { readonly ok: false; readonly message: string };

/** Parses a query: ok with its number of vector selectors, or the first syntax error's position. */
export const checkPromQL = (query: string): PromQLCheck => {
  const tree = parser.parse(query);
  let error: number | undefined;
  let selectors = 0;
  tree.iterate({
    enter: (node) => {
      if (node.type.isError && error === undefined) error = node.from;
      if (node.name === 'VectorSelector') selectors++;
    },
  });
  if (error !== undefined) {
    const near = query.slice(error, error + 20);
    return {
      ok: false,
      message: `is not valid PromQL: syntax error at character ${error + 1}${near ? ` (near ${JSON.stringify(near)})` : ' (unexpected end)'}`,
    };
  }
  return { ok: true, selectors };
};

/** A PromQL string literal (double-quoted). */
const promString = (value: string): string =>
  `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;

/**
 * The query with `labels` as equality matchers added to every vector selector (matrix selectors and
 * subqueries hold vector selectors, so they are scoped too). Throws on a query that does not parse
 * (the create body's schema refuses those first). Label names must be plain identifiers.
 */
export const withLabelMatchers = (query: string, labels: Readonly<Record<string, string>>): string => {
  const check = checkPromQL(query);
  if (!check.ok) throw new Error(`query ${check.message}`);
  const matchers = Object.entries(labels)
    .map(([name, value]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`not a label name: ${name}`);
      return `${name}=${promString(value)}`;
    })
    .join(',');
  const edits: { at: number; text: string }[] = [];
  parser.parse(query).iterate({
    enter: (node) => {
      if (node.name !== 'VectorSelector') return;
      const braces = node.node.getChild('LabelMatchers');
      if (braces === null) {
        edits.push({ at: node.to, text: `{${matchers}}` });
        return;
      }
      // Before the closing brace: after the metric name given inside the braces (`{"a.b"}`), and after a
      // trailing comma, which PromQL allows.
      const inside = query.slice(braces.from + 1, braces.to - 1).trim();
      const comma = inside === '' || inside.endsWith(',') ? '' : ',';
      edits.push({ at: braces.to - 1, text: `${comma}${matchers}` });
    },
  });
  let out = query;
  for (const e of edits.sort((a, b) => b.at - a.at)) out = out.slice(0, e.at) + e.text + out.slice(e.at);
  return out;
};

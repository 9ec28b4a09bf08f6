/**
 * A parser for the part of OTTL (the OpenTelemetry Transformation Language) that Phoenix renders and
 * checks: boolean conditions (filter processor) and `editor(...) where condition` statements (transform
 * processor). The operator does not validate collector configs, so a malformed statement would only show
 * up as a crash-looping DaemonSet; parsing here turns it into a 400 before anything is deployed. The same
 * AST drives the local data plane's emulator, so what is checked is what is run.
 */

export type OttlValue =
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'number'; readonly value: number; readonly isInt: boolean }
  | { readonly kind: 'bool'; readonly value: boolean }
  | { readonly kind: 'nil' }
  | { readonly kind: 'enum'; readonly name: string }
  | { readonly kind: 'path'; readonly segments: readonly string[]; readonly keys: readonly string[] }
  | { readonly kind: 'call'; readonly name: string; readonly args: readonly OttlValue[] }
  | { readonly kind: 'list'; readonly items: readonly OttlValue[] };

export type CompareOp = '==' | '!=' | '<' | '<=' | '>' | '>=';

export type OttlCondition =
  | { readonly kind: 'or'; readonly left: OttlCondition; readonly right: OttlCondition }
  | { readonly kind: 'and'; readonly left: OttlCondition; readonly right: OttlCondition }
  | { readonly kind: 'not'; readonly operand: OttlCondition }
  | { readonly kind: 'compare'; readonly op: CompareOp; readonly left: OttlValue; readonly right: OttlValue }
  | { readonly kind: 'value'; readonly value: OttlValue };

export interface OttlStatement {
  readonly editor: { readonly name: string; readonly args: readonly OttlValue[] };
  readonly where?: OttlCondition;
}

export class OttlSyntaxError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} at offset ${offset}`);
    this.name = 'OttlSyntaxError';
  }
}

type Token =
  | { readonly t: 'str'; readonly v: string; readonly at: number }
  | { readonly t: 'num'; readonly v: number; readonly isInt: boolean; readonly at: number }
  | { readonly t: 'id'; readonly v: string; readonly at: number }
  | { readonly t: 'op'; readonly v: string; readonly at: number }
  | { readonly t: 'end'; readonly at: number };

const tokenize = (src: string): Token[] => {
  const tokens: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const ch = src[i] as string;
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    const at = i;
    if (ch === '"') {
      let value = '';
      i++;
      for (;;) {
        if (i >= src.length) throw new OttlSyntaxError('unterminated string literal', at);
        const c = src[i] as string;
        if (c === '\\') {
          const next = src[i + 1];
          if (next === '"' || next === '\\') value += next;
          else if (next === 'n') value += '\n';
          else if (next === 't') value += '\t';
          else if (next === 'r') value += '\r';
          else throw new OttlSyntaxError(`invalid escape "\\${next ?? ''}" in string literal`, i);
          i += 2;
          continue;
        }
        if (c === '"') {
          i++;
          break;
        }
        value += c;
        i++;
      }
      tokens.push({ t: 'str', v: value, at });
      continue;
    }
    const num = /^-?\d+(\.\d+)?([eE][-+]?\d+)?/.exec(src.slice(i));
    if (num && (ch !== '-' || !/[\w)\]]$/.test(src.slice(0, i).trimEnd()))) {
      tokens.push({ t: 'num', v: Number(num[0]), isInt: num[1] === undefined && num[2] === undefined, at });
      i += num[0].length;
      continue;
    }
    const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i));
    if (id) {
      tokens.push({ t: 'id', v: id[0], at });
      i += id[0].length;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === '==' || two === '!=' || two === '<=' || two === '>=') {
      tokens.push({ t: 'op', v: two, at });
      i += 2;
      continue;
    }
    if ('()[],.<>'.includes(ch)) {
      tokens.push({ t: 'op', v: ch, at });
      i++;
      continue;
    }
    if ('+-*/'.includes(ch)) throw new OttlSyntaxError('math expressions are not supported', at);
    throw new OttlSyntaxError(`unexpected character "${ch}"`, at);
  }
  tokens.push({ t: 'end', at: src.length });
  return tokens;
};

const KEYWORDS = new Set(['and', 'or', 'not', 'where', 'true', 'false', 'nil']);

class Parser {
  private pos = 0;
  constructor(private readonly tokens: Token[]) {}

  private peek(): Token {
    return this.tokens[this.pos] as Token;
  }

  private next(): Token {
    const t = this.peek();
    if (t.t !== 'end') this.pos++;
    return t;
  }

  private isOp(v: string): boolean {
    const t = this.peek();
    return t.t === 'op' && t.v === v;
  }

  private isWord(v: string): boolean {
    const t = this.peek();
    return t.t === 'id' && t.v === v;
  }

  private expectOp(v: string): void {
    const t = this.next();
    if (t.t !== 'op' || t.v !== v) throw new OttlSyntaxError(`expected "${v}"`, t.at);
  }

  expectEnd(): void {
    const t = this.peek();
    if (t.t !== 'end') throw new OttlSyntaxError('unexpected trailing input', t.at);
  }

  statement(): OttlStatement {
    const t = this.next();
    if (t.t !== 'id' || KEYWORDS.has(t.v))
      throw new OttlSyntaxError('a statement starts with an editor name', t.at);
    if (!/^[a-z]/.test(t.v))
      throw new OttlSyntaxError(`editor "${t.v}" must start with a lowercase letter`, t.at);
    const args = this.args();
    if (this.isWord('where')) {
      this.next();
      return { editor: { name: t.v, args }, where: this.condition() };
    }
    return { editor: { name: t.v, args } };
  }

  condition(): OttlCondition {
    let left = this.term();
    while (this.isWord('or')) {
      this.next();
      left = { kind: 'or', left, right: this.term() };
    }
    return left;
  }

  private term(): OttlCondition {
    let left = this.booleanValue();
    while (this.isWord('and')) {
      this.next();
      left = { kind: 'and', left, right: this.booleanValue() };
    }
    return left;
  }

  private booleanValue(): OttlCondition {
    if (this.isWord('not')) {
      this.next();
      return { kind: 'not', operand: this.booleanValue() };
    }
    if (this.isOp('(')) {
      this.next();
      const inner = this.condition();
      this.expectOp(')');
      return inner;
    }
    const at = this.peek().at;
    const left = this.value();
    const t = this.peek();
    if (t.t === 'op' && ['==', '!=', '<', '<=', '>', '>='].includes(t.v)) {
      this.next();
      return { kind: 'compare', op: t.v as CompareOp, left, right: this.value() };
    }
    if (left.kind === 'bool' || (left.kind === 'call' && /^[A-Z]/.test(left.name)))
      return { kind: 'value', value: left };
    throw new OttlSyntaxError('expected a comparison, a boolean or a converter call', at);
  }

  private value(): OttlValue {
    const t = this.next();
    if (t.t === 'str') return { kind: 'string', value: t.v };
    if (t.t === 'num') return { kind: 'number', value: t.v, isInt: t.isInt };
    if (t.t === 'op' && t.v === '[') {
      const items: OttlValue[] = [];
      if (!this.isOp(']')) {
        items.push(this.value());
        while (this.isOp(',')) {
          this.next();
          items.push(this.value());
        }
      }
      this.expectOp(']');
      return { kind: 'list', items };
    }
    if (t.t !== 'id') throw new OttlSyntaxError('expected a value', t.at);
    if (t.v === 'true' || t.v === 'false') return { kind: 'bool', value: t.v === 'true' };
    if (t.v === 'nil') return { kind: 'nil' };
    if (KEYWORDS.has(t.v)) throw new OttlSyntaxError(`unexpected keyword "${t.v}"`, t.at);
    if (this.isOp('(')) {
      if (!/^[A-Z]/.test(t.v))
        throw new OttlSyntaxError(`converter "${t.v}" must start with an uppercase letter`, t.at);
      return { kind: 'call', name: t.v, args: this.args() };
    }
    if (/^[A-Z][A-Z0-9_]*$/.test(t.v) && !this.isOp('.') && !this.isOp('['))
      return { kind: 'enum', name: t.v };
    const segments = [t.v];
    while (this.isOp('.')) {
      this.next();
      const seg = this.next();
      if (seg.t !== 'id') throw new OttlSyntaxError('expected a path segment after "."', seg.at);
      segments.push(seg.v);
    }
    const keys: string[] = [];
    while (this.isOp('[')) {
      this.next();
      const key = this.next();
      if (key.t !== 'str') throw new OttlSyntaxError('expected a string key', key.at);
      keys.push(key.v);
      this.expectOp(']');
    }
    return { kind: 'path', segments, keys };
  }

  private args(): OttlValue[] {
    this.expectOp('(');
    const args: OttlValue[] = [];
    if (!this.isOp(')')) {
      args.push(this.value());
      while (this.isOp(',')) {
        this.next();
        args.push(this.value());
      }
    }
    this.expectOp(')');
    return args;
  }
}

/** Parses a filter-processor condition; throws {@link OttlSyntaxError}. */
export const parseOttlCondition = (src: string): OttlCondition => {
  const parser = new Parser(tokenize(src));
  const cond = parser.condition();
  parser.expectEnd();
  return cond;
};

/** Parses a transform-processor statement; throws {@link OttlSyntaxError}. */
export const parseOttlStatement = (src: string): OttlStatement => {
  const parser = new Parser(tokenize(src));
  const stmt = parser.statement();
  parser.expectEnd();
  return stmt;
};

/** An OTTL string literal for any text (regexes included), escaped so the parser reads back the same text. */
export const ottlString = (text: string): string => `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/** The textual form of a path, e.g. `resource.attributes["process.pid"]`. */
export const pathText = (path: {
  readonly segments: readonly string[];
  readonly keys: readonly string[];
}): string => path.segments.join('.') + path.keys.map((k) => `[${ottlString(k)}]`).join('');

/** Editors and converters of otelcol-contrib's OTTL (transform/filter), with their accepted argument counts. */
export const OTTL_EDITORS: Readonly<Record<string, readonly [number, number]>> = {
  set: [2, 2],
  delete_key: [2, 2],
  delete_matching_keys: [2, 2],
  keep_keys: [2, 2],
  keep_matching_keys: [2, 2],
  limit: [3, 3],
  truncate_all: [2, 2],
  replace_pattern: [3, 5],
  replace_all_patterns: [4, 6],
  merge_maps: [3, 3],
  flatten: [1, 3],
  append: [2, 3],
  aggregate_on_attributes: [1, 2],
  convert_sum_to_gauge: [0, 0],
  convert_gauge_to_sum: [2, 2],
  scale_metric: [1, 2],
  copy_metric: [0, 3],
  extract_sum_metric: [1, 1],
  extract_count_metric: [1, 1],
};

export const OTTL_CONVERTERS: Readonly<Record<string, readonly [number, number]>> = {
  IsMatch: [2, 2],
  IsString: [1, 1],
  IsInt: [1, 1],
  IsDouble: [1, 1],
  IsBool: [1, 1],
  IsMap: [1, 1],
  IsList: [1, 1],
  Concat: [2, 2],
  Len: [1, 1],
  Int: [1, 1],
  Double: [1, 1],
  String: [1, 1],
  ToLowerCase: [1, 1],
  ToUpperCase: [1, 1],
  Split: [2, 2],
  Substring: [3, 3],
  HasPrefix: [2, 2],
  HasSuffix: [2, 2],
  ContainsValue: [2, 2],
};

/**
 * The aggregation functions `aggregate_on_attributes` accepts: the collector's list (v0.165: "valid
 * options: sum, mean, min, max, median, count"); it refuses `avg`.
 */
export const OTTL_AGGREGATIONS = ['sum', 'mean', 'min', 'max', 'median', 'count'] as const;

/** Every value node in an expression, depth first; used by checks and by the emulator's dependency analysis. */
export function* walkValues(node: OttlCondition | OttlValue): Generator<OttlValue> {
  switch (node.kind) {
    case 'or':
    case 'and':
      yield* walkValues(node.left);
      yield* walkValues(node.right);
      return;
    case 'not':
      yield* walkValues(node.operand);
      return;
    case 'compare':
      yield* walkValues(node.left);
      yield* walkValues(node.right);
      return;
    case 'value':
      yield* walkValues(node.value);
      return;
    case 'call':
      yield node;
      for (const arg of node.args) yield* walkValues(arg);
      return;
    case 'list':
      yield node;
      for (const item of node.items) yield* walkValues(item);
      return;
    case 'string':
    case 'number':
    case 'bool':
    case 'nil':
    case 'enum':
    case 'path':
      yield node;
      return;
    default: {
      const _never: never = node;
      return _never;
    }
  }
}

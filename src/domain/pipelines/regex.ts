/**
 * Regular expressions travel from the user to the collector, which runs them with Go's RE2. JavaScript
 * accepts constructs RE2 rejects (lookaround, backreferences) and RE2 accepts a leading `(?i)` that
 * Node 20 rejects, so every pattern is checked against both dialects here, once.
 */

export type RegexCheck =
  | { readonly ok: true; readonly regex: RegExp }
  | { readonly ok: false; readonly message: string };

const RE2_UNSUPPORTED: readonly [string, string][] = [
  ['(?=', 'lookahead'],
  ['(?!', 'negative lookahead'],
  ['(?<=', 'lookbehind'],
  ['(?<!', 'negative lookbehind'],
];

/**
 * Compiles a pattern the way the collector will interpret it, or says why it would fail there.
 * A leading `(?i)` (RE2's case-insensitive flag) becomes JavaScript's `i` flag.
 */
const POSIX_CLASSES: Readonly<Record<string, string>> = {
  alnum: '0-9A-Za-z',
  alpha: 'A-Za-z',
  ascii: '\\x00-\\x7F',
  blank: '\\t ',
  cntrl: '\\x00-\\x1F\\x7F',
  digit: '0-9',
  graph: '!-~',
  lower: 'a-z',
  print: ' -~',
  punct: '!-\\/:-@\\[-`{-~',
  space: '\\t\\n\\v\\f\\r ',
  upper: 'A-Z',
  word: '0-9A-Za-z_',
  xdigit: '0-9A-Fa-f',
};
const POSIX_CLASS =
  /\[:(alnum|alpha|ascii|blank|cntrl|digit|graph|lower|print|punct|space|upper|word|xdigit):\]/g;

export const compileCollectorRegex = (pattern: string, maxLength = 1024): RegexCheck => {
  if (pattern.length === 0) return { ok: false, message: 'pattern is empty' };
  if (pattern.length > maxLength)
    return { ok: false, message: `pattern is longer than ${maxLength} characters` };
  if (pattern.includes('${') || pattern.includes('$$')) {
    return {
      ok: false,
      message: 'pattern contains "${" or "$$", which the collector expands as configuration variables',
    };
  }
  let flags = '';
  let body = pattern;
  if (body.startsWith('(?i)')) {
    flags = 'i';
    body = body.slice(4);
  }
  let inClass = false;
  for (let i = 0; i < body.length; i++) {
    const ch = body[i];
    if (ch === '\\') {
      const next = body[i + 1] ?? '';
      if (!inClass && /[1-9]/.test(next))
        return { ok: false, message: 'backreferences are not supported by RE2' };
      if (!inClass && next === 'k' && body[i + 2] === '<') {
        return { ok: false, message: 'named backreferences are not supported by RE2' };
      }
      i++;
      continue;
    }
    if (inClass) {
      if (ch === ']') inClass = false;
      continue;
    }
    if (ch === '[') {
      inClass = true;
      if (body[i + 1] === ']') i++;
      continue;
    }
    if (ch === '(') {
      for (const [prefix, what] of RE2_UNSUPPORTED) {
        if (body.startsWith(prefix, i)) return { ok: false, message: `${what} is not supported by RE2` };
      }
      if (
        body.startsWith('(?', i) &&
        !body.startsWith('(?:', i) &&
        !/^\(\?P?<[A-Za-z_]/.test(body.slice(i))
      ) {
        return { ok: false, message: 'inline flags are only supported as a leading "(?i)"' };
      }
    }
  }
  try {
    // RE2's POSIX classes ([[:alpha:]]) become their JS ranges, so a class RE2 would find unclosed
    // ([[:alpha:]) is unclosed for JS too.
    const js = body
      .replace(/\(\?P</g, '(?<')
      .replace(POSIX_CLASS, (_, name: string) => POSIX_CLASSES[name] ?? '');
    return { ok: true, regex: new RegExp(js, flags) };
  } catch (err) {
    const detail =
      err instanceof Error ? err.message.replace(/^Invalid regular expression: /, '') : String(err);
    return { ok: false, message: `invalid regular expression: ${detail}` };
  }
};

/** Generated patterns (keep-lists) may be long; RE2 handles large alternations, the limit is a sanity bound. */
export const MAX_RENDERED_PATTERN_LENGTH = 256 * 1024;

/** RE2's QuoteMeta: a literal string as a pattern that matches exactly it. */
export const quoteMeta = (literal: string): string => literal.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&');

/**
 * One pattern that matches when any of the given patterns matches. A leading `(?i)` cannot be scoped to
 * one alternative in both dialects, so such patterns are rewritten with explicit character classes.
 */
export const unionPattern = (patterns: readonly string[]): string | undefined => {
  const unique = [...new Set(patterns)];
  if (unique.length === 0) return undefined;
  if (unique.length === 1) return unique[0];
  return unique.map((p) => `(?:${p.startsWith('(?i)') ? caseFold(p.slice(4)) : p})`).join('|');
};

/** `nginx` → `[nN][gG][iI][nN][xX]`, leaving escapes and classes alone; enough for process names. */
const caseFold = (pattern: string): string => {
  let out = '';
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i] as string;
    if (ch === '\\') {
      out += ch + (pattern[i + 1] ?? '');
      i++;
      continue;
    }
    if (inClass) {
      if (ch === ']') inClass = false;
      out += ch;
      continue;
    }
    if (ch === '[') {
      inClass = true;
      out += ch;
      continue;
    }
    const lower = ch.toLowerCase();
    const upper = ch.toUpperCase();
    out += lower !== upper ? `[${lower}${upper}]` : ch;
  }
  return out;
};

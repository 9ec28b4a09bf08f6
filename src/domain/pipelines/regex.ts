import { LRUCache } from 'lru-cache';
import { RE2JS } from 're2js';

/**
 * Regular expressions travel from the user to the collector, which runs them with Go's `regexp` (RE2
 * syntax). Phoenix checks and runs them in that dialect, with RE2JS (a port of Go's engine): matching
 * takes time linear in the input, whatever the pattern, so a pattern such as `^(.|.|.)*Z$` cannot stall
 * the process that matches it.
 *
 * RE2JS's parser is Go's, with three differences this module irons out so that Phoenix accepts exactly
 * what Go 1.26's `regexp.Compile` accepts (test/regex-go-differential.int.test.ts holds it to that):
 * Go looks Unicode class names up loosely (`\p{greek}`, `\p{Letter}`, `\p{ASCII}`, `\p{Assigned}`) but
 * knows only the Unicode 15 scripts; and Go allows two capture groups with the same name.
 */

/** A pattern compiled as the collector would run it. */
export interface CollectorRegex {
  /** The pattern as the user wrote it. */
  readonly source: string;
  /** Whether the pattern matches anywhere in `input` (Go's `MatchString`); linear in `input`'s length. */
  test(input: string): boolean;
}

export type RegexCheck =
  | { readonly ok: true; readonly regex: CollectorRegex }
  | { readonly ok: false; readonly message: string };

/**
 * Unicode class names Go's `regexp` knows, by the canonical form it looks them up in (first letter
 * upper case, the rest lower case, no `_`, `-` or space), with the name RE2JS knows the class by. These
 * are Go 1.26's `unicode.Categories` and `unicode.Scripts` (Unicode 15.0) whose keys are already
 * canonical, and its `unicode.CategoryAliases`; a script whose key has an underscore (`Old_Italic`) has
 * no canonical form that reaches it, so Go refuses it, and so does Phoenix.
 */
const UNICODE_NAMES: ReadonlyMap<string, string> = new Map([
  ...(
    'Adlam Ahom Arabic Armenian Avestan Balinese Bamum Batak Bengali Bhaiksuki Bopomofo Brahmi Braille ' +
    'Buginese Buhid C Carian Cc Cf Chakma Cham Cherokee Chorasmian Cn Co Common Coptic Cs Cuneiform ' +
    'Cypriot Cyrillic Deseret Devanagari Dogra Duployan Elbasan Elymaic Ethiopic Georgian Glagolitic ' +
    'Gothic Grantha Greek Gujarati Gurmukhi Han Hangul Hanunoo Hatran Hebrew Hiragana Inherited Javanese ' +
    'Kaithi Kannada Katakana Kawi Kharoshthi Khmer Khojki Khudawadi L Lao Latin Lepcha Limbu Lisu Ll Lm ' +
    'Lo Lt Lu Lycian Lydian M Mahajani Makasar Malayalam Mandaic Manichaean Marchen Mc Me Medefaidrin ' +
    'Miao Mn Modi Mongolian Mro Multani Myanmar N Nabataean Nandinagari Nd Newa Nko Nl No Nushu Ogham ' +
    'Oriya Osage Osmanya P Palmyrene Pc Pd Pe Pf Phoenician Pi Po Ps Rejang Runic S Samaritan Saurashtra ' +
    'Sc Sharada Shavian Siddham Sinhala Sk Sm So Sogdian Soyombo Sundanese Syriac Tagalog Tagbanwa Takri ' +
    'Tamil Tangsa Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta Toto Ugaritic Vai Vithkuqi Wancho ' +
    'Yezidi Yi Z Zl Zp Zs'
  )
    .split(' ')
    .map((name): [string, string] => [name, name]),
  ...Object.entries({
    Any: 'Any',
    Lc: 'LC',
    Casedletter: 'LC',
    Closepunctuation: 'Pe',
    Cntrl: 'Cc',
    Combiningmark: 'M',
    Connectorpunctuation: 'Pc',
    Control: 'Cc',
    Currencysymbol: 'Sc',
    Dashpunctuation: 'Pd',
    Decimalnumber: 'Nd',
    Digit: 'Nd',
    Enclosingmark: 'Me',
    Finalpunctuation: 'Pf',
    Format: 'Cf',
    Initialpunctuation: 'Pi',
    Letter: 'L',
    Letternumber: 'Nl',
    Lineseparator: 'Zl',
    Lowercaseletter: 'Ll',
    Mark: 'M',
    Mathsymbol: 'Sm',
    Modifierletter: 'Lm',
    Modifiersymbol: 'Sk',
    Nonspacingmark: 'Mn',
    Number: 'N',
    Openpunctuation: 'Ps',
    Other: 'C',
    Otherletter: 'Lo',
    Othernumber: 'No',
    Otherpunctuation: 'Po',
    Othersymbol: 'So',
    Paragraphseparator: 'Zp',
    Privateuse: 'Co',
    Punct: 'P',
    Punctuation: 'P',
    Separator: 'Z',
    Spaceseparator: 'Zs',
    Spacingmark: 'Mc',
    Surrogate: 'Cs',
    Symbol: 'S',
    Titlecaseletter: 'Lt',
    Unassigned: 'Cn',
    Uppercaseletter: 'Lu',
  }),
]);

/** Go's `canonicalName`: `old_italic` → `Olditalic`, `LU` → `Lu`. */
const canonicalName = (name: string): string => {
  let out = '';
  for (const ch of name) {
    if (ch === '_' || ch === '-' || ch === ' ') continue;
    out +=
      out === '' && ch >= 'a' && ch <= 'z'
        ? ch.toUpperCase()
        : out !== '' && ch >= 'A' && ch <= 'Z'
          ? ch.toLowerCase()
          : ch;
  }
  return out;
};

class RegexSyntaxError extends Error {}

/**
 * `\p{name}` / `\P{name}` / `\pX` at `at` (the backslash) as RE2JS reads the same class, and where the
 * escape ends; undefined when it is not well formed (RE2JS then reports it as Go would).
 */
const unicodeClass = (
  pattern: string,
  at: number,
  inClass: boolean,
): { text: string; end: number } | undefined => {
  let negated = pattern[at + 1] === 'P';
  let name: string;
  let end: number;
  if (pattern[at + 2] === '{') {
    const close = pattern.indexOf('}', at + 3);
    if (close < 0) throw new RegexSyntaxError(`invalid character class range: \`${pattern.slice(at)}\``);
    name = pattern.slice(at + 3, close);
    end = close + 1;
  } else {
    const cp = pattern.codePointAt(at + 2);
    if (cp === undefined) return undefined;
    name = String.fromCodePoint(cp);
    end = at + 2 + name.length;
  }
  const seq = pattern.slice(at, end);
  if (name.startsWith('^')) {
    negated = !negated;
    name = name.slice(1);
  }
  const canonical = canonicalName(name);
  if (canonical === 'Ascii') {
    // RE2JS has no ASCII class; the range folds (with (?i)) as Go's ASCII table does.
    const range = negated ? '\\x{80}-\\x{10FFFF}' : '\\x00-\\x7F';
    return { text: inClass ? range : `[${range}]`, end };
  }
  if (canonical === 'Assigned') return { text: `\\${negated ? 'p' : 'P'}{Cn}`, end };
  const known = UNICODE_NAMES.get(canonical);
  if (known === undefined) throw new RegexSyntaxError(`invalid character class range: \`${seq}\``);
  return { text: `\\${negated ? 'P' : 'p'}{${known}}`, end };
};

const isNameChar = (ch: string | undefined): boolean =>
  ch !== undefined &&
  ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch === '_');

/**
 * The pattern in RE2JS's dialect, meaning what Go would: Unicode class names resolved as Go resolves
 * them, and capture names dropped (nothing here reads groups, and Go allows duplicate names).
 */
const toRe2js = (pattern: string): string => {
  // Where the last `:]` is, so that a class full of `[:` does not make the scan quadratic.
  const lastPosixClose = pattern.lastIndexOf(':]');
  let out = '';
  let i = 0;
  let inClass = false;
  while (i < pattern.length) {
    const ch = pattern[i] as string;
    if (ch === '\\') {
      const next = pattern[i + 1];
      if (next === 'p' || next === 'P') {
        const cls = unicodeClass(pattern, i, inClass);
        if (cls !== undefined) {
          out += cls.text;
          i = cls.end;
          continue;
        }
      }
      if (next === 'Q' && !inClass) {
        const close = pattern.indexOf('\\E', i + 2);
        const end = close < 0 ? pattern.length : close + 2;
        out += pattern.slice(i, end);
        i = end;
        continue;
      }
      out += pattern.slice(i, i + 2);
      i += 2;
      continue;
    }
    if (inClass) {
      if (ch === '[' && pattern[i + 1] === ':' && lastPosixClose >= i + 2) {
        const close = pattern.indexOf(':]', i + 2);
        if (close >= 0) {
          out += pattern.slice(i, close + 2);
          i = close + 2;
          continue;
        }
      }
      if (ch === ']') inClass = false;
      out += ch;
      i++;
      continue;
    }
    if (ch === '[') {
      inClass = true;
      let open = 1;
      if (pattern[i + open] === '^') open++;
      // A `]` right after the opening bracket is a literal member of the class.
      if (pattern[i + open] === ']') open++;
      out += pattern.slice(i, i + open);
      i += open;
      continue;
    }
    if (ch === '(' && pattern[i + 1] === '?') {
      const nameAt = pattern.startsWith('P<', i + 2) ? i + 4 : pattern[i + 2] === '<' ? i + 3 : -1;
      if (nameAt >= 0) {
        let close = nameAt;
        while (isNameChar(pattern[close])) close++;
        if (close > nameAt && pattern[close] === '>') {
          out += '(';
          i = close + 1;
          continue;
        }
      }
    }
    out += ch;
    i++;
  }
  return out;
};

/** Constructs users bring from other dialects, named when RE2 refuses them, so the message says why. */
const FOREIGN: readonly [RegExp, string][] = [
  [/\(\?=/, 'lookahead is not supported by RE2'],
  [/\(\?!/, 'negative lookahead is not supported by RE2'],
  [/\(\?<[=!]/, 'lookbehind is not supported by RE2'],
  [/\\[1-9]/, 'backreferences are not supported by RE2'],
  [/\\k</, 'named backreferences are not supported by RE2'],
];

/**
 * Compiles a pattern the way the collector will interpret it (Go's `regexp.Compile`), or says why the
 * collector would refuse it. Phoenix adds two refusals of its own: the empty pattern, and `${` or `$$`,
 * which the collector's configuration loader would expand before the regexp ever saw them.
 */
export const compileCollectorRegex = (pattern: string, maxLength = 1024): RegexCheck => {
  if (pattern.length === 0) return { ok: false, message: 'pattern is empty' };
  if (pattern.length > maxLength)
    return { ok: false, message: `pattern is longer than ${maxLength} characters` };
  const key = `${maxLength}:${pattern}`;
  let check = checks.get(key);
  if (check === undefined) {
    check = compile(pattern);
    checks.set(key, check);
  }
  return check;
};

/**
 * Checks and compiled patterns, by limit and source, shared by every caller (the API's checks, rendering,
 * validation, the emulator). Compiling a short pattern costs about 25 µs and creates repeat the same few:
 * with two of them the check was most of a create's parsing (58 µs against 17 before RE2, 15 with this
 * cache). Generated patterns are long: an alternation of 100,000 characters took 1.3 s to compile (on a
 * loaded machine), which the emulator used to pay once per pipeline it built. Bounded by count and by
 * total source length (4 MiB, sixteen of the longest rendered patterns: the compiled form grows with
 * the source), so hostile patterns cannot grow the process without bound.
 */
const checks = new LRUCache<string, RegexCheck>({
  max: 2_000,
  maxSize: 4 * 1024 * 1024,
  sizeCalculation: (_check, key) => key.length,
});

const compile = (pattern: string): RegexCheck => {
  if (pattern.includes('${') || pattern.includes('$$')) {
    return {
      ok: false,
      message: 'pattern contains "${" or "$$", which the collector expands as configuration variables',
    };
  }
  try {
    const compiled = RE2JS.compile(toRe2js(pattern));
    return { ok: true, regex: { source: pattern, test: (input) => compiled.test(input) } };
  } catch (err) {
    const detail = (err instanceof Error ? err.message : String(err)).replace(/^error parsing regexp: /, '');
    const why = FOREIGN.find(([construct]) => construct.test(pattern))?.[1];
    return {
      ok: false,
      message: `invalid regular expression: ${detail}${why === undefined ? '' : ` (${why})`}`,
    };
  }
};

/** Generated patterns (keep-lists) may be long; RE2 handles large alternations, the limit is a sanity bound. */
export const MAX_RENDERED_PATTERN_LENGTH = 256 * 1024;

/** RE2's QuoteMeta: a literal string as a pattern that matches exactly it. */
export const quoteMeta = (literal: string): string => literal.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&');

/**
 * One pattern that matches when any of the given patterns matches. In RE2 a flag set inside a group
 * (`(?i)`) ends with the group, so each pattern keeps its own flags.
 */
export const unionPattern = (patterns: readonly string[]): string | undefined => {
  const unique = [...new Set(patterns)];
  if (unique.length === 0) return undefined;
  if (unique.length === 1) return unique[0];
  return unique.map((p) => `(?:${p})`).join('|');
};

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  dbText,
  experimentSpecSchema,
  holdableTime,
  MAX_JSON_DEPTH,
  unholdableJson,
} from '../src/application/schemas.js';
import { validSpec } from './support/system.js';

/** The boundary's "what the database can hold" checks, on their own (no I/O). */
describe('text the database can hold', () => {
  const cases: [string, boolean][] = [
    ['plain', true],
    ['', true],
    ['emoji 💥 (a surrogate pair)', true],
    ['ü and 中文', true],
    ['a\u0000b', false],
    ['\ud800', false],
    ['x\udc00', false],
    ['\udc00\ud800', false],
  ];
  for (const [value, ok] of cases) {
    it(`${JSON.stringify(value)} → ${ok ? 'accepted' : 'refused'}`, () => {
      assert.equal(dbText().safeParse(value).success, ok);
    });
  }
});

describe('JSON values the database can hold exactly', () => {
  it('nesting 10^5 deep: one problem, at the top-level key, without overflowing the stack', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const issues = unholdableJson({ fine: 1, deep });
    assert.deepEqual(issues, [
      { path: ['deep'], message: `must not be nested more than ${MAX_JSON_DEPTH} deep` },
    ]);
  });

  it('nesting up to the limit is fine', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < MAX_JSON_DEPTH - 1; i++) deep = { a: deep };
    assert.deepEqual(unholdableJson({ deep }), []);
  });

  it('numbers beyond 2^53 and unholdable text, in values and keys, each at its path', () => {
    const issues = unholdableJson({
      big: 2 ** 53,
      small: -(2 ** 60),
      ok: Number.MAX_SAFE_INTEGER,
      list: ['ok', 'a\u0000'],
      'k\ud800': 1,
    });
    assert.deepEqual(
      issues.map((i) => i.path.join('.')),
      ['big', 'small', 'list.1', 'k\ud800'],
    );
  });
});

describe('times the database can hold', () => {
  const cases: [string, boolean][] = [
    ['2026-01-01T00:00:00Z', true],
    ['0001-01-01T00:00:00Z', true],
    ['9999-12-31T23:59:59Z', true],
    ['0000-01-01T00:00:00Z', false],
    ['0001-01-01T00:00:00+01:00', false],
    ['9999-12-31T23:59:59-01:00', false],
  ];
  for (const [value, ok] of cases) {
    it(`${value} → ${ok ? 'accepted' : 'refused'}`, () => {
      assert.equal(holdableTime().safeParse(value).success, ok);
    });
  }
});

describe('the experiment spec', () => {
  it('reports unholdable text at the field the user sent, once', () => {
    const result = experimentSpecSchema.safeParse(
      validSpec({ name: 'a\u0000', criticalProcesses: ['\ud800'], description: 'ok' }),
    );
    assert.equal(result.success, false);
    assert.deepEqual(
      result.error!.issues.map((i) => i.path.join('.')),
      ['name', 'criticalProcesses.0'],
    );
  });
});

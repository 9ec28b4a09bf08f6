import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  compileCollectorRegex,
  listTemplates,
  parseTemplateParams,
  TEMPLATE_NAMES,
} from '../src/domain/pipelines/index.js';

const errorsOf = (template: string, params: unknown) => {
  const result = parseTemplateParams(template, params);
  assert.equal(result.ok, false, 'expected a validation failure');
  return result.ok ? [] : result.errors;
};

describe('template parameters', () => {
  it('fills in defaults for every template', () => {
    for (const template of TEMPLATE_NAMES) {
      const result = parseTemplateParams(template, undefined);
      assert.ok(result.ok, template);
      assert.equal(result.value.params.collectionIntervalSeconds, 60);
      assert.deepEqual(result.value.params.criticalProcesses, []);
    }
    const topk = parseTemplateParams('process-topk-v1', {});
    assert.ok(topk.ok && topk.value.template === 'process-topk-v1');
    assert.equal(topk.value.params.k, 20);
    assert.deepEqual(topk.params, topk.value.params);
  });

  const cases: [string, string, unknown, { path: string; message: RegExp }[]][] = [
    ['negative k', 'process-topk-v1', { k: -5 }, [{ path: 'k', message: />=1/ }]],
    ['fractional k', 'process-topk-v1', { k: 2.5 }, [{ path: 'k', message: /expected int/ }]],
    ['k as a string', 'process-topk-v1', { k: '20' }, [{ path: 'k', message: /number/ }]],
    [
      'a regex that does not compile',
      'process-priority-filter-v1',
      { priorityPatterns: ['(unclosed'] },
      [{ path: 'priorityPatterns.0', message: /invalid regular expression/ }],
    ],
    [
      'a lookahead RE2 cannot run',
      'process-baseline-v1',
      { criticalProcesses: ['^(?!kube)'] },
      [{ path: 'criticalProcesses.0', message: /RE2/ }],
    ],
    [
      'a backreference',
      'process-baseline-v1',
      { criticalProcesses: ['(a)\\1'] },
      [{ path: 'criticalProcesses.0', message: /backreferences/ }],
    ],
    [
      'a config variable in a pattern',
      'process-baseline-v1',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a collector config variable, literally
      { criticalProcesses: ['${env:X}'] },
      [{ path: 'criticalProcesses.0', message: /expands/ }],
    ],
    [
      'unknown keys',
      'process-minimal-v1',
      { rollupOthers: true, kk: 1, other: 2 },
      [
        { path: 'kk', message: /unknown parameter "kk"/ },
        { path: 'other', message: /unknown parameter "other"/ },
      ],
    ],
    [
      'a key of another template',
      'process-baseline-v1',
      { k: 20 },
      [{ path: 'k', message: /unknown parameter/ }],
    ],
    [
      'an interval out of range',
      'process-aggregated-v1',
      { collectionIntervalSeconds: 0 },
      [{ path: 'collectionIntervalSeconds', message: />=1/ }],
    ],
    [
      'a threshold above 1',
      'process-adaptive-v1',
      { cpuUtilizationThreshold: 1.5 },
      [{ path: 'cpuUtilizationThreshold', message: /<=1/ }],
    ],
    [
      'an unknown enum value',
      'process-topk-v1',
      { rankBy: 'disk' },
      [{ path: 'rankBy', message: /cpu|memory|combined/ }],
    ],
    [
      'a repeated metric',
      'process-priority-filter-v1',
      { lowPriorityMetrics: ['process.cpu.time', 'process.cpu.time'] },
      [{ path: 'lowPriorityMetrics', message: /repeat/ }],
    ],
    [
      'a metric the scraper does not have',
      'process-priority-filter-v1',
      { lowPriorityMetrics: ['process.gpu.time'] },
      [{ path: 'lowPriorityMetrics.0', message: /process\.cpu\.time/ }],
    ],
    [
      'a zero series budget',
      'process-intelligent-v1',
      { seriesBudgetPct: 0 },
      [{ path: 'seriesBudgetPct', message: />0/ }],
    ],
    ['params that are not an object', 'process-topk-v1', [1, 2], [{ path: '', message: /object/ }]],
    [
      'an unknown template',
      'process-magic-v9',
      {},
      [{ path: 'template', message: /unknown template "process-magic-v9"/ }],
    ],
  ];
  for (const [what, template, params, expected] of cases) {
    it(`reports ${what}`, () => {
      const errors = errorsOf(template, params);
      assert.equal(errors.length, expected.length, JSON.stringify(errors));
      expected.forEach((e, i) => {
        assert.equal(errors[i]?.path, e.path);
        assert.match(errors[i]?.message ?? '', e.message);
      });
    });
  }

  it('accepts RE2 syntax Node lacks: a leading (?i) and (?P<name>…)', () => {
    const result = parseTemplateParams('process-baseline-v1', {
      criticalProcesses: ['(?i)^Postgres$', '^(?P<svc>nginx)$'],
    });
    assert.ok(result.ok, JSON.stringify(!result.ok && result.errors));
    const insensitive = compileCollectorRegex('(?i)^Postgres$');
    assert.ok(insensitive.ok && insensitive.regex.test('POSTGRES'));
  });
});

describe('listTemplates', () => {
  const templates = listTemplates();

  it('lists the seven templates in order, each with a description', () => {
    assert.deepEqual(
      templates.map((t) => t.name),
      [...TEMPLATE_NAMES],
    );
    for (const t of templates) assert.ok(t.description.length > 20, t.name);
  });

  it('describes each parameter with type, default, limits and a description', () => {
    const topk = templates.find((t) => t.name === 'process-topk-v1');
    const k = topk?.params.find((p) => p.name === 'k');
    assert.deepEqual(
      { type: k?.type, default: k?.default, minimum: k?.minimum, maximum: k?.maximum },
      { type: 'integer', default: 20, minimum: 1, maximum: 500 },
    );
    const rankBy = topk?.params.find((p) => p.name === 'rankBy');
    assert.deepEqual(rankBy?.enum, ['cpu', 'memory', 'combined']);
    const critical = topk?.params.find((p) => p.name === 'criticalProcesses');
    assert.equal(critical?.items?.format, 're2');
    for (const t of templates)
      for (const p of t.params) assert.ok(p.description.length > 0, `${t.name}.${p.name}`);
  });

  it('is JSON-serialisable as the API returns it', () => {
    assert.deepEqual(JSON.parse(JSON.stringify(templates)), templates);
  });
});

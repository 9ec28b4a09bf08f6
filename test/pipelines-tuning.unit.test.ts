import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  computeAdaptiveThresholds,
  computeIntelligentKeepList,
  computeKeepList,
  computeTuning,
  type ProcessUsageTable,
  parseTemplateParams,
} from '../src/domain/pipelines/index.js';

/** A usage table from readable rows: [node, name, cpu share, memory MiB, series?]. */
const table = (rows: [number, string, number, number, number?][]): ProcessUsageTable => {
  const names = [...new Set(rows.map((r) => r[1]))];
  return {
    length: rows.length,
    node: rows.map((r) => r[0]),
    name: rows.map((r) => names.indexOf(r[1])),
    names,
    cpu: rows.map((r) => r[2]),
    memory: rows.map((r) => r[3] * 1024 * 1024),
    series: rows.map((r) => r[4] ?? 7),
  };
};

describe('computeKeepList (top-k)', () => {
  const usage = table([
    [0, 'java', 0.5, 900],
    [0, 'python3', 0.2, 100],
    [0, 'sh', 0.01, 2],
    [0, 'postgres', 0.9, 500],
    [1, 'java', 0.4, 800],
    [1, 'node', 0.3, 200],
    [1, 'sh', 0.001, 2],
    [2, 'node', 0.6, 300],
    [2, 'python3', 0.1, 50],
    [2, 'sh', 0.2, 2],
  ]);

  it("keeps the names that rank in most nodes' top k, never spending a slot on critical processes", () => {
    // Votes: java 2 (nodes 0, 1), node 1. The budget is k × nodes = 3 processes: java keeps 2, node's 2 do not fit.
    assert.deepEqual(computeKeepList(usage, { k: 1, rankBy: 'cpu' }, ['^postgres$']), ['java']);
    // Without the critical pattern postgres wins node 0; one vote each, ordered by share of the node's CPU:
    // node (0.67) fits, java (0.57) would overrun the budget, postgres (0.56, one process) fits.
    assert.deepEqual(computeKeepList(usage, { k: 1, rankBy: 'cpu' }, []), ['node', 'postgres']);
  });

  it('ranks by memory when asked', () => {
    assert.deepEqual(computeKeepList(usage, { k: 1, rankBy: 'memory' }, ['^postgres$']), ['java']);
    assert.deepEqual(computeKeepList(usage, { k: 2, rankBy: 'memory' }, ['^postgres$']), [
      'java',
      'node',
      'python3',
    ]);
  });

  it('stays within k processes per node on average, skipping names with many instances', () => {
    const many = table([
      ...Array.from({ length: 30 }, (_, i): [number, string, number, number] => [
        0,
        'php-fpm',
        0.05 + i * 0.001,
        50,
      ]),
      [0, 'java', 0.04, 900],
      [1, 'java', 0.5, 900],
      [1, 'redis-server', 0.01, 100],
    ]);
    const keep = computeKeepList(many, { k: 2, rankBy: 'cpu' }, []);
    assert.ok(!keep.includes('php-fpm'), `php-fpm would keep 15 processes per node: ${keep}`);
    assert.ok(keep.includes('java'));
  });
});

describe('computeIntelligentKeepList', () => {
  it('spends at most the series budget, counting critical processes first', () => {
    const usage = table([
      ...Array.from({ length: 40 }, (_, i): [number, string, number, number] => [
        i % 4,
        `svc-${i % 10}`,
        0.01 * ((i % 10) + 1),
        100,
      ]),
      [0, 'postgres', 0.5, 500],
      [1, 'postgres', 0.5, 500],
    ]);
    const keep = computeIntelligentKeepList(usage, { seriesBudgetPct: 30, anomalyWeight: 1 }, ['^postgres$']);
    const kept = usage.name.length;
    let series = 14;
    for (let i = 0; i < kept; i++)
      if (keep.includes(usage.names[usage.name[i] as number] as string)) series += 7;
    assert.ok(series <= 0.3 * 42 * 7, `spent ${series}`);
    assert.ok(keep.length > 0);
    assert.ok(keep.includes('svc-9'), 'the heaviest service has the most value per series');
  });

  it('prefers an executable with an outlier process when asked to', () => {
    const rows: [number, string, number, number][] = [];
    for (let n = 0; n < 5; n++) rows.push([n, 'steady', 0.05, 100], [n, 'bursty', n === 0 ? 0.2 : 0.01, 100]);
    const usage = table(rows);
    assert.deepEqual(computeIntelligentKeepList(usage, { seriesBudgetPct: 50, anomalyWeight: 0 }, []), [
      'steady',
    ]);
    assert.deepEqual(computeIntelligentKeepList(usage, { seriesBudgetPct: 50, anomalyWeight: 10 }, []), [
      'bursty',
    ]);
  });
});

describe('computeAdaptiveThresholds', () => {
  it('takes the percentile of the non-critical processes', () => {
    const usage = table([
      ...Array.from({ length: 10 }, (_, i): [number, string, number, number] => [
        0,
        `p${i}`,
        (i + 1) / 100,
        (i + 1) * 10,
      ]),
      [0, 'postgres', 0.99, 10_000],
    ]);
    assert.deepEqual(computeAdaptiveThresholds(usage, { adaptPercentile: 70 }, ['^postgres$']), {
      cpuUtilization: 0.07,
      memoryBytes: 70 * 1024 * 1024,
    });
  });
});

describe('computeTuning', () => {
  it('returns what each template needs and nothing for the others', () => {
    const usage = table([[0, 'java', 0.5, 900]]);
    const tune = (template: string) => {
      const parsed = parseTemplateParams(template, {});
      assert.ok(parsed.ok);
      return computeTuning(parsed.value, usage, []);
    };
    assert.deepEqual(tune('process-topk-v1'), { keepList: ['java'] });
    assert.ok(tune('process-adaptive-v1')?.thresholds);
    assert.equal(tune('process-aggregated-v1'), undefined);
  });
});

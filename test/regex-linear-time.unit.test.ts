import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LocalAnalyzer } from '../src/adapters/local-analyzer.js';
import { LocalDataPlane } from '../src/adapters/local-dataplane.js';
import { compilePipeline, emulateScrape } from '../src/adapters/local-dataplane-emulator.js';
import { ProcessFleet } from '../src/adapters/local-dataplane-fleet.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';
import {
  compileCollectorRegex,
  computeKeepList,
  computeTuning,
  type ProcessUsageTable,
  parseTemplateParams,
  renderVariant,
  validateCollectorConfig,
} from '../src/domain/pipelines/index.js';

/**
 * Patterns that make a backtracking engine take exponential (or high-polynomial) time, each with a
 * name of 10,000+ characters it matches and one it does not. A backtracking engine never finishes the
 * misses; the collector's RE2 (and Phoenix's) answers both in time linear in the name.
 */
const LONG = 10_000;
const CATASTROPHIC: readonly { pattern: string; hit: string; miss: string }[] = [
  { pattern: '^(.|.|.)*Z$', hit: `${'a'.repeat(LONG)}Z`, miss: 'a'.repeat(LONG) },
  { pattern: '(a+)+$', hit: 'a'.repeat(LONG), miss: `${'a'.repeat(LONG)}!` },
  { pattern: '(a|aa)+$', hit: 'a'.repeat(LONG), miss: `${'a'.repeat(LONG)}!` },
  { pattern: '(x+x+)+y', hit: `${'x'.repeat(LONG)}y`, miss: 'x'.repeat(LONG) },
  { pattern: '^(a|a?)+$', hit: 'a'.repeat(LONG), miss: `${'a'.repeat(LONG)}!` },
  { pattern: '^(\\w+\\s?)*$', hit: 'ab '.repeat(LONG / 3), miss: `${'a'.repeat(LONG)}!` },
  { pattern: '^(([a-z])+.)+[A-Z]([a-z])+$', hit: `${'a'.repeat(LONG)}Ab`, miss: `${'a'.repeat(LONG)}!` },
  { pattern: '(.*a){12}', hit: 'a'.repeat(LONG), miss: `${'a'.repeat(11)}${'b'.repeat(LONG)}` },
  { pattern: '(?i)(A+)+B', hit: `${'a'.repeat(LONG)}b`, miss: 'a'.repeat(LONG) },
];

/** A hang guard only: each case takes milliseconds; a backtracking engine would take years. */
const GUARD = { timeout: 5_000 };

/** Two nodes, each running every name once, the hit using the most CPU so top-k would keep it. */
const usageOf = (names: readonly string[]): ProcessUsageTable => {
  const rows = names.length * 2;
  return {
    length: rows,
    node: Uint32Array.from({ length: rows }, (_, i) => (i < names.length ? 0 : 1)),
    name: Uint32Array.from({ length: rows }, (_, i) => i % names.length),
    names,
    cpu: Float64Array.from({ length: rows }, (_, i) => 0.5 - (i % names.length) * 0.1),
    memory: Float64Array.from({ length: rows }, () => 1e8),
  };
};

describe('every user-supplied pattern is matched in time linear in the name', () => {
  for (const { pattern, hit, miss } of CATASTROPHIC) {
    describe(pattern, () => {
      it('compiles as the collector would, and says which long names it matches', GUARD, () => {
        const check = compileCollectorRegex(pattern);
        assert.ok(check.ok, !check.ok ? check.message : '');
        assert.equal(check.regex.test(hit), true);
        assert.equal(check.regex.test(miss), false);
      });

      it('tuning: the keep-list leaves out the critical name and keeps the others', GUARD, () => {
        const names = [hit, miss, 'ssh-d'];
        const keep = computeKeepList(usageOf(names), { k: 3, rankBy: 'cpu' }, [pattern]);
        assert.deepEqual(keep, [miss, 'ssh-d'].sort());
        const topk = parseTemplateParams('process-topk-v1', { k: 3, criticalProcesses: [pattern] });
        assert.ok(topk.ok);
        assert.deepEqual(computeTuning(topk.value, usageOf(names), []), { keepList: keep });
        const adaptive = parseTemplateParams('process-adaptive-v1', {});
        assert.ok(adaptive.ok);
        assert.ok(computeTuning(adaptive.value, usageOf(names), [pattern]));
      });

      it('validation: params, rendered configs and OTTL IsMatch accept it', GUARD, () => {
        const params = parseTemplateParams('process-priority-filter-v1', {
          criticalProcesses: [pattern],
          priorityPatterns: [pattern],
        });
        assert.ok(params.ok, JSON.stringify(!params.ok && params.errors));
        const rendered = renderVariant({
          experimentId: 'exp',
          variant: 'candidate',
          template: 'process-topk-v1',
          criticalProcesses: [pattern],
          keepList: [hit.slice(0, 200), 'sshd'],
        });
        assert.ok(rendered.ok, JSON.stringify(!rendered.ok && rendered.errors));
        assert.deepEqual(validateCollectorConfig(rendered.config), []);
      });
    });
  }

  /**
   * The emulator matches the simulated fleet's names (up to 23 characters) and command lines: enough
   * for `(.|.|.)*` to need 3^23 steps per name in a backtracking engine.
   */
  describe('the local data-plane emulator filters with the critical patterns', () => {
    const fleet = new ProcessFleet({ hosts: 3, processesPerHost: 200, seed: 11 });
    fleet.advance(60);
    const vars = { K8S_NODE_NAME: (h: number) => fleet.hostNames[h] as string };
    const cases: [string, (name: string) => boolean][] = [
      ['^(.|.|.)*-1$', (name) => name.endsWith('-1')],
      ['(.|\\w|\\S)*r-1[0-9]$', (name) => /r-1[0-9]$/.test(name)],
      ['^(.|.|.)*Z$', () => false],
    ];
    for (const [pattern, expected] of cases) {
      it(`keeps exactly the processes ${pattern} names`, GUARD, () => {
        // The top-k candidate before its first tuning keeps only critical processes.
        const rendered = renderVariant({
          experimentId: 'exp',
          variant: 'candidate',
          template: 'process-topk-v1',
          criticalProcesses: [pattern],
        });
        assert.ok(rendered.ok);
        const result = emulateScrape(fleet, compilePipeline(rendered.config, vars));
        const exported = new Set(Array.from(result.rowName, (n) => result.names[n] as string));
        const baseline = renderVariant({
          experimentId: 'exp',
          variant: 'baseline',
          template: 'process-baseline-v1',
        });
        assert.ok(baseline.ok);
        const everything = emulateScrape(fleet, compilePipeline(baseline.config, vars));
        const present = new Set(Array.from(everything.rowName, (n) => everything.names[n] as string));
        assert.ok(present.size > 50, 'the baseline exports many names');
        assert.deepEqual([...exported].sort(), [...present].filter(expected).sort());
      });
    }
  });

  describe('the local analyzer finds critical processes with them', () => {
    it('reports the critical processes a poisoned pattern names, and none it does not', GUARD, async () => {
      const plane = new LocalDataPlane({ defaultProcessesPerHost: 150 });
      try {
        const patterns = ['^(.|.|.)*-1$', '^(.|.|.)*Z$'];
        const spec: ExperimentSpec = {
          name: 'poisoned patterns',
          baseline: { template: 'process-baseline-v1', params: {} },
          candidate: { template: 'process-topk-v1', params: {} },
          target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 2 },
          durationSeconds: 60,
          criticalProcesses: patterns,
          successCriteria: {
            minCardinalityReductionPct: 50,
            maxCriticalProcessLossPct: 0,
            maxCollectorCpuOverheadPct: 10,
          },
        };
        for (const variant of ['baseline', 'candidate'] as const) {
          const rendered = renderVariant({
            experimentId: 'exp-linear',
            variant,
            template: variant === 'baseline' ? 'process-baseline-v1' : 'process-topk-v1',
            criticalProcesses: patterns,
          });
          assert.ok(rendered.ok);
          plane.startVariant({
            experimentId: 'exp-linear',
            variant,
            config: rendered.config,
            hosts: 2,
            criticalProcesses: patterns,
          });
        }
        plane.tick(60);
        const measured = await new LocalAnalyzer(plane).measure({
          experimentId: 'exp-linear',
          spec,
          window: { start: new Date(0), end: new Date(60_000) },
        });
        const critical = measured.criticalInBaseline ?? [];
        assert.ok(critical.length > 0, 'some simulated names end in -1');
        for (const entry of critical) assert.match(entry, /-1$/);
        assert.deepEqual(measured.missingCriticalProcesses, []);
      } finally {
        await plane.close();
      }
    });
  });
});

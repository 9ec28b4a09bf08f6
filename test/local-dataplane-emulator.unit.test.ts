import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  compilePipeline,
  EmulationError,
  emulateScrape,
  type ScrapeResult,
} from '../src/adapters/local-dataplane-emulator.js';
import { CATALOG_NAMES, ProcessFleet } from '../src/adapters/local-dataplane-fleet.js';
import {
  type CollectorConfig,
  computeTuning,
  DEFAULT_PRIORITY_PATTERNS,
  PROCESS_METRICS,
  type ProcessUsageTable,
  parseTemplateParams,
  ROLLUP_PROCESS_NAME,
  renderVariant,
  type TemplateName,
  type Tuning,
} from '../src/domain/pipelines/index.js';

/*
 * The emulator's own properties, against brute-force models of the templates. Its fidelity to the real
 * collector is emulator-differential.int.test.ts's business (zero differences, template by template, on a
 * churning fleet); because of it, the emulator is what runs where real collectors cannot go here (1,000
 * hosts × 500 processes, bench/dataplane.bench.ts), and these tests keep it honest between those runs.
 */
const CRITICAL = ['^postgres$', '^nginx$', '^kubelet$', '^containerd$', '^sshd$'];
const criticalRe = CRITICAL.map((p) => new RegExp(p));
const isCritical = (name: string) => criticalRe.some((re) => re.test(name));

const fleet = new ProcessFleet({ hosts: 24, processesPerHost: 300, seed: 7 });
fleet.advance(60);
const vars = { K8S_NODE_NAME: (h: number) => fleet.hostNames[h] as string };

const render = (template: TemplateName, params: unknown = {}, tuning: Tuning = {}): CollectorConfig => {
  const rendered = renderVariant({
    experimentId: 'exp',
    variant: 'candidate',
    template,
    params,
    criticalProcesses: CRITICAL,
    ...tuning,
  });
  assert.ok(rendered.ok, JSON.stringify(rendered.errors));
  return rendered.config;
};

const run = (config: CollectorConfig): ScrapeResult => emulateScrape(fleet, compilePipeline(config, vars));

const baseline = run(render('process-baseline-v1'));

const usageOf = (r: ScrapeResult): ProcessUsageTable => ({
  length: r.rows,
  node: r.rowHost,
  name: r.rowName,
  names: r.names,
  cpu: r.rowCpu,
  memory: r.rowMemory,
});

const tuningFor = (template: TemplateName, params: unknown = {}): Tuning => {
  const parsed = parseTemplateParams(template, params);
  assert.ok(parsed.ok);
  return computeTuning(parsed.value, usageOf(baseline), CRITICAL) ?? {};
};

/** Every process of the fleet as a plain object: the brute-force model works on these. */
const processes = Array.from({ length: fleet.size }, (_, i) => {
  const host = Math.floor(i / fleet.perHost);
  return {
    host,
    name: CATALOG_NAMES[fleet.name[i] as number] as string,
    pid: fleet.pid[i] as number,
    cpuShare: (fleet.cpuNow[i] as number) / (fleet.hostCpus[host] as number),
    memory: Math.round(fleet.memNow[i] as number),
  };
});

/**
 * Series each template should produce, counted the slow, obvious way from the template's documented
 * semantics over the same samples (not from the rendered config).
 */
const bruteForceSeries = (
  template: TemplateName,
  tuning: Tuning,
  params: Record<string, unknown> = {},
): number => {
  let series = 0;
  const seen = new Set<string>();
  const hostsWithOthers = new Set<number>();
  for (const p of processes) {
    const critical = isCritical(p.name);
    switch (template) {
      case 'process-baseline-v1':
        series += 7;
        break;
      case 'process-priority-filter-v1': {
        const priority = DEFAULT_PRIORITY_PATTERNS.some((re) => new RegExp(re).test(p.name));
        const low = (params.lowPriorityMetrics as string[] | undefined) ?? [
          'process.cpu.time',
          'process.memory.usage',
        ];
        const lowSeries = low.reduce(
          (n, m) => n + (m === 'process.cpu.time' ? 3 : m === 'process.disk.io' ? 2 : 1),
          0,
        );
        series += critical || priority ? 7 : lowSeries;
        break;
      }
      case 'process-topk-v1':
      case 'process-intelligent-v1':
        series += critical || (tuning.keepList ?? []).includes(p.name) ? 7 : 0;
        break;
      case 'process-aggregated-v1':
        if (critical) series += 4;
        else if (!seen.has(`${p.host}/${p.name}`)) {
          seen.add(`${p.host}/${p.name}`);
          series += 4;
        }
        break;
      case 'process-adaptive-v1': {
        const t = tuning.thresholds ?? { cpuUtilization: 0.002, memoryBytes: 64 * 1024 * 1024 };
        series += critical
          ? 2
          : (p.cpuShare >= t.cpuUtilization ? 1 : 0) + (p.memory >= t.memoryBytes ? 1 : 0);
        break;
      }
      case 'process-minimal-v1':
        if (critical) series += 2;
        else hostsWithOthers.add(p.host);
        break;
      default:
        assert.fail(template);
    }
  }
  return series + hostsWithOthers.size * 2;
};

const candidates: [TemplateName, Record<string, unknown>][] = [
  ['process-priority-filter-v1', {}],
  ['process-topk-v1', {}],
  ['process-aggregated-v1', {}],
  ['process-adaptive-v1', {}],
  ['process-intelligent-v1', {}],
  ['process-minimal-v1', {}],
];

describe('emulator on a fixed seeded fleet', () => {
  it('the baseline exports every default series of every process', () => {
    assert.equal(baseline.series, fleet.size * 7);
    assert.equal(baseline.exportedPoints, fleet.size * 7);
    assert.equal(baseline.receivedPoints, fleet.size * 7);
  });

  const results = new Map<TemplateName, ScrapeResult>();
  for (const [template, params] of candidates) {
    const tuning = template === 'process-adaptive-v1' ? {} : tuningFor(template, params);
    const result = run(render(template, params, tuning));
    results.set(template, result);

    it(`${template}: series and points match a brute-force count over the same samples`, () => {
      const expected = bruteForceSeries(template, tuning, params);
      assert.equal(result.series, expected);
      assert.equal(result.exportedPoints, expected, 'one point per series after aggregation');
    });

    it(`${template}: keeps every critical process, by pid`, () => {
      const want = new Set(processes.filter((p) => isCritical(p.name)).map((p) => `${p.host}/${p.pid}`));
      assert.ok(want.size > 50, 'the fleet has critical processes');
      const got = new Set<string>();
      for (let o = 0; o < result.rows; o++) {
        const name = result.names[result.rowName[o] as number] as string;
        if (isCritical(name) && result.rowMask[o] !== 0 && (result.rowAttributes[o] as number) & 1)
          got.add(`${result.rowHost[o]}/${result.rowPid[o]}`);
      }
      assert.deepEqual(
        [...want].filter((k) => !got.has(k)),
        [],
      );
    });
  }

  it('reductions come in a plausible order', () => {
    const reduction = (t: TemplateName) => 1 - (results.get(t)?.series ?? 0) / baseline.series;
    const priority = reduction('process-priority-filter-v1');
    assert.ok(priority > 0.2 && priority < 0.5, `priority-filter ${priority}`);
    for (const t of ['process-topk-v1', 'process-minimal-v1'] as const) {
      assert.ok(reduction(t) > priority + 0.3, `${t} ${reduction(t)} vs priority-filter ${priority}`);
    }
    assert.ok(reduction('process-minimal-v1') > reduction('process-aggregated-v1'));
    const intelligent = reduction('process-intelligent-v1');
    assert.ok(intelligent >= 0.8 && intelligent < 0.95, `intelligent spends its 20% budget: ${intelligent}`);
  });

  it("aggregates by summing the members' memory per node and executable", () => {
    const agg = results.get('process-aggregated-v1') as ScrapeResult;
    const memSlot = agg.slots.findIndex((s) => s.metric.name === 'process.memory.usage');
    const expected = new Map<string, number>();
    for (const p of processes)
      if (!isCritical(p.name))
        expected.set(`${p.host}/${p.name}`, (expected.get(`${p.host}/${p.name}`) ?? 0) + p.memory);
    let checked = 0;
    for (let o = 0; o < agg.rows; o++) {
      const name = agg.names[agg.rowName[o] as number] as string;
      if (isCritical(name)) continue;
      assert.equal(agg.rowValues[o * agg.slots.length + memSlot], expected.get(`${agg.rowHost[o]}/${name}`));
      checked++;
    }
    assert.equal(checked, expected.size);
  });

  it('rolls every non-critical process of a node into one resource in minimal', () => {
    const minimal = results.get('process-minimal-v1') as ScrapeResult;
    const names = new Set<string>();
    for (let o = 0; o < minimal.rows; o++) names.add(minimal.names[minimal.rowName[o] as number] as string);
    assert.ok(names.has(ROLLUP_PROCESS_NAME));
    for (const n of names) assert.ok(n === ROLLUP_PROCESS_NAME || isCritical(n), n);
  });

  it('follows the rendered config: a parameter change shows up in the numbers', () => {
    const dropAll = run(render('process-priority-filter-v1', { lowPriorityMetrics: [] }));
    assert.equal(
      dropAll.series,
      bruteForceSeries('process-priority-filter-v1', {}, { lowPriorityMetrics: [] }),
    );
    assert.ok(dropAll.series < (results.get('process-priority-filter-v1') as ScrapeResult).series);
    const small = run(render('process-topk-v1', { k: 5 }, tuningFor('process-topk-v1', { k: 5 })));
    const large = run(render('process-topk-v1', { k: 80 }, tuningFor('process-topk-v1', { k: 80 })));
    assert.ok(small.series < large.series, `${small.series} < ${large.series}`);
    const fast = run(render('process-baseline-v1', { collectionIntervalSeconds: 10 }));
    assert.equal(fast.intervalSeconds, 10);
  });

  it('keeps CPU states apart or folds them, as the aggregated template is told', () => {
    const folded = run(render('process-aggregated-v1', { keepCpuStates: false }));
    const kept = results.get('process-aggregated-v1') as ScrapeResult;
    assert.equal(kept.series - folded.series, (kept.series / 4) * 2);
  });

  it('is deterministic for a seed and differs between seeds', () => {
    const again = new ProcessFleet({ hosts: 24, processesPerHost: 300, seed: 7 });
    const other = new ProcessFleet({ hosts: 24, processesPerHost: 300, seed: 8 });
    again.advance(60);
    assert.deepEqual(again.pid, fleet.pid);
    assert.deepEqual(again.cpuNow, fleet.cpuNow);
    assert.notDeepEqual(other.name, fleet.name);
  });

  it('churns processes: new pids appear, the name mix stays', () => {
    const f = new ProcessFleet({ hosts: 4, processesPerHost: 300, seed: 3 });
    const before = Int32Array.from(f.pid);
    f.advance(600);
    let changed = 0;
    for (let i = 0; i < f.size; i++) if (f.pid[i] !== before[i]) changed++;
    assert.ok(changed > 20 && changed < f.size / 2, `changed ${changed}`);
    assert.equal(f.lastChurn, changed);
  });

  it('has heavy-tailed CPU: the top 5% of processes use most of it', () => {
    const cpu = Float64Array.from(fleet.cpuNow).sort().reverse();
    const total = cpu.reduce((a, b) => a + b, 0);
    const top = cpu.subarray(0, Math.ceil(cpu.length * 0.05)).reduce((a, b) => a + b, 0);
    assert.ok(top / total > 0.5, `top 5% share ${top / total}`);
  });

  it('refuses what it cannot emulate instead of guessing', () => {
    const config = render('process-aggregated-v1');
    config.processors['groupbyattrs/merge'] = { keys: ['host.name'] };
    assert.throws(() => compilePipeline(config, vars), EmulationError);
    const other = render('process-baseline-v1');
    other.processors['interval/x'] = {};
    (other.service.pipelines.metrics as { processors: string[] }).processors.splice(2, 0, 'interval/x');
    assert.throws(() => compilePipeline(other, vars), /not emulated/);
  });
});

describe('emulator: what the real scraper does (found by emulator-differential.int.test.ts)', () => {
  const withMetrics = (metrics: Record<string, boolean>): CollectorConfig => {
    const config = render('process-baseline-v1');
    const receiver = config.receivers.hostmetrics as { scrapers: { process: { metrics: object } } };
    receiver.scrapers.process.metrics = Object.fromEntries(
      PROCESS_METRICS.map((m) => [m.name, { enabled: metrics[m.name] ?? false }]),
    );
    return config;
  };

  it('reports process.memory.utilization as a percentage of the host memory, not a fraction', () => {
    const result = run(withMetrics({ 'process.memory.utilization': true }));
    const slot = result.slots.findIndex((s) => s.metric.name === 'process.memory.utilization');
    assert.ok(slot >= 0);
    for (let o = 0; o < result.rows; o++) {
      const host = result.rowHost[o] as number;
      const i = fleet.pid.indexOf(result.rowPid[o] as number, host * fleet.perHost);
      const expected = (100 * (fleet.memNow[i] as number)) / (fleet.hostMemoryBytes[host] as number);
      assert.ok(Math.abs((result.rowValues[o * result.slots.length + slot] as number) - expected) < 1e-9);
    }
    const values = Array.from(
      { length: result.rows },
      (_, o) => result.rowValues[o * result.slots.length + slot] as number,
    );
    assert.ok(Math.max(...values) > 1, 'some process uses more than 1 % of its host');
  });

  it('gives a process CPU utilization from its second scrape on, as the scraper needs two', () => {
    const own = new ProcessFleet({ hosts: 4, processesPerHost: 200, seed: 3 });
    const pipeline = compilePipeline(
      withMetrics({ 'process.cpu.utilization': true, 'process.memory.usage': true }),
      {
        K8S_NODE_NAME: (h: number) => own.hostNames[h] as string,
      },
    );
    const seen = new Int32Array(own.size).fill(-1);
    const names = (r: ScrapeResult) =>
      new Set(
        r.slots.filter((_, s) => [...r.rowMask].some((m) => (m & (1 << s)) !== 0)).map((s) => s.metric.name),
      );
    const first = emulateScrape(own, pipeline, seen);
    assert.deepEqual([...names(first)], ['process.memory.usage']);
    assert.equal(first.receivedPoints, own.size);
    // Long enough for churn: the new pids have no utilization yet, every other process has one per state.
    own.advance(600);
    assert.ok(own.lastChurn > 0);
    const second = emulateScrape(own, pipeline, seen);
    const utilization = second.slots.flatMap((s, i) =>
      s.metric.name === 'process.cpu.utilization' && !s.collapsed ? [i] : [],
    );
    let without = 0;
    for (let o = 0; o < second.rows; o++) {
      const have = utilization.filter((s) => ((second.rowMask[o] as number) & (1 << s)) !== 0).length;
      assert.ok(have === 0 || have === 3);
      if (have === 0) without++;
    }
    assert.equal(without, own.lastChurn, 'exactly the processes that churned');
    // Without the scraper's memory, every process counts as seen before.
    assert.ok(names(emulateScrape(own, pipeline)).has('process.cpu.utilization'));
  });
});

describe('emulator: the aggregated template averaging', () => {
  it('emulates aggregation avg, which renders the collector\'s "mean", with the same series as a sum', () => {
    const summed = run(
      render('process-aggregated-v1', { aggregation: 'sum' }, tuningFor('process-aggregated-v1')),
    );
    const averaged = run(
      render(
        'process-aggregated-v1',
        { aggregation: 'avg' },
        tuningFor('process-aggregated-v1', { aggregation: 'avg' }),
      ),
    );
    assert.equal(averaged.series, summed.series);
    assert.equal(averaged.exportedPoints, summed.exportedPoints);
  });
});

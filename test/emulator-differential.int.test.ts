import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { LocalDataPlane } from '../src/adapters/local-dataplane.js';
import { ProcessFleet } from '../src/adapters/local-dataplane-fleet.js';
import { OtlpFleetSender } from '../src/adapters/otlp-fleet-sender.js';
import {
  type CollectorConfig,
  NODE_NAME_ENV,
  PROCESS_METRICS,
  processScraperSettings,
  type RenderVariantInput,
  renderVariant,
  TEMPLATE_NAMES,
  type TemplateName,
  toYaml,
} from '../src/domain/pipelines/index.js';
import {
  findCollector,
  freePort,
  mapLimit,
  onFreePorts,
  startCollector,
  withFreshPorts,
} from './support/otelcol.js';

/**
 * Issue 17 §4: the emulator proves itself against the real collector. The same simulated fleet (a few
 * hosts × tens of processes, with churn) goes (a) through the real collector running each template
 * rendered for simulation, fed by the OTLP sender, and (b) through the emulator as the local data plane
 * drives it; after each scrape, the `process_*` series of both Prometheus expositions are compared one
 * by one: names, types, label sets, values (counters at the same scrape count, gauges equal, both within
 * float rounding). A table of template × differences is printed; every difference must be explained
 * below, and none is left unexplained.
 *
 * Because this holds, the emulator is what Phoenix trusts where real collectors cannot go (1,000 hosts
 * × 500 processes, see local-dataplane-emulator.unit.test.ts).
 *
 * Explained, not differences:
 * - `host_name`: the simulator adds `host.name` to every resource so that one collector can take many
 *   hosts; a node's own scraper does not, and neither does the emulator (otlp-fleet-sender.ts).
 */

const collector = findCollector();
if (collector.skip) console.log(`# skipped: ${collector.skip}`);

const HOSTS = 3;
const PER_HOST = 150;
const SEED = 11;
const SCRAPES = 3;
/** Labels the simulator adds and a node's scraper has not (see above). */
const SIMULATOR_ONLY_LABELS = new Set(['host_name']);

type Case = Omit<RenderVariantInput, 'experimentId' | 'simulation' | 'otlpEndpoint'> & {
  readonly template: TemplateName;
  /** The config with every metric of the scraper enabled: every value formula is compared too. */
  readonly everyMetric?: true;
};

const label = (c: Case): string => (c.everyMetric ? `${c.template} + every metric` : c.template);

/** Each template with the inputs that make its processors do something on this fleet. */
const CASES: readonly Case[] = [
  { template: 'process-baseline-v1', variant: 'baseline' },
  { template: 'process-priority-filter-v1', variant: 'candidate', criticalProcesses: ['^kubelet$'] },
  {
    template: 'process-topk-v1',
    variant: 'candidate',
    criticalProcesses: ['^kubelet$'],
    keepList: ['containerd', 'postgres', 'python3', 'sh'],
  },
  { template: 'process-aggregated-v1', variant: 'candidate', criticalProcesses: ['^kubelet$'] },
  {
    template: 'process-adaptive-v1',
    variant: 'candidate',
    criticalProcesses: ['^kubelet$'],
    thresholds: { cpuUtilization: 0.0005, memoryBytes: 32 * 1024 * 1024 },
  },
  {
    template: 'process-intelligent-v1',
    variant: 'candidate',
    criticalProcesses: ['^kubelet$'],
    keepList: ['cilium-agent', 'java', 'nginx'],
  },
  { template: 'process-minimal-v1', variant: 'candidate', criticalProcesses: ['^kubelet$', '^containerd$'] },
  // No template enables these; the scraper has them, so the values must agree as well.
  { template: 'process-baseline-v1', variant: 'baseline', everyMetric: true },
];

/** Turns every metric of the rendered process scraper on (the emulator reads the toggles from the config). */
const enableEveryMetric = (config: CollectorConfig): void => {
  const receiver = config.receivers.hostmetrics as { scrapers: { process: { metrics: object } } };
  receiver.scrapers.process.metrics = Object.fromEntries(
    PROCESS_METRICS.map((m) => [m.name, { enabled: true }]),
  );
};

interface Exposition {
  /** Family name → TYPE. */
  readonly types: Map<string, string>;
  /** Series key (name and sorted labels) → value. */
  readonly series: Map<string, number>;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;

/** The `process_*` families of a Prometheus text exposition (format 0.0.4), labels sorted. */
const parseExposition = (text: string): Exposition => {
  const types = new Map<string, string>();
  const series = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type !== null) {
      if ((type[1] as string).startsWith('process_')) types.set(type[1] as string, type[2] as string);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = LINE.exec(line);
    assert.ok(m, `not an exposition line: ${line}`);
    const name = m[1] as string;
    if (!name.startsWith('process_')) continue;
    const labels = [...(m[2] ?? '').matchAll(LABEL)]
      .map((l) => [l[1] as string, l[2] as string] as const)
      .filter(([k]) => !SIMULATOR_ONLY_LABELS.has(k))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const key = `${name}{${labels.map(([k, v]) => `${k}="${v}"`).join(',')}}`;
    assert.ok(!series.has(key), `duplicate series ${key}`);
    series.set(key, Number(m[3]));
  }
  return { types, series };
};

/** Equal within float rounding: the emulator sums in another order and keeps some inputs in float32. */
const close = (a: number, b: number): boolean =>
  a === b || Math.abs(a - b) <= 1e-6 * Math.max(Math.abs(a), Math.abs(b)) + 1e-12;

interface Differences {
  readonly onlyCollector: string[];
  readonly onlyEmulator: string[];
  readonly values: string[];
  readonly types: string[];
}

const compare = (real: Exposition, emulated: Exposition): Differences => {
  const d: Differences = { onlyCollector: [], onlyEmulator: [], values: [], types: [] };
  for (const [key, value] of real.series) {
    const other = emulated.series.get(key);
    if (other === undefined) d.onlyCollector.push(key);
    else if (!close(value, other)) d.values.push(`${key} collector ${value} emulator ${other}`);
  }
  for (const key of emulated.series.keys()) if (!real.series.has(key)) d.onlyEmulator.push(key);
  for (const [name, type] of real.types) {
    const other = emulated.types.get(name);
    if (other !== undefined && other !== type) d.types.push(`${name}: collector ${type} emulator ${other}`);
  }
  return d;
};

const count = (d: Differences): number =>
  d.onlyCollector.length + d.onlyEmulator.length + d.values.length + d.types.length;

/** The collector's own count of points its prometheus exporter took in (level detailed). */
const exportedPoints = async (telemetryUrl: string): Promise<number> => {
  const text = await fetch(telemetryUrl).then((r) => r.text());
  let total = 0;
  for (const line of text.split('\n')) {
    if (/^otelcol_exporter_sent_metric_points(?:_total)?\{[^}]*exporter="prometheus"/.test(line))
      total += Number(line.split(' ').at(-1));
  }
  return total;
};

interface Outcome {
  readonly label: string;
  readonly template: TemplateName;
  /** Processes the fleet replaced by new pids over the run. */
  readonly churned: number;
  /** Series the emulator shows at the last scrape that its last scrape no longer exported (kept until metric_expiration). */
  readonly retired: number;
  /** Per scrape: series on each side and the differences. */
  readonly scrapes: {
    readonly collector: number;
    readonly emulator: number;
    /** Series on both sides whose values were compared. */
    readonly compared: number;
    readonly diff: Differences;
  }[];
}

describe('the emulator against the real collector, template by template (issue 17 §4)', {
  skip: collector.skip || false,
}, () => {
  const bin = collector.bin as string;
  const outcomes: Outcome[] = [];

  before(async () => {
    const deadPort = await freePort();
    const results = await mapLimit(CASES, 3, async (c): Promise<Outcome> => {
      const experimentId = `differential-${CASES.indexOf(c)}`;
      const input = {
        ...c,
        experimentId,
        // Nothing listens there: the rendered otlp exporter retries in the background, unchanged.
        otlpEndpoint: `127.0.0.1:${deadPort}`,
      };
      const forEmulator = renderVariant(input);
      assert.ok(forEmulator.ok, `${label(c)} renders`);
      // The collector on ports picked free; again on new ones if one was taken before it bound it.
      const { otlpPort, forCollector, local, running } = await withFreshPorts(async () => {
        const otlpPort = await freePort();
        const forCollector = renderVariant({
          ...input,
          simulation: { otlpEndpoint: `127.0.0.1:${otlpPort}` },
        });
        assert.ok(forCollector.ok, `${label(c)} renders`);
        const local = await onFreePorts(forCollector.config);
        // The batch processor only delays and regroups resources; flushing after 200 ms instead of 10 s
        // changes nothing the prometheus exporter shows and keeps the test short.
        (local.config.processors.batch as { timeout: string }).timeout = '200ms';
        const running = await startCollector(bin, toYaml(local.config), local.healthUrl, {
          [NODE_NAME_ENV]: 'collector-node',
        });
        return { otlpPort, forCollector, local, running };
      });
      const interval = forEmulator.processScraper.collectionIntervalSeconds;
      if (c.everyMetric) enableEveryMetric(forEmulator.config);
      const settings = c.everyMetric
        ? processScraperSettings(interval, Object.fromEntries(PROCESS_METRICS.map((m) => [m.name, true])), {})
        : forCollector.processScraper;
      // A data plane of its own: a tick advances every experiment of a plane.
      const plane = new LocalDataPlane({ tickMs: 0 });
      try {
        const fleet = new ProcessFleet({ hosts: HOSTS, processesPerHost: PER_HOST, seed: SEED });
        const sender = new OtlpFleetSender(fleet, {
          endpoint: `127.0.0.1:${otlpPort}`,
          settings,
        });
        plane.deploy({
          experimentId,
          variant: c.variant,
          config: forEmulator.config,
          hosts: HOSTS,
          processesPerHost: PER_HOST,
          seed: SEED,
        });
        const scrapes: Outcome['scrapes'] = [];
        let churned = 0;
        for (let k = 0; k < SCRAPES; k++) {
          if (k > 0) {
            fleet.advance(interval);
            churned += fleet.lastChurn;
            plane.tick(interval);
          }
          const before = await exportedPoints(local.telemetryUrl);
          const sent = await sender.sendOnce();
          assert.equal(sent.rejectedDataPoints, 0);
          // Settled: the exporter took this scrape's points, and no more arrive (a big request may leave
          // the batch processor in parts).
          const deadline = Date.now() + 30_000;
          let seen = before;
          for (;;) {
            await new Promise((r) => setTimeout(r, 250));
            const now = await exportedPoints(local.telemetryUrl);
            if (now > before && now === seen) break;
            seen = now;
            if (Date.now() > deadline)
              assert.fail(`${label(c)}: scrape ${k} never reached the exporter:\n${running.output()}`);
          }
          const real = parseExposition(await fetch(local.metricsUrl).then((r) => r.text()));
          const emulated = parseExposition(plane.exposition(experimentId, c.variant));
          assert.equal(plane.snapshot(experimentId, c.variant)?.scrapes, k + 1);
          const diff = compare(real, emulated);
          scrapes.push({
            collector: real.series.size,
            emulator: emulated.series.size,
            compared: real.series.size - diff.onlyCollector.length,
            diff,
          });
        }
        const retired =
          (scrapes.at(-1)?.emulator ?? 0) - (plane.snapshot(experimentId, c.variant)?.series ?? 0);
        return { label: label(c), template: c.template, churned, retired, scrapes };
      } finally {
        await running.stop();
        await plane.close();
      }
    });
    outcomes.push(...results);
    const rows = outcomes.map((o) => ({
      template: o.label,
      'series (collector/emulator, last scrape)': `${o.scrapes.at(-1)?.collector}/${o.scrapes.at(-1)?.emulator}`,
      'values compared': o.scrapes.reduce((n, s) => n + s.compared, 0),
      churned: o.churned,
      'kept after exit': o.retired,
      'only in collector': o.scrapes.reduce((n, s) => n + s.diff.onlyCollector.length, 0),
      'only in emulator': o.scrapes.reduce((n, s) => n + s.diff.onlyEmulator.length, 0),
      values: o.scrapes.reduce((n, s) => n + s.diff.values.length, 0),
      types: o.scrapes.reduce((n, s) => n + s.diff.types.length, 0),
    }));
    console.log(
      `# ${HOSTS} hosts × ${PER_HOST} processes, ${SCRAPES} scrapes, differences summed over scrapes`,
    );
    console.table(rows);
  });

  it('runs every template, on a fleet that churns', () => {
    assert.deepEqual([...new Set(outcomes.map((o) => o.template))].sort(), [...TEMPLATE_NAMES].sort());
    // Without churn, neither first scrapes of new pids nor series of exited processes would be compared.
    assert.ok(outcomes.every((o) => o.churned > 0));
    const baseline = outcomes.find((o) => o.label === 'process-baseline-v1');
    assert.ok((baseline?.retired ?? 0) > 0, 'the baseline shows series of exited processes');
  });

  for (const c of CASES) {
    it(`${label(c)}: no differences at any scrape`, () => {
      const outcome = outcomes.find((o) => o.label === label(c));
      assert.ok(outcome);
      outcome.scrapes.forEach((s, k) => {
        assert.ok(s.collector > 0, `scrape ${k}: the collector exposes series`);
        assert.equal(
          count(s.diff),
          0,
          `scrape ${k}: ${JSON.stringify(
            Object.fromEntries(Object.entries(s.diff).map(([kind, list]) => [kind, list.slice(0, 8)])),
            null,
            1,
          )}`,
        );
      });
    });
  }
});

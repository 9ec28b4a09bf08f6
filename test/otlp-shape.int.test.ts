import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ProcessFleet } from '../src/adapters/local-dataplane-fleet.js';
import { HOST_IDENTITY_ATTRIBUTES, OtlpFleetSender } from '../src/adapters/otlp-fleet-sender.js';
import {
  NODE_NAME_ENV,
  PROCESS_METRICS,
  type ProcessScraperSettings,
  processScraperSettings,
  renderVariant,
  TEMPLATE_NAMES,
  type TemplateName,
  toYaml,
} from '../src/domain/pipelines/index.js';
import {
  findCollector,
  freePort,
  onFreePorts,
  type RunningCollector,
  startCollector,
  withFreshPorts,
} from './support/otelcol.js';
import { type DebugBatch, parseDebugText, type Shape, shapeOf } from './support/otlp-text.js';

/**
 * Issue 17 §3: the simulator's OTLP is shaped exactly like the `hostmetrics` receiver's `process`
 * scraper. The real collector scrapes this machine's own processes (as root, so /proc is readable)
 * and the simulator sends into the same collector's `otlp` receiver; both go to the `debug` exporter,
 * and the shapes are compared: metric names, descriptions, units, types, monotonicity, temporality,
 * value types, data point attribute keys and values, resource attribute keys and types, scope, schema
 * URL. The one difference, asserted: the simulator adds host identity (host.name, k8s.node.name), which
 * a node's scraper does not. Then the simulator feeds real templates rendered for simulation, and their
 * prometheus exporters show the series with each simulated host's identity.
 */

const collector = findCollector();
const notRoot =
  process.getuid?.() === 0 ? undefined : 'not root: the process scraper cannot read every process';
const skip = collector.skip || notRoot || false;
if (skip) console.log(`# skipped: ${skip}`);

/** The collector's build version: the scraper's scope version. */
const collectorVersion = (bin: string): string => {
  const out = execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim();
  const version = out.split(/\s+/).at(-1);
  assert.ok(version, `no version in ${JSON.stringify(out)}`);
  return version;
};

/** One process scraper configuration to compare: as the collector takes it, and as the simulator does. */
interface Case {
  readonly name: string;
  readonly scraper: Record<string, unknown>;
  readonly settings: ProcessScraperSettings;
}

const everything: Case = (() => {
  const metrics = Object.fromEntries(PROCESS_METRICS.map((m) => [m.name, true]));
  const resourceAttributes = { 'process.cgroup': true };
  return {
    name: 'every metric and resource attribute',
    scraper: {
      metrics: Object.fromEntries(Object.keys(metrics).map((k) => [k, { enabled: true }])),
      resource_attributes: { 'process.cgroup': { enabled: true } },
    },
    settings: processScraperSettings(1, metrics, resourceAttributes),
  };
})();

type HostmetricsReceiver = { scrapers: { process: Record<string, unknown> } };

/** Each distinct process scraper section the templates render, with the settings the render reports. */
const templateCases: Case[] = (() => {
  const seen = new Map<string, Case>();
  for (const template of TEMPLATE_NAMES) {
    const rendered = renderVariant({ experimentId: 'shape', variant: 'candidate', template });
    assert.ok(rendered.ok, template);
    const scraper = (rendered.config.receivers.hostmetrics as HostmetricsReceiver).scrapers.process;
    const key = JSON.stringify(scraper);
    const known = seen.get(key);
    if (known) seen.set(key, { ...known, name: `${known.name}, ${template}` });
    else seen.set(key, { name: template, scraper, settings: rendered.processScraper });
  }
  return [...seen.values()];
})();

const CASES: readonly Case[] = [everything, ...templateCases];

const debugExporter = (file: string) => ({
  verbosity: 'detailed',
  use_internal_logger: false,
  output_paths: [file],
  sampling_initial: 1_000_000,
  sampling_thereafter: 1,
});

const readBatches = (file: string): DebugBatch[] =>
  existsSync(file) ? parseDebugText(readFileSync(file, 'utf8')) : [];

/** Waits until every file holds at least `count` exported batches. */
const waitForBatches = async (files: readonly string[], count: number, output: () => string) => {
  const deadline = Date.now() + 60_000;
  while (files.some((f) => readBatches(f).length < count)) {
    if (Date.now() > deadline) {
      const have = files.map((f) => `${f}: ${readBatches(f).length}`).join(', ');
      assert.fail(`fewer than ${count} batches (${have}):\n${output().slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
};

describe('the simulator is shaped like the hostmetrics process scraper (issue 17 §3)', { skip }, () => {
  const bin = collector.bin as string;
  let dir: string;
  const real: DebugBatch[][] = [];
  const simulated: DebugBatch[][] = [];
  let scopeVersion: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phoenix-otlp-shape-'));
    scopeVersion = collectorVersion(bin);
    const realFiles = CASES.map((_, i) => join(dir, `real-${i}.txt`));
    const simFiles = CASES.map((_, i) => join(dir, `sim-${i}.txt`));

    const config = (receivers: Record<string, unknown>, files: readonly string[], health: number): string =>
      toYaml({
        receivers,
        exporters: Object.fromEntries(files.map((f, i) => [`debug/${i}`, debugExporter(f)])),
        extensions: { health_check: { endpoint: `127.0.0.1:${health}` } },
        service: {
          extensions: ['health_check'],
          telemetry: { metrics: { level: 'none' } },
          pipelines: Object.fromEntries(
            Object.keys(receivers).map((id, i) => [
              `metrics/${i}`,
              { receivers: [id], processors: [], exporters: [`debug/${i}`] },
            ]),
          ),
        },
      });

    // The real scraper: two scrapes at least, so process.cpu.utilization has its second. Its ports are
    // picked free and could be taken before it binds them: it starts again on new ones then.
    const realReceivers = Object.fromEntries(
      CASES.map((c, i) => [
        `hostmetrics/${i}`,
        {
          collection_interval: '1s',
          scrapers: { process: { ...c.scraper, mute_process_all_errors: true } },
        },
      ]),
    );
    let running: RunningCollector = await withFreshPorts(async () => {
      const health = await freePort();
      return startCollector(bin, config(realReceivers, realFiles, health), `http://127.0.0.1:${health}/`);
    });
    try {
      await waitForBatches(realFiles, 2, running.output);
    } finally {
      await running.stop();
    }
    for (const f of realFiles) real.push(readBatches(f).slice(0, 2));

    // The simulator, into the otlp receivers of a collector with the same sink: two sends, 1 s apart.
    let otlpPorts: number[] = [];
    running = await withFreshPorts(async () => {
      otlpPorts = await Promise.all(CASES.map(() => freePort()));
      const health = await freePort();
      const receivers = Object.fromEntries(
        CASES.map((_, i) => [
          `otlp/${i}`,
          { protocols: { http: { endpoint: `127.0.0.1:${otlpPorts[i]}` } } },
        ]),
      );
      return startCollector(bin, config(receivers, simFiles, health), `http://127.0.0.1:${health}/`);
    });
    try {
      await Promise.all(
        CASES.map(async (c, i) => {
          const fleet = new ProcessFleet({ hosts: 3, processesPerHost: 40, seed: 17 + i });
          const sender = new OtlpFleetSender(fleet, {
            endpoint: `127.0.0.1:${otlpPorts[i]}`,
            settings: c.settings,
            scopeVersion,
            hostsPerRequest: 3,
          });
          const first = await sender.sendOnce();
          assert.equal(first.requests, 1);
          assert.equal(first.rejectedDataPoints, 0);
          fleet.advance(1);
          await sender.sendOnce();
        }),
      );
      await waitForBatches(simFiles, 2, running.output);
    } finally {
      await running.stop();
    }
    for (const f of simFiles) simulated.push(readBatches(f));
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  CASES.forEach((c, i) => {
    describe(c.name, () => {
      const shapes = (): { real: Shape; sim: Shape } => ({
        real: shapeOf(real[i] ?? []),
        sim: shapeOf(simulated[i] ?? []),
      });

      it('has the same metrics: names, descriptions, units, types, monotonicity, temporality, value types, data point attributes', () => {
        const { real: r, sim: s } = shapes();
        assert.ok(Object.keys(r.metrics).length > 0, 'the real scraper emitted no metric');
        assert.deepEqual(s.metrics, r.metrics);
        assert.deepEqual(
          Object.keys(s.metrics),
          c.settings.metrics.map((m) => m.name),
          'what the render says the scraper emits',
        );
      });

      it('has the same resource attributes and types, plus host identity; the same scope and schema URL', () => {
        const { real: r, sim: s } = shapes();
        const hostIdentity = Object.fromEntries(HOST_IDENTITY_ATTRIBUTES.map((k) => [k, ['Str']]));
        assert.deepEqual(s.resourceAttributes, { ...r.resourceAttributes, ...hostIdentity });
        assert.deepEqual(Object.keys(r.resourceAttributes).sort(), [...c.settings.resourceAttributes].sort());
        assert.deepEqual(s.scopes, r.scopes);
        assert.equal(r.scopes.length, 1);
        assert.deepEqual(s.schemaUrls, r.schemaUrls);
      });

      it('sends one resource per process, each with its own start time, like a scrape', () => {
        for (const [label, batches] of [
          ['real', real[i] ?? []],
          ['simulated', simulated[i] ?? []],
        ] as const) {
          assert.equal(batches.length, 2, label);
          for (const batch of batches) {
            const pids = batch.map(
              (r) => `${r.attributes['host.name']?.value}/${r.attributes['process.pid']?.value}`,
            );
            assert.equal(new Set(pids).size, batch.length, `${label}: one resource per process`);
            for (const resource of batch) {
              const points = resource.metrics.flatMap((m) => m.points);
              assert.ok(points.length > 0, label);
              // Every point of a process: its start time (milliseconds, the process's creation) and one scrape time.
              assert.equal(
                new Set(points.map((p) => p.start)).size,
                1,
                `${label}: one start time per process`,
              );
              assert.equal(
                new Set(points.map((p) => p.time)).size,
                1,
                `${label}: one scrape time per process`,
              );
              assert.match(
                points[0]?.start ?? '',
                /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,3})? \+0000 UTC$/,
                label,
              );
            }
          }
          if (c.settings.metrics.some((m) => m.name === 'process.cpu.utilization')) {
            const has = (b: DebugBatch) =>
              b.some((r) => r.metrics.some((m) => m.name === 'process.cpu.utilization'));
            assert.equal(has(batches[0] ?? []), false, `${label}: no CPU utilization on the first scrape`);
            assert.equal(has(batches[1] ?? []), true, `${label}: CPU utilization from the second scrape on`);
          }
        }
        const starts = new Set((simulated[i]?.[0] ?? []).map((r) => r.metrics[0]?.points[0]?.start));
        assert.ok(starts.size > 1, 'processes start at different times');
      });
    });
  });
});

interface Series {
  readonly name: string;
  readonly labels: Record<string, string>;
}

/** The series of a Prometheus text exposition (names and labels; values are not asserted here). */
const parseExposition = (text: string): Series[] =>
  text
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0] ?? '';
      const labels: Record<string, string> = {};
      for (const m of line.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
        labels[m[1] as string] = m[2] as string;
      return { name, labels };
    });

describe('the simulator feeds real templates rendered for simulation (issue 17 §3)', {
  skip: collector.skip || false,
}, () => {
  const bin = collector.bin as string;
  const HOSTS = 3;
  const PER_HOST = 25;
  const COLLECTOR_NODE = 'collector-node';
  const series: Partial<Record<TemplateName, Series[]>> = {};
  let fleetNames: readonly string[];

  before(async () => {
    const deadPort = await freePort();
    const runs: { template: TemplateName; extra: Record<string, unknown> }[] = [
      { template: 'process-baseline-v1', extra: {} },
      { template: 'process-topk-v1', extra: { criticalProcesses: ['^kubelet$'], keepList: ['containerd'] } },
    ];
    await Promise.all(
      runs.map(async ({ template, extra }) => {
        // Its ports picked and the collector started on them, again on new ones if one was taken.
        const { otlpPort, rendered, local, running } = await withFreshPorts(async () => {
          const otlpPort = await freePort();
          const rendered = renderVariant({
            experimentId: 'otlp-e2e',
            variant: template === 'process-baseline-v1' ? 'baseline' : 'candidate',
            template,
            // Nothing listens there: the rendered otlp exporter retries in the background, unchanged.
            otlpEndpoint: `127.0.0.1:${deadPort}`,
            simulation: { otlpEndpoint: `127.0.0.1:${otlpPort}` },
            ...extra,
          });
          assert.ok(rendered.ok, JSON.stringify(rendered.ok ? [] : rendered.errors));
          const local = await onFreePorts(rendered.config);
          const running = await startCollector(bin, toYaml(local.config), local.healthUrl, {
            [NODE_NAME_ENV]: COLLECTOR_NODE,
          });
          return { otlpPort, rendered, local, running };
        });
        try {
          const fleet = new ProcessFleet({ hosts: HOSTS, processesPerHost: PER_HOST, seed: 7 });
          fleetNames = fleet.hostNames;
          const sender = new OtlpFleetSender(fleet, {
            endpoint: `127.0.0.1:${otlpPort}`,
            settings: rendered.processScraper,
            hostsPerRequest: 2,
          });
          const sent = await sender.sendOnce();
          assert.equal(sent.requests, 2);
          assert.equal(sent.rejectedDataPoints, 0);
          // The templates' batch processor flushes after its 10 s timeout: wait for the exporter to show it.
          const deadline = Date.now() + 60_000;
          for (;;) {
            const text = await fetch(local.metricsUrl).then((r) => r.text());
            const found = parseExposition(text).filter((s) => s.name.startsWith('process_'));
            // Both requests' resources arrive in one batch; waiting for every host makes sure of it.
            const hostsSeen = new Set(found.map((s) => s.labels.k8s_node_name));
            if (fleet.hostNames.every((h) => hostsSeen.has(h))) {
              series[template] = found;
              break;
            }
            if (Date.now() > deadline)
              assert.fail(`no process series from ${template}:\n${running.output().slice(-3000)}`);
            await new Promise((r) => setTimeout(r, 500));
          }
        } finally {
          await running.stop();
        }
      }),
    );
  });

  it('baseline: every process of every simulated host, with its own host identity', () => {
    const all = series['process-baseline-v1'] ?? [];
    const cpu = all.filter((s) => s.name === 'process_cpu_time_seconds_total');
    assert.equal(cpu.length, HOSTS * PER_HOST * 3, 'one series per process and state');
    assert.deepEqual([...new Set(all.map((s) => s.name))].sort(), [
      'process_cpu_time_seconds_total',
      'process_disk_io_bytes_total',
      'process_memory_usage_bytes',
      'process_memory_virtual_bytes',
    ]);
    for (const host of fleetNames) {
      const mine = all.filter((s) => s.labels.k8s_node_name === host);
      assert.equal(mine.length, PER_HOST * 7, `${host}: 7 series per process`);
      assert.ok(mine.every((s) => s.labels.host_name === host));
    }
    // The resource processor inserts the collector's node name only where a resource has none.
    assert.ok(all.every((s) => s.labels.k8s_node_name !== COLLECTOR_NODE));
    assert.ok(all.every((s) => s.labels.experiment_id === 'otlp-e2e' && s.labels.variant === 'baseline'));
    assert.ok(
      all.every((s) => s.labels.process_pid !== undefined && s.labels.process_command_line !== undefined),
    );
  });

  it('process-topk-v1: only the critical and kept executables, on every host', () => {
    const all = series['process-topk-v1'] ?? [];
    assert.deepEqual([...new Set(all.map((s) => s.labels.process_executable_name))].sort(), [
      'containerd',
      'kubelet',
    ]);
    for (const host of fleetNames) {
      const mine = all.filter((s) => s.labels.k8s_node_name === host && s.labels.host_name === host);
      assert.equal(mine.length, 2 * 7, `${host}: kubelet and containerd, 7 series each`);
    }
    // The template trims the command line from the scraper; the simulator honours it.
    assert.ok(
      all.every((s) => s.labels.process_command_line === undefined && s.labels.variant === 'candidate'),
    );
  });
});

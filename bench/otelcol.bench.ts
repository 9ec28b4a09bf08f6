/**
 * The real data plane (issue 17 §8): one collector running process-baseline-v1 and one running a tuned
 * process-topk-v1, each with the config the otelcol deployer runs (rendered for simulation: an `otlp`
 * receiver in place of `hostmetrics`, every listener on 127.0.0.1), fed by the simulator's OTLP encoder.
 * The load grows stepwise (hosts × processes, a fresh collector per step) until a round no longer fits.
 *
 * A round is what one collection interval asks of the collector: every host's processes sent (POST
 * /v1/metrics, the receiver answers once the pipeline took them) and one full scrape of its prometheus
 * exporter. Rounds run back to back, the fleet advanced by the templates' interval between them, so a
 * step takes seconds, not minutes; the collector's CPU per round divided by the interval is what it
 * would use at that interval. A step saturates when a round (send + scrape) takes longer than the
 * interval, the receiver refuses points (memory_limiter) or answers an error, or the exporter has not
 * sent every accepted point once the batch processor's timeout has passed. Where the exporter's scrape
 * exceeds the managed Prometheus's timeout (4 s: 5 s interval, timeout one less) is printed too.
 * The emulator (LocalDataPlane) scrapes the same fleet (same seed) and renders its exposition, timed.
 * The deployer's config drops the rendered `otlp` exporter (its in-cluster gateway does not exist here),
 * so the prometheus exporter, which has no sending queue, is the only one: there is no queue to watch.
 * Growth also stops before a step would overrun the time budget; the last line then says where the
 * round time, continued linearly, would fill the interval, marked as an extrapolation.
 *
 *   npx tsx bench/otelcol.bench.ts    (or `npm run bench -- otelcol`)
 *   BENCH_OTELCOL_PROCESSES_PER_HOST (100), BENCH_OTELCOL_START_HOSTS (20), BENCH_OTELCOL_MAX_HOSTS (1280),
 *   BENCH_OTELCOL_BUDGET_SECONDS per template (150), BENCH_OTELCOL_INTERVAL_SECONDS (the templates' 60)
 */
import { pathToFileURL } from 'node:url';
import pLimit from 'p-limit';
import { LocalDataPlane } from '../src/adapters/local-dataplane.js';
import {
  compilePipeline,
  emulateScrape,
  type ScrapeResult,
} from '../src/adapters/local-dataplane-emulator.js';
import { ProcessFleet } from '../src/adapters/local-dataplane-fleet.js';
import { simulationConfig } from '../src/adapters/otelcol-deployer.js';
import { FleetOtlpEncoder } from '../src/adapters/otlp-fleet-sender.js';
import {
  type CollectorConfig,
  computeTuning,
  NODE_NAME_ENV,
  type ProcessScraperSettings,
  type ProcessUsageTable,
  parseTemplateParams,
  renderVariant,
  type TemplateName,
  toYaml,
} from '../src/domain/pipelines/index.js';
import { findCollector, freePort, startCollector, withFreshPorts } from '../test/support/otelcol.js';
import { median } from './support.js';

const env = (name: string, fallback: number): number => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number`);
  return v;
};
const PER_HOST = env('BENCH_OTELCOL_PROCESSES_PER_HOST', 100);
const START_HOSTS = env('BENCH_OTELCOL_START_HOSTS', 20);
const MAX_HOSTS = env('BENCH_OTELCOL_MAX_HOSTS', 1280);
const BUDGET_MS = env('BENCH_OTELCOL_BUDGET_SECONDS', 150) * 1000;
/** The collection interval rendered into both templates; their own default (60 s) unless said. */
const INTERVAL_SECONDS = process.env.BENCH_OTELCOL_INTERVAL_SECONDS
  ? env('BENCH_OTELCOL_INTERVAL_SECONDS', 60)
  : undefined;
const MEASURED_ROUNDS = 3;
const SEED = 8;
const HOSTS_PER_REQUEST = 20;
const CONCURRENCY = 4;
/** The managed Prometheus's scrape_timeout at its default 5 s interval (prometheus-server.ts). */
const PROMETHEUS_SCRAPE_TIMEOUT_MS = 4000;
/** The rendered batch processor's timeout (10 s) and a margin: every round is exported by then. */
const FLUSH_MS = 12_000;
const CRITICAL = ['^postgres$', '^nginx$', '^kubelet$', '^containerd$', '^sshd$'];
const TEMPLATES: readonly TemplateName[] = ['process-baseline-v1', 'process-topk-v1'];

/** Process series in a Prometheus exposition. */
const seriesIn = (text: string): number => text.split('\n').filter((l) => l.startsWith('process_')).length;

/** Sum of a metric's samples in an exposition (name with or without `_total`). */
const metricSum = (text: string, name: string): number => {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!(line.startsWith(`${name}{`) || line.startsWith(`${name} `) || line.startsWith(`${name}_total`)))
      continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) sum += value;
  }
  return sum;
};

interface Telemetry {
  readonly cpuSeconds: number;
  readonly rssBytes: number;
  readonly refused: number;
}

const telemetry = async (url: string): Promise<Telemetry> => {
  const text = await fetch(url).then((r) => r.text());
  return {
    cpuSeconds: metricSum(text, 'otelcol_process_cpu_seconds'),
    rssBytes: metricSum(text, 'otelcol_process_memory_rss'),
    refused: metricSum(text, 'otelcol_receiver_refused_metric_points'),
  };
};

const usageOf = (r: ScrapeResult): ProcessUsageTable => ({
  length: r.rows,
  node: r.rowHost,
  name: r.rowName,
  names: r.names,
  cpu: r.rowCpu,
  memory: r.rowMemory,
});

const render = (template: TemplateName, tuning = {}) => {
  const rendered = renderVariant({
    experimentId: 'bench-otelcol',
    variant: template === 'process-baseline-v1' ? 'baseline' : 'candidate',
    template,
    params: INTERVAL_SECONDS === undefined ? {} : { collectionIntervalSeconds: INTERVAL_SECONDS },
    criticalProcesses: CRITICAL,
    ...tuning,
  });
  if (!rendered.ok) throw new Error(JSON.stringify(rendered.errors));
  return rendered;
};

/** The template's config for a fleet: top-k tuned from the baseline's usage of the same fleet, as the worker does. */
const configFor = (
  template: TemplateName,
  hosts: number,
): { config: CollectorConfig; settings: ProcessScraperSettings } => {
  if (template === 'process-baseline-v1') {
    const r = render(template);
    return { config: r.config, settings: r.processScraper };
  }
  const fleet = new ProcessFleet({ hosts, processesPerHost: PER_HOST, seed: SEED });
  const vars = { [NODE_NAME_ENV]: (h: number) => fleet.hostNames[h] as string };
  const baseline = emulateScrape(fleet, compilePipeline(render('process-baseline-v1').config, vars));
  const parsed = parseTemplateParams(template, {});
  if (!parsed.ok) throw new Error(`${template}: ${JSON.stringify(parsed.errors)}`);
  const r = render(template, computeTuning(parsed.value, usageOf(baseline), CRITICAL) ?? {});
  return { config: r.config, settings: r.processScraper };
};

interface Step {
  readonly hosts: number;
  readonly processes: number;
  readonly series: number;
  readonly encodeMs: number;
  readonly postMs: number;
  readonly scrapeMs: number;
  readonly roundMs: number;
  readonly cpuSecondsPerRound: number;
  readonly rssMiB: number;
  readonly emulatorMs: number;
  readonly stepSeconds: number;
  /** Why the step saturated, or undefined when it held. */
  readonly saturated?: string;
}

const runStep = async (bin: string, template: TemplateName, hosts: number): Promise<Step> => {
  const started = performance.now();
  const { config, settings } = configFor(template, hosts);
  const interval = settings.collectionIntervalSeconds;
  // On ports picked free; again on new ones if one was taken before the collector bound it.
  const { ports, running } = await withFreshPorts(async () => {
    const ports = {
      otlp: await freePort(),
      prometheus: await freePort(),
      telemetry: await freePort(),
      health: await freePort(),
    };
    const running = await startCollector(
      bin,
      toYaml(simulationConfig(config, ports)),
      `http://127.0.0.1:${ports.health}/`,
      { [NODE_NAME_ENV]: 'bench-node' },
    );
    return { ports, running };
  });
  const telemetryUrl = `http://127.0.0.1:${ports.telemetry}/metrics`;
  const metricsUrl = `http://127.0.0.1:${ports.prometheus}/metrics`;
  const otlpUrl = `http://127.0.0.1:${ports.otlp}/v1/metrics`;
  try {
    const fleet = new ProcessFleet({ hosts, processesPerHost: PER_HOST, seed: SEED });
    const encoder = new FleetOtlpEncoder(fleet, { settings, epochMs: Date.now() });
    const limit = pLimit(CONCURRENCY);
    let errors = 0;
    const post = async (body: Uint8Array) => {
      const response = await fetch(otlpUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-protobuf' },
        body,
        signal: AbortSignal.timeout(Math.max(10_000, interval * 1000)),
      }).catch(() => undefined);
      await response?.arrayBuffer();
      if (response?.status !== 200) errors++;
    };
    const batches: number[][] = [];
    for (let h = 0; h < hosts; h += HOSTS_PER_REQUEST)
      batches.push(Array.from({ length: Math.min(HOSTS_PER_REQUEST, hosts - h) }, (_, k) => h + k));

    // The emulator on the same fleet: its deploy scrapes once, each tick of one interval scrapes again.
    const plane = new LocalDataPlane({ tickMs: 0 });
    const emulated: number[] = [];
    let emulatorExposition = '';
    const emulate = (first: boolean) => {
      const t = performance.now();
      if (first)
        plane.deploy({
          experimentId: 'bench-otelcol',
          variant: 'baseline',
          config,
          hosts,
          processesPerHost: PER_HOST,
          seed: SEED,
        });
      else plane.tick(interval);
      emulatorExposition = plane.exposition('bench-otelcol', 'baseline');
      emulated.push(performance.now() - t);
    };

    const encodes: number[] = [];
    const posts: number[] = [];
    const scrapes: number[] = [];
    let series = 0;
    let cpuBefore = 0;
    let rss = 0;
    const refusedBefore = (await telemetry(telemetryUrl)).refused;
    for (let round = 0; round <= MEASURED_ROUNDS; round++) {
      // Round 0 warms up: the first scrape creates every series and has no process.cpu.utilization.
      if (round === 1) cpuBefore = (await telemetry(telemetryUrl)).cpuSeconds;
      if (round > 0) fleet.advance(interval);
      let t = performance.now();
      const bodies = batches.map((b) => encoder.encode(b).body);
      encodes.push(performance.now() - t);
      t = performance.now();
      await Promise.all(bodies.map((body) => limit(() => post(body))));
      posts.push(performance.now() - t);
      t = performance.now();
      await fetch(metricsUrl).then((r) => r.text());
      scrapes.push(performance.now() - t);
      emulate(round === 0);
      if (round > 0) rss = Math.max(rss, (await telemetry(telemetryUrl)).rssBytes);
    }
    const cpuAfter = (await telemetry(telemetryUrl)).cpuSeconds;
    // Every round must reach the exporter once the batch processor's timeout has passed: its series
    // are then the emulator's (the differential test finds no difference on any template).
    const expected = seriesIn(emulatorExposition);
    const flushDeadline = Date.now() + FLUSH_MS;
    for (;;) {
      series = seriesIn(await fetch(metricsUrl).then((r) => r.text()));
      if (series === expected || Date.now() > flushDeadline) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const last = await telemetry(telemetryUrl);
    const measured = (xs: number[]) => median(xs.slice(1));
    const rounds = posts.slice(1).map((p, i) => p + (scrapes[i + 1] as number));
    const roundMs = median(rounds);
    const refused = last.refused - refusedBefore;
    const saturated =
      errors > 0
        ? `${errors} requests refused or failed`
        : refused > 0
          ? `${refused} points refused`
          : roundMs > interval * 1000
            ? `a round took ${Math.round(roundMs)} ms, more than the ${interval} s interval`
            : series !== expected
              ? `${FLUSH_MS / 1000} s after the last round the exporter shows ${series} series, the emulator ${expected}`
              : undefined;
    return {
      hosts,
      processes: hosts * PER_HOST,
      series,
      encodeMs: measured(encodes),
      postMs: measured(posts),
      scrapeMs: measured(scrapes),
      roundMs,
      cpuSecondsPerRound: (cpuAfter - cpuBefore) / MEASURED_ROUNDS,
      rssMiB: rss / 2 ** 20,
      emulatorMs: measured(emulated),
      stepSeconds: (performance.now() - started) / 1000,
      ...(saturated ? { saturated } : {}),
    };
  } finally {
    await running.stop();
  }
};

const row = (cells: (string | number)[], widths: number[]) =>
  cells.map((c, i) => String(c).padStart(widths[i] as number)).join(' ');
const WIDTHS = [16, 9, 8, 8, 8, 8, 11, 7, 8, 10, 9, 9];

/** Runs the benchmark and prints a table per template; used by the bench index. */
export async function run(): Promise<string> {
  const collector = findCollector();
  if (collector.bin === undefined) {
    console.log(`otelcol bench skipped: ${collector.skip}`);
    return `skipped: ${collector.skip}`;
  }
  const bin = collector.bin;
  console.log(
    `real collector ${bin}: ${PER_HOST} processes per host, hosts doubling from ${START_HOSTS}; per step 1 warm-up + ${MEASURED_ROUNDS} rounds (medians), a fresh collector; emulator on the same fleet`,
  );
  const summary: string[] = [];
  for (const template of TEMPLATES) {
    const interval = render(template).processScraper.collectionIntervalSeconds;
    console.log(`\n${template} at a ${interval} s interval`);
    console.log(
      row(
        [
          'hosts×procs',
          'series',
          'encode',
          'post',
          'scrape',
          'round',
          'cpu s/round',
          'cores',
          'RSS MiB',
          'emulator',
          'cpu/emu',
          'wall/emu',
        ],
        WIDTHS,
      ),
    );
    const started = performance.now();
    const steps: Step[] = [];
    let held: Step | undefined;
    let saturatedAt: Step | undefined;
    let scrapeLimit: Step | undefined;
    for (let hosts = START_HOSTS; hosts <= MAX_HOSTS; hosts *= 2) {
      const step = await runStep(bin, template, hosts);
      console.log(
        row(
          [
            `${hosts}×${PER_HOST}`,
            step.series,
            `${Math.round(step.encodeMs)}ms`,
            `${Math.round(step.postMs)}ms`,
            `${Math.round(step.scrapeMs)}ms`,
            `${Math.round(step.roundMs)}ms`,
            step.cpuSecondsPerRound.toFixed(2),
            (step.cpuSecondsPerRound / interval).toFixed(3),
            Math.round(step.rssMiB),
            `${Math.round(step.emulatorMs)}ms`,
            (step.cpuSecondsPerRound / (step.emulatorMs / 1000)).toFixed(1),
            (step.roundMs / step.emulatorMs).toFixed(1),
          ],
          WIDTHS,
        ) + (step.saturated ? `  SATURATED: ${step.saturated}` : ''),
      );
      if (scrapeLimit === undefined && step.scrapeMs > PROMETHEUS_SCRAPE_TIMEOUT_MS) scrapeLimit = step;
      if (step.saturated) {
        saturatedAt = step;
        break;
      }
      held = step;
      steps.push(step);
      // The next step is about twice this one: stop before it would overrun the budget.
      if (performance.now() - started + 2.5 * step.stepSeconds * 1000 > BUDGET_MS) {
        console.log(`  (time budget of ${BUDGET_MS / 1000} s: not growing further)`);
        break;
      }
    }
    // Not a measurement: where the last two steps' round times, continued linearly, fill the interval.
    const [a, b] = steps.slice(-2);
    const slope = a && b ? (b.roundMs - a.roundMs) / (b.processes - a.processes) : 0;
    const extrapolated =
      saturatedAt === undefined && a && b && slope > 0
        ? `; extrapolated, not measured: a round would fill the ${interval} s interval near ${Math.round((b.processes + (interval * 1000 - b.roundMs) / slope) / 1000)}k processes`
        : '';
    const line = `${template}: sustains ${held ? `${held.hosts}×${PER_HOST} (${held.processes} processes, ${held.series} series, ${(held.cpuSecondsPerRound / interval).toFixed(3)} cores, ${Math.round(held.rssMiB)} MiB; ${(held.cpuSecondsPerRound / (held.emulatorMs / 1000)).toFixed(1)}× the emulator's time)` : 'not even the first step'}; ${saturatedAt ? `saturates at ${saturatedAt.processes} processes (${saturatedAt.saturated})` : 'no saturation within the steps run'}; exporter scrape over ${PROMETHEUS_SCRAPE_TIMEOUT_MS / 1000} s ${scrapeLimit ? `from ${scrapeLimit.processes} processes` : 'nowhere'}${extrapolated}`;
    console.log(line);
    summary.push(line);
  }
  return summary.join(' | ');
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) await run();

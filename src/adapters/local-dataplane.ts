/**
 * The local (simulated) data plane of the embedded default: what the Kubernetes deployer and the
 * Prometheus analyzer talk to when there is no cluster. Deploying a variant starts an emulated collector
 * DaemonSet over a simulated fleet (one fleet per experiment, shared by baseline and candidate so they see
 * the same nodes and processes); each variant's output is served as Prometheus text, with the
 * collector's own metrics, on a local HTTP endpoint a real Prometheus can scrape.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseYaml } from 'yaml';
import {
  type CollectorConfig,
  type CollectorRegex,
  compileCollectorRegex,
  NODE_NAME_ENV,
  PROCESS_SCRAPER_SCOPE_NAME,
  PROCESS_SCRAPER_SCOPE_VERSION,
  type ProcessUsageTable,
  prometheusLabelName,
  prometheusMetricName,
  VARIANTS,
  type Variant,
} from '../domain/pipelines/index.js';
import {
  type CompiledPipeline,
  compilePipeline,
  EmulationError,
  emulateScrape,
  IDENTITY_BIT,
  popcount,
  type ScrapeResult,
} from './local-dataplane-emulator.js';
import { catalogEntry, commandLineOf, ProcessFleet } from './local-dataplane-fleet.js';
import { DEFAULT_HISTORY_CAPACITY, type HistorySample, ScrapeHistory } from './local-dataplane-history.js';

export { EmulationError } from './local-dataplane-emulator.js';

/** A deployment request the data plane cannot honour (bad config, fleet mismatch); the deployer reports it as a failed deploy. */
export class LocalDataPlaneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LocalDataPlaneError';
  }
}

export interface DeployVariantInput {
  readonly experimentId: string;
  readonly variant: Variant;
  /** The rendered collector config (object or YAML), exactly what would be applied to a cluster. */
  readonly config: CollectorConfig | string;
  /** Nodes of the experiment's target. */
  readonly hosts: number;
  readonly processesPerHost?: number;
  /** Fleet seed; the same seed gives the same processes, so runs are reproducible. */
  readonly seed?: number;
  /** The experiment's critical-process patterns, for `criticalSeen` in snapshots. */
  readonly criticalProcesses?: readonly string[];
}

export interface VariantSnapshot {
  readonly experimentId: string;
  readonly variant: Variant;
  readonly hosts: number;
  readonly scrapes: number;
  /** Simulated seconds since the experiment's fleet started. */
  readonly simulatedTimeSeconds: number;
  readonly collectionIntervalSeconds: number;
  /** Series exported at the last scrape (process metrics). */
  readonly series: number;
  /** Process data points exported per minute at the last scrape's rate. */
  readonly datapointsPerMinute: number;
  /** Distinct executable names present in the output, per node. */
  readonly processesByNode: Readonly<Record<string, readonly string[]>>;
  /** Critical (node, executable) pairs present in the output. */
  readonly criticalSeen: readonly { readonly node: string; readonly executableName: string }[];
  readonly collector: {
    /** Collector CPU seconds summed over nodes since deploy. */
    readonly cpuSecondsTotal: number;
    /** Average collector CPU per node, in cores. */
    readonly cpuCoresPerNode: number;
    readonly memoryRssBytesPerNode: number;
    readonly memoryRssBytesMax: number;
  };
  /** Where Prometheus scrapes this variant (undefined until the server listens). */
  readonly endpoint: string | undefined;
}

/** A variant just started: what is known of it before its first scrape. */
export interface StartedVariant {
  readonly experimentId: string;
  readonly variant: Variant;
  readonly hosts: number;
  readonly collectionIntervalSeconds: number;
  /** Where Prometheus scrapes this variant (undefined until the server listens). */
  readonly endpoint: string | undefined;
}

export interface LocalDataPlaneOptions {
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  /** Real milliseconds between ticks of the simulation. */
  readonly tickMs?: number;
  /** Simulated seconds that pass per tick; each variant scrapes on its own collection interval. */
  readonly simulatedSecondsPerTick?: number;
  readonly defaultProcessesPerHost?: number;
  /**
   * Samples kept per variant and host over a run (see ScrapeHistory): fixed memory of
   * 24 bytes × hosts × this per variant; default 120.
   */
  readonly historyCapacity?: number;
  /** Wall-clock milliseconds, stamped on each kept sample (the run's window is wall-clock time). */
  readonly clock?: () => number;
}

/** A collector fault the simulation cannot produce by itself, injected (chaos testing, demos). */
export type CollectorFault =
  /** The collector restarts: its counters and uptime start again from zero. */
  | { readonly kind: 'restart' }
  /** The collector fails to export this many points on every host (its send_failed counter grows). */
  | { readonly kind: 'drop'; readonly pointsPerHost: number };

/** What the data plane knows of a variant's collector health since it was first deployed. */
export interface CollectorHealthRecord {
  /** Wall-clock ms of every restart (a redeploy or an injected restart), oldest first. */
  readonly restartsAt: readonly number[];
  /** Points that failed to export, summed over hosts, with the wall-clock ms they were counted at. */
  readonly dropsAt: readonly { readonly at: number; readonly points: number }[];
}

interface VariantState {
  readonly variant: Variant;
  readonly pipeline: CompiledPipeline;
  readonly critical: readonly CollectorRegex[];
  /** The last scrape; undefined until the first (see scraped()). */
  last: ScrapeResult | undefined;
  scrapes: number;
  dueIn: number;
  readonly sentPoints: Float64Array;
  readonly receivedPoints: Float64Array;
  readonly cpuSeconds: Float64Array;
  readonly rss: Float64Array;
  deployedAt: number;
  /** The scraper's pid of each fleet slot at the last scrape (see emulateScrape). */
  readonly seenPids: Int32Array;
  /** Series the prometheus exporter still shows though the last scrape no longer has them (see retire). */
  stale: StaleRow[];
  /** Points each host's collector failed to export (only injected faults: the emulator never drops). */
  readonly failedPoints: Float64Array;
}

/** What outlives a redeploy of a variant: the run's samples and what is known of its collector's health. */
interface VariantRecord {
  readonly history: ScrapeHistory;
  readonly restartsAt: number[];
  readonly dropsAt: { at: number; points: number }[];
}

/** Restarts and drops remembered per variant; older ones are forgotten (a run that sees more has failed long ago). */
const MAX_HEALTH_EVENTS = 64;

const pushBounded = <T>(list: T[], item: T): void => {
  list.push(item);
  if (list.length > MAX_HEALTH_EVENTS) list.shift();
};

/**
 * Data points of an earlier scrape's row that later scrapes no longer export: the exporter keeps showing
 * them, with their last values, until its metric_expiration passes. Kept as a reference into that
 * scrape's columns (lines are made at exposition time, as for the live rows).
 */
interface StaleRow {
  readonly result: ScrapeResult;
  readonly row: number;
  /** The row's data points still shown. */
  mask: number;
}

interface ExperimentState {
  readonly fleet: ProcessFleet;
  readonly variants: Map<Variant, VariantState>;
  /** Simulated time not yet applied to the fleet (advanced lazily, only when a variant scrapes). */
  pending: number;
  readonly records: Map<Variant, VariantRecord>;
}

const MIB = 1024 * 1024;

/** Collector resident memory: runtime base + scraper handles + the Prometheus exporter's series cache + batch buffer. */
const rssModel = (scraped: number, series: number, points: number): number =>
  48 * MIB + 2048 * scraped + 1200 * series + 300 * points;

const escapeLabel = (v: string): string =>
  v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/** Go's strconv-style shortest round-trip formatting, which Prometheus parses. */
const formatValue = (v: number): string => String(v);

/** Longest the timer's tick keeps the event loop before letting other work in. */
const TICK_SLICE_MS = 5;

export class LocalDataPlane {
  private readonly experiments = new Map<string, ExperimentState>();
  private server: Server | undefined;
  private baseUrl: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private owedSeconds = 0;
  private readonly options: Required<Omit<LocalDataPlaneOptions, 'clock'>>;
  private readonly now: () => number;

  constructor(options: LocalDataPlaneOptions = {}) {
    this.options = {
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 0,
      tickMs: options.tickMs ?? 1000,
      simulatedSecondsPerTick: options.simulatedSecondsPerTick ?? 15,
      defaultProcessesPerHost: options.defaultProcessesPerHost ?? 500,
      historyCapacity: options.historyCapacity ?? DEFAULT_HISTORY_CAPACITY,
    };
    this.now = options.clock ?? Date.now;
  }

  /** Creates a data plane and starts its HTTP endpoint. */
  static async start(options: LocalDataPlaneOptions = {}): Promise<LocalDataPlane> {
    const plane = new LocalDataPlane(options);
    await plane.listen();
    return plane;
  }

  /** Starts serving `/metrics` and `/metrics/{experimentId}/{variant}`; resolves with the base URL. */
  async listen(): Promise<string> {
    if (this.baseUrl !== undefined) return this.baseUrl;
    const server = createServer((req, res) => {
      this.handle(req, res).catch(() => {
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => resolve());
    });
    this.server = server;
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    this.baseUrl = `http://${host}:${address.port}`;
    return this.baseUrl;
  }

  /** The base URL, once listening. */
  get url(): string | undefined {
    return this.baseUrl;
  }

  /** The scrape URL of one variant (what a Prometheus scrape config targets). */
  endpointUrl(experimentId: string, variant: Variant): string | undefined {
    return this.baseUrl === undefined
      ? undefined
      : `${this.baseUrl}/metrics/${encodeURIComponent(experimentId)}/${variant}`;
  }

  /**
   * Deploys (or redeploys, e.g. after re-rendering with a keep-list) one variant. The first deploy of an
   * experiment creates its fleet; the other variant must name the same hosts, size and seed, because a
   * baseline and a candidate are only comparable on the same nodes. Scrapes once immediately, so a
   * snapshot exists as soon as this returns. Throws {@link LocalDataPlaneError} on a config it cannot run.
   */
  deploy(input: DeployVariantInput): VariantSnapshot {
    this.startVariant(input);
    return this.snapshot(input.experimentId, input.variant) as VariantSnapshot;
  }

  /**
   * Deploys like {@link deploy}, but leaves the first scrape to the next tick, or to the first
   * snapshot(), usage() or exposition that needs it: a collector is ready before it has scraped, as
   * a DaemonSet is. The scrape is most of a deploy's cost, and a deployer that waits for it holds up
   * every other experiment's deploy behind it.
   */
  startVariant(input: DeployVariantInput): StartedVariant {
    if (!(VARIANTS as readonly string[]).includes(input.variant))
      throw new LocalDataPlaneError(`unknown variant ${String(input.variant)}`);
    const perHost = input.processesPerHost ?? this.options.defaultProcessesPerHost;
    const seed = input.seed ?? 1;
    let config: CollectorConfig;
    try {
      config = (typeof input.config === 'string' ? parseYaml(input.config) : input.config) as CollectorConfig;
    } catch (err) {
      throw new LocalDataPlaneError(`config is not valid YAML: ${(err as Error).message}`);
    }
    const critical = (input.criticalProcesses ?? []).map((p) => {
      const check = compileCollectorRegex(p);
      if (!check.ok)
        throw new LocalDataPlaneError(`critical process pattern ${JSON.stringify(p)}: ${check.message}`);
      return check.regex;
    });
    let experiment = this.experiments.get(input.experimentId);
    if (experiment !== undefined) {
      const { fleet } = experiment;
      if (fleet.hosts !== input.hosts || fleet.perHost !== perHost || fleet.seed !== seed >>> 0) {
        throw new LocalDataPlaneError(
          `experiment ${input.experimentId} already runs on ${fleet.hosts} hosts × ${fleet.perHost} processes (seed ${fleet.seed}); both variants must share the fleet`,
        );
      }
    } else {
      try {
        experiment = {
          fleet: new ProcessFleet({ hosts: input.hosts, processesPerHost: perHost, seed }),
          variants: new Map(),
          pending: 0,
          records: new Map(),
        };
      } catch (err) {
        throw new LocalDataPlaneError((err as Error).message);
      }
    }
    const fleet = experiment.fleet;
    let pipeline: CompiledPipeline;
    try {
      pipeline = compilePipeline(config, {
        [NODE_NAME_ENV]: (h: number) => fleet.hostNames[h] as string,
        PHOENIX_EXPERIMENT_ID: input.experimentId,
        PHOENIX_VARIANT: input.variant,
      });
    } catch (err) {
      if (err instanceof EmulationError)
        throw new LocalDataPlaneError(`cannot run this config: ${err.message}`);
      throw new LocalDataPlaneError(`cannot run this config: ${(err as Error).message}`);
    }
    this.experiments.set(input.experimentId, experiment);
    this.catchUp(experiment);
    const hosts = fleet.hosts;
    const state: VariantState = {
      variant: input.variant,
      pipeline,
      critical,
      last: undefined,
      scrapes: 0,
      dueIn: 0,
      sentPoints: new Float64Array(hosts),
      receivedPoints: new Float64Array(hosts),
      cpuSeconds: new Float64Array(hosts),
      rss: new Float64Array(hosts),
      deployedAt: fleet.time,
      seenPids: new Int32Array(fleet.size).fill(-1),
      stale: [],
      failedPoints: new Float64Array(hosts),
    };
    const record = experiment.records.get(input.variant);
    if (record === undefined)
      experiment.records.set(input.variant, {
        history: new ScrapeHistory(hosts, this.options.historyCapacity),
        restartsAt: [],
        dropsAt: [],
      });
    else pushBounded(record.restartsAt, this.now());
    experiment.variants.set(input.variant, state);
    this.ensureTimer();
    return {
      experimentId: input.experimentId,
      variant: input.variant,
      hosts,
      collectionIntervalSeconds: pipeline.intervalSeconds,
      endpoint: this.endpointUrl(input.experimentId, input.variant),
    };
  }

  /** The variant's last scrape, scraping now if it has not scraped yet. */
  private scraped(experiment: ExperimentState, state: VariantState): ScrapeResult {
    if (state.last !== undefined) return state.last;
    this.catchUp(experiment);
    const last = emulateScrape(experiment.fleet, state.pipeline, state.seenPids);
    state.last = last;
    state.dueIn = state.pipeline.intervalSeconds;
    this.account(experiment, state, last);
    return last;
  }

  /** Removes both variants of an experiment and its fleet; false when nothing was deployed. */
  teardown(experimentId: string): boolean {
    const removed = this.experiments.delete(experimentId);
    if (this.experiments.size === 0) this.stopTimer();
    return removed;
  }

  isDeployed(experimentId: string, variant: Variant): boolean {
    return this.experiments.get(experimentId)?.variants.has(variant) ?? false;
  }

  /** What the analyzer needs about a variant, from its last scrape; undefined when not deployed. */
  snapshot(experimentId: string, variant: Variant): VariantSnapshot | undefined {
    const experiment = this.experiments.get(experimentId);
    const state = experiment?.variants.get(variant);
    if (experiment === undefined || state === undefined) return undefined;
    const { fleet } = experiment;
    const last = this.scraped(experiment, state);
    const namesByHost: Set<string>[] = Array.from({ length: fleet.hosts }, () => new Set());
    for (let o = 0; o < last.rows; o++) {
      const id = last.rowName[o] as number;
      if (id >= 0) (namesByHost[last.rowHost[o] as number] as Set<string>).add(last.names[id] as string);
    }
    const processesByNode: Record<string, string[]> = {};
    const criticalSeen: { node: string; executableName: string }[] = [];
    namesByHost.forEach((names, h) => {
      const node = fleet.hostNames[h] as string;
      const sorted = [...names].sort();
      processesByNode[node] = sorted;
      for (const name of sorted)
        if (state.critical.some((re) => re.test(name))) criticalSeen.push({ node, executableName: name });
    });
    let cpuTotal = 0;
    let rssTotal = 0;
    let rssMax = 0;
    for (let h = 0; h < fleet.hosts; h++) {
      cpuTotal += state.cpuSeconds[h] as number;
      rssTotal += state.rss[h] as number;
      rssMax = Math.max(rssMax, state.rss[h] as number);
    }
    const interval = state.pipeline.intervalSeconds;
    let perScrape = 0;
    for (let h = 0; h < fleet.hosts; h++) perScrape += last.hostCpuSeconds[h] as number;
    return {
      experimentId,
      variant,
      hosts: fleet.hosts,
      scrapes: state.scrapes,
      simulatedTimeSeconds: fleet.time,
      collectionIntervalSeconds: interval,
      series: last.series,
      datapointsPerMinute: (last.exportedPoints * 60) / interval,
      processesByNode,
      criticalSeen,
      collector: {
        cpuSecondsTotal: cpuTotal,
        cpuCoresPerNode: perScrape / interval / fleet.hosts,
        memoryRssBytesPerNode: rssTotal / fleet.hosts,
        memoryRssBytesMax: rssMax,
      },
      endpoint: this.endpointUrl(experimentId, variant),
    };
  }

  /**
   * Every host's kept samples of a variant with wall time in [from, to] (ms), oldest first; undefined
   * when the variant was never deployed in this experiment.
   */
  samples(
    experimentId: string,
    variant: Variant,
    fromMs = 0,
    toMs = Number.POSITIVE_INFINITY,
  ):
    | {
        readonly hostNames: readonly string[];
        readonly samples: readonly HistorySample[];
      }
    | undefined {
    const experiment = this.experiments.get(experimentId);
    const record = experiment?.records.get(variant);
    if (experiment === undefined || record === undefined) return undefined;
    return { hostNames: experiment.fleet.hostNames, samples: [...record.history.between(fromMs, toMs)] };
  }

  /** Restarts and failed exports of a variant's collector since it was first deployed. */
  health(experimentId: string, variant: Variant): CollectorHealthRecord | undefined {
    const record = this.experiments.get(experimentId)?.records.get(variant);
    return record && { restartsAt: [...record.restartsAt], dropsAt: record.dropsAt.map((d) => ({ ...d })) };
  }

  /** Series per executable (summed over hosts) at the variant's last scrape; `''` for rows without a name. */
  seriesByExecutable(experimentId: string, variant: Variant): Record<string, number> | undefined {
    const experiment = this.experiments.get(experimentId);
    const state = experiment?.variants.get(variant);
    if (experiment === undefined || state === undefined) return undefined;
    const last = this.scraped(experiment, state);
    const byName = new Float64Array(last.names.length + 1);
    for (let o = 0; o < last.rows; o++) {
      const id = last.rowName[o] as number;
      byName[id + 1] = (byName[id + 1] as number) + popcount(last.rowMask[o] as number);
    }
    const out: Record<string, number> = {};
    byName.forEach((n, i) => {
      if (n > 0) {
        const name = i === 0 ? '' : (last.names[i - 1] as string);
        out[name] = (out[name] ?? 0) + n;
      }
    });
    return out;
  }

  /**
   * The (node, executable) pairs of a variant's last scrape whose executable matches one of `patterns`,
   * as `node/executable`; undefined when the variant is not deployed. Only names are tested against
   * the patterns (a scrape has a few hundred distinct names), so this is cheap enough for a probe.
   */
  presentMatching(
    experimentId: string,
    variant: Variant,
    patterns: readonly CollectorRegex[],
  ): Set<string> | undefined {
    const experiment = this.experiments.get(experimentId);
    const state = experiment?.variants.get(variant);
    if (experiment === undefined || state === undefined) return undefined;
    const last = this.scraped(experiment, state);
    const matches = last.names.map((name) => patterns.some((re) => re.test(name)));
    const out = new Set<string>();
    for (let o = 0; o < last.rows; o++) {
      const id = last.rowName[o] as number;
      if (id >= 0 && matches[id])
        out.add(`${experiment.fleet.hostNames[last.rowHost[o] as number]}/${last.names[id]}`);
    }
    return out;
  }

  /**
   * Injects a collector fault into a running variant (the emulator never restarts or fails to export by
   * itself); false when the variant is not deployed.
   */
  injectFault(experimentId: string, variant: Variant, fault: CollectorFault): boolean {
    const experiment = this.experiments.get(experimentId);
    const state = experiment?.variants.get(variant);
    const record = experiment?.records.get(variant);
    if (experiment === undefined || state === undefined || record === undefined) return false;
    switch (fault.kind) {
      case 'restart':
        this.catchUp(experiment);
        state.sentPoints.fill(0);
        state.receivedPoints.fill(0);
        state.cpuSeconds.fill(0);
        state.failedPoints.fill(0);
        state.deployedAt = experiment.fleet.time;
        pushBounded(record.restartsAt, this.now());
        return true;
      case 'drop':
        for (let h = 0; h < state.failedPoints.length; h++)
          state.failedPoints[h] = (state.failedPoints[h] as number) + fault.pointsPerHost;
        pushBounded(record.dropsAt, {
          at: this.now(),
          points: fault.pointsPerHost * state.failedPoints.length,
        });
        return true;
      default: {
        const _never: never = fault;
        return _never;
      }
    }
  }

  /**
   * Per-process CPU and memory as seen in a variant's output (normally the baseline's), for
   * computeTuning: the data the control plane would read back from Prometheus to build a keep-list.
   */
  usage(experimentId: string, variant: Variant): ProcessUsageTable | undefined {
    const experiment = this.experiments.get(experimentId);
    const state = experiment?.variants.get(variant);
    if (experiment === undefined || state === undefined) return undefined;
    const last = this.scraped(experiment, state);
    const series = new Uint8Array(last.rows);
    for (let o = 0; o < last.rows; o++) series[o] = popcount(last.rowMask[o] as number);
    return {
      length: last.rows,
      node: last.rowHost,
      name: Int32Array.from(last.rowName, (n) => Math.max(0, n)),
      names: last.names,
      cpu: last.rowCpu,
      memory: last.rowMemory,
      series,
    };
  }

  /** Advances every experiment by one tick; the timer calls this, tests may call it directly. */
  tick(simulatedSeconds = this.options.simulatedSecondsPerTick): void {
    for (const experiment of this.experiments.values()) this.advanceExperiment(experiment, simulatedSeconds);
  }

  /**
   * The timer's tick: the same work, in slices of at most TICK_SLICE_MS with the event loop free in
   * between. A hundred running experiments take a tenth of a second to scrape; in one piece, that
   * would hold up every request and message of the process sharing this data plane for as long. A
   * tick that comes while the last one is still going is added to the next one.
   */
  private async tickInSlices(): Promise<void> {
    this.owedSeconds += this.options.simulatedSecondsPerTick;
    if (this.ticking) return;
    this.ticking = true;
    try {
      const seconds = this.owedSeconds;
      this.owedSeconds = 0;
      let sliceStarted = performance.now();
      for (const [id, experiment] of [...this.experiments]) {
        // Torn down or redeployed while an earlier slice yielded: nothing to advance here.
        if (this.experiments.get(id) !== experiment) continue;
        this.advanceExperiment(experiment, seconds);
        if (performance.now() - sliceStarted >= TICK_SLICE_MS) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          sliceStarted = performance.now();
        }
      }
    } finally {
      this.ticking = false;
    }
  }

  private advanceExperiment(experiment: ExperimentState, simulatedSeconds: number): void {
    experiment.pending += simulatedSeconds;
    const due = [...experiment.variants.values()].filter((v) => {
      v.dueIn -= simulatedSeconds;
      return v.dueIn <= 0;
    });
    if (due.length === 0) return;
    this.catchUp(experiment);
    for (const state of due) {
      const last = emulateScrape(experiment.fleet, state.pipeline, state.seenPids);
      if (state.last !== undefined) retire(state, state.last, last, experiment.fleet.size);
      state.last = last;
      state.dueIn +=
        state.pipeline.intervalSeconds *
        Math.max(1, Math.ceil(-state.dueIn / state.pipeline.intervalSeconds));
      this.account(experiment, state, last);
    }
  }

  /** Prometheus text for every deployed variant, or only for the given one. */
  exposition(experimentId?: string, variant?: Variant): string {
    return [...this.expositionChunks(experimentId, variant)].join('');
  }

  async close(): Promise<void> {
    this.stopTimer();
    this.experiments.clear();
    const server = this.server;
    this.server = undefined;
    this.baseUrl = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private catchUp(experiment: ExperimentState): void {
    if (experiment.pending > 0) experiment.fleet.advance(experiment.pending);
    experiment.pending = 0;
  }

  private account(experiment: ExperimentState, state: VariantState, last: ScrapeResult): void {
    state.scrapes++;
    const exporters = Math.max(1, last.exporters.length);
    for (let h = 0; h < state.sentPoints.length; h++) {
      state.sentPoints[h] = (state.sentPoints[h] as number) + (last.hostPoints[h] as number);
      state.cpuSeconds[h] = (state.cpuSeconds[h] as number) + (last.hostCpuSeconds[h] as number);
      state.rss[h] = rssModel(
        last.hostScraped[h] as number,
        last.hostSeries[h] as number,
        (last.hostPoints[h] as number) * exporters,
      );
    }
    for (let h = 0; h < state.receivedPoints.length; h++) {
      state.receivedPoints[h] = (state.receivedPoints[h] as number) + (last.hostReceived[h] as number);
    }
    const perMinute = 60 / state.pipeline.intervalSeconds;
    experiment.records.get(state.variant)?.history.record(this.now(), last.time, (h) => ({
      series: last.hostSeries[h] as number,
      datapointsPerMinute: (last.hostPoints[h] as number) * perMinute,
      collectorCpuCores: (last.hostCpuSeconds[h] as number) / state.pipeline.intervalSeconds,
      collectorMemoryBytes: state.rss[h] as number,
      inputPointsPerMinute: (last.hostReceived[h] as number) * perMinute,
      inputProcesses: last.hostScraped[h] as number,
    }));
  }

  private ensureTimer(): void {
    if (this.timer !== undefined || this.options.tickMs <= 0) return;
    this.timer = setInterval(() => void this.tickInSlices(), this.options.tickMs);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private *expositionChunks(experimentId?: string, variant?: Variant): Generator<string> {
    const selected: [string, Variant, ExperimentState, VariantState][] = [];
    for (const [id, experiment] of this.experiments) {
      if (experimentId !== undefined && id !== experimentId) continue;
      for (const [v, state] of experiment.variants) {
        if (variant !== undefined && v !== variant) continue;
        selected.push([id, v, experiment, state]);
      }
    }
    // One HELP/TYPE per family across all selected variants, as the text format requires.
    const families = new Map<string, { help: string; type: string; lines: (() => Generator<string>)[] }>();
    const family = (name: string, help: string, type: string) => {
      let f = families.get(name);
      if (f === undefined) {
        f = { help, type, lines: [] };
        families.set(name, f);
      }
      return f;
    };
    for (const [id, v, experiment, state] of selected) {
      const last = this.scraped(experiment, state);
      const prefixes = rowLabelPrefixes(last);
      const metrics = new Map<number, number[]>();
      last.slots.forEach((slot, s) => {
        const list = metrics.get(slot.metricIndex) ?? [];
        list.push(s);
        metrics.set(slot.metricIndex, list);
      });
      const promExporter = last.exporters.find((e) => e.type === 'prometheus');
      if (promExporter !== undefined) {
        const constLabels = Object.entries(promExporter.constLabels);
        const stalePrefixes = state.stale.map(({ result, row }) => rowLabelPrefix(result, row, constLabels));
        for (const slotIndexes of metrics.values()) {
          const info = (last.slots[slotIndexes[0] as number] as ScrapeResult['slots'][number]).metric;
          const name = prometheusMetricName(info, promExporter.namespace);
          const now = experiment.fleet.time;
          family(name, info.description, info.kind === 'counter' ? 'counter' : 'gauge').lines.push(
            function* () {
              let buf = '';
              for (let o = 0; o < last.rows; o++) {
                const mask = last.rowMask[o] as number;
                for (const s of slotIndexes) {
                  if ((mask & (1 << s)) === 0) continue;
                  buf += seriesLine(name, prefixes[o] as string, last, o, s);
                  if (buf.length > 65_536) {
                    yield buf;
                    buf = '';
                  }
                }
              }
              state.stale.forEach(({ result, row, mask }, k) => {
                if (now - result.time > promExporter.metricExpirationSeconds) return;
                for (const s of slotIndexes) {
                  if ((mask & (1 << s)) !== 0)
                    buf += seriesLine(name, stalePrefixes[k] as string, result, row, s);
                }
              });
              if (buf) yield buf;
            },
          );
        }
      }
      const fleet = experiment.fleet;
      const self = (h: number, extra = '') =>
        `experiment_id="${escapeLabel(id)}",k8s_node_name="${escapeLabel(fleet.hostNames[h] as string)}",variant="${v}"${extra}`;
      const uptime = fleet.time - state.deployedAt;
      family(
        'otelcol_exporter_sent_metric_points_total',
        'Number of metric points successfully sent to destination.',
        'counter',
      ).lines.push(function* () {
        let buf = '';
        for (let h = 0; h < fleet.hosts; h++) {
          for (const e of last.exporters)
            buf += `otelcol_exporter_sent_metric_points_total{${self(h, `,exporter="${e.id}"`)}} ${state.sentPoints[h]}\n`;
        }
        yield buf;
      });
      if (state.failedPoints.some((n) => n > 0))
        family(
          'otelcol_exporter_send_failed_metric_points_total',
          'Number of metric points in failed attempts to send to destination.',
          'counter',
        ).lines.push(function* () {
          // The failed points are the first exporter's (the fault is per host, not per exporter).
          const e = last.exporters[0];
          let buf = '';
          for (let h = 0; h < fleet.hosts && e; h++)
            buf += `otelcol_exporter_send_failed_metric_points_total{${self(h, `,exporter="${e.id}"`)}} ${state.failedPoints[h]}\n`;
          yield buf;
        });
      family(
        'otelcol_receiver_accepted_metric_points_total',
        'Number of metric points successfully pushed into the pipeline.',
        'counter',
      ).lines.push(function* () {
        let buf = '';
        for (let h = 0; h < fleet.hosts; h++)
          buf += `otelcol_receiver_accepted_metric_points_total{${self(h, ',receiver="hostmetrics",transport=""')}} ${Math.round(state.receivedPoints[h] as number)}\n`;
        yield buf;
      });
      family(
        'otelcol_process_cpu_seconds_total',
        'Total CPU user and system time in seconds',
        'counter',
      ).lines.push(function* () {
        let buf = '';
        for (let h = 0; h < fleet.hosts; h++)
          buf += `otelcol_process_cpu_seconds_total{${self(h)}} ${formatValue(state.cpuSeconds[h] as number)}\n`;
        yield buf;
      });
      family('otelcol_process_memory_rss', 'Total physical memory (resident set size)', 'gauge').lines.push(
        function* () {
          let buf = '';
          for (let h = 0; h < fleet.hosts; h++)
            buf += `otelcol_process_memory_rss{${self(h)}} ${Math.round(state.rss[h] as number)}\n`;
          yield buf;
        },
      );
      family('otelcol_process_uptime_total', 'Uptime of the process', 'counter').lines.push(function* () {
        let buf = '';
        for (let h = 0; h < fleet.hosts; h++)
          buf += `otelcol_process_uptime_total{${self(h)}} ${formatValue(uptime)}\n`;
        yield buf;
      });
    }
    for (const [name, f] of families) {
      yield `# HELP ${name} ${f.help}\n# TYPE ${name} ${f.type}\n`;
      for (const lines of f.lines) yield* lines();
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://local');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    const parts = url.pathname
      .split('/')
      .filter((p) => p !== '')
      .map(decodeURIComponent);
    if (parts[0] !== 'metrics' || parts.length === 2 || parts.length > 3) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const [, experimentId, variant] = parts;
    if (experimentId !== undefined && !this.isDeployed(experimentId, variant as Variant)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('variant not deployed\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    for (const chunk of this.expositionChunks(experimentId, variant as Variant | undefined)) {
      if (!res.write(chunk)) await new Promise<void>((resolve) => res.once('drain', resolve));
      if (res.destroyed) return;
    }
    res.end();
  }
}

/**
 * The labels the prometheus exporter makes of the scraper's instrumentation scope, on every series
 * (collector v0.165.0; the scope has no schema URL of its own, so that label is empty). Found by
 * emulator-differential.int.test.ts.
 */
const SCOPE_LABELS: readonly [string, string][] = [
  ['otel_scope_name', PROCESS_SCRAPER_SCOPE_NAME],
  ['otel_scope_schema_url', ''],
  ['otel_scope_version', PROCESS_SCRAPER_SCOPE_VERSION],
];

/** The label set of each output row (everything but the data point attribute), sorted by label name. */
const rowLabelPrefixes = (last: ScrapeResult): string[] => {
  const constLabels = Object.entries(last.exporters.find((e) => e.type === 'prometheus')?.constLabels ?? {});
  const out: string[] = new Array(last.rows);
  for (let o = 0; o < last.rows; o++) out[o] = rowLabelPrefix(last, o, constLabels);
  return out;
};

/** One exposition line: data point `s` of output row `o`, whose labels (but the point's own) are `prefix`. */
const seriesLine = (name: string, prefix: string, last: ScrapeResult, o: number, s: number): string => {
  const slot = last.slots[s] as ScrapeResult['slots'][number];
  const extra =
    slot.attributeValue !== undefined
      ? `,${slot.metric.attribute?.key ?? ''}="${escapeLabel(slot.attributeValue)}"`
      : '';
  return `${name}{${prefix}${extra}} ${formatValue(last.rowValues[o * last.slots.length + s] as number)}\n`;
};

const PID = IDENTITY_BIT['process.pid'] as number;
const PARENT_PID = IDENTITY_BIT['process.parent_pid'] as number;
const COMMAND_LINE = IDENTITY_BIT['process.command_line'] as number;
const NAME_DERIVED =
  (IDENTITY_BIT['process.executable.path'] as number) |
  (IDENTITY_BIT['process.command'] as number) |
  (IDENTITY_BIT['process.owner'] as number);

/**
 * What tells a merged output row (one without a pid) apart from every other such row of the variant: its
 * host, name, which identity attributes it kept and their values (the resource and exporter labels are
 * the same for every row of a host). Rows with a pid are told apart by their fleet slot and pid.
 */
const mergedRowKey = (last: ScrapeResult, o: number): string => {
  const a = last.rowAttributes[o] as number;
  const id = last.rowName[o] as number;
  let key = `${last.rowHost[o]}|${id < 0 ? '' : last.names[id]}|${a}`;
  if (a & PARENT_PID) key += `|${last.rowPpid[o]}`;
  if (a & (NAME_DERIVED | COMMAND_LINE)) key += `|${last.rowOrigin[o]}`;
  if (a & COMMAND_LINE) key += `|${last.rowArgv[o]}`;
  return key;
};

/** The data points `next` exports for the same series as row `o` of an earlier scrape (0: none). */
const successorMask = (next: ScrapeResult, index: NextIndex, earlier: ScrapeResult, o: number): number => {
  const a = earlier.rowAttributes[o] as number;
  if ((a & PID) === 0) return index.merged.get(mergedRowKey(earlier, o)) ?? 0;
  const slot = earlier.rowSlot[o] as number;
  const n = index.bySlot[slot] as number;
  // The same process (slot and pid) with the same name and identity attributes: the same labels.
  return n >= 0 &&
    next.rowPid[n] === earlier.rowPid[o] &&
    next.rowAttributes[n] === a &&
    next.names[next.rowName[n] as number] === earlier.names[earlier.rowName[o] as number]
    ? (next.rowMask[n] as number)
    : 0;
};

interface NextIndex {
  /** Output row of each fleet slot's process when it kept its pid, else -1. */
  readonly bySlot: Int32Array;
  /** Merged rows by mergedRowKey → their mask. */
  readonly merged: Map<string, number>;
}

/**
 * The prometheus exporter keeps every series it was sent until `metric_expiration` (5 minutes by
 * default) passes without an update: the series of a process that exited, or a data point a filter now
 * drops, stay in the exposition with their last value meanwhile, and a Prometheus scraping it counts
 * them. Found by emulator-differential.int.test.ts; the emulator does the same in simulated time. Called
 * when `next` replaces `prev` as a variant's last scrape; typed arrays and no strings for rows with a
 * pid, so it costs a fraction of the scrape at 1,000 hosts × 500 processes.
 */
const retire = (state: VariantState, prev: ScrapeResult, next: ScrapeResult, fleetSize: number): void => {
  const exporter = next.exporters.find((e) => e.type === 'prometheus');
  if (exporter === undefined) return;
  const expiration = exporter.metricExpirationSeconds;
  const index: NextIndex = { bySlot: new Int32Array(fleetSize).fill(-1), merged: new Map() };
  for (let o = 0; o < next.rows; o++) {
    if (((next.rowAttributes[o] as number) & PID) !== 0) index.bySlot[next.rowSlot[o] as number] = o;
    else index.merged.set(mergedRowKey(next, o), next.rowMask[o] as number);
  }
  const kept: StaleRow[] = [];
  const retain = (result: ScrapeResult, row: number, mask: number) => {
    const left = mask & ~successorMask(next, index, result, row);
    if (left !== 0) kept.push({ result, row, mask: left });
  };
  for (const stale of state.stale) {
    if (next.time - stale.result.time <= expiration) retain(stale.result, stale.row, stale.mask);
  }
  if (next.time - prev.time <= expiration) {
    for (let o = 0; o < prev.rows; o++) retain(prev, o, prev.rowMask[o] as number);
  }
  state.stale = kept;
};

/** The labels of output row `o` but the data point attribute, sorted by label name. */
const rowLabelPrefix = (
  last: ScrapeResult,
  o: number,
  constLabels: readonly (readonly [string, string])[],
): string => {
  const labels: [string, string][] = [...SCOPE_LABELS];
  const attrs = last.rowAttributes[o] as number;
  const origin = catalogEntry(last.rowOrigin[o] as number);
  const id = last.rowName[o] as number;
  if (id >= 0) labels.push(['process_executable_name', last.names[id] as string]);
  const has = (key: string) => (attrs & (IDENTITY_BIT[key] as number)) !== 0;
  if (has('process.pid')) labels.push(['process_pid', String(last.rowPid[o])]);
  if (has('process.parent_pid')) labels.push(['process_parent_pid', String(last.rowPpid[o])]);
  if (has('process.executable.path')) labels.push(['process_executable_path', origin.path]);
  if (has('process.command')) labels.push(['process_command', origin.path]);
  if (has('process.command_line')) {
    labels.push([
      'process_command_line',
      commandLineOf(last.rowOrigin[o] as number, last.rowArgv[o] as number),
    ]);
  }
  if (has('process.owner')) labels.push(['process_owner', origin.owner]);
  const h = last.rowHost[o] as number;
  for (const l of last.resourceLabels) labels.push([prometheusLabelName(l.key), l.value(h)]);
  for (const [k, v] of constLabels) labels.push([prometheusLabelName(k), v]);
  labels.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
};

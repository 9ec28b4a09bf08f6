/**
 * The `otelcol` deployer (issue 17 §5): each variant runs as a real OpenTelemetry Collector process on
 * this machine, with its deployed config rendered for simulation — the `hostmetrics` receiver replaced
 * by an `otlp` receiver, every processor unchanged — and fed by the fleet simulator over OTLP at the
 * template's collection interval, every simulated host keeping its identity in resource attributes.
 *
 * Each collector listens on free ports of 127.0.0.1: OTLP/HTTP in, its `prometheus` exporter, its own
 * telemetry (`service::telemetry::metrics`) and `health_check`. Both scrape endpoints are published as a
 * Prometheus file_sd target group labelled `experiment_id` and `variant`, so a Prometheus scraping it
 * with `honor_labels: true` puts those labels on the collector's own metrics too (the exporter's
 * series carry their own).
 *
 * A target with more simulated processes than one collector is sent (`maxProcessesPerCollector`) runs
 * as several collectors, shards, each sent a disjoint run of whole hosts (every host's series stay in
 * one collector), each with its own ports, health check, config, record, log and target group, labelled
 * `shard` besides. One simulator feeds them all from one fleet, so together they get exactly what one
 * collector would; the Prometheus analyzer sums the shards.
 *
 * What runs is kept in a state folder, one per variant: `config.yaml`, `collector.json` (pid, ports,
 * the deployed config) and `collector.log` of shard 0, and the same three in `shard-<k>/` for each
 * further shard (so a one-shard variant is laid out as before shards existed, and is adopted as such).
 * Collectors are started in their own session and outlive Phoenix; a new deployer on the same folder
 * ({@link OtelcolDeployer.recover}) adopts the variants whose every shard is still healthy (restarting
 * their simulators, which lived in the old process), stops and forgets the others (a variant short of a
 * shard would be measured short of its hosts), and kills any collector started from a config under the
 * folder that no record owns.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Deployer,
  type DeployOptions,
  type DeployOutcome,
  type TargetRollout,
  targetKeyOf,
  type VariantDeployment,
} from '../application/ports/deployer.js';
import type { Variant } from '../domain/experiment-spec.js';
import { VARIANTS } from '../domain/experiment-spec.js';
import {
  type CollectorConfig,
  DEFAULT_OTLP_ENDPOINT,
  NODE_NAME_ENV,
  type ProcessScraperSettings,
  parseDurationSeconds,
  processScraperSettings,
  toYaml,
} from '../domain/pipelines/index.js';
import { freePort, isOurProcess, processesWithArgument, stopProcess } from './child-processes.js';
import { fleetSeedOf, ProcessFleet } from './local-dataplane-fleet.js';
import { OtlpFleetSender } from './otlp-fleet-sender.js';

export interface OtelcolDeployerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface OtelcolDeployerOptions {
  /** The collector binary (PHOENIX_OTELCOL). */
  readonly bin: string;
  /** Where each variant's config, record and log live (survives restarts). */
  readonly stateDir: string;
  /** Where the file_sd target files are written (the managed Prometheus, or the user's, reads them). */
  readonly sdDir: string;
  /** Simulated processes per host; 50 unless said (every one is 7 series in the baseline). */
  readonly processesPerHost?: number;
  /**
   * Most simulated processes one collector is sent; 10,000 unless said. One process is up to 7 series in
   * the baseline, and an exporter of 70k series took 2 s per scrape here, at the edge of the scrape
   * timeout (reference: otel-collector-verified.md §5): a bigger deploy is refused, not run half-scraped.
   */
  readonly maxProcessesPerCollector?: number;
  /** Most collectors (shards) one variant runs as; 8 unless said. A bigger target is refused. */
  readonly maxShardsPerVariant?: number;
  /** How long a collector may take to answer its health check; 60 s unless said. */
  readonly readyTimeoutMs?: number;
  readonly logger?: OtelcolDeployerLogger;
  /** Picks a free port for a collector to listen on; the kernel's pick unless said (tests). */
  readonly allocatePort?: () => Promise<number>;
}

/**
 * A port picked free can be taken before the collector binds it (the kernel hands the same ephemeral
 * range to every outgoing connection, and several collectors start at once); the collector then exits
 * saying so, and the shard is started again on new ports, this many times at most.
 */
const PORT_RETRIES = 3;
const ADDRESS_IN_USE = /address already in use/i;

/** The ports one collector listens on. */
interface CollectorPorts {
  readonly otlp: number;
  readonly prometheus: number;
  readonly telemetry: number;
  readonly health: number;
}

/** What `collector.json` holds. */
interface CollectorRecord {
  readonly experimentId: string;
  readonly variant: Variant;
  /**
   * The namespace of the experiment's target (this host has none; the sweep asks by it). Absent in
   * records written before it was kept: such a variant is held in whichever namespace is asked about.
   */
  readonly namespace?: string;
  /** Which shard of how many (0 of 1 in records written before shards, which lack both). */
  readonly shard: number;
  readonly shards: number;
  readonly pid: number;
  readonly ports: CollectorPorts;
  /** sha256 of the deployed (not simulated) config: the same deploy again is a no-op. */
  readonly configHash: string;
  /** The deployed config, to restart the simulator from after a restart of Phoenix. */
  readonly config: CollectorConfig;
  readonly hosts: number;
  readonly processesPerHost: number;
  readonly seed: number;
  readonly startedAt: string;
}

/** Experiment ids become folder and file names: nothing that could leave the folder. */
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * A fleet's hosts split into `shards` runs of consecutive hosts, as even as can be: shard k's host
 * indexes. Whole hosts, so each host's series stay in one collector.
 */
export const splitHosts = (hosts: number, shards: number): number[][] => {
  if (!Number.isInteger(hosts) || !Number.isInteger(shards) || shards < 1 || shards > hosts)
    throw new RangeError(`cannot split ${hosts} hosts into ${shards} shards`);
  const base = Math.floor(hosts / shards);
  const bigger = hosts % shards;
  const out: number[][] = [];
  let next = 0;
  for (let k = 0; k < shards; k++) {
    const n = base + (k < bigger ? 1 : 0);
    out.push(Array.from({ length: n }, (_, i) => next + i));
    next += n;
  }
  return out;
};

/** How many collectors a target needs (the fewest that keep each within its share), or why it cannot run. */
export const shardsFor = (
  hosts: number,
  processesPerHost: number,
  limits: { readonly maxProcessesPerCollector: number; readonly maxShardsPerVariant: number },
): { readonly ok: true; readonly shards: number } | { readonly ok: false; readonly reason: string } => {
  const hostsPerCollector = Math.floor(limits.maxProcessesPerCollector / processesPerHost);
  if (hostsPerCollector < 1)
    return {
      ok: false,
      reason: `one host's ${processesPerHost} simulated processes are more than one collector here is sent (${limits.maxProcessesPerCollector}): lower PHOENIX_OTELCOL_PROCESSES_PER_HOST`,
    };
  const shards = Math.max(1, Math.ceil(hosts / hostsPerCollector));
  if (shards > limits.maxShardsPerVariant)
    return {
      ok: false,
      reason: `${hosts} hosts × ${processesPerHost} processes is ${hosts * processesPerHost} simulated processes, ${shards} collectors of at most ${limits.maxProcessesPerCollector}, more than a variant runs here (${limits.maxShardsPerVariant}): target fewer hosts, lower PHOENIX_OTELCOL_PROCESSES_PER_HOST or raise PHOENIX_OTELCOL_MAX_SHARDS`,
    };
  return { ok: true, shards };
};

/**
 * Where shard `shard` of a variant lives: shard 0 in the variant's folder (the layout of a variant
 * before shards), shard k in its `shard-<k>` subfolder; `marker` is the argument its collector runs with.
 */
export const shardLayout = (stateDir: string, experimentId: string, variant: Variant, shard: number) => {
  const dir =
    shard === 0
      ? join(stateDir, experimentId, variant)
      : join(stateDir, experimentId, variant, `shard-${shard}`);
  const config = join(dir, 'config.yaml');
  return {
    dir,
    config,
    record: join(dir, 'collector.json'),
    log: join(dir, 'collector.log'),
    marker: `--config=${config}`,
  };
};

const hashOf = (config: CollectorConfig): string =>
  createHash('sha256').update(JSON.stringify(config)).digest('hex');

type Record_ = Record<string, unknown>;
const isObject = (v: unknown): v is Record_ => typeof v === 'object' && v !== null && !Array.isArray(v);

const enabledMap = (section: unknown): Record<string, boolean> =>
  Object.fromEntries(
    Object.entries(isObject(section) ? section : {})
      .filter(([, v]) => isObject(v) && typeof v.enabled === 'boolean')
      .map(([k, v]) => [k, (v as { enabled: boolean }).enabled]),
  );

/**
 * What the config's `hostmetrics` process scraper would emit: what the simulator must send in its
 * place. Undefined when the config scrapes no processes (nothing to simulate).
 */
export const simulatedScraper = (config: CollectorConfig): ProcessScraperSettings | undefined => {
  const receiver = config.receivers.hostmetrics ?? config.receivers.host_metrics;
  if (!isObject(receiver) || !isObject(receiver.scrapers) || !isObject(receiver.scrapers.process))
    return undefined;
  const interval = parseDurationSeconds(
    typeof receiver.collection_interval === 'string' ? receiver.collection_interval : '60s',
  );
  if (interval === undefined || interval <= 0) return undefined;
  const process = receiver.scrapers.process;
  return processScraperSettings(
    interval,
    enabledMap(process.metrics),
    enabledMap(process.resource_attributes),
  );
};

/**
 * The deployed config rendered for simulation on this machine: an `otlp` receiver in place of
 * `hostmetrics` (as renderVariant's `simulation` does), every listener on 127.0.0.1 at `ports`. The
 * `otlp` exporter is dropped when it points at the render's in-cluster default gateway, which does not
 * exist here: its endless retries would be counted as the collector's overhead.
 */
export const simulationConfig = (config: CollectorConfig, ports: CollectorPorts): CollectorConfig => {
  const copy = structuredClone(config);
  copy.receivers = { otlp: { protocols: { http: { endpoint: `127.0.0.1:${ports.otlp}` } } } };
  const exporterOtlp = copy.exporters.otlp;
  const dropOtlp = isObject(exporterOtlp) && exporterOtlp.endpoint === DEFAULT_OTLP_ENDPOINT;
  if (dropOtlp) delete copy.exporters.otlp;
  for (const pipeline of Object.values(copy.service.pipelines)) {
    pipeline.receivers = ['otlp'];
    if (dropOtlp) pipeline.exporters = pipeline.exporters.filter((e) => e !== 'otlp');
  }
  if (isObject(copy.exporters.prometheus))
    copy.exporters.prometheus = { ...copy.exporters.prometheus, endpoint: `127.0.0.1:${ports.prometheus}` };
  copy.extensions.health_check = {
    ...(isObject(copy.extensions.health_check) ? copy.extensions.health_check : {}),
    endpoint: `127.0.0.1:${ports.health}`,
  };
  const metrics = isObject(copy.service.telemetry.metrics) ? copy.service.telemetry.metrics : {};
  copy.service.telemetry.metrics = {
    ...metrics,
    readers: [{ pull: { exporter: { prometheus: { host: '127.0.0.1', port: ports.telemetry } } } }],
  };
  return copy;
};

interface RunningSender {
  readonly stop: AbortController;
  readonly done: Promise<void>;
}

export class OtelcolDeployer implements Deployer {
  readonly #options: OtelcolDeployerOptions & {
    processesPerHost: number;
    readyTimeoutMs: number;
    maxProcessesPerCollector: number;
    maxShardsPerVariant: number;
  };
  readonly #senders = new Map<string, RunningSender>();
  /** One operation at a time per experiment (a deploy and a teardown of the same one never interleave). */
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(options: OtelcolDeployerOptions) {
    this.#options = {
      ...options,
      processesPerHost: options.processesPerHost ?? 50,
      readyTimeoutMs: options.readyTimeoutMs ?? 60_000,
      maxProcessesPerCollector: options.maxProcessesPerCollector ?? 10_000,
      maxShardsPerVariant: options.maxShardsPerVariant ?? 8,
    };
  }

  #dir(experimentId: string, variant?: Variant): string {
    if (!SAFE_ID.test(experimentId)) throw new RangeError(`unsafe experiment id ${experimentId}`);
    return variant === undefined
      ? join(this.#options.stateDir, experimentId)
      : join(this.#options.stateDir, experimentId, variant);
  }

  #layout(experimentId: string, variant: Variant, shard: number) {
    if (!SAFE_ID.test(experimentId)) throw new RangeError(`unsafe experiment id ${experimentId}`);
    return shardLayout(this.#options.stateDir, experimentId, variant, shard);
  }

  #sdFile(experimentId: string, variant: Variant): string {
    return join(this.#options.sdDir, `${experimentId}-${variant}.json`);
  }

  #serialized<T>(experimentId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(experimentId) ?? Promise.resolve();
    const next = previous.then(work, work);
    const settled = next.catch(() => undefined);
    this.#locks.set(experimentId, settled);
    void settled.then(() => {
      if (this.#locks.get(experimentId) === settled) this.#locks.delete(experimentId);
    });
    return next;
  }

  async #readRecord(
    experimentId: string,
    variant: Variant,
    shard: number,
  ): Promise<CollectorRecord | undefined> {
    try {
      const text = await readFile(this.#layout(experimentId, variant, shard).record, 'utf8');
      const read = JSON.parse(text) as Omit<CollectorRecord, 'shard' | 'shards'> & {
        shard?: number;
        shards?: number;
      };
      // A record written before shards is shard 0 of 1.
      const record: CollectorRecord = { ...read, shard: read.shard ?? 0, shards: read.shards ?? 1 };
      return record.experimentId === experimentId && record.variant === variant && record.shard === shard
        ? record
        : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Every record of a variant's shards, shard 0's first; `complete` when shard 0 says how many there are
   * and each of them has its record.
   */
  async #readShards(
    experimentId: string,
    variant: Variant,
  ): Promise<{ readonly records: readonly CollectorRecord[]; readonly complete: boolean }> {
    const first = await this.#readRecord(experimentId, variant, 0);
    const entries = await readdir(this.#dir(experimentId, variant)).catch(() => [] as string[]);
    const others = entries
      .map((e) => /^shard-([1-9]\d{0,3})$/.exec(e)?.[1])
      .filter((k): k is string => k !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
    const records = first ? [first] : [];
    for (const k of others) {
      const record = await this.#readRecord(experimentId, variant, k);
      if (record) records.push(record);
    }
    const complete =
      first !== undefined &&
      records.length === first.shards &&
      records.every(
        (r, k) => r.shard === k && r.shards === first.shards && r.configHash === first.configHash,
      );
    return { records, complete };
  }

  async #healthy(record: CollectorRecord): Promise<boolean> {
    const { marker } = this.#layout(record.experimentId, record.variant, record.shard);
    if (!(await isOurProcess(record.pid, marker))) return false;
    return fetch(`http://127.0.0.1:${record.ports.health}/`, { signal: AbortSignal.timeout(2_000) }).then(
      (r) => r.ok,
      () => false,
    );
  }

  async #allHealthy(records: readonly CollectorRecord[]): Promise<boolean> {
    return (await Promise.all(records.map((r) => this.#healthy(r)))).every(Boolean);
  }

  /** One target group per shard: the variant's labels, and which shard. */
  async #writeTargets(records: readonly CollectorRecord[]): Promise<void> {
    const [first] = records;
    if (!first) return;
    await mkdir(this.#options.sdDir, { recursive: true });
    const file = this.#sdFile(first.experimentId, first.variant);
    const groups = records.map((record) => ({
      targets: [`127.0.0.1:${record.ports.prometheus}`, `127.0.0.1:${record.ports.telemetry}`],
      labels: {
        experiment_id: record.experimentId,
        variant: record.variant,
        data_plane: 'otelcol',
        shard: String(record.shard),
      },
    }));
    // Prometheus watches the folder: a half-written file must never be there under the final name.
    await writeFile(`${file}.tmp`, JSON.stringify(groups));
    await rename(`${file}.tmp`, file);
  }

  /** One simulator per variant: one fleet, advanced once per interval, each shard sent its hosts. */
  #startSender(records: readonly CollectorRecord[]): void {
    const [first] = records;
    if (!first) return;
    const key = `${first.experimentId}/${first.variant}`;
    if (this.#senders.has(key)) return;
    const settings = simulatedScraper(first.config);
    if (settings === undefined) return;
    const fleet = new ProcessFleet({
      hosts: first.hosts,
      processesPerHost: first.processesPerHost,
      seed: first.seed,
    });
    const split = splitHosts(first.hosts, first.shards);
    const sender = new OtlpFleetSender(fleet, {
      routes: records.map((r) => ({ endpoint: `127.0.0.1:${r.ports.otlp}`, hosts: split[r.shard] ?? [] })),
      settings,
    });
    const stop = new AbortController();
    let failures = 0;
    const done = sender.run(stop.signal, {
      onSent: () => {
        failures = 0;
      },
      onError: (err) => {
        // Once per run of failures: a collector that is down fails every interval.
        if (failures++ === 0)
          this.#options.logger?.warn(
            { experimentId: first.experimentId, variant: first.variant, err: String(err) },
            'the simulator could not send to the collector',
          );
      },
    });
    this.#senders.set(key, { stop, done });
  }

  async #stopSender(experimentId: string, variant: Variant): Promise<void> {
    const key = `${experimentId}/${variant}`;
    const running = this.#senders.get(key);
    if (!running) return;
    this.#senders.delete(key);
    running.stop.abort();
    await running.done;
  }

  /**
   * Stops the variant's simulator and every shard's collector, and forgets it (its folder and target
   * file). True when a collector of it was running.
   */
  async #remove(experimentId: string, variant: Variant): Promise<boolean> {
    await this.#stopSender(experimentId, variant);
    await rm(this.#sdFile(experimentId, variant), { force: true });
    let existed = false;
    for (const record of (await this.#readShards(experimentId, variant)).records) {
      const ended = await stopProcess(record.pid, this.#layout(experimentId, variant, record.shard).marker);
      existed ||= ended !== 'not running';
    }
    // A collector started just before a crash, before its record was written, has no record.
    const dir = this.#dir(experimentId, variant);
    for (const { pid, argv } of await processesWithArgument(`--config=${dir}/`)) {
      const marker = argv.find((a) => a.startsWith(`--config=${dir}/`)) as string;
      await stopProcess(pid, marker);
      existed = true;
    }
    await rm(dir, { recursive: true, force: true });
    return existed;
  }

  deploy(d: VariantDeployment, options: DeployOptions = {}): Promise<DeployOutcome> {
    if (!SAFE_ID.test(d.experimentId))
      return Promise.resolve({ ok: false, reason: `experiment id ${d.experimentId} is not a safe name` });
    return this.#serialized(d.experimentId, () => this.#deploy(d, options));
  }

  async #deploy(d: VariantDeployment, options: DeployOptions): Promise<DeployOutcome> {
    const settings = simulatedScraper(d.config);
    if (settings === undefined)
      return {
        ok: false,
        reason: 'the config has no hostmetrics process scraper for the simulator to stand in for',
      };
    const plan = shardsFor(d.hosts, this.#options.processesPerHost, this.#options);
    if (!plan.ok) return plan;
    const configHash = hashOf(d.config);
    const existing = await this.#readShards(d.experimentId, d.variant);
    const same = existing.records[0];
    if (
      existing.complete &&
      same?.configHash === configHash &&
      same.shards === plan.shards &&
      same.hosts === d.hosts &&
      same.processesPerHost === this.#options.processesPerHost &&
      (await this.#allHealthy(existing.records))
    ) {
      // Deployed already (a redelivered command): make sure it is fed and scraped.
      this.#startSender(existing.records);
      await this.#writeTargets(existing.records);
      return { ok: true, detail: this.#detail(existing.records) };
    }
    await this.#remove(d.experimentId, d.variant);

    const records: CollectorRecord[] = [];
    const exits: ({ code: number | null; signal: NodeJS.Signals | null } | undefined)[] = [];
    const retries: number[] = [];
    for (let shard = 0; shard < plan.shards; shard++) {
      const started = await this.#start(d, shard, plan.shards, configHash, (exit) => {
        exits[shard] = exit;
      });
      if ('reason' in started) {
        await this.#remove(d.experimentId, d.variant);
        return { ok: false, reason: started.reason };
      }
      records.push(started.record);
    }

    // Ready when every health_check answers; a collector that exits refused its config (permanent).
    const deadline = Date.now() + this.#options.readyTimeoutMs;
    const which = (shard: number) => (plan.shards > 1 ? `collector of shard ${shard}` : 'collector');
    try {
      const pending = new Set(records);
      for (;;) {
        options.signal?.throwIfAborted();
        for (const record of pending) {
          const exit = exits[record.shard];
          if (exit !== undefined) {
            const output = await this.#logTail(record);
            const retried = retries[record.shard] ?? 0;
            if (ADDRESS_IN_USE.test(output) && retried < PORT_RETRIES) {
              retries[record.shard] = retried + 1;
              exits[record.shard] = undefined;
              this.#options.logger?.warn(
                {
                  experimentId: d.experimentId,
                  variant: d.variant,
                  shard: record.shard,
                  ports: record.ports,
                },
                'a port was taken before the collector bound it; starting it again on new ports',
              );
              const again = await this.#start(d, record.shard, plan.shards, configHash, (e) => {
                exits[record.shard] = e;
              });
              if ('reason' in again) {
                await this.#remove(d.experimentId, d.variant);
                return { ok: false, reason: again.reason };
              }
              pending.delete(record);
              pending.add(again.record);
              records[record.shard] = again.record;
              continue;
            }
            await this.#remove(d.experimentId, d.variant);
            return {
              ok: false,
              reason: `the ${which(record.shard)} exited (${exit.code ?? exit.signal}) before it was ready: ${output}`,
            };
          }
          if (await this.#healthy(record)) pending.delete(record);
        }
        if (pending.size === 0) break;
        if (Date.now() > deadline) {
          const late: CollectorRecord | undefined = pending.values().next().value;
          const output = late ? await this.#logTail(late) : '';
          await this.#remove(d.experimentId, d.variant);
          return {
            ok: false,
            reason: `the ${which(late?.shard ?? 0)} was not ready within ${Math.round(this.#options.readyTimeoutMs / 1000)} s: ${output}`,
          };
        }
        await sleep(200, undefined, options.signal ? { signal: options.signal } : {});
      }
      this.#startSender(records);
      await this.#writeTargets(records);
    } catch (err) {
      // Given up (shutdown) or failed half-way: leave nothing running behind.
      await this.#remove(d.experimentId, d.variant);
      throw err;
    }
    this.#options.logger?.info(
      {
        experimentId: d.experimentId,
        variant: d.variant,
        pids: records.map((r) => r.pid),
        ports: records.map((r) => r.ports),
      },
      records.length > 1 ? `${records.length} collectors ready` : 'collector ready',
    );
    return { ok: true, detail: this.#detail(records) };
  }

  /** Writes shard `shard`'s config, starts its collector and writes its record. */
  async #start(
    d: VariantDeployment,
    shard: number,
    shards: number,
    configHash: string,
    onExit: (exit: { code: number | null; signal: NodeJS.Signals | null }) => void,
  ): Promise<{ readonly record: CollectorRecord } | { readonly reason: string }> {
    const layout = this.#layout(d.experimentId, d.variant, shard);
    await mkdir(layout.dir, { recursive: true });
    const allocate = this.#options.allocatePort ?? freePort;
    const ports: CollectorPorts = {
      otlp: await allocate(),
      prometheus: await allocate(),
      telemetry: await allocate(),
      health: await allocate(),
    };
    await writeFile(
      layout.config,
      toYaml(
        simulationConfig(d.config, ports),
        ` Phoenix otelcol deployer: experiment ${d.experimentId}, variant ${d.variant}${shards > 1 ? `, shard ${shard} of ${shards}` : ''}, rendered for simulation`,
      ),
    );
    const log = await open(layout.log, 'a');
    let pid: number;
    try {
      // Its own session: the collector outlives this process and is adopted by the next one.
      const child = spawn(this.#options.bin, [`--config=${layout.config}`], {
        detached: true,
        stdio: ['ignore', log.fd, log.fd],
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? layout.dir,
          // The collector's own node: every simulated host brings its own k8s.node.name, which wins.
          [NODE_NAME_ENV]: hostname(),
        },
      });
      child.once('exit', (code, signal) => onExit({ code, signal }));
      child.unref();
      pid = await new Promise<number>((resolve, reject) => {
        child.once('spawn', () => resolve(child.pid as number));
        child.once('error', reject);
      });
    } catch (err) {
      return { reason: `could not start ${this.#options.bin}: ${(err as Error).message}` };
    } finally {
      await log.close();
    }
    const record: CollectorRecord = {
      experimentId: d.experimentId,
      variant: d.variant,
      namespace: d.namespace,
      shard,
      shards,
      pid,
      ports,
      configHash,
      config: d.config,
      hosts: d.hosts,
      processesPerHost: this.#options.processesPerHost,
      seed: fleetSeedOf(d.experimentId),
      startedAt: new Date().toISOString(),
    };
    await writeFile(layout.record, JSON.stringify(record, null, 2));
    return { record };
  }

  /** Shard 0's pid and endpoints as before shards; every shard's in `shards`. */
  #detail(records: readonly CollectorRecord[]): Record<string, unknown> {
    const first = records[0] as CollectorRecord;
    const endpoints = (r: CollectorRecord) => ({
      pid: r.pid,
      endpoint: `http://127.0.0.1:${r.ports.prometheus}/metrics`,
      telemetryEndpoint: `http://127.0.0.1:${r.ports.telemetry}/metrics`,
      otlpEndpoint: `127.0.0.1:${r.ports.otlp}`,
    });
    const split = splitHosts(first.hosts, first.shards);
    return {
      dataPlane: 'otelcol',
      ...endpoints(first),
      hosts: first.hosts,
      processesPerHost: first.processesPerHost,
      collectionIntervalSeconds: simulatedScraper(first.config)?.collectionIntervalSeconds,
      shards: records.map((r) => ({ shard: r.shard, hosts: split[r.shard]?.length ?? 0, ...endpoints(r) })),
    };
  }

  async #logTail(record: CollectorRecord): Promise<string> {
    const text = await readFile(
      this.#layout(record.experimentId, record.variant, record.shard).log,
      'utf8',
    ).catch(() => '');
    const errors = text.split('\n').filter((l) => /error/i.test(l));
    return (errors.length > 0 ? errors.slice(-3).join('\n') : text.slice(-1000)).trim() || '(no output)';
  }

  teardown(experimentId: string, _namespace?: string): Promise<{ readonly variants: readonly Variant[] }> {
    if (!SAFE_ID.test(experimentId)) return Promise.resolve({ variants: [] });
    return this.#serialized(experimentId, async () => {
      const removed: Variant[] = [];
      for (const variant of VARIANTS) if (await this.#remove(experimentId, variant)) removed.push(variant);
      await rm(this.#dir(experimentId), { recursive: true, force: true });
      if (removed.length > 0) this.#options.logger?.info({ experimentId, removed }, 'collectors stopped');
      return { variants: removed };
    });
  }

  /** Deployed when every shard of the variant is recorded and answers. */
  async isDeployed(experimentId: string, variant: Variant): Promise<boolean> {
    if (!SAFE_ID.test(experimentId)) return false;
    const { records, complete } = await this.#readShards(experimentId, variant);
    return complete && (await this.#allHealthy(records));
  }

  /**
   * Refused: this deployer runs an experiment's collectors on this host for the length of the run
   * (they are torn down when it ends) and keeps no standing collector per target to put the candidate
   * in place of. A promotion's rollout needs the kubernetes (or the simulated local) deployer; the
   * saga then reverts the promotion's commit.
   */
  async rollout(r: TargetRollout): Promise<DeployOutcome> {
    return {
      ok: false,
      reason: `the otelcol deployer runs collectors only for an experiment's run, and keeps none over ${targetKeyOf(r.namespace, r.nodeSelector)} to replace; roll promotions out with PHOENIX_DEPLOYER=kubernetes`,
    };
  }

  async deployedVariants(experimentId: string): Promise<readonly Variant[]> {
    const present: Variant[] = [];
    for (const variant of VARIANTS) if (await this.isDeployed(experimentId, variant)) present.push(variant);
    return present;
  }

  /**
   * The experiments with a collector record under the state folder for the namespace (or with a
   * record older than namespaces). What recover() adopted, and what was deployed since.
   */
  async heldExperiments(namespace: string): Promise<readonly string[]> {
    const held: string[] = [];
    for (const experimentId of await readdir(this.#options.stateDir).catch(() => [] as string[])) {
      if (!SAFE_ID.test(experimentId)) continue;
      for (const variant of VARIANTS) {
        const { records } = await this.#readShards(experimentId, variant);
        if (records.some((r) => r.namespace === undefined || r.namespace === namespace)) {
          held.push(experimentId);
          break;
        }
      }
    }
    return held;
  }

  /**
   * After a restart of Phoenix: adopts every recorded variant whose every shard still answers
   * (restarting its simulator and its target file), stops and forgets the others, and stops collectors
   * started from a config under the state folder that no adopted record owns. No orphans, no duplicates.
   */
  async recover(): Promise<{ readonly adopted: readonly string[]; readonly cleaned: readonly string[] }> {
    const adopted: string[] = [];
    const cleaned: string[] = [];
    const owned = new Set<string>();
    const experiments = await readdir(this.#options.stateDir).catch(() => [] as string[]);
    for (const experimentId of experiments) {
      if (!SAFE_ID.test(experimentId)) continue;
      await this.#serialized(experimentId, async () => {
        for (const variant of VARIANTS) {
          const { records, complete } = await this.#readShards(experimentId, variant);
          if (complete && (await this.#allHealthy(records))) {
            this.#startSender(records);
            await this.#writeTargets(records);
            for (const r of records) owned.add(this.#layout(experimentId, variant, r.shard).marker);
            adopted.push(`${experimentId}/${variant}`);
          } else {
            const present =
              records.length > 0 ||
              (await readdir(this.#dir(experimentId, variant)).then(
                () => true,
                () => false,
              ));
            if ((await this.#remove(experimentId, variant)) || present)
              cleaned.push(`${experimentId}/${variant}`);
          }
        }
        if ((await readdir(this.#dir(experimentId)).catch(() => [])).length === 0)
          await rm(this.#dir(experimentId), { recursive: true, force: true });
      });
    }
    // Collectors of ours that no record owns (their folder removed by hand, say).
    for (const { pid, argv } of await processesWithArgument(`--config=${this.#options.stateDir}/`)) {
      const marker = argv.find((a) => a.startsWith(`--config=${this.#options.stateDir}/`)) as string;
      if (!owned.has(marker)) {
        await stopProcess(pid, marker);
        cleaned.push(`pid ${pid}`);
      }
    }
    // Target files nobody backs any more.
    const files = await readdir(this.#options.sdDir).catch(() => [] as string[]);
    const live = new Set(adopted.map((key) => `${key.replace('/', '-')}.json`));
    for (const file of files)
      if (/-(baseline|candidate)\.json(\.tmp)?$/.test(file) && !live.has(file))
        await rm(join(this.#options.sdDir, file), { force: true });
    if (adopted.length + cleaned.length > 0)
      this.#options.logger?.info({ adopted, cleaned }, 'collectors found at start-up');
    return { adopted, cleaned };
  }

  /** Stops the simulators; the collectors keep running and the next deployer adopts them. */
  async close(): Promise<void> {
    await Promise.all(
      [...this.#senders.keys()].map((key) => {
        const [experimentId, variant] = key.split('/') as [string, Variant];
        return this.#stopSender(experimentId, variant);
      }),
    );
  }
}

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
 * What runs is kept in a state folder, one per variant: `config.yaml`, `collector.json` (pid, ports,
 * the deployed config) and `collector.log`. Collectors are started in their own session and outlive
 * Phoenix; a new deployer on the same folder ({@link OtelcolDeployer.recover}) adopts the ones still
 * healthy (restarting their simulators, which lived in the old process), stops and forgets the others,
 * and kills any collector started from a config under the folder that no record owns.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type {
  Deployer,
  DeployOptions,
  DeployOutcome,
  VariantDeployment,
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
import { ProcessFleet } from './local-dataplane-fleet.js';
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
  /** How long a collector may take to answer its health check; 60 s unless said. */
  readonly readyTimeoutMs?: number;
  readonly logger?: OtelcolDeployerLogger;
}

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

/** FNV-1a of the experiment id, as the local deployer: each experiment gets its own reproducible fleet. */
const seedOf = (experimentId: string): number => {
  let h = 0x811c9dc5;
  for (let i = 0; i < experimentId.length; i++) {
    h ^= experimentId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h || 1;
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
    };
  }

  #dir(experimentId: string, variant?: Variant): string {
    if (!SAFE_ID.test(experimentId)) throw new RangeError(`unsafe experiment id ${experimentId}`);
    return variant === undefined
      ? join(this.#options.stateDir, experimentId)
      : join(this.#options.stateDir, experimentId, variant);
  }

  #configPath(experimentId: string, variant: Variant): string {
    return join(this.#dir(experimentId, variant), 'config.yaml');
  }

  #sdFile(experimentId: string, variant: Variant): string {
    return join(this.#options.sdDir, `${experimentId}-${variant}.json`);
  }

  /** The marker that makes a process ours: the argument it was started with. */
  #marker(experimentId: string, variant: Variant): string {
    return `--config=${this.#configPath(experimentId, variant)}`;
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

  async #readRecord(experimentId: string, variant: Variant): Promise<CollectorRecord | undefined> {
    try {
      const text = await readFile(join(this.#dir(experimentId, variant), 'collector.json'), 'utf8');
      const record = JSON.parse(text) as CollectorRecord;
      return record.experimentId === experimentId && record.variant === variant ? record : undefined;
    } catch {
      return undefined;
    }
  }

  async #healthy(record: CollectorRecord): Promise<boolean> {
    if (!(await isOurProcess(record.pid, this.#marker(record.experimentId, record.variant)))) return false;
    return fetch(`http://127.0.0.1:${record.ports.health}/`, { signal: AbortSignal.timeout(2_000) }).then(
      (r) => r.ok,
      () => false,
    );
  }

  async #writeTargets(record: CollectorRecord): Promise<void> {
    await mkdir(this.#options.sdDir, { recursive: true });
    const file = this.#sdFile(record.experimentId, record.variant);
    const groups = [
      {
        targets: [`127.0.0.1:${record.ports.prometheus}`, `127.0.0.1:${record.ports.telemetry}`],
        labels: { experiment_id: record.experimentId, variant: record.variant, data_plane: 'otelcol' },
      },
    ];
    // Prometheus watches the folder: a half-written file must never be there under the final name.
    await writeFile(`${file}.tmp`, JSON.stringify(groups));
    await rename(`${file}.tmp`, file);
  }

  #startSender(record: CollectorRecord): void {
    const key = `${record.experimentId}/${record.variant}`;
    if (this.#senders.has(key)) return;
    const settings = simulatedScraper(record.config);
    if (settings === undefined) return;
    const fleet = new ProcessFleet({
      hosts: record.hosts,
      processesPerHost: record.processesPerHost,
      seed: record.seed,
    });
    const sender = new OtlpFleetSender(fleet, { endpoint: `127.0.0.1:${record.ports.otlp}`, settings });
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
            { experimentId: record.experimentId, variant: record.variant, err: String(err) },
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

  /** Stops the variant's simulator and collector and forgets it (its folder and target file). */
  async #remove(experimentId: string, variant: Variant): Promise<boolean> {
    await this.#stopSender(experimentId, variant);
    await rm(this.#sdFile(experimentId, variant), { force: true });
    const record = await this.#readRecord(experimentId, variant);
    let existed = record !== undefined;
    if (record) {
      const ended = await stopProcess(record.pid, this.#marker(experimentId, variant));
      existed = ended !== 'not running';
    }
    // A collector started just before a crash, before its record was written, has no record.
    for (const { pid } of await processesWithArgument(this.#marker(experimentId, variant))) {
      await stopProcess(pid, this.#marker(experimentId, variant));
      existed = true;
    }
    await rm(this.#dir(experimentId, variant), { recursive: true, force: true });
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
    const processes = d.hosts * this.#options.processesPerHost;
    if (processes > this.#options.maxProcessesPerCollector)
      return {
        ok: false,
        reason: `${d.hosts} hosts × ${this.#options.processesPerHost} processes is ${processes} simulated processes, more than one collector here is sent (${this.#options.maxProcessesPerCollector}): target fewer hosts or lower PHOENIX_OTELCOL_PROCESSES_PER_HOST`,
      };
    const configHash = hashOf(d.config);
    const existing = await this.#readRecord(d.experimentId, d.variant);
    if (existing && existing.configHash === configHash && (await this.#healthy(existing))) {
      // Deployed already (a redelivered command): make sure it is fed and scraped.
      this.#startSender(existing);
      await this.#writeTargets(existing);
      return { ok: true, detail: this.#detail(existing) };
    }
    if (existing) await this.#remove(d.experimentId, d.variant);

    const dir = this.#dir(d.experimentId, d.variant);
    await mkdir(dir, { recursive: true });
    const ports: CollectorPorts = {
      otlp: await freePort(),
      prometheus: await freePort(),
      telemetry: await freePort(),
      health: await freePort(),
    };
    const configPath = this.#configPath(d.experimentId, d.variant);
    await writeFile(
      configPath,
      toYaml(
        simulationConfig(d.config, ports),
        ` Phoenix otelcol deployer: experiment ${d.experimentId}, variant ${d.variant}, rendered for simulation`,
      ),
    );
    const log = await open(join(dir, 'collector.log'), 'a');
    let pid: number | undefined;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    try {
      // Its own session: the collector outlives this process and is adopted by the next one.
      const child = spawn(this.#options.bin, [`--config=${configPath}`], {
        detached: true,
        stdio: ['ignore', log.fd, log.fd],
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? dir,
          // The collector's own node: every simulated host brings its own k8s.node.name, which wins.
          [NODE_NAME_ENV]: hostname(),
        },
      });
      child.once('exit', (code, signal) => {
        exit = { code, signal };
      });
      child.unref();
      const spawned = await new Promise<number>((resolve, reject) => {
        child.once('spawn', () => resolve(child.pid as number));
        child.once('error', reject);
      });
      pid = spawned;
    } catch (err) {
      await log.close();
      await rm(dir, { recursive: true, force: true });
      return { ok: false, reason: `could not start ${this.#options.bin}: ${(err as Error).message}` };
    }
    await log.close();
    const record: CollectorRecord = {
      experimentId: d.experimentId,
      variant: d.variant,
      pid,
      ports,
      configHash,
      config: d.config,
      hosts: d.hosts,
      processesPerHost: this.#options.processesPerHost,
      seed: seedOf(d.experimentId),
      startedAt: new Date().toISOString(),
    };
    await writeFile(join(dir, 'collector.json'), JSON.stringify(record, null, 2));

    // Ready when health_check answers; a collector that exits refused its config (permanent).
    const deadline = Date.now() + this.#options.readyTimeoutMs;
    try {
      for (;;) {
        options.signal?.throwIfAborted();
        if (exit !== undefined) {
          const output = await this.#logTail(d.experimentId, d.variant);
          await this.#remove(d.experimentId, d.variant);
          return {
            ok: false,
            reason: `the collector exited (${exit.code ?? exit.signal}) before it was ready: ${output}`,
          };
        }
        if (await this.#healthy(record)) break;
        if (Date.now() > deadline) {
          const output = await this.#logTail(d.experimentId, d.variant);
          await this.#remove(d.experimentId, d.variant);
          return {
            ok: false,
            reason: `the collector was not ready within ${Math.round(this.#options.readyTimeoutMs / 1000)} s: ${output}`,
          };
        }
        await sleep(200, undefined, options.signal ? { signal: options.signal } : {});
      }
      this.#startSender(record);
      await this.#writeTargets(record);
    } catch (err) {
      // Given up (shutdown) or failed half-way: leave nothing running behind.
      await this.#remove(d.experimentId, d.variant);
      throw err;
    }
    this.#options.logger?.info(
      { experimentId: d.experimentId, variant: d.variant, pid, ports },
      'collector ready',
    );
    return { ok: true, detail: this.#detail(record) };
  }

  #detail(record: CollectorRecord): Record<string, unknown> {
    return {
      dataPlane: 'otelcol',
      pid: record.pid,
      hosts: record.hosts,
      processesPerHost: record.processesPerHost,
      collectionIntervalSeconds: simulatedScraper(record.config)?.collectionIntervalSeconds,
      endpoint: `http://127.0.0.1:${record.ports.prometheus}/metrics`,
      telemetryEndpoint: `http://127.0.0.1:${record.ports.telemetry}/metrics`,
      otlpEndpoint: `127.0.0.1:${record.ports.otlp}`,
    };
  }

  async #logTail(experimentId: string, variant: Variant): Promise<string> {
    const text = await readFile(join(this.#dir(experimentId, variant), 'collector.log'), 'utf8').catch(
      () => '',
    );
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

  async isDeployed(experimentId: string, variant: Variant): Promise<boolean> {
    if (!SAFE_ID.test(experimentId)) return false;
    const record = await this.#readRecord(experimentId, variant);
    return record !== undefined && (await this.#healthy(record));
  }

  async deployedVariants(experimentId: string): Promise<readonly Variant[]> {
    const present: Variant[] = [];
    for (const variant of VARIANTS) if (await this.isDeployed(experimentId, variant)) present.push(variant);
    return present;
  }

  /**
   * After a restart of Phoenix: adopts every recorded collector that still answers (restarting its
   * simulator and its target file), stops and forgets the others, and stops collectors started from a
   * config under the state folder that no record owns. No orphans, no duplicates.
   */
  async recover(): Promise<{ readonly adopted: readonly string[]; readonly cleaned: readonly string[] }> {
    const adopted: string[] = [];
    const cleaned: string[] = [];
    const experiments = await readdir(this.#options.stateDir).catch(() => [] as string[]);
    for (const experimentId of experiments) {
      if (!SAFE_ID.test(experimentId)) continue;
      await this.#serialized(experimentId, async () => {
        for (const variant of VARIANTS) {
          const record = await this.#readRecord(experimentId, variant);
          if (record && (await this.#healthy(record))) {
            this.#startSender(record);
            await this.#writeTargets(record);
            adopted.push(`${experimentId}/${variant}`);
          } else if (
            record ||
            (await readdir(this.#dir(experimentId, variant)).then(
              () => true,
              () => false,
            ))
          ) {
            await this.#remove(experimentId, variant);
            cleaned.push(`${experimentId}/${variant}`);
          }
        }
        if ((await readdir(this.#dir(experimentId)).catch(() => [])).length === 0)
          await rm(this.#dir(experimentId), { recursive: true, force: true });
      });
    }
    // Collectors of ours that no record owns (their folder removed by hand, say).
    const owned = new Set(adopted.map((key) => key.split('/')));
    for (const { pid, argv } of await processesWithArgument(`--config=${this.#options.stateDir}/`)) {
      const marker = argv.find((a) => a.startsWith(`--config=${this.#options.stateDir}/`)) as string;
      const mine = [...owned].some(([e, v]) => marker === this.#marker(e as string, v as Variant));
      if (!mine) {
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

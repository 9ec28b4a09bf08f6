/**
 * The fleet simulator over OTLP: each simulated host's processes become OTLP metrics shaped exactly as
 * the `hostmetrics` receiver's `process` scraper emits them (collector v0.165.0; facts in
 * src/domain/pipelines/process-scraper.ts), sent over OTLP/HTTP (protobuf, POST /v1/metrics) to a
 * collector's `otlp` receiver: the input of a config rendered with `simulation` (render.ts).
 *
 * Shape, as the scraper does it (process_scraper.go, generated_metrics.go):
 * - one ResourceMetrics per process, schema URL of its semantic conventions, one ScopeMetrics named after
 *   the scraper with the collector's version, the enabled metrics in the scraper's order (by name);
 * - every sum cumulative, monotonic for counters; every data point (gauges too) starts at the process's
 *   start time, in milliseconds, and carries the scrape time;
 * - `process.cpu.utilization` has no point on a process's first scrape (it needs two);
 * - `process.memory.utilization` is a percentage (0–100), as gopsutil's MemoryPercent returns it.
 * Host identity is what the scraper does not add: `host.name` and `k8s.node.name` on every resource, so
 * one collector can take many hosts and the rendered `resource/experiment` processor keeps each one's.
 *
 * The wire format is the OpenTelemetry JS SDK's (`@opentelemetry/otlp-transformer`): it serializes one
 * ResourceMetrics per ExportMetricsServiceRequest, and a request of many is their concatenation, which
 * protobuf defines as the merge of the messages (repeated fields append).
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { type HrTime, ValueType } from '@opentelemetry/api';
import { ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  type MetricData,
  type ResourceMetrics,
  type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import pLimit from 'p-limit';
import {
  PROCESS_SCRAPER_SCHEMA_URL,
  PROCESS_SCRAPER_SCOPE_NAME,
  PROCESS_SCRAPER_SCOPE_VERSION,
  type ProcessMetricInfo,
  type ProcessScraperSettings,
} from '../domain/pipelines/index.js';
import { catalogEntry, type ProcessFleet } from './local-dataplane-fleet.js';

/** The resource attributes that say which simulated host a process runs on. */
export const HOST_IDENTITY_ATTRIBUTES = ['host.name', 'k8s.node.name'] as const;

export interface FleetOtlpEncoderOptions {
  /** What the scraper would emit: a rendered variant's `processScraper`. */
  readonly settings: ProcessScraperSettings;
  /** Wall-clock milliseconds at the fleet's time 0 (process start times and scrape times derive from it). */
  readonly epochMs: number;
  /** The scope version: the collector's build version; Phoenix's build by default. */
  readonly scopeVersion?: string;
}

const msToHrTime = (ms: number): HrTime => {
  const whole = Math.floor(ms);
  const seconds = Math.floor(whole / 1000);
  return [seconds, (whole - seconds * 1000) * 1_000_000];
};

/**
 * Turns a {@link ProcessFleet}'s current state into the scraper's OTLP metrics. Stateful like the
 * scraper: it remembers each process's CPU times from the previous scrape for `process.cpu.utilization`.
 */
export class FleetOtlpEncoder {
  readonly #fleet: ProcessFleet;
  readonly #settings: ProcessScraperSettings;
  readonly #epochMs: number;
  readonly #scope: ScopeMetrics['scope'];
  readonly #prevPid: Int32Array;
  readonly #prevTimeMs: Float64Array;
  readonly #prevCpu: Float64Array;

  constructor(fleet: ProcessFleet, options: FleetOtlpEncoderOptions) {
    this.#fleet = fleet;
    this.#settings = options.settings;
    this.#epochMs = options.epochMs;
    this.#scope = {
      name: PROCESS_SCRAPER_SCOPE_NAME,
      version: options.scopeVersion ?? PROCESS_SCRAPER_SCOPE_VERSION,
    };
    this.#prevPid = new Int32Array(fleet.size).fill(-1);
    this.#prevTimeMs = new Float64Array(fleet.size);
    this.#prevCpu = new Float64Array(fleet.size * 3);
  }

  /** The wall-clock time (ms) of the fleet's current state: what a scrape now would stamp. */
  get nowMs(): number {
    return this.#epochMs + this.#fleet.time * 1000;
  }

  /** One ResourceMetrics per process of each host in `hosts`, scraped at the fleet's current time. */
  resourceMetrics(hosts: Iterable<number>): ResourceMetrics[] {
    const fleet = this.#fleet;
    const out: ResourceMetrics[] = [];
    for (const h of hosts) {
      if (!Number.isInteger(h) || h < 0 || h >= fleet.hosts) throw new RangeError(`no host ${h}`);
      for (let i = h * fleet.perHost; i < (h + 1) * fleet.perHost; i++) out.push(this.#process(h, i));
    }
    return out;
  }

  /** The ExportMetricsServiceRequest (protobuf) carrying every process of `hosts`. */
  encode(hosts: Iterable<number>): { readonly body: Uint8Array; readonly dataPoints: number } {
    const parts: Uint8Array[] = [];
    let dataPoints = 0;
    for (const rm of this.resourceMetrics(hosts)) {
      const bytes = ProtobufMetricsSerializer.serializeRequest(rm);
      if (bytes === undefined) throw new Error('the OTLP serializer returned nothing');
      parts.push(bytes);
      for (const sm of rm.scopeMetrics) for (const m of sm.metrics) dataPoints += m.dataPoints.length;
    }
    return { body: Buffer.concat(parts), dataPoints };
  }

  #process(h: number, i: number): ResourceMetrics {
    const fleet = this.#fleet;
    const entry = catalogEntry(fleet.name[i] as number);
    const nowMs = this.nowMs;
    const startMs = Math.floor(this.#epochMs + (fleet.startTime[i] as number) * 1000);
    const start = msToHrTime(startMs);
    const end = msToHrTime(nowMs);
    const pid = fleet.pid[i] as number;

    const attributes: Record<string, string | number> = {};
    for (const key of this.#settings.resourceAttributes) {
      switch (key) {
        case 'process.pid':
          attributes[key] = pid;
          break;
        case 'process.parent_pid':
          attributes[key] = fleet.ppid[i] as number;
          break;
        case 'process.executable.name':
          attributes[key] = entry.name;
          break;
        case 'process.executable.path':
        case 'process.command':
          attributes[key] = entry.path;
          break;
        case 'process.command_line':
          attributes[key] = fleet.commandLine(i);
          break;
        case 'process.owner':
          attributes[key] = entry.owner;
          break;
        case 'process.cgroup':
          attributes[key] = `0::/kubepods.slice/${entry.cls}/${entry.name}.scope`;
          break;
      }
    }
    const node = fleet.hostNames[h] as string;
    for (const key of HOST_IDENTITY_ATTRIBUTES) attributes[key] = node;

    // CPU utilization needs the previous scrape of the same process (same slot, same pid).
    const seenBefore = this.#prevPid[i] === pid && (this.#prevTimeMs[i] as number) < nowMs;
    const elapsed = (nowMs - (this.#prevTimeMs[i] as number)) / 1000;
    const cpus = fleet.hostCpus[h] as number;
    const utilization = (state: number): number =>
      ((fleet.cpuTime[3 * i + state] as number) - (this.#prevCpu[3 * i + state] as number)) / elapsed / cpus;
    const uptime = fleet.time - (fleet.startTime[i] as number);

    const metrics: MetricData[] = [];
    for (const info of this.#settings.metrics) {
      if (info.name === 'process.cpu.utilization' && !seenBefore) continue;
      const attribute = info.attribute;
      const dataPoints = Array.from({ length: attribute?.values.length ?? 1 }, (_, k) => ({
        startTime: start,
        endTime: end,
        attributes: attribute === undefined ? {} : { [attribute.key]: attribute.values[k] as string },
        value: this.#value(info, h, i, k, uptime, utilization),
      }));
      const descriptor = {
        name: info.name,
        description: info.description,
        unit: info.unit,
        valueType: info.valueType === 'int' ? ValueType.INT : ValueType.DOUBLE,
      };
      metrics.push(
        info.kind === 'gauge'
          ? {
              descriptor,
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.GAUGE,
              dataPoints,
            }
          : {
              descriptor,
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.SUM,
              isMonotonic: info.kind === 'counter',
              dataPoints,
            },
      );
    }

    this.#prevPid[i] = pid;
    this.#prevTimeMs[i] = nowMs;
    for (let s = 0; s < 3; s++) this.#prevCpu[3 * i + s] = fleet.cpuTime[3 * i + s] as number;

    return {
      resource: resourceFromAttributes(attributes, { schemaUrl: PROCESS_SCRAPER_SCHEMA_URL }),
      scopeMetrics: [{ scope: this.#scope, metrics }],
    };
  }

  /** The value of data point k of a metric; the same formulas as the local emulator's. */
  #value(
    info: ProcessMetricInfo,
    h: number,
    i: number,
    k: number,
    uptime: number,
    utilization: (state: number) => number,
  ): number {
    const fleet = this.#fleet;
    const mem = fleet.memNow[i] as number;
    const cpuTotal = (fleet.cpuTime[3 * i] as number) + (fleet.cpuTime[3 * i + 1] as number);
    switch (info.name) {
      case 'process.cpu.time':
        return fleet.cpuTime[3 * i + k] as number;
      case 'process.cpu.utilization':
        return utilization(k);
      case 'process.memory.usage':
        return Math.round(mem);
      case 'process.memory.virtual':
        return Math.round(mem * catalogEntry(fleet.name[i] as number).virtual);
      case 'process.memory.utilization':
        return (100 * mem) / (fleet.hostMemoryBytes[h] as number);
      case 'process.disk.io':
        return Math.round(fleet.diskBytes[2 * i + k] as number);
      case 'process.disk.operations':
        return Math.round((fleet.diskBytes[2 * i + k] as number) / 16_384);
      case 'process.threads':
        return fleet.threads[i] as number;
      case 'process.open_file_descriptors':
        return 8 + 3 * (fleet.threads[i] as number);
      case 'process.context_switches':
        return Math.round(k === 0 ? cpuTotal * 150 : uptime * 2 + cpuTotal * 900);
      case 'process.paging.faults':
        return Math.round(k === 0 ? uptime * 0.001 : mem / 4096 + uptime * 0.5);
      case 'process.signals_pending':
        return 0;
      case 'process.uptime':
        return uptime;
      default:
        return 0;
    }
  }
}

/** One receiver and the hosts of the fleet it is sent (a collector of a variant run as shards). */
export interface OtlpRoute {
  /** host:port of the collector's OTLP/HTTP receiver. */
  readonly endpoint: string;
  /** Indexes of the fleet's hosts this receiver gets, every process of each. */
  readonly hosts: readonly number[];
}

export interface OtlpFleetSenderOptions extends Omit<FleetOtlpEncoderOptions, 'epochMs'> {
  /** host:port of the collector's OTLP/HTTP receiver that gets every host; or give `routes`. */
  readonly endpoint?: string;
  /**
   * Several receivers, each sent its own hosts (disjoint: a host's series stay in one collector); the
   * fleet still advances once per interval, so the union is exactly what one receiver would get.
   */
  readonly routes?: readonly OtlpRoute[];
  /** Hosts per request (each keeps its own resources); 20 unless said. */
  readonly hostsPerRequest?: number;
  /** Requests in flight at once, over the pooled keep-alive connections of `fetch`; 4 unless said. */
  readonly concurrency?: number;
  /** Wall clock in ms; Date.now unless said (tests pass a fake one). */
  readonly now?: () => number;
  /** Per-request timeout in ms; 10 s unless said. */
  readonly timeoutMs?: number;
}

export interface SendReport {
  readonly requests: number;
  readonly resources: number;
  readonly dataPoints: number;
  /** What the receiver reported as rejected (`partial_success.rejected_data_points`). */
  readonly rejectedDataPoints: number;
}

/** A request the receiver did not accept: its HTTP status and what it said. */
export class OtlpSendError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`OTLP receiver answered ${status}: ${body.slice(0, 500)}`);
    this.name = 'OtlpSendError';
  }
}

/**
 * Sends a fleet's processes to one OTLP/HTTP receiver (or each host to its own, with `routes`), the way a DaemonSet of scrapers would: every
 * host at every interval, each with its own identity. {@link sendOnce} sends the current state;
 * {@link run} advances the fleet by the real time elapsed and sends, every `collectionIntervalSeconds`.
 */
export class OtlpFleetSender {
  readonly encoder: FleetOtlpEncoder;
  readonly #fleet: ProcessFleet;
  readonly #routes: readonly { readonly url: string; readonly hosts: readonly number[] }[];
  readonly #hostsPerRequest: number;
  readonly #concurrency: number;
  readonly #now: () => number;
  readonly #timeoutMs: number;
  readonly #intervalMs: number;

  constructor(fleet: ProcessFleet, options: OtlpFleetSenderOptions) {
    if ((options.endpoint === undefined) === (options.routes === undefined))
      throw new RangeError('give either endpoint or routes');
    const routes = options.routes ?? [
      { endpoint: options.endpoint as string, hosts: Array.from({ length: fleet.hosts }, (_, h) => h) },
    ];
    const seen = new Set<number>();
    for (const route of routes) {
      if (!/^[^\s/:]+:\d{1,5}$/.test(route.endpoint)) throw new RangeError('endpoint must be host:port');
      for (const h of route.hosts) {
        if (!Number.isInteger(h) || h < 0 || h >= fleet.hosts) throw new RangeError(`no host ${h}`);
        if (seen.has(h)) throw new RangeError(`host ${h} is routed twice`);
        seen.add(h);
      }
    }
    this.#fleet = fleet;
    this.#routes = routes.map((r) => ({ url: `http://${r.endpoint}/v1/metrics`, hosts: r.hosts }));
    this.#hostsPerRequest = Math.max(1, options.hostsPerRequest ?? 20);
    this.#concurrency = Math.max(1, options.concurrency ?? 4);
    this.#now = options.now ?? Date.now;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#intervalMs = options.settings.collectionIntervalSeconds * 1000;
    // The fleet's current time is now.
    this.encoder = new FleetOtlpEncoder(fleet, { ...options, epochMs: this.#now() - fleet.time * 1000 });
  }

  /** Sends every host's processes as they are now. Throws {@link OtlpSendError} on a refused request. */
  async sendOnce(signal?: AbortSignal): Promise<SendReport> {
    const batches: { url: string; hosts: readonly number[] }[] = [];
    for (const { url, hosts } of this.#routes)
      for (let k = 0; k < hosts.length; k += this.#hostsPerRequest)
        batches.push({ url, hosts: hosts.slice(k, k + this.#hostsPerRequest) });
    // Encoded up front: the encoder's CPU-utilization state must see one scrape per interval.
    const requests = batches.map(({ url, hosts }) => ({ url, ...this.encoder.encode(hosts) }));
    const limit = pLimit(this.#concurrency);
    const rejected = await Promise.all(
      requests.map(({ url, body }) => limit(() => this.#post(url, body, signal))),
    );
    return {
      requests: requests.length,
      resources: batches.reduce((n, b) => n + b.hosts.length, 0) * this.#fleet.perHost,
      dataPoints: requests.reduce((n, r) => n + r.dataPoints, 0),
      rejectedDataPoints: rejected.reduce((n, r) => n + r, 0),
    };
  }

  /**
   * Sends now, then every interval until `signal` aborts, advancing the fleet by the time that really
   * passed. `onSent` hears every round; a failed round is reported to `onError` and the next goes on.
   */
  async run(
    signal: AbortSignal,
    hooks: { onSent?: (r: SendReport) => void; onError?: (e: unknown) => void } = {},
  ): Promise<void> {
    let last = this.#now();
    while (!signal.aborted) {
      const now = this.#now();
      this.#fleet.advance((now - last) / 1000);
      last = now;
      try {
        hooks.onSent?.(await this.sendOnce(signal));
      } catch (error) {
        if (signal.aborted) return;
        hooks.onError?.(error);
      }
      const wait = this.#intervalMs - (this.#now() - now);
      try {
        await sleep(Math.max(0, wait), undefined, { signal });
      } catch {
        return;
      }
    }
  }

  async #post(url: string, body: Uint8Array, signal: AbortSignal | undefined): Promise<number> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-protobuf' },
      body,
      signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (response.status !== 200)
      throw new OtlpSendError(response.status, Buffer.from(bytes).toString('utf8'));
    const answer = ProtobufMetricsSerializer.deserializeResponse(bytes);
    return Number(answer.partialSuccess?.rejectedDataPoints ?? 0);
  }
}

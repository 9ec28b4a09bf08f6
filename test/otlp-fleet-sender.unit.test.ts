import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { AggregationTemporality, DataPointType, type MetricData } from '@opentelemetry/sdk-metrics';
import { ProcessFleet } from '../src/adapters/local-dataplane-fleet.js';
import {
  FleetOtlpEncoder,
  HOST_IDENTITY_ATTRIBUTES,
  OtlpFleetSender,
  OtlpSendError,
} from '../src/adapters/otlp-fleet-sender.js';
import {
  PROCESS_METRICS,
  PROCESS_SCRAPER_SCHEMA_URL,
  PROCESS_SCRAPER_SCOPE_NAME,
  processScraperSettings,
} from '../src/domain/pipelines/index.js';

/**
 * The simulator's OTLP encoder and sender (issue 17 §3), without a collector: what each process's
 * ResourceMetrics holds, and how requests go out. test/otlp-shape.int.test.ts compares the result with
 * the real scraper through a real collector.
 */

const EVERYTHING = processScraperSettings(
  10,
  Object.fromEntries(PROCESS_METRICS.map((m) => [m.name, true])),
  { 'process.cgroup': true },
);
const DEFAULTS = processScraperSettings(10, {}, {});
const EPOCH = Date.UTC(2026, 11, 5, 12, 0, 0);
const hrToMs = ([s, ns]: readonly [number, number]) => s * 1000 + ns / 1e6;

const metricOf = (metrics: MetricData[], name: string) => metrics.find((m) => m.descriptor.name === name);

describe('FleetOtlpEncoder', () => {
  it('emits one resource per process with the scraper attributes and the host identity', () => {
    const fleet = new ProcessFleet({ hosts: 3, processesPerHost: 10, seed: 1 });
    const encoder = new FleetOtlpEncoder(fleet, { settings: DEFAULTS, epochMs: EPOCH });
    const rms = encoder.resourceMetrics([2, 0]);
    assert.equal(rms.length, 20);
    rms.forEach((rm, k) => {
      const h = k < 10 ? 2 : 0;
      const i = h * 10 + (k % 10);
      const attributes = rm.resource.attributes;
      assert.deepEqual(Object.keys(attributes), [
        ...DEFAULTS.resourceAttributes,
        ...HOST_IDENTITY_ATTRIBUTES,
      ]);
      assert.equal(attributes['process.pid'], fleet.pid[i]);
      assert.equal(attributes['process.parent_pid'], fleet.ppid[i]);
      assert.equal(attributes['process.command_line'], fleet.commandLine(i));
      assert.equal(attributes['host.name'], fleet.hostNames[h]);
      assert.equal(attributes['k8s.node.name'], fleet.hostNames[h]);
      assert.equal(rm.resource.schemaUrl, PROCESS_SCRAPER_SCHEMA_URL);
      assert.equal(rm.scopeMetrics.length, 1);
      assert.equal(rm.scopeMetrics[0]?.scope.name, PROCESS_SCRAPER_SCOPE_NAME);
      const points =
        rm.scopeMetrics[0]?.metrics.flatMap(
          (m) => m.dataPoints as { startTime: [number, number]; endTime: [number, number] }[],
        ) ?? [];
      // The process's start time, in whole milliseconds, on every point; the scrape time is the fleet's now.
      for (const p of points) {
        assert.equal(hrToMs(p.startTime), Math.floor(EPOCH + (fleet.startTime[i] as number) * 1000));
        assert.equal(hrToMs(p.endTime), EPOCH);
      }
    });
    assert.throws(() => encoder.resourceMetrics([3]), RangeError);
  });

  it('gives every metric the scraper type, temporality, monotonicity, value type and attributes', () => {
    const fleet = new ProcessFleet({ hosts: 1, processesPerHost: 5, seed: 2 });
    const encoder = new FleetOtlpEncoder(fleet, { settings: EVERYTHING, epochMs: EPOCH, scopeVersion: 'x' });
    encoder.resourceMetrics([0]);
    fleet.advance(10);
    const [rm] = encoder.resourceMetrics([0]);
    assert.ok(rm);
    assert.equal(rm.scopeMetrics[0]?.scope.version, 'x');
    const metrics = rm.scopeMetrics[0]?.metrics ?? [];
    assert.deepEqual(
      metrics.map((m) => m.descriptor.name),
      EVERYTHING.metrics.map((m) => m.name),
    );
    for (const info of PROCESS_METRICS) {
      const m = metricOf(metrics, info.name);
      assert.ok(m, info.name);
      assert.equal(m.descriptor.unit, info.unit, info.name);
      assert.equal(m.descriptor.description, info.description, info.name);
      assert.equal(m.aggregationTemporality, AggregationTemporality.CUMULATIVE);
      if (info.kind === 'gauge') assert.equal(m.dataPointType, DataPointType.GAUGE, info.name);
      else {
        assert.equal(m.dataPointType, DataPointType.SUM, info.name);
        assert.equal(m.isMonotonic, info.kind === 'counter', info.name);
      }
      assert.deepEqual(
        m.dataPoints.map((p) => p.attributes),
        info.attribute ? info.attribute.values.map((v) => ({ [info.attribute?.key as string]: v })) : [{}],
        info.name,
      );
      for (const p of m.dataPoints) {
        assert.ok(Number.isFinite(p.value as number), info.name);
        if (info.valueType === 'int') assert.ok(Number.isInteger(p.value), `${info.name} is an int`);
      }
    }
    assert.equal(
      metricOf(metrics, 'process.cgroup'),
      undefined,
      'process.cgroup is a resource attribute, not a metric',
    );
    assert.ok(typeof rm.resource.attributes['process.cgroup'] === 'string');
    const memory = metricOf(metrics, 'process.memory.utilization')?.dataPoints[0]?.value as number;
    assert.ok(memory > 0 && memory < 100, 'a percentage, as gopsutil reports it');
  });

  it('emits CPU utilization from a process’s second scrape on, from its CPU time', () => {
    const fleet = new ProcessFleet({ hosts: 1, processesPerHost: 200, seed: 3 });
    const settings = processScraperSettings(10, { 'process.cpu.utilization': true }, {});
    const encoder = new FleetOtlpEncoder(fleet, { settings, epochMs: EPOCH });
    const first = encoder.resourceMetrics([0]);
    assert.ok(first.every((rm) => !metricOf(rm.scopeMetrics[0]?.metrics ?? [], 'process.cpu.utilization')));
    const before = Float64Array.from(fleet.cpuTime);
    const pids = Int32Array.from(fleet.pid);
    fleet.advance(60);
    const second = encoder.resourceMetrics([0]);
    let churned = 0;
    second.forEach((rm, i) => {
      const metrics = rm.scopeMetrics[0]?.metrics ?? [];
      const utilization = metricOf(metrics, 'process.cpu.utilization');
      if (fleet.pid[i] !== pids[i]) {
        // A new pid in the slot is a new process: its first scrape.
        churned++;
        assert.equal(utilization, undefined);
        return;
      }
      assert.ok(utilization);
      utilization.dataPoints.forEach((p, state) => {
        const expected =
          ((fleet.cpuTime[3 * i + state] as number) - (before[3 * i + state] as number)) /
          60 /
          (fleet.hostCpus[0] as number);
        assert.ok(Math.abs((p.value as number) - expected) < 1e-9);
      });
    });
    assert.ok(churned > 0 && churned < 200, `some processes were replaced (${churned})`);
  });

  it('encodes a request of many resources as the concatenation of one-resource requests', () => {
    const fleet = new ProcessFleet({ hosts: 2, processesPerHost: 4, seed: 4 });
    const a = new FleetOtlpEncoder(fleet, { settings: DEFAULTS, epochMs: EPOCH });
    const b = new FleetOtlpEncoder(fleet, { settings: DEFAULTS, epochMs: EPOCH });
    const { body, dataPoints } = a.encode([0, 1]);
    const parts = b
      .resourceMetrics([0, 1])
      .map((rm) => ProtobufMetricsSerializer.serializeRequest(rm) as Uint8Array);
    assert.deepEqual(Buffer.from(body), Buffer.concat(parts));
    assert.equal(dataPoints, 8 * 7);
  });
});

describe('OtlpFleetSender', () => {
  let server: Server;
  let port: number;
  const received: { path: string; type: string | undefined; bytes: number }[] = [];
  /** What the receiver answers next: a status and a body. */
  let answer: { status: number; body: Uint8Array } = { status: 200, body: new Uint8Array() };

  before(async () => {
    server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({
          path: req.url ?? '',
          type: req.headers['content-type'],
          bytes: Buffer.concat(chunks).length,
        });
        res.writeHead(answer.status, { 'content-type': 'application/x-protobuf' });
        res.end(answer.body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    port = typeof address === 'object' && address ? address.port : 0;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('posts every host as OTLP/HTTP protobuf, a few hosts per request', async () => {
    received.length = 0;
    answer = { status: 200, body: new Uint8Array() };
    const fleet = new ProcessFleet({ hosts: 5, processesPerHost: 6, seed: 5 });
    const sender = new OtlpFleetSender(fleet, {
      endpoint: `127.0.0.1:${port}`,
      settings: DEFAULTS,
      hostsPerRequest: 2,
    });
    const report = await sender.sendOnce();
    assert.deepEqual(report, { requests: 3, resources: 30, dataPoints: 30 * 7, rejectedDataPoints: 0 });
    assert.equal(received.length, 3);
    assert.ok(
      received.every((r) => r.path === '/v1/metrics' && r.type === 'application/x-protobuf' && r.bytes > 0),
    );
  });

  it('reports what the receiver rejected in a partial success', async () => {
    // ExportMetricsServiceResponse { partial_success (1) { rejected_data_points (1): 5 } }.
    answer = { status: 200, body: Uint8Array.of(0x0a, 0x02, 0x08, 0x05) };
    const fleet = new ProcessFleet({ hosts: 2, processesPerHost: 3, seed: 6 });
    const sender = new OtlpFleetSender(fleet, {
      endpoint: `127.0.0.1:${port}`,
      settings: DEFAULTS,
      hostsPerRequest: 1,
    });
    assert.equal((await sender.sendOnce()).rejectedDataPoints, 10);
  });

  it('throws the receiver’s status when it refuses a request', async () => {
    answer = { status: 400, body: new TextEncoder().encode('bad data') };
    const fleet = new ProcessFleet({ hosts: 1, processesPerHost: 3, seed: 7 });
    const sender = new OtlpFleetSender(fleet, { endpoint: `127.0.0.1:${port}`, settings: DEFAULTS });
    await assert.rejects(
      sender.sendOnce(),
      (e: unknown) => e instanceof OtlpSendError && e.status === 400 && /bad data/.test(e.message),
    );
  });

  it('refuses an endpoint that is not host:port', () => {
    const fleet = new ProcessFleet({ hosts: 1, processesPerHost: 1, seed: 8 });
    for (const endpoint of ['http://x:1', 'x', 'x:1/v1', ' x:1']) {
      assert.throws(() => new OtlpFleetSender(fleet, { endpoint, settings: DEFAULTS }), RangeError, endpoint);
    }
  });

  it('sends each route its own hosts, every host once, from one fleet', async () => {
    received.length = 0;
    answer = { status: 200, body: new Uint8Array() };
    const other: number[] = [];
    const second = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        other.push(Buffer.concat(chunks).length);
        res.writeHead(200, { 'content-type': 'application/x-protobuf' });
        res.end();
      });
    });
    await new Promise<void>((resolve) => second.listen(0, '127.0.0.1', resolve));
    const secondPort = (second.address() as { port: number }).port;
    try {
      const fleet = new ProcessFleet({ hosts: 5, processesPerHost: 6, seed: 10 });
      const sender = new OtlpFleetSender(fleet, {
        routes: [
          { endpoint: `127.0.0.1:${port}`, hosts: [0, 1, 2] },
          { endpoint: `127.0.0.1:${secondPort}`, hosts: [3, 4] },
        ],
        settings: DEFAULTS,
        hostsPerRequest: 2,
      });
      const report = await sender.sendOnce();
      assert.deepEqual(report, { requests: 3, resources: 30, dataPoints: 30 * 7, rejectedDataPoints: 0 });
      assert.equal(received.length, 2, 'hosts 0-1 and 2');
      assert.equal(other.length, 1, 'hosts 3-4');
      // The bytes are those of one encoder of the same fleet, split by host.
      const whole = new FleetOtlpEncoder(new ProcessFleet({ hosts: 5, processesPerHost: 6, seed: 10 }), {
        settings: DEFAULTS,
        epochMs: EPOCH,
      });
      assert.equal(other[0], whole.encode([3, 4]).body.length);
    } finally {
      second.closeAllConnections();
      await new Promise((resolve) => second.close(resolve));
    }
  });

  it('refuses routes that send a host twice, a host the fleet lacks, or both endpoint and routes', () => {
    const fleet = new ProcessFleet({ hosts: 2, processesPerHost: 1, seed: 11 });
    const e = `127.0.0.1:${port}`;
    for (const routes of [
      [
        { endpoint: e, hosts: [0, 1] },
        { endpoint: e, hosts: [1] },
      ],
      [{ endpoint: e, hosts: [2] }],
    ])
      assert.throws(() => new OtlpFleetSender(fleet, { routes, settings: DEFAULTS }), RangeError);
    assert.throws(
      () =>
        new OtlpFleetSender(fleet, {
          endpoint: e,
          routes: [{ endpoint: e, hosts: [0] }],
          settings: DEFAULTS,
        }),
      RangeError,
    );
    assert.throws(() => new OtlpFleetSender(fleet, { settings: DEFAULTS }), RangeError);
  });

  it('runs at the interval, advancing the fleet by the time that passed, until aborted', async () => {
    received.length = 0;
    answer = { status: 200, body: new Uint8Array() };
    const fleet = new ProcessFleet({ hosts: 2, processesPerHost: 3, seed: 9 });
    const sender = new OtlpFleetSender(fleet, {
      endpoint: `127.0.0.1:${port}`,
      settings: processScraperSettings(0.1, {}, {}),
    });
    const controller = new AbortController();
    const rounds: number[] = [];
    const running = sender.run(controller.signal, { onSent: (r) => rounds.push(r.requests) });
    await new Promise((r) => setTimeout(r, 450));
    controller.abort();
    await running;
    // Loose bounds: the machine is shared, and a round may take longer than the interval.
    assert.ok(rounds.length >= 2 && rounds.length <= 6, `${rounds.length} rounds in 450 ms at 100 ms`);
    assert.ok(fleet.time > 0.1 && fleet.time < 5, `fleet time ${fleet.time}`);
    assert.equal(received.length, rounds.length);
  });
});

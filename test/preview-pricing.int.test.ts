import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EmulatorFleetSampler, sampleFleet } from '../src/adapters/emulator-fleet-sampler.js';
import { createPreviewService, PreviewBusy } from '../src/application/preview.js';
import { loadConfig } from '../src/config.js';
import { RESPONSE_SCHEMAS } from '../src/handlers/http/openapi.js';
import { configRefusal } from './support/config.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * The money and the preview through the API on the embedded default: the pricing profiles, a spec's
 * pricing profile checked at create, every analysis priced, and the preview of a spec (or of a created
 * experiment) on the fleet its run gets, with nothing written.
 */
describe('pricing profiles and the preview, through the API', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let operator: string;
  let viewer: string;
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-pricing-'));

  before(async () => {
    const file = join(dir, 'pricing.yaml');
    writeFileSync(
      file,
      [
        'profiles:',
        '  - name: team-prometheus',
        '    description: our own Prometheus, priced per series',
        '    perSeriesMonth: 0.01',
        '    cpuCoreHour: 0.05',
        '    memoryGbHour: 0.005',
        '    fleetHosts: 400',
      ].join('\n'),
    );
    system = await startTestSystem({ PHOENIX_PRICING_FILE: file, PHOENIX_FLEET_HOSTS: '250' });
    operator = await tokenFor(system, 'operator', 'olga');
    viewer = await tokenFor(system, 'viewer', 'vera');
  });
  after(async () => {
    await system.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = async (
    method: 'GET' | 'POST',
    url: string,
    payload?: object,
    token: string | null = operator,
    headers: Record<string, string> = {},
  ) => {
    const res = await system.app.inject({
      method,
      url,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      ...(payload ? { payload } : {}),
    });
    return { status: res.statusCode, body: res.body, headers: res.headers, json: () => res.json() };
  };

  const waitFor = async (id: string, states: string[], timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const head = await system.store.head();
      const res = await call('GET', `/api/v1/experiments/${id}?minPosition=${head}`);
      if (res.status === 200) {
        last = res.json().state;
        if (states.includes(last)) return res.json();
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`experiment ${id} still ${last}, not ${states.join('|')}, after ${timeoutMs} ms`);
  };

  it('lists the built-in profiles with their sources and the file’s, to a viewer', async () => {
    const res = await call('GET', '/api/v1/pricing-profiles', undefined, viewer);
    assert.equal(res.status, 200, res.body);
    const { items } = RESPONSE_SCHEMAS.PricingProfiles.parse(res.json());
    const byName = new Map(items.map((p) => [p.name, p]));
    assert.ok((byName.get('default')?.sources ?? []).length > 0);
    assert.equal(byName.get('team-prometheus')?.fleetHosts, 400);
    // PHOENIX_FLEET_HOSTS sizes the fleet of every profile that names none.
    assert.equal(byName.get('default')?.fleetHosts, 250);
    assert.equal((await call('GET', '/api/v1/pricing-profiles', undefined, null)).status, 401);
  });

  it('refuses a create naming an unknown pricing profile, and takes a known one', async () => {
    const bad = await call('POST', '/api/v1/experiments', validSpec({ pricingProfile: 'no-such-profile' }));
    assert.equal(bad.status, 400, bad.body);
    assert.match(String(bad.headers['content-type']), /^application\/problem\+json/);
    assert.ok(
      bad.json().errors.some((e: { path: string; message: string }) => /pricingProfile/.test(e.path)),
      bad.body,
    );
    const hostile = await call('POST', '/api/v1/experiments', validSpec({ pricingProfile: '../../etc' }));
    assert.equal(hostile.status, 400, hostile.body);
    const good = await call('POST', '/api/v1/experiments', validSpec({ pricingProfile: 'team-prometheus' }));
    assert.equal(good.status, 201, good.body);
  });

  it('prices every recorded analysis with the profile the spec names', async () => {
    const spec = validSpec({
      name: 'minimal vs baseline, priced',
      candidate: { template: 'process-minimal-v1', params: {} },
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 4 },
      durationSeconds: 1,
      criticalProcesses: ['^kubelet$'],
      pricingProfile: 'team-prometheus',
      successCriteria: {
        minCardinalityReductionPct: 50,
        maxCriticalProcessLossPct: 0,
        maxCollectorCpuOverheadPct: 100,
      },
    });
    const created = await call('POST', '/api/v1/experiments', spec);
    assert.equal(created.status, 201, created.body);
    const { id } = created.json();
    assert.equal((await call('POST', `/api/v1/experiments/${id}/start`)).status, 202);
    const done = await waitFor(id, ['completed', 'failed']);
    const { analysis } = RESPONSE_SCHEMAS.Experiment.parse(done);
    assert.ok(analysis?.cost, JSON.stringify(analysis));
    const cost = analysis.cost;
    assert.equal(cost.profile, 'team-prometheus');
    assert.equal(cost.currency, 'USD');
    // The series part is the measured reduction at $0.01 a series.
    const removed = analysis.baseline.series - analysis.candidate.series;
    assert.ok(removed > 0);
    assert.ok(Math.abs((cost.breakdown.seriesSaving ?? 0) - removed * 0.01) < 0.01 + removed * 0.01 * 0.05);
    // The fleet figure is the target's × 400 ÷ 4.
    assert.ok(Math.abs(cost.monthly.fleet.saving - cost.monthly.target.saving * 100) < 1);
    assert.equal(cost.assumptions.fleetHosts, 400);
    // The raw event carries it too (what re-judging and the audit read).
    const events = (await call('GET', `/api/v1/experiments/${id}/events?limit=1000`)).json().items;
    const recorded = events.find((e: { type: string }) => e.type === 'AnalysisRecorded');
    assert.equal(recorded.data.analysis.cost.profile, 'team-prometheus');
  });

  it('previews a spec: the series the candidate removes and the critical processes it drops, writing nothing', async () => {
    const experimentCount = async () =>
      (await call('GET', `/api/v1/experiments?limit=100&minPosition=${await system.store.head()}`)).json()
        .items.length;
    const before = await experimentCount();
    const spec = validSpec({
      candidate: { template: 'process-minimal-v1', params: {} },
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 6 },
      criticalProcesses: ['^postgres$', '^kubelet$', '^pause$'],
    });
    const res = await call('POST', '/api/v1/experiments/preview', spec, viewer);
    assert.equal(res.status, 200, res.body);
    const preview = RESPONSE_SCHEMAS.Preview.parse(res.json());
    assert.equal(preview.hosts, 6);
    assert.equal(preview.sampledHosts, 6);
    assert.ok(preview.baseline.series > preview.candidate.series, res.body);
    assert.equal(preview.removedSeries, preview.baseline.series - preview.candidate.series);
    assert.ok(
      preview.removedSeriesPct !== null && preview.removedSeriesPct > 0 && preview.removedSeriesPct < 100,
    );
    assert.ok(preview.criticalInBaseline >= 6, res.body);
    // The same spec previews the same; nothing was written.
    const again = await call('POST', '/api/v1/experiments/preview', spec, viewer);
    assert.deepEqual(again.json(), res.json());
    assert.equal(await experimentCount(), before);
  });

  it('finds no critical process dropped by a template that protects them (every template does)', async () => {
    const spec = validSpec({
      candidate: { template: 'process-topk-v1', params: { k: 3 } },
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 },
      criticalProcesses: ['^kubelet$', '^containerd$'],
    });
    const res = await call('POST', '/api/v1/experiments/preview', spec, viewer);
    assert.equal(res.status, 200, res.body);
    const preview = res.json();
    // kubelet and containerd on each of the 3 hosts
    assert.equal(preview.criticalInBaseline, 6, res.body);
    assert.deepEqual(preview.droppedCriticalProcesses, []);
    assert.ok(preview.removedSeriesPct > 50, res.body);
  });

  it('samples at most 50 hosts of a large target and scales the counts up', async () => {
    const res = await call(
      'POST',
      '/api/v1/experiments/preview',
      validSpec({
        candidate: { template: 'process-minimal-v1', params: {} },
        target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 1000 },
      }),
      viewer,
    );
    assert.equal(res.status, 200, res.body);
    const preview = res.json();
    assert.equal(preview.sampledHosts, 50);
    assert.equal(preview.hosts, 1000);
    // 500 processes a host, a few series each: 20 × the sample's
    assert.ok(preview.baseline.series > 1000 * 500, res.body);
  });

  it('previews a created experiment on the fleet its run gets (the create’s Idempotency-Key)', async () => {
    const spec = validSpec({ target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 } });
    const key = `preview-key-${Date.now()}`;
    const before = await call('POST', '/api/v1/experiments/preview', spec, operator, {
      'idempotency-key': key,
    });
    assert.equal(before.status, 200, before.body);
    const created = await call('POST', '/api/v1/experiments', spec, operator, { 'idempotency-key': key });
    assert.equal(created.status, 201, created.body);
    const after = await call('GET', `/api/v1/experiments/${created.json().id}/preview`, undefined, viewer);
    assert.equal(after.status, 200, after.body);
    assert.deepEqual(after.json(), before.json());
  });

  it('answers hostile or unknown input with a problem, never a 5xx', async () => {
    const unknown = await call('GET', '/api/v1/experiments/00000000-0000-4000-8000-000000000000/preview');
    assert.equal(unknown.status, 404);
    assert.equal((await call('GET', '/api/v1/experiments/not-a-uuid/preview')).status, 400);
    const badTemplate = await call(
      'POST',
      '/api/v1/experiments/preview',
      validSpec({ candidate: { template: 'no-such-template', params: {} } }),
    );
    assert.equal(badTemplate.status, 400, badTemplate.body);
    const tooMany = await call(
      'POST',
      '/api/v1/experiments/preview',
      validSpec({ target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 1_000_000 } }),
    );
    assert.equal(tooMany.status, 400, tooMany.body);
    assert.equal((await call('POST', '/api/v1/experiments/preview', validSpec(), null)).status, 401);
  });
});

describe('the preview service under load', () => {
  it('answers busy at once when every slot and queue place is taken', async () => {
    const previews = createPreviewService({
      sampler: new EmulatorFleetSampler(),
      concurrency: 1,
      queue: 0,
    });
    const spec = validSpec({
      candidate: { template: 'process-minimal-v1', params: {} },
      target: { namespace: 'x', nodeSelector: {}, hosts: 50 },
    });
    const first = previews.preview('slow-one', spec as never);
    await assert.rejects(previews.preview('second', spec as never), PreviewBusy);
    const done = await first;
    assert.equal(done.sampledHosts, 50);
    // The slot is free again.
    assert.equal(previews.load.running, 0);
  });

  it('runs in a worker thread what the in-thread sample computes', async () => {
    const request = {
      experimentId: 'same-fleet',
      hosts: 2,
      baseline: { template: 'process-baseline-v1', params: {} },
      candidate: { template: 'process-topk-v1', params: { k: 10 } },
      criticalProcesses: ['^kubelet$'],
    };
    const threaded = await new EmulatorFleetSampler().sample(request);
    assert.deepEqual(threaded, sampleFleet({ ...request, processesPerHost: 500 }));
    assert.ok(threaded.ok && threaded.candidate.series < threaded.baseline.series);
  });
});

describe('PHOENIX_PRICING_FILE', () => {
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-pricing-file-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const refusal = configRefusal;

  it('stops start-up with a one-line message naming the variable', () => {
    const cases: [string, RegExp][] = [
      [join(dir, 'missing.json'), /cannot be read \(ENOENT\)/],
      [write('bad.yaml', 'profiles: [ {name: x'), /neither JSON nor YAML/],
      [write('neg.json', '{"profiles":[{"name":"x","perSeriesMonth":-1}]}'), /profiles\.0\.perSeriesMonth/],
      [write('extra.json', '{"profiles":[{"name":"x","perSeries":1}]}'), /profiles\.0/],
      [write('dupe.json', '{"profiles":[{"name":"x"},{"name":"x"}]}'), /named twice/],
      [write('empty.json', '{"profiles":[]}'), /profiles/],
    ];
    for (const [path, expected] of cases) {
      const message = refusal({ PHOENIX_PRICING_FILE: path });
      assert.match(message, /^PHOENIX_PRICING_FILE: /);
      assert.match(message, expected);
      assert.ok(!message.includes('\n'), message);
    }
  });

  it('reads JSON as well as YAML, and a file profile replaces a built-in one of its name', () => {
    const path = write('ok.json', '{"profiles":[{"name":"default","currency":"EUR","perSeriesMonth":0.02}]}');
    const config = loadConfig({ PHOENIX_PRICING_FILE: path });
    const byName = new Map(config.pricingProfiles.map((p) => [p.name, p]));
    assert.equal(byName.get('default')?.currency, 'EUR');
    assert.ok(byName.has('datadog-custom-metrics'));
  });
});

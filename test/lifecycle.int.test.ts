import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * Experiments run themselves on the embedded default: through the API only, an experiment goes
 * create → start → running → analyzing → completed (or failed, or cancelled and torn down), with
 * the history, the audit and the events showing every step.
 */
describe('lifecycle on the embedded default, through the API', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let operator: string;
  let admin: string;

  before(async () => {
    system = await startTestSystem();
    operator = await tokenFor(system, 'operator', 'olga');
    admin = await tokenFor(system, 'admin', 'ada');
  });
  after(() => system.dispose());

  const call = async (method: 'GET' | 'POST', url: string, payload?: object, token = operator) => {
    const res = await system.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}` },
      ...(payload ? { payload } : {}),
    });
    return { status: res.statusCode, body: res.body, json: () => res.json() };
  };

  /** Polls the experiment until its state is one of `states` (the read model, waiting for the writes). */
  const waitFor = async (id: string, states: string[], timeoutMs = 30_000) => {
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

  const eventTypes = async (id: string) =>
    (await call('GET', `/api/v1/experiments/${id}/events?limit=1000`))
      .json()
      .items.map((e: { type: string }) => e.type);

  it('a passing candidate: pending → initializing → running → analyzing → completed, with the evidence', async () => {
    const spec = validSpec({
      name: 'minimal vs baseline',
      candidate: { template: 'process-minimal-v1', params: {} },
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 4 },
      durationSeconds: 1,
      criticalProcesses: ['^postgres$', '^kubelet$'],
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
    assert.equal(done.state, 'completed', JSON.stringify(done.analysis ?? done.statusReason));
    assert.equal(done.analysis.verdict, 'pass');
    assert.ok(done.analysis.cardinalityReductionPct >= 50, JSON.stringify(done.analysis));
    assert.ok(done.analysis.baseline.series > done.analysis.candidate.series);
    assert.deepEqual(done.analysis.missingCriticalProcesses, []);

    const history = (await call('GET', `/api/v1/experiments/${id}/history`)).json().items;
    assert.deepEqual(
      history.map((h: { from: string | null; to: string }) => `${h.from ?? '∅'}→${h.to}`),
      [
        '∅→pending',
        'pending→initializing',
        'initializing→running',
        'running→analyzing',
        'analyzing→completed',
      ],
    );
    assert.equal(history[0].actor, 'olga');
    assert.equal(history[2].actor, 'phoenix-saga');
    const types = await eventTypes(id);
    for (const t of [
      'ExperimentStarted',
      'VariantDeployed',
      'ExperimentRunStarted',
      'ExperimentRunCompleted',
      'AnalysisRecorded',
      'ExperimentCompleted',
    ]) {
      assert.ok(types.includes(t), `${t} in ${types.join(',')}`);
    }
    const audit = (await call('GET', `/api/v1/audit?experimentId=${id}`, undefined, admin)).json().items;
    assert.deepEqual(
      audit.map((a: { to: string }) => a.to),
      ['pending', 'initializing', 'running', 'analyzing', 'completed'],
    );
    // The transitions the saga drove are observed as the API's are.
    const metrics = (await system.app.inject({ url: '/metrics' })).body;
    for (const [from, to] of [
      ['initializing', 'running'],
      ['running', 'analyzing'],
      ['analyzing', 'completed'],
    ]) {
      assert.match(
        metrics,
        new RegExp(
          `^phoenix_state_transition_duration_seconds_count\\{from_state="${from}",to_state="${to}",success="true"\\} [1-9]`,
          'm',
        ),
        `${from}→${to} in the metrics`,
      );
    }
    // The variants are taken away once the experiment has ended.
    const deadline = Date.now() + 10_000;
    while (
      Date.now() < deadline &&
      (await eventTypes(id)).filter((t: string) => t === 'VariantTornDown').length < 2
    ) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal((await eventTypes(id)).filter((t: string) => t === 'VariantTornDown').length, 2);
  });

  it('a candidate that misses its criteria fails, with the reason in history', async () => {
    const spec = validSpec({
      name: 'priority filter cannot cut 99%',
      candidate: { template: 'process-priority-filter-v1', params: {} },
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 },
      durationSeconds: 1,
      successCriteria: {
        minCardinalityReductionPct: 99,
        maxCriticalProcessLossPct: 0,
        maxCollectorCpuOverheadPct: 100,
      },
    });
    const { id } = (await call('POST', '/api/v1/experiments', spec)).json();
    await call('POST', `/api/v1/experiments/${id}/start`);
    const done = await waitFor(id, ['completed', 'failed']);
    assert.equal(done.state, 'failed');
    assert.equal(done.analysis.verdict, 'fail');
    assert.ok(
      done.analysis.reasons.some((r: string) => /cardinality/i.test(r)),
      JSON.stringify(done.analysis.reasons),
    );
    const history = (await call('GET', `/api/v1/experiments/${id}/history`)).json().items;
    const last = history[history.length - 1];
    assert.equal(last.to, 'failed');
    assert.match(last.reason, /cardinality/i);
  });

  it('cancel while running tears both variants down', async () => {
    const spec = validSpec({
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 2 },
      durationSeconds: 3600,
    });
    const { id } = (await call('POST', '/api/v1/experiments', spec)).json();
    await call('POST', `/api/v1/experiments/${id}/start`);
    await waitFor(id, ['running']);
    const cancelled = await call('POST', `/api/v1/experiments/${id}/cancel`, { reason: 'enough' });
    assert.equal(cancelled.status, 202, cancelled.body);
    const deadline = Date.now() + 15_000;
    let types: string[] = [];
    while (Date.now() < deadline) {
      types = await eventTypes(id);
      if (types.filter((t) => t === 'VariantTornDown').length === 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(types.filter((t) => t === 'VariantTornDown').length, 2, types.join(','));
    const state = (await call('GET', `/api/v1/experiments/${id}/state`)).json();
    assert.equal(state.state, 'cancelled');
    assert.equal(state.deployments.baseline.status, 'torn_down');
    assert.equal(state.deployments.candidate.status, 'torn_down');
  });
});

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { natsSkipReason, natsUrl, uniquePrefix } from './support/bus-fixtures.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * Early abort end to end: while an experiment runs, the saga probes it (every 0.3 s here); a collector
 * that restarts fails the run at once, with the evidence; a healthy run, probed all along, completes
 * as it would without probes. On the embedded default (in-process bus) and over NATS (commands and
 * results through JetStream).
 */
const setups: { name: string; skip: string | undefined; env: () => Record<string, string> }[] = [
  { name: 'on the embedded default', skip: undefined, env: () => ({}) },
  {
    name: 'over NATS',
    skip: natsSkipReason(),
    env: () => ({ NATS_URL: natsUrl()!, PHOENIX_NATS_PREFIX: uniquePrefix('abort') }),
  },
];

for (const setup of setups) {
  describe(`early abort ${setup.name}`, { skip: setup.skip }, () => {
    if (setup.skip) {
      it(`skipped: ${setup.skip}`, { skip: setup.skip }, () => {});
      return;
    }
    let system: Awaited<ReturnType<typeof startTestSystem>>;
    let operator: string;

    before(async () => {
      system = await startTestSystem({ ...setup.env(), PHOENIX_PROBE_INTERVAL_SECONDS: '0.3' });
      operator = await tokenFor(system, 'operator', 'olga');
    });
    after(() => system?.dispose());

    const call = async (method: 'GET' | 'POST', url: string, payload?: object) => {
      const res = await system.app.inject({
        method,
        url,
        headers: { authorization: `Bearer ${operator}` },
        ...(payload ? { payload } : {}),
      });
      return { status: res.statusCode, body: res.body, json: () => res.json() };
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

    const events = async (id: string) =>
      (await call('GET', `/api/v1/experiments/${id}/events?limit=1000`)).json().items as {
        type: string;
        data: Record<string, unknown>;
      }[];

    const spec = (overrides: Record<string, unknown>) =>
      validSpec({
        candidate: { template: 'process-minimal-v1', params: {} },
        target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 3 },
        criticalProcesses: ['^kubelet$'],
        successCriteria: {
          minCardinalityReductionPct: 50,
          maxCriticalProcessLossPct: 0,
          maxCollectorCpuOverheadPct: 100,
          criticalGraceSeconds: 5,
        },
        ...overrides,
      });

    it('a candidate collector that restarts mid-run fails the run at once, with the evidence', async () => {
      const created = await call(
        'POST',
        '/api/v1/experiments',
        spec({ name: 'restarts', durationSeconds: 600 }),
      );
      assert.equal(created.status, 201, created.body);
      const { id } = created.json();
      assert.equal((await call('POST', `/api/v1/experiments/${id}/start`)).status, 202);
      await waitFor(id, ['running']);
      assert.ok(system.dataPlane?.injectFault(id, 'candidate', { kind: 'restart' }));

      const failed = await waitFor(id, ['failed', 'completed']);
      assert.equal(failed.state, 'failed');
      assert.match(
        failed.statusReason,
        /^early abort: the candidate collector restarted 1 time since the run started/,
      );
      const fail = (await events(id)).find((e) => e.type === 'ExperimentFailed');
      const abort = fail?.data.abort as {
        kind: string;
        unhealthyCollectors: { variant: string; restarts: number }[];
        probe: { at: string };
      };
      assert.equal(abort.kind, 'collector_unhealthy');
      assert.deepEqual(abort.unhealthyCollectors, [{ variant: 'candidate', restarts: 1, droppedPoints: 0 }]);
      // The folded state shows the evidence too; the run never reached its analysis.
      const state = (await call('GET', `/api/v1/experiments/${id}/state`)).json();
      assert.equal(state.abort.kind, 'collector_unhealthy');
      assert.ok(!(await events(id)).some((e) => e.type === 'ExperimentRunCompleted'));
    });

    it('a healthy run, probed all along, completes normally: no false alarm', async () => {
      const created = await call(
        'POST',
        '/api/v1/experiments',
        spec({ name: 'healthy', durationSeconds: 4 }),
      );
      assert.equal(created.status, 201, created.body);
      const { id } = created.json();
      assert.equal((await call('POST', `/api/v1/experiments/${id}/start`)).status, 202);
      const done = await waitFor(id, ['completed', 'failed']);
      assert.doesNotMatch(done.statusReason ?? '', /early abort/);
      const types = (await events(id)).map((e) => e.type);
      assert.ok(types.includes('ExperimentRunCompleted'), types.join(','));
      assert.ok(types.includes('AnalysisRecorded'), types.join(','));
      // kubelet is critical, so the candidate keeps it: the probes never found anything missing.
      assert.ok(!types.includes('ExperimentProbed'), types.join(','));
    });
  });
}

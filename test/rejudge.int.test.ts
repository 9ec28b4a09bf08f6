import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { codeName, failureOf, grpcClients, unaryCall } from './support/grpc.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * Re-judge (issue 20 §3): other criteria applied to a finished experiment's stored evidence through
 * the API, recorded as an event of its own; the original verdict stays, the resource lists the
 * re-judgements, and what is not allowed is a 4xx.
 */
describe('POST /api/v1/experiments/{id}/rejudge on the embedded default', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let operator: string;
  let viewer: string;
  let finished: string;

  const call = async (method: 'GET' | 'POST', url: string, payload?: object, token = operator) => {
    const res = await system.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}` },
      ...(payload ? { payload } : {}),
    });
    return { status: res.statusCode, body: res.body, json: () => res.json() };
  };

  const waitFor = async (id: string, done: (e: Record<string, unknown>) => boolean, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      const head = await system.store.head();
      const res = await call('GET', `/api/v1/experiments/${id}?minPosition=${head}`);
      if (res.status === 200) {
        last = res.json();
        if (done(res.json())) return res.json();
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`experiment ${id} not there after ${timeoutMs} ms: ${JSON.stringify(last)}`);
  };

  before(async () => {
    system = await startTestSystem();
    operator = await tokenFor(system, 'operator', 'olga');
    viewer = await tokenFor(system, 'viewer', 'vic');
    const spec = validSpec({
      name: 'minimal vs baseline, re-judged',
      candidate: { template: 'process-minimal-v1', params: {} },
      target: { namespace: 'phoenix-experiments', nodeSelector: {}, hosts: 4 },
      durationSeconds: 1,
      criticalProcesses: ['^postgres$'],
      successCriteria: {
        minCardinalityReductionPct: 50,
        maxCriticalProcessLossPct: 0,
        maxCollectorCpuOverheadPct: 100,
      },
    });
    const created = await call('POST', '/api/v1/experiments', spec);
    assert.equal(created.status, 201, created.body);
    finished = created.json().id;
    assert.equal((await call('POST', `/api/v1/experiments/${finished}/start`)).status, 202);
    await waitFor(finished, (e) => e.state === 'completed' || e.state === 'failed');
  });
  after(async () => {
    clients?.close();
    await system?.dispose();
  });
  let clients: ReturnType<typeof grpcClients> | undefined;

  it('records the new verdict beside the original, merging the criteria given into the experiment’s own', async () => {
    const before = (await call('GET', `/api/v1/experiments/${finished}`)).json();
    const res = await call('POST', `/api/v1/experiments/${finished}/rejudge`, {
      successCriteria: { minCardinalityReductionPct: 100, dryRun: ['maxCollectorCpuOverheadPct'] },
    });
    assert.equal(res.status, 202, res.body);
    assert.equal(res.json().state, before.state, 'the state does not change');
    const after = await waitFor(finished, (e) => Array.isArray(e.rejudgements));
    assert.deepEqual(after.analysis, before.analysis, 'the original analysis stays');
    assert.equal(after.rejudgements.length, 1);
    const [r] = after.rejudgements;
    assert.equal(r.actor, 'olga');
    assert.equal(r.criteria.minCardinalityReductionPct, 100);
    assert.equal(r.criteria.maxCollectorCpuOverheadPct, 100, 'a criterion not given stays as it was');
    assert.deepEqual(r.criteria.dryRun, ['maxCollectorCpuOverheadPct']);
    assert.equal(r.analysis.verdict, 'fail', JSON.stringify(r.analysis.reasons));
    assert.match(r.analysis.reasons[0], /below the required 100%/);
    const cpu = r.analysis.checks.find(
      (c: { criterion: string }) => c.criterion === 'maxCollectorCpuOverheadPct',
    );
    assert.equal(cpu.dryRun, true);

    const events = (await call('GET', `/api/v1/experiments/${finished}/events?limit=1000`)).json().items;
    const rejudged = events.filter((e: { type: string }) => e.type === 'AnalysisRejudged');
    assert.equal(rejudged.length, 1);
    assert.equal(rejudged[0].metadata.actor, 'olga');
    const state = (
      await call('GET', `/api/v1/experiments/${finished}/state?version=${rejudged[0].version}`)
    ).json();
    assert.equal(state.rejudgements.length, 1, 'time travel folds the re-judgement too');
    const history = (await call('GET', `/api/v1/experiments/${finished}/history`)).json().items;
    assert.ok(!history.some((h: { reason: string }) => h.reason.startsWith('re-judged')), 'not a transition');
  });

  it('a viewer may not re-judge (403); bad criteria are a 400 naming the field', async () => {
    const url = `/api/v1/experiments/${finished}/rejudge`;
    assert.equal((await call('POST', url, { successCriteria: {} }, viewer)).status, 403);
    for (const [body, path] of [
      [{ successCriteria: { confidence: 0.3 } }, 'successCriteria.confidence'],
      [{ successCriteria: { confidence: 1 } }, 'successCriteria.confidence'],
      [{ successCriteria: { minHosts: 0 } }, 'successCriteria.minHosts'],
      [{ successCriteria: { dryRun: ['everything'] } }, 'successCriteria.dryRun.0'],
      [{ successCriteria: { dryRun: ['sampleSize', 'sampleSize'] } }, 'successCriteria.dryRun'],
      [
        { successCriteria: { minCardinalityReductionPct: 101 } },
        'successCriteria.minCardinalityReductionPct',
      ],
      [{ successCriteria: { surprise: 1 } }, 'successCriteria'],
    ] as const) {
      const res = await call('POST', url, body);
      assert.equal(res.status, 400, `${JSON.stringify(body)}: ${res.body}`);
      assert.equal(res.json().status, 400);
      assert.ok(
        res.json().errors.some((e: { path: string }) => e.path === `body.${path}`),
        `${JSON.stringify(body)} names ${path}: ${res.body}`,
      );
    }
  });

  it('409 before the experiment has finished, 404 for an unknown one', async () => {
    const created = await call('POST', '/api/v1/experiments', validSpec({ name: 'not finished' }));
    const pending = created.json().id;
    const res = await call('POST', `/api/v1/experiments/${pending}/rejudge`, { successCriteria: {} });
    assert.equal(res.status, 409, res.body);
    assert.match(res.json().detail, /RejudgeAnalysis is not allowed in state 'pending'/);
    const unknown = await call('POST', '/api/v1/experiments/00000000-0000-4000-8000-000000000000/rejudge', {
      successCriteria: {},
    });
    assert.equal(unknown.status, 404, unknown.body);
  });

  it('gRPC RejudgeExperiment does the same; bad criteria are INVALID_ARGUMENT, a pending experiment FAILED_PRECONDITION', async () => {
    const port = await system.grpc!.listen('127.0.0.1', 0);
    clients = grpcClients(`127.0.0.1:${port}`);
    const ex = clients.experiments;
    const answer = await unaryCall(
      ex,
      ex.rejudgeExperiment,
      {
        id: finished,
        idempotencyKey: '',
        successCriteria: { minCardinalityReductionPct: 0, dryRun: ['sampleSize'], confidence: 0.9 },
      },
      operator,
    );
    assert.ok(answer.outcome && answer.outcome.version > 0);
    const after = await waitFor(
      finished,
      (e) => Array.isArray(e.rejudgements) && e.rejudgements.length === 2,
    );
    const last = after.rejudgements[1];
    assert.equal(last.criteria.minCardinalityReductionPct, 0);
    assert.equal(last.criteria.confidence, 0.9);
    assert.equal(last.actor, 'olga');

    const bad = await failureOf(
      unaryCall(
        ex,
        ex.rejudgeExperiment,
        { id: finished, idempotencyKey: '', successCriteria: { dryRun: [], confidence: 2 } },
        operator,
      ),
    );
    assert.equal(codeName(bad.code), 'INVALID_ARGUMENT', bad.message);
    const created = await call('POST', '/api/v1/experiments', validSpec({ name: 'not finished (gRPC)' }));
    const refused = await failureOf(
      unaryCall(
        ex,
        ex.rejudgeExperiment,
        { id: created.json().id, idempotencyKey: '', successCriteria: { dryRun: [] } },
        operator,
      ),
    );
    assert.equal(codeName(refused.code), 'FAILED_PRECONDITION', refused.message);
  });
});

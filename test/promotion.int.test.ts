import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { NatsBus } from '../src/adapters/nats-bus.js';
import { natsSkipReason, natsUrl, uniquePrefix } from './support/bus-fixtures.js';
import { codeName, grpcClients, unaryCall } from './support/grpc.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * Promotion and rollback end to end on the embedded default (in-process bus, local data plane), with a
 * real Git repository: a bare repository as PHOENIX_GITOPS_REPO. A passing experiment is promoted
 * (its configs and evidence committed, the candidate rolled out over the target), then rolled back
 * (the commit reverted, the baseline rolled out); every step an event with its actor, in the history.
 */
const run = promisify(execFile);
const git = async (cwd: string, ...args: string[]) => (await run('git', args, { cwd })).stdout.trim();

const passingSpec = (name: string) =>
  validSpec({
    name,
    candidate: { template: 'process-minimal-v1', params: {} },
    target: { namespace: 'phoenix-experiments', nodeSelector: { pool: name.replace(/\W+/g, '-') }, hosts: 3 },
    durationSeconds: 1,
    criticalProcesses: ['^postgres$', '^kubelet$'],
    successCriteria: {
      minCardinalityReductionPct: 50,
      maxCriticalProcessLossPct: 0,
      maxCollectorCpuOverheadPct: 100,
    },
  });

/** The embedded default's in-process bus, and NATS JetStream (the promoter and deployer over it). */
const buses = [
  { name: 'the in-process bus', env: (): Record<string, string> => ({}), skip: undefined },
  {
    name: 'NATS JetStream',
    env: (prefix: string): Record<string, string> => ({ NATS_URL: natsUrl()!, PHOENIX_NATS_PREFIX: prefix }),
    skip: natsSkipReason(),
  },
] as const;

for (const bus of buses)
  describe(`promotion and rollback on the embedded database over ${bus.name}, through Git`, {
    skip: bus.skip,
  }, () => {
    const prefix = uniquePrefix('phxpromo');
    let system: Awaited<ReturnType<typeof startTestSystem>>;
    let operator: string;
    let viewer: string;
    let dir: string;
    let bare: string;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'phoenix-promotion-'));
      bare = join(dir, 'fleet.git');
      await run('git', ['init', '--quiet', '--bare', '--initial-branch=main', bare]);
      system = await startTestSystem({ PHOENIX_GITOPS_REPO: bare, ...bus.env(prefix) });
      operator = await tokenFor(system, 'operator', 'olga');
      viewer = await tokenFor(system, 'viewer', 'vic');
    });
    after(async () => {
      await system?.dispose();
      rmSync(dir, { recursive: true, force: true });
      if (bus.skip === undefined && bus.name === 'NATS JetStream') {
        const nats = await NatsBus.connect({ servers: natsUrl()!, prefix, name: `test-${prefix}` });
        await nats.destroy();
        await nats.close();
      }
    });

    const call = async (method: 'GET' | 'POST', url: string, payload?: object, token = operator) => {
      const res = await system.app.inject({
        method,
        url,
        headers: { authorization: `Bearer ${token}` },
        ...(payload ? { payload } : {}),
      });
      return { status: res.statusCode, body: res.body, json: () => res.json() };
    };

    interface Resource {
      state: string;
      statusReason?: string;
      analysis?: unknown;
      promotion?: {
        status: string;
        requestedBy: string;
        repository: string;
        path: string;
        commit: string;
        revertCommit?: string;
        rollout: { dataPlane: string; variant: string };
      };
    }

    /** Polls the experiment (read model, caught up) until `done` holds. */
    const waitUntil = async (id: string, done: (e: Resource) => boolean, what: string): Promise<Resource> => {
      const deadline = Date.now() + 60_000;
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
      throw new Error(`experiment ${id}: not ${what} after 60 s: ${JSON.stringify(last)}`);
    };

    const completed = async (name: string): Promise<string> => {
      const created = await call('POST', '/api/v1/experiments', passingSpec(name));
      assert.equal(created.status, 201, created.body);
      const { id } = created.json();
      assert.equal((await call('POST', `/api/v1/experiments/${id}/start`)).status, 202);
      const done = await waitUntil(id, (e) => ['completed', 'failed'].includes(e.state), 'ended');
      assert.equal(done.state, 'completed', JSON.stringify(done.analysis ?? done.statusReason));
      return id;
    };

    it('promotes a pass: commit with configs and evidence, rollout over the target; then rolls back', async () => {
      const id = await completed('promote me');
      assert.equal((await call('POST', `/api/v1/experiments/${id}/promote`, {}, viewer)).status, 403);
      const accepted = await call('POST', `/api/v1/experiments/${id}/promote`);
      assert.equal(accepted.status, 202, accepted.body);
      assert.equal(accepted.json().state, 'completed');
      // One promotion at a time.
      assert.equal((await call('POST', `/api/v1/experiments/${id}/promote`)).status, 409);

      const promoted = await waitUntil(
        id,
        (e) => ['rolled_out', 'failed'].includes(e.promotion?.status ?? ''),
        'rolled out',
      );
      const p = promoted.promotion!;
      assert.equal(p.status, 'rolled_out', JSON.stringify(p));
      assert.equal(p.requestedBy, 'olga');
      assert.equal(p.repository, bare);
      assert.equal(p.path, 'targets/phoenix-experiments/pool=promote-me');
      assert.equal(await git(bare, 'rev-parse', 'main'), p.commit);
      const message = await git(bare, 'log', '-1', '--format=%B', 'main');
      assert.match(message, new RegExp(`^Phoenix-Experiment: ${id}$`, 'm'));
      assert.match(message, /^Phoenix-Actor: olga$/m);
      const files = (await git(bare, 'ls-tree', '--name-only', 'main', `${p.path}/`)).split('\n').sort();
      assert.deepEqual(
        files.map((f) => f.slice(p.path.length + 1)),
        ['README.md', 'collector.yaml', 'evidence.json', 'kustomization.yaml', 'otelcol-config.yaml'],
      );
      const evidence = JSON.parse(await git(bare, 'show', `main:${p.path}/evidence.json`));
      assert.equal(evidence.experimentId, id);
      assert.equal(evidence.analysis.verdict, 'pass');
      const manifests = await git(bare, 'show', `main:${p.path}/collector.yaml`);
      assert.match(manifests, /kind: DaemonSet/);
      assert.match(manifests, /phoenix.io\/target: phoenix-experiments_pool_promote-me/);
      assert.doesNotMatch(manifests, /phoenix.io\/experiment-id/);
      assert.equal(p.rollout.dataPlane, 'local');
      assert.equal(p.rollout.variant, 'candidate');

      const rolledBack = await call('POST', `/api/v1/experiments/${id}/rollback`, {
        reason: 'dashboards empty',
      });
      assert.equal(rolledBack.status, 202, rolledBack.body);
      const back = await waitUntil(
        id,
        (e) => ['rolled_back', 'rollback_failed'].includes(e.promotion?.status ?? ''),
        'rolled back',
      );
      assert.equal(back.promotion?.status, 'rolled_back', JSON.stringify(back.promotion));
      assert.equal(back.promotion?.rollout.variant, 'baseline');
      assert.equal(await git(bare, 'rev-parse', 'main'), back.promotion?.revertCommit);
      assert.match(await git(bare, 'log', '-1', '--format=%B', 'main'), /^Phoenix-Step: rollback$/m);
      await assert.rejects(git(bare, 'show', `main:${p.path}/evidence.json`));
      // Nothing more to roll back; a new promotion may start again.
      assert.equal((await call('POST', `/api/v1/experiments/${id}/rollback`)).status, 409);

      const history = (await call('GET', `/api/v1/experiments/${id}/history`)).json().items;
      const steps = history
        .slice(5)
        .map(
          (h: { reason: string; actor: string }) =>
            `${h.actor}: ${h.reason.split(' ')[0]} ${h.reason.split(' ')[1]}`,
        );
      assert.deepEqual(steps, [
        'olga: promotion requested',
        'phoenix-saga: promotion committed',
        'phoenix-saga: promotion rolled',
        'olga: rollback requested',
        'phoenix-saga: rollback committed',
        'phoenix-saga: rolled back:',
      ]);
      const types = (await call('GET', `/api/v1/experiments/${id}/events?limit=1000`))
        .json()
        .items.map((e: { type: string }) => e.type);
      assert.deepEqual(
        types.filter((t: string) => /Promotion|Roll/.test(t)),
        [
          'PromotionRequested',
          'PromotionCommitted',
          'PromotionRolledOut',
          'RollbackRequested',
          'RollbackCommitted',
          'RolledBack',
        ],
      );
    });

    it('over gRPC too: promote, the promotion on GetExperiment, rollback', async () => {
      const id = await completed('grpc promote');
      const port = await system.grpc!.listen('127.0.0.1', 0);
      const clients = grpcClients(`127.0.0.1:${port}`);
      try {
        const ex = clients.experiments;
        const promoted = await unaryCall(ex, ex.promoteExperiment, { id, idempotencyKey: '' }, operator);
        assert.equal(promoted.outcome?.experimentId, id);
        const again = await unaryCall(ex, ex.promoteExperiment, { id, idempotencyKey: '' }, operator).catch(
          (e: { code: number }) => e,
        );
        assert.equal(codeName((again as { code: number }).code), 'FAILED_PRECONDITION');
        await waitUntil(id, (e) => e.promotion?.status === 'rolled_out', 'rolled out');
        const got = await unaryCall(ex, ex.getExperiment, { id }, viewer);
        assert.equal((got.experiment?.promotion as { status?: string } | undefined)?.status, 'rolled_out');
        await unaryCall(ex, ex.rollbackExperiment, { id, idempotencyKey: '', reason: 'over grpc' }, operator);
        const back = await waitUntil(id, (e) => e.promotion?.status === 'rolled_back', 'rolled back');
        assert.equal(back.promotion?.rollout.variant, 'baseline');
      } finally {
        clients.close();
      }
    });

    it('refuses to promote what did not pass, or what does not exist', async () => {
      const created = await call('POST', '/api/v1/experiments', passingSpec('not started'));
      const { id } = created.json();
      const res = await call('POST', `/api/v1/experiments/${id}/promote`);
      assert.equal(res.status, 409);
      assert.match(res.json().detail, /pending/);
      assert.equal((await call('POST', `/api/v1/experiments/${id}/rollback`)).status, 409);
      assert.equal(
        (await call('POST', '/api/v1/experiments/00000000-0000-4000-8000-000000000000/promote')).status,
        404,
      );
      assert.equal((await call('POST', `/api/v1/experiments/${id}/promote`, { force: true })).status, 400);
    });
  });

describe('promotion without PHOENIX_GITOPS_REPO', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  before(async () => {
    system = await startTestSystem();
  });
  after(() => system?.dispose());

  it('promote and rollback answer 409 saying how to enable it', async () => {
    const token = await tokenFor(system, 'operator', 'olga');
    for (const action of ['promote', 'rollback']) {
      const res = await system.app.inject({
        method: 'POST',
        url: `/api/v1/experiments/00000000-0000-4000-8000-000000000000/${action}`,
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.statusCode, 409);
      assert.match(String(res.headers['content-type']), /problem\+json/);
      assert.match(res.json().detail, /PHOENIX_GITOPS_REPO/);
    }
  });
});

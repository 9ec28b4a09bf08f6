import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { parseAllDocuments, parse as parseYaml, stringify as toYaml } from 'yaml';
import type { VariantDeployment } from '../src/application/ports/deployer.js';
import { loadConfig } from '../src/config.js';
import { renderVariant, type TemplateName } from '../src/domain/pipelines/index.js';
import {
  apiServerReady,
  CLUSTER_DIR,
  clusterSkipReason,
  KUBECONFIG,
  ROOT,
  type TestCluster,
  useCluster,
} from './support/cluster.js';

/**
 * What a cluster operator installs (deploy/kubernetes): the Kustomize base for Phoenix itself and the
 * Kubernetes deployer's Role. Read as files here, and against the real test cluster (Kubernetes
 * v1.37.2, scripts/cluster.sh): the base passes a server-side dry run, and the deployer deploys and
 * tears down a variant with exactly the shipped rights, and fails with the API's 403 with one fewer.
 */

const DEPLOY = join(ROOT, 'deploy', 'kubernetes');
const IMAGE = 'ghcr.io/phoenix-platform/phoenix';
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

interface Rule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
}
const WRITE = ['get', 'list', 'watch', 'create', 'patch', 'update', 'delete'];
const READ = ['get', 'list', 'watch'];
/** The deployer's rights, as the README states them. */
const DEPLOYER_RULES: readonly Rule[] = [
  { apiGroups: [''], resources: ['configmaps'], verbs: WRITE },
  { apiGroups: ['apps'], resources: ['daemonsets'], verbs: WRITE },
  { apiGroups: ['opentelemetry.io'], resources: ['opentelemetrycollectors'], verbs: WRITE },
  { apiGroups: [''], resources: ['pods'], verbs: READ },
  { apiGroups: [''], resources: ['events'], verbs: READ },
];

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}
const documents = (text: string): K8sObject[] =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((d): d is K8sObject => d !== null);

const envFile = (text: string): Record<string, string> =>
  Object.fromEntries(
    text
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );

describe('the Kubernetes manifests, as files', () => {
  it("runs the image of this release: the base's tag is package.json's version", () => {
    const kustomization = parseYaml(readFileSync(join(DEPLOY, 'base', 'kustomization.yaml'), 'utf8')) as {
      images: { name: string; newTag: string }[];
    };
    assert.deepEqual(kustomization.images, [{ name: IMAGE, newTag: VERSION }]);
  });

  it("grants the deployer exactly its rights, in the experiments' namespace, bound to Phoenix's ServiceAccount", () => {
    const objects = documents(readFileSync(join(DEPLOY, 'rbac', 'deployer-rbac.yaml'), 'utf8'));
    assert.deepEqual(
      objects.map((o) => `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`),
      [
        'ServiceAccount phoenix/phoenix',
        'Role phoenix-experiments/phoenix-deployer',
        'RoleBinding phoenix-experiments/phoenix-deployer',
      ],
    );
    assert.deepEqual(objects[1]?.rules, DEPLOYER_RULES);
    assert.deepEqual(objects[2]?.subjects, [
      { kind: 'ServiceAccount', name: 'phoenix', namespace: 'phoenix' },
    ]);
  });

  it("is a configuration Phoenix accepts: the base's settings, the pods' env and config.env.example filled in", () => {
    const kustomization = parseYaml(readFileSync(join(DEPLOY, 'base', 'kustomization.yaml'), 'utf8')) as {
      configMapGenerator: { name: string; literals: string[] }[];
    };
    const settings = envFile(kustomization.configMapGenerator[0]?.literals.join('\n') ?? '');
    const secret = envFile(readFileSync(join(DEPLOY, 'base', 'config.env.example'), 'utf8'));
    assert.equal(secret.PHOENIX_JWT_SECRET, '', 'the example holds no secret');
    const [server] = documents(readFileSync(join(DEPLOY, 'base', 'server-deployment.yaml'), 'utf8'));
    assert.ok(server);
    const container = (
      server.spec as { template: { spec: { containers: { env: { name: string; value: string }[] }[] } } }
    ).template.spec.containers[0];
    const podEnv = Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value]));
    const config = loadConfig({
      ...settings,
      ...secret,
      PHOENIX_JWT_SECRET: randomBytes(48).toString('base64'),
      ...podEnv,
    });
    assert.equal(config.PHOENIX_DEPLOYER, 'kubernetes');
    assert.equal(config.PHOENIX_ANALYZER, 'prometheus');
    assert.equal(config.PHOENIX_INPROCESS_WORKERS, false);
    assert.equal(config.HOST, '0.0.0.0');
    assert.equal(config.PORT, 8080);
  });
});

const skip = clusterSkipReason();
if (skip) console.log(`# skipping the Kubernetes manifests against the test cluster: ${skip}`);

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The built kubectl (v1.37.2) as the cluster's admin; the exit code instead of a throw. */
const kubectl = (args: readonly string[], input?: string): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = execFile(
      join(CLUSTER_DIR, 'bin', 'kubectl'),
      ['--kubeconfig', KUBECONFIG, ...args],
      { maxBuffer: 64 * 1024 * 1024, timeout: 300_000 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') reject(err);
        else resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });

const kubectlOk = async (args: readonly string[], input?: string): Promise<string> => {
  const run = await kubectl(args, input);
  assert.equal(run.code, 0, `kubectl ${args.join(' ')}: ${run.stderr}`);
  return run.stdout;
};

/** Waits for a condition of the cluster (a controller's work, an RBAC change reaching the authorizer). */
const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: still not so after ${timeoutMs / 1000} s`);
    await delay(250);
  }
};

describe('the Kubernetes manifests against the test cluster (Kubernetes v1.37.2)', { skip }, () => {
  if (skip) {
    it(`skipped: ${skip}`, { skip }, () => {});
    return;
  }
  let cluster: TestCluster | undefined;
  before(async () => {
    // A cluster that is up is used as it is: this suite brings its own node, and another suite may be
    // resizing the pool (useCluster would set its size). Otherwise it starts one, and stops it after.
    const up = await apiServerReady();
    if (up && !existsSync(KUBECONFIG))
      throw new Error(
        `a test cluster is up, but not from ${CLUSTER_DIR} (no kubeconfig there): set PHOENIX_CLUSTER_DIR to the folder of the clone that started it`,
      );
    if (!up) cluster = await useCluster(1);
  });
  after(async () => {
    await cluster?.release();
  });

  describe('the base', () => {
    /** The base's Namespaces this suite made for real (a dry run cannot put objects in a namespace it only pretends to make). */
    const madeNamespaces: string[] = [];
    after(async () => {
      for (const name of madeNamespaces) await kubectl(['delete', 'namespace', name, '--ignore-not-found']);
    });

    it('builds with the image of this release, the settings ConfigMap and the Secret it reads', async () => {
      const objects = documents(await kubectlOk(['kustomize', join(DEPLOY, 'base')]));
      const deployments = objects.filter((o) => o.kind === 'Deployment');
      assert.deepEqual(deployments.map((d) => d.metadata.name).sort(), ['phoenix-server', 'phoenix-workers']);
      const settings = objects.find((o) => o.kind === 'ConfigMap');
      assert.match(settings?.metadata.name ?? '', /^phoenix-settings-/);
      for (const d of deployments) {
        const pod = (d.spec as { template: { spec: PodSpec } }).template.spec;
        assert.equal(pod.serviceAccountName, 'phoenix');
        for (const c of pod.containers) {
          assert.equal(c.image, `${IMAGE}:${VERSION}`);
          assert.deepEqual(c.envFrom, [
            { configMapRef: { name: settings?.metadata.name } },
            { secretRef: { name: 'phoenix-config' } },
          ]);
          // Both probed: liveness on /healthz, readiness on /readyz, at a port the container declares
          // and the process listens on (PORT for the server, PHOENIX_WORKER_HEALTH_PORT for the workers).
          assert.equal(c.livenessProbe?.httpGet?.path, '/healthz', d.metadata.name);
          assert.equal(c.readinessProbe?.httpGet?.path, '/readyz', d.metadata.name);
          const probed = c.ports?.find((p) => p.name === c.readinessProbe?.httpGet?.port);
          assert.ok(probed, `${d.metadata.name}: the probes' port is declared`);
          assert.equal(c.livenessProbe?.httpGet?.port, c.readinessProbe?.httpGet?.port);
          const listens = c.env?.find(
            (e) => e.name === (d.metadata.name === 'phoenix-workers' ? 'PHOENIX_WORKER_HEALTH_PORT' : 'PORT'),
          );
          assert.equal(Number(listens?.value), probed.containerPort, d.metadata.name);
          assert.equal(c.env?.find((e) => e.name === 'HOST')?.value, '0.0.0.0', d.metadata.name);
        }
      }
    });

    it('passes a server-side dry run, and its pods meet the restricted Pod Security Standard', async () => {
      const namespaces = documents(await readFile(join(DEPLOY, 'base', 'namespaces.yaml'), 'utf8'));
      for (const ns of namespaces) {
        const existing = await kubectlOk([
          'get',
          'namespace',
          ns.metadata.name,
          '--ignore-not-found',
          '-o',
          'name',
        ]);
        if (existing.trim() === '') madeNamespaces.push(ns.metadata.name);
      }
      await kubectlOk(['apply', '-f', join(DEPLOY, 'base', 'namespaces.yaml')]);
      const run = await kubectl(['apply', '-k', join(DEPLOY, 'base'), '--dry-run=server']);
      assert.equal(run.code, 0, run.stderr);
      for (const object of [
        'serviceaccount/phoenix',
        'role.rbac.authorization.k8s.io/phoenix-deployer',
        'rolebinding.rbac.authorization.k8s.io/phoenix-deployer',
        'service/phoenix',
        'deployment.apps/phoenix-server',
        'deployment.apps/phoenix-workers',
        'poddisruptionbudget.policy/phoenix-server',
        'poddisruptionbudget.policy/phoenix-workers',
      ]) {
        assert.match(run.stdout, new RegExp(`^${object.replace(/\./g, '\\.')} .*\\(server dry run\\)$`, 'm'));
      }
      // The namespace `phoenix` warns of what its `enforce: restricted` would refuse.
      assert.doesNotMatch(run.stderr, /Warning/, run.stderr);
    });

    it('fails the dry run of a copy the API refuses, and warns of one that breaks the restricted standard', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'phoenix-manifests-'));
      try {
        await cp(DEPLOY, dir, { recursive: true });
        const server = join(dir, 'base', 'server-deployment.yaml');
        const good = await readFile(server, 'utf8');

        await writeFile(server, good.replace('containerPort: 50051', 'containerPort: 650051'));
        const refused = await kubectl(['apply', '-k', join(dir, 'base'), '--dry-run=server']);
        assert.notEqual(refused.code, 0);
        assert.match(
          refused.stderr,
          /Deployment(\.apps)? "phoenix-server" is invalid: .*containerPort: Invalid value: 650051/,
        );

        await writeFile(
          server,
          good.replace(
            'readOnlyRootFilesystem: true\n',
            'readOnlyRootFilesystem: true\n            runAsUser: 0\n',
          ),
        );
        const warned = await kubectl(['apply', '-k', join(dir, 'base'), '--dry-run=server']);
        assert.equal(warned.code, 0, warned.stderr);
        assert.match(warned.stderr, /Warning: would violate PodSecurity "restricted:latest": runAsUser=0/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe("the deployer with exactly the shipped Role, as Phoenix's ServiceAccount", () => {
    const id = randomBytes(4).toString('hex');
    // The shipped objects, moved into this suite's own namespaces: only their namespaces change.
    const system = `phx-ship-${id}`;
    const experiments = `phx-ship-exp-${id}`;
    const node = `phx-ship-${id}`;
    const user = `system:serviceaccount:${system}:phoenix`;
    let rbac: K8sObject[] = [];
    let client: Awaited<ReturnType<typeof loadClient>>;
    let deployer: InstanceType<(typeof client)['KubernetesDeployer']>;

    /** The shipped Role (moved into this suite's namespace), with other rules when given. */
    const role = (rules?: readonly Rule[]): string => {
      const shipped = rbac.find((o) => o.kind === 'Role');
      assert.ok(shipped);
      return toYaml(rules ? { ...shipped, rules } : shipped);
    };
    const canI = async (verb: string, resource: string, namespace = experiments): Promise<boolean> =>
      (await kubectl(['auth', 'can-i', verb, resource, '-n', namespace, `--as=${user}`])).stdout.trim() ===
      'yes';

    before(async () => {
      client = await loadClient();
      const moved = (ns: string | undefined) =>
        ns === 'phoenix' ? system : ns === 'phoenix-experiments' ? experiments : ns;
      rbac = documents(await kubectlOk(['kustomize', join(DEPLOY, 'rbac')])).map((o) => ({
        ...o,
        metadata: { ...o.metadata, namespace: moved(o.metadata.namespace) },
        ...(Array.isArray(o.subjects)
          ? {
              subjects: (o.subjects as { namespace?: string }[]).map((s) => ({
                ...s,
                namespace: moved(s.namespace),
              })),
            }
          : {}),
      }));
      assert.deepEqual(
        rbac.map((o) => o.kind),
        ['ServiceAccount', 'Role', 'RoleBinding'],
      );
      await kubectlOk(['create', 'namespace', system]);
      await kubectlOk(['create', 'namespace', experiments]);
      await kubectlOk(['apply', '-f', '-'], rbac.map((o) => toYaml(o)).join('---\n'));
      await until('the Role reaches the authorizer', () => canI('create', 'daemonsets.apps'));

      // The ServiceAccount's own credentials: a token from the TokenRequest API, the cluster's CA.
      const token = (await kubectlOk(['create', 'token', 'phoenix', '-n', system, '--duration=1h'])).trim();
      const admin = new client.k8s.KubeConfig();
      admin.loadFromFile(KUBECONFIG);
      const server = admin.getCurrentCluster();
      assert.ok(server);
      const kc = new client.k8s.KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'test', server: server.server, caFile: server.caFile, caData: server.caData }],
        users: [{ name: 'phoenix', token }],
        contexts: [{ name: 'phoenix', cluster: 'test', user: 'phoenix' }],
        currentContext: 'phoenix',
      });
      deployer = new client.KubernetesDeployer(kc, { mode: 'daemonset', readinessTimeoutMs: 180_000 });

      // A node of this suite's own (a KWOK node, untainted), so the variant is scheduled whatever the
      // pool's nodes tolerate; the admin makes it, the deployer never sees nodes.
      await kubectlOk(
        ['apply', '-f', '-'],
        toYaml({
          apiVersion: 'v1',
          kind: 'Node',
          metadata: {
            name: node,
            annotations: { 'kwok.x-k8s.io/node': 'fake' },
            labels: { 'kubernetes.io/hostname': node, 'kubernetes.io/os': 'linux', 'phoenix-ship-test': id },
          },
        }),
      );
      await until('the test node is Ready and untainted', async () => {
        const run = await kubectl(['get', 'node', node, '-o', 'json']);
        if (run.code !== 0) return false;
        const n = JSON.parse(run.stdout) as {
          spec?: { taints?: unknown[] };
          status?: { conditions?: { type: string; status: string }[] };
        };
        const ready = n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
        return ready === true && (n.spec?.taints ?? []).length === 0;
      });
    });
    after(async () => {
      // Its DaemonSet watch holds a connection open until closed.
      await deployer?.close();
      await kubectl(['delete', 'namespace', experiments, system, '--ignore-not-found', '--wait=false']);
      await kubectl(['delete', 'node', node, '--ignore-not-found', '--wait=false']);
    });

    it('deploys a variant, reports it ready and held, and tears it down', { timeout: 300_000 }, async () => {
      const experimentId = `exp-${id}`;
      const outcome = await deployer.deploy(
        deployment(experimentId, experiments, { 'phoenix-ship-test': id }),
      );
      assert.ok(outcome.ok, outcome.ok ? '' : outcome.reason);
      assert.deepEqual(await deployer.deployedVariants(experimentId, experiments), ['baseline']);
      assert.deepEqual((await deployer.teardown(experimentId, experiments)).variants, ['baseline']);
      assert.deepEqual(await deployer.deployedVariants(experimentId, experiments), []);
    });

    it("fails the teardown with the API's 403 once the Role lacks delete on daemonsets, and works again with the shipped Role", {
      timeout: 300_000,
    }, async () => {
      const experimentId = `exp-${id}-2`;
      const outcome = await deployer.deploy(
        deployment(experimentId, experiments, { 'phoenix-ship-test': id }),
      );
      assert.ok(outcome.ok, outcome.ok ? '' : outcome.reason);

      const shipped = (rbac.find((o) => o.kind === 'Role')?.rules ?? []) as Rule[];
      const lacking = shipped.map((r) =>
        r.resources.includes('daemonsets') ? { ...r, verbs: r.verbs.filter((v) => v !== 'delete') } : r,
      );
      assert.notDeepEqual(lacking, shipped);
      await kubectlOk(['apply', '-f', '-'], role(lacking));
      await until(
        'the narrower Role reaches the authorizer',
        async () => !(await canI('delete', 'daemonsets.apps')),
      );
      await assert.rejects(deployer.teardown(experimentId, experiments), (err: unknown) => {
        assert.match(
          errorText(err),
          new RegExp(
            `daemonsets\\.apps \\\\?"phx-${experimentId}-baseline\\\\?" is forbidden: User \\\\?"${user}\\\\?" cannot delete resource \\\\?"daemonsets\\\\?" in API group \\\\?"apps\\\\?" in the namespace \\\\?"${experiments}\\\\?"`,
          ),
        );
        return true;
      });
      assert.deepEqual(await deployer.deployedVariants(experimentId, experiments), ['baseline']);

      await kubectlOk(['apply', '-f', '-'], role());
      await until('the shipped Role reaches the authorizer', () => canI('delete', 'daemonsets.apps'));
      assert.deepEqual((await deployer.teardown(experimentId, experiments)).variants, ['baseline']);
      assert.deepEqual(await deployer.deployedVariants(experimentId, experiments), []);
    });

    it('has no right beyond the listed ones: nothing elsewhere, nothing cluster-wide, beyond what every ServiceAccount has', async () => {
      // What any ServiceAccount may do (discovery, self reviews): one bound to nothing.
      const nobody = `system:serviceaccount:${system}:nobody`;
      const rights = async (as: string, namespace: string) =>
        canIList(await kubectlOk(['auth', 'can-i', '--list', '-n', namespace, `--as=${as}`]));
      const everyone = await rights(nobody, experiments);
      const mine = await rights(user, experiments);
      const beyond = [...mine].filter((r) => !everyone.has(r)).sort();
      const listed = DEPLOYER_RULES.flatMap((r) =>
        r.resources.flatMap((res) =>
          r.verbs.map((v) => `${r.apiGroups[0] ? `${res}.${r.apiGroups[0]}` : res} ${v}`),
        ),
      ).sort();
      assert.deepEqual(beyond, listed);
      for (const namespace of [system, 'default', 'kube-system']) {
        assert.deepEqual(
          [...(await rights(user, namespace))].sort(),
          [...(await rights(nobody, namespace))].sort(),
          namespace,
        );
      }
      for (const [verb, resource] of [
        ['list', 'nodes'],
        ['list', 'namespaces'],
        ['create', 'clusterroles.rbac.authorization.k8s.io'],
        ['get', 'secrets'],
      ] as const) {
        assert.equal(await canI(verb, resource), false, `${verb} ${resource}`);
      }
    });
  });
});

interface Probe {
  httpGet?: { path: string; port: string | number };
}
interface PodSpec {
  serviceAccountName?: string;
  containers: {
    image: string;
    envFrom?: unknown[];
    env?: { name: string; value?: string }[];
    ports?: { name?: string; containerPort: number }[];
    livenessProbe?: Probe;
    readinessProbe?: Probe;
  }[];
}

/** The client library, loaded when the suite starts (as test/kubernetes-deployer.int.test.ts does). */
const loadClient = async () => {
  const [k8s, adapter] = await Promise.all([
    import('@kubernetes/client-node'),
    import('../src/adapters/kubernetes-deployer.js'),
  ]);
  return { k8s, KubernetesDeployer: adapter.KubernetesDeployer };
};

const deployment = (
  experimentId: string,
  namespace: string,
  nodeSelector: Record<string, string>,
): VariantDeployment => {
  const template: TemplateName = 'process-baseline-v1';
  const rendered = renderVariant({
    experimentId,
    variant: 'baseline',
    template,
    criticalProcesses: ['^sshd$'],
  });
  assert.ok(rendered.ok);
  return {
    experimentId,
    variant: 'baseline',
    template,
    params: rendered.params as Record<string, unknown>,
    config: rendered.config,
    namespace,
    nodeSelector,
    hosts: 1,
    criticalProcesses: ['^sshd$'],
  };
};

/** An error's message and the API's body it carries, if any. */
const errorText = (err: unknown): string => {
  const body = (err as { body?: unknown }).body;
  return `${err instanceof Error ? err.message : String(err)} ${typeof body === 'string' ? body : JSON.stringify(body ?? '')}`;
};

/**
 * `kubectl auth can-i --list`'s table as one "resource verb" (or "URL verb") string per right; the
 * columns are cut where the header's titles start.
 */
const canIList = (table: string): Set<string> => {
  const [header, ...rows] = table.split('\n').filter((line) => line.trim() !== '' && !/^-+\s/.test(line));
  assert.ok(header, 'kubectl auth can-i --list printed nothing');
  const at = ['Non-Resource URLs', 'Resource Names', 'Verbs'].map((title) => header.indexOf(title));
  assert.ok(
    at.every((i) => i > 0),
    `unexpected header: ${header}`,
  );
  const [urlsAt, namesAt, verbsAt] = at as [number, number, number];
  const list = (cell: string) =>
    cell
      .trim()
      .replace(/^\[|\]$/g, '')
      .split(' ')
      .filter(Boolean);
  const rights = new Set<string>();
  for (const row of rows) {
    const resource = row.slice(0, urlsAt).trim();
    const urls = list(row.slice(urlsAt, namesAt));
    const names = list(row.slice(namesAt, verbsAt));
    for (const verb of list(row.slice(verbsAt))) {
      for (const what of resource ? [resource] : urls) {
        rights.add(`${what}${names.length > 0 ? `[${names.join(',')}]` : ''} ${verb}`);
      }
    }
  }
  return rights;
};

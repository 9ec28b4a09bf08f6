import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A recorded-contract stub of the few Kubernetes API endpoints the deployer uses, over real HTTP. The
 * response shapes (APIResourceList discovery documents, objects with metadata/generation/status, `Status`
 * failures with `reason`, `message`, `details` and `code`) are those a kube-apiserver (1.29) answers; it
 * enforces what the real server enforces for these calls (server-side apply needs
 * `application/apply-patch+yaml` and a `fieldManager`; the namespace must exist) and records every
 * request so a test can check the contract. It also plays the two controllers the deployer waits on:
 * the OpenTelemetry Operator (an OpenTelemetryCollector makes a `<name>-collector` DaemonSet) and the
 * DaemonSet controller (status set by the test, or ready on the n-th read).
 */

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Record<string, string>;
  readonly contentType: string | undefined;
  readonly body: unknown;
}

interface StoredObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion: string;
    generation: number;
    creationTimestamp: string;
    labels?: Record<string, string>;
    managedFields?: unknown[];
    ownerReferences?: unknown[];
  };
  spec?: unknown;
  data?: unknown;
  status?: Record<string, unknown>;
}

interface Resource {
  readonly group: string; // '' for the core group
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly namespaced: boolean;
}

const RESOURCES: readonly Resource[] = [
  { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true },
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true },
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false },
  { group: 'apps', version: 'v1', plural: 'daemonsets', kind: 'DaemonSet', namespaced: true },
  {
    group: 'opentelemetry.io',
    version: 'v1beta1',
    plural: 'opentelemetrycollectors',
    kind: 'OpenTelemetryCollector',
    namespaced: true,
  },
];

const discovery = (group: string, version: string) => ({
  kind: 'APIResourceList',
  apiVersion: 'v1',
  groupVersion: group ? `${group}/${version}` : version,
  resources: RESOURCES.filter((r) => r.group === group && r.version === version).flatMap((r) => [
    {
      name: r.plural,
      singularName: r.kind.toLowerCase(),
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
      storageVersionHash: 'stubhash=',
    },
    // The real server lists the status subresource with the same kind right after the resource.
    {
      name: `${r.plural}/status`,
      singularName: '',
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: ['get', 'patch', 'update'],
    },
  ]),
});

const status = (code: number, reason: string, message: string, details: Record<string, unknown> = {}) => ({
  kind: 'Status',
  apiVersion: 'v1',
  metadata: {},
  status: 'Failure',
  message,
  reason,
  details,
  code,
});

export interface DaemonSetState {
  readonly desiredNumberScheduled: number;
  readonly numberReady: number;
  readonly updatedNumberScheduled?: number;
}

export class KubeApiStub {
  readonly requests: RecordedRequest[] = [];
  readonly namespaces = new Set<string>(['default', 'phoenix-experiments']);
  /** Serve the OpenTelemetry Operator's CRD (operator mode) or not. */
  operatorInstalled = false;
  /** When set, a DaemonSet's status becomes this on its n-th read after each change. */
  autoReady: { readonly afterReads: number; readonly state: DaemonSetState } | undefined = {
    afterReads: 2,
    state: { desiredNumberScheduled: 3, numberReady: 3 },
  };
  /** Pods listed for a readiness failure. */
  pods: unknown[] = [];
  /** Failures to answer the next matching requests with (tests of the API's refusals). */
  readonly failures: { method: string; pathIncludes: string; code: number; body: unknown; times: number }[] =
    [];
  private readonly objects = new Map<string, StoredObject>();
  private readonly reads = new Map<string, number>();
  private server: Server | undefined;
  private rv = 1000;
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify(status(500, 'InternalError', String(err))));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** A kubeconfig file's content (for a child process's KUBECONFIG). */
  kubeConfigYaml(): string {
    return JSON.stringify({ apiVersion: 'v1', kind: 'Config', ...this.kubeConfigOptions() });
  }

  /** What `KubeConfig.loadFromOptions` takes to talk to this stub. */
  kubeConfigOptions() {
    return {
      clusters: [{ name: 'stub', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'phoenix', token: 'stub-token' }],
      contexts: [{ name: 'stub', cluster: 'stub', user: 'phoenix', namespace: 'default' }],
      currentContext: 'stub',
    };
  }

  list(plural: string, namespace?: string): StoredObject[] {
    return [...this.objects.values()].filter(
      (o) =>
        RESOURCES.find((r) => r.kind === o.kind)?.plural === plural &&
        (namespace === undefined || o.metadata.namespace === namespace),
    );
  }

  get(plural: string, namespace: string, name: string): StoredObject | undefined {
    return this.objects.get(`${plural}/${namespace}/${name}`);
  }

  setDaemonSet(namespace: string, name: string, state: DaemonSetState): void {
    const ds = this.get('daemonsets', namespace, name);
    if (!ds) throw new Error(`no DaemonSet ${namespace}/${name}`);
    ds.status = {
      observedGeneration: ds.metadata.generation,
      currentNumberScheduled: state.desiredNumberScheduled,
      updatedNumberScheduled: state.updatedNumberScheduled ?? state.desiredNumberScheduled,
      ...state,
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      // kept as text
    }
    const method = req.method ?? 'GET';
    this.requests.push({
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      contentType: req.headers['content-type'],
      body,
    });
    const send = (code: number, payload: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(payload));
    };
    if (req.headers.authorization !== 'Bearer stub-token')
      return send(401, status(401, 'Unauthorized', 'Unauthorized'));
    const failure = this.failures.find(
      (f) => f.method === method && url.pathname.includes(f.pathIncludes) && f.times > 0,
    );
    if (failure) {
      failure.times--;
      return send(failure.code, failure.body);
    }

    const parts = url.pathname.split('/').filter(Boolean);
    // Discovery: /api/v1, /apis/<group>/<version>
    if (
      method === 'GET' &&
      ((parts[0] === 'api' && parts.length === 2) || (parts[0] === 'apis' && parts.length === 3))
    ) {
      const [group, version] =
        parts[0] === 'api' ? ['', parts[1] as string] : [parts[1] as string, parts[2] as string];
      if (group === 'opentelemetry.io' && !this.operatorInstalled)
        return send(404, status(404, 'NotFound', 'the server could not find the requested resource'));
      const doc = discovery(group, version);
      if (doc.resources.length === 0)
        return send(404, status(404, 'NotFound', 'the server could not find the requested resource'));
      return send(200, doc);
    }
    const base = parts[0] === 'api' ? 2 : 3;
    const group = parts[0] === 'api' ? '' : (parts[1] as string);
    if (parts[base] !== 'namespaces' || parts.length < base + 3)
      return send(404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const namespace = parts[base + 1] as string;
    const plural = parts[base + 2] as string;
    const name = parts[base + 3];
    const resource = RESOURCES.find((r) => r.group === group && r.plural === plural);
    if (!resource || (group === 'opentelemetry.io' && !this.operatorInstalled))
      return send(404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const groupName = group ? `${plural}.${group}` : plural;
    const notFound = () =>
      send(404, status(404, 'NotFound', `${groupName} "${name}" not found`, { name, group, kind: plural }));

    if (name === undefined) {
      if (method !== 'GET')
        return send(405, status(405, 'MethodNotAllowed', 'the server does not allow this method'));
      const selector = url.searchParams.get('labelSelector');
      const wanted = selector ? selector.split(',').map((kv) => kv.split('=') as [string, string]) : [];
      const items =
        plural === 'pods'
          ? this.pods
          : this.list(plural, namespace).filter((o) =>
              wanted.every(([k, v]) => o.metadata.labels?.[k] === v),
            );
      const limit = Number(url.searchParams.get('limit') ?? 0);
      return send(200, {
        kind: `${resource.kind}List`,
        apiVersion: group ? `${group}/${resource.version}` : resource.version,
        metadata: { resourceVersion: String(this.rv) },
        items: limit > 0 ? items.slice(0, limit) : items,
      });
    }
    const key = `${plural}/${namespace}/${name}`;
    if (method === 'GET') {
      const o = this.objects.get(key);
      if (!o) return notFound();
      if (plural === 'daemonsets' && this.autoReady) {
        const n = (this.reads.get(key) ?? 0) + 1;
        this.reads.set(key, n);
        if (n >= this.autoReady.afterReads) this.setDaemonSet(namespace, name, this.autoReady.state);
      }
      return send(200, o);
    }
    if (method === 'DELETE') {
      const o = this.objects.get(key);
      if (!o) return notFound();
      this.objects.delete(key);
      if (o.kind === 'OpenTelemetryCollector')
        this.objects.delete(`daemonsets/${namespace}/${name}-collector`);
      return send(200, {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Success',
        details: { name, group, kind: plural, uid: o.metadata.uid },
      });
    }
    if (method === 'PATCH') {
      if (req.headers['content-type'] !== 'application/apply-patch+yaml')
        return send(
          415,
          status(
            415,
            'UnsupportedMediaType',
            `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`,
          ),
        );
      if (!url.searchParams.get('fieldManager'))
        return send(
          422,
          status(
            422,
            'Invalid',
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
          ),
        );
      if (!this.namespaces.has(namespace))
        return send(
          404,
          status(404, 'NotFound', `namespaces "${namespace}" not found`, {
            name: namespace,
            kind: 'namespaces',
          }),
        );
      const applied = body as StoredObject;
      if (applied?.metadata?.name !== name || applied.kind !== resource.kind)
        return send(
          400,
          status(400, 'BadRequest', 'the name of the object does not match the name on the URL'),
        );
      this.apply(key, resource, namespace, applied, url.searchParams.get('fieldManager') as string);
      if (resource.kind === 'OpenTelemetryCollector') {
        // The operator's reconcile: a DaemonSet named <name>-collector with the CR's labels.
        const dsName = `${name}-collector`;
        this.apply(
          `daemonsets/${namespace}/${dsName}`,
          RESOURCES[3] as Resource,
          namespace,
          {
            apiVersion: 'apps/v1',
            kind: 'DaemonSet',
            metadata: { name: dsName, labels: applied.metadata.labels } as StoredObject['metadata'],
            spec: { fromCollector: applied.spec },
          },
          'opentelemetry-operator',
        );
      }
      return send(200, this.objects.get(key));
    }
    return send(
      405,
      status(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource'),
    );
  }

  private apply(
    key: string,
    resource: Resource,
    namespace: string,
    applied: StoredObject,
    manager: string,
  ): void {
    const existing = this.objects.get(key);
    const spec = applied.spec ?? applied.data;
    const changed = !existing || JSON.stringify(existing.spec ?? existing.data) !== JSON.stringify(spec);
    const now = new Date().toISOString();
    const generation = existing ? existing.metadata.generation + (changed ? 1 : 0) : 1;
    const stored: StoredObject = {
      apiVersion: resource.group ? `${resource.group}/${resource.version}` : resource.version,
      kind: resource.kind,
      metadata: {
        name: applied.metadata.name,
        namespace,
        uid: existing?.metadata.uid ?? randomUUID(),
        resourceVersion: String(changed || !existing ? ++this.rv : existing.metadata.resourceVersion),
        generation,
        creationTimestamp: existing?.metadata.creationTimestamp ?? now,
        ...(applied.metadata.labels ? { labels: applied.metadata.labels } : {}),
        managedFields: [
          { manager, operation: 'Apply', apiVersion: applied.apiVersion, time: now, fieldsType: 'FieldsV1' },
        ],
      },
      ...(applied.spec !== undefined ? { spec: applied.spec } : {}),
      ...(applied.data !== undefined ? { data: applied.data } : {}),
      ...(resource.kind === 'DaemonSet'
        ? {
            status: changed
              ? {
                  observedGeneration: generation - 1,
                  currentNumberScheduled: 0,
                  desiredNumberScheduled: 0,
                  numberReady: 0,
                  numberMisscheduled: 0,
                }
              : (existing?.status ?? {}),
          }
        : {}),
    };
    if (changed) this.reads.delete(key);
    this.objects.set(key, stored);
  }
}

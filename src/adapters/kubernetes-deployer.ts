import {
  ADD,
  ApiException,
  AppsV1Api,
  CoreV1Api,
  DELETE,
  ERROR,
  type Informer,
  type KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  makeInformer,
  type ObjectCache,
  PatchStrategy,
  UPDATE,
  type V1DaemonSet,
} from '@kubernetes/client-node';
import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  ConsecutiveBreaker,
  circuitBreaker,
  ExponentialBackoff,
  handleWhen,
  retry,
  TaskCancelledError,
  wrap,
} from 'cockatiel';
import type { Logger } from 'pino';
import {
  type Deployer,
  type DeployOptions,
  type DeployOutcome,
  type TargetRollout,
  targetKeyOf,
  type VariantDeployment,
} from '../application/ports/deployer.js';
import type { Variant } from '../domain/experiment-spec.js';
import { VARIANTS } from '../domain/experiment-spec.js';
import {
  buildKubernetesObjects,
  collectorName,
  type KubernetesMode,
  LABEL_KEYS,
  targetCollectorName,
  targetLabelValue,
} from '../domain/pipelines/index.js';

/**
 * The `kubernetes` deployer (`@kubernetes/client-node`):
 *
 * - applies the variant's objects with server-side apply (field manager `phoenix`, forced), so applying
 *   again — a redelivered command — converges on the same objects;
 * - waits until the collector DaemonSet is ready: observed at its current generation, scheduled on at
 *   least one node, and `numberReady == desiredNumberScheduled` with every pod updated;
 * - reports the API's refusal (`reason: message` of its Status) or, on a readiness timeout, what the
 *   pods are waiting on (ImagePullBackOff, CrashLoopBackOff…) as a failed deployment; transient trouble
 *   (unreachable API, 5xx, 429) is thrown for the worker to retry;
 * - tears down by label (`phoenix.io/experiment-id`), kind by kind; what is already gone is fine.
 *
 * Mode `operator` applies an OpenTelemetryCollector (the operator makes the DaemonSet
 * `<name>-collector`); `daemonset` applies a ConfigMap and a DaemonSet; `auto` (the default) asks the
 * API whether the operator's CRD is served.
 */

export interface KubernetesDeployerOptions {
  readonly mode?: KubernetesMode | 'auto';
  readonly image?: string;
  /** How long a variant may take to become ready; default 5 minutes. */
  readonly readinessTimeoutMs?: number;
  readonly fieldManager?: string;
  /**
   * How long one call keeps retrying transient trouble (the API unreachable, 5xx, 429, a 409
   * conflict) with exponential backoff before it gives up; default 60 s. A deploy that gives up
   * fails with the last error; a teardown throws (its command is redelivered).
   */
  readonly retryBudgetMs?: number;
  /** Backoff between retries: first and longest delay; default 200 ms and 5 s. */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  /**
   * The circuit breaker in front of the API server, shared by every call of this deployer: after
   * `consecutiveFailures` (default 5) unreachable/5xx answers in a row it opens, calls fail at once
   * (and back off) for `halfOpenAfterMs` (default 5 s), then one call probes.
   */
  readonly breaker?: { readonly consecutiveFailures?: number; readonly halfOpenAfterMs?: number };
  readonly logger?: Pick<Logger, 'info' | 'warn'>;
}

const OPERATOR_API = 'opentelemetry.io/v1beta1';
const KINDS: readonly { apiVersion: string; kind: string }[] = [
  { apiVersion: OPERATOR_API, kind: 'OpenTelemetryCollector' },
  { apiVersion: 'apps/v1', kind: 'DaemonSet' },
  { apiVersion: 'v1', kind: 'ConfigMap' },
];

interface StatusBody {
  readonly reason?: string;
  readonly message?: string;
}

const statusOf = (err: ApiException<unknown>): StatusBody => {
  let body = err.body as unknown;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      return { message: body as string };
    }
  }
  return (body ?? {}) as StatusBody;
};

/**
 * 4xx other than 408, 409 and 429 will not change on retry (403: a missing right, 422: an invalid
 * object, 404: a missing namespace); everything else might.
 */
const isPermanent = (err: unknown): err is ApiException<unknown> =>
  err instanceof ApiException &&
  err.code >= 400 &&
  err.code < 500 &&
  err.code !== 408 &&
  err.code !== 409 &&
  err.code !== 429;

/** The API server is not answering, or not well: what the circuit breaker counts. */
const isUnavailable = (err: unknown): boolean => {
  if (err instanceof ApiException) return err.code >= 500 || err.code === 429 || err.code === 408;
  // The client's own errors for a kind it does not know are not about the server.
  if (err instanceof Error && /Unrecognized API version and kind/.test(err.message)) return false;
  // fetch's errors: refused, reset, timed out, DNS.
  return err instanceof Error;
};

/** What a call retries: the server's trouble, a conflict, or the open circuit. */
const isRetryable = (err: unknown): boolean =>
  err instanceof BrokenCircuitError ||
  isUnavailable(err) ||
  (err instanceof ApiException && err.code === 409);

const isNotFound = (err: unknown): boolean => err instanceof ApiException && err.code === 404;

const describeApiError = (err: ApiException<unknown>): string => {
  const status = statusOf(err);
  return `${status.reason ?? `HTTP ${err.code}`}: ${status.message ?? 'no message'}`;
};

const describe = (err: unknown): string => {
  if (err instanceof ApiException) return describeApiError(err);
  if (err instanceof BrokenCircuitError) return 'the circuit to the API server is open';
  const cause = (err as { cause?: { code?: string; message?: string } } | undefined)?.cause;
  const message = err instanceof Error ? err.message : String(err);
  return cause?.code ? `${message} (${cause.code})` : message;
};

/** A call that ran out of retries; its message names the last trouble. */
export class KubernetesApiUnavailable extends Error {
  constructor(
    what: string,
    budgetMs: number,
    readonly last: unknown,
  ) {
    super(
      `the Kubernetes API did not answer ${what} within ${Math.round(budgetMs / 1000)} s: ${describe(last)}`,
    );
    this.name = 'KubernetesApiUnavailable';
  }
}

interface DaemonSetStatus {
  readonly metadata?: { readonly name?: string; readonly generation?: number };
  readonly status?: {
    readonly observedGeneration?: number;
    readonly desiredNumberScheduled?: number;
    readonly numberReady?: number;
    readonly updatedNumberScheduled?: number;
    readonly conditions?: readonly { readonly type?: string; readonly message?: string }[];
  };
}

interface PodLike {
  readonly metadata?: { readonly name?: string };
  readonly status?: {
    readonly phase?: string;
    readonly containerStatuses?: readonly {
      readonly state?: { readonly waiting?: { readonly reason?: string; readonly message?: string } };
    }[];
  };
}

type Readiness =
  | { readonly state: 'ready'; readonly desired: number; readonly ready: number }
  | { readonly state: 'unschedulable' }
  | { readonly state: 'waiting' };

const readinessOf = (ds: DaemonSetStatus | undefined, minGeneration: number): Readiness => {
  const s = ds?.status;
  if (!ds || !s) return { state: 'waiting' };
  // The watch has not yet delivered the version just applied: what it holds is older.
  if ((ds.metadata?.generation ?? 0) < minGeneration) return { state: 'waiting' };
  // Not yet looked at by the DaemonSet controller at this generation: its status is the old one.
  if ((s.observedGeneration ?? 0) < (ds.metadata?.generation ?? Number.POSITIVE_INFINITY))
    return { state: 'waiting' };
  const desired = s.desiredNumberScheduled ?? 0;
  if (desired === 0) return { state: 'unschedulable' };
  // Counts of 0 are left out of the status (omitempty): absent means none, not all.
  const ready = s.numberReady ?? 0;
  if (ready === desired && (s.updatedNumberScheduled ?? 0) === desired)
    return { state: 'ready', desired, ready };
  return { state: 'waiting' };
};

/**
 * One watch of the DaemonSets of a namespace (an informer: list, then watch from its resource version,
 * listing again when the watch cannot resume), shared by every deploy waiting there: a hundred
 * experiments waiting for readiness hold one connection, not a hundred polling loops.
 */
class DaemonSetWatch {
  readonly #informer: Informer<V1DaemonSet> & ObjectCache<V1DaemonSet>;
  readonly #waiters = new Map<string, Set<() => void>>();
  #started: Promise<void> | undefined;
  #stopped = false;
  #restart: NodeJS.Timeout | undefined;

  constructor(
    kubeConfig: KubeConfig,
    private readonly namespace: string,
    private readonly logger: Pick<Logger, 'info' | 'warn'> | undefined,
  ) {
    const apps = kubeConfig.makeApiClient(AppsV1Api);
    this.#informer = makeInformer(kubeConfig, `/apis/apps/v1/namespaces/${namespace}/daemonsets`, () =>
      apps.listNamespacedDaemonSet({ namespace }),
    );
    const notify = (ds: V1DaemonSet) => {
      for (const wake of this.#waiters.get(ds.metadata?.name ?? '') ?? []) wake();
    };
    this.#informer.on(ADD, notify);
    this.#informer.on(UPDATE, notify);
    this.#informer.on(DELETE, notify);
    // The informer stops on an error (the API server went away, the watch expired for good): start
    // it again after a pause; the list it begins with catches up on everything missed.
    this.#informer.on(ERROR, (err: unknown) => {
      if (this.#stopped) return;
      this.logger?.warn({ namespace, err: describe(err) }, 'the DaemonSet watch broke; starting it again');
      this.#started = undefined;
      clearTimeout(this.#restart);
      this.#restart = setTimeout(() => {
        void this.ensureStarted().catch(() => undefined);
      }, 1_000);
    });
  }

  /** Starts the informer (its first list); a failed start is tried again by the next caller. */
  ensureStarted(): Promise<void> {
    if (!this.#started) {
      const started = this.#informer.start();
      this.#started = started;
      started.catch(() => {
        if (this.#started === started) this.#started = undefined;
      });
    }
    return this.#started;
  }

  get(name: string): V1DaemonSet | undefined {
    return this.#informer.get(name, this.namespace);
  }

  /** Resolves at the next change of the named DaemonSet (or when `signal` aborts). */
  changed(name: string, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const set = this.#waiters.get(name) ?? new Set();
      this.#waiters.set(name, set);
      const done = () => {
        set.delete(done);
        if (set.size === 0) this.#waiters.delete(name);
        signal.removeEventListener('abort', done);
        resolve();
      };
      set.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#restart);
    await this.#informer.stop();
  }
}

export class KubernetesDeployer implements Deployer {
  private readonly client: KubernetesObjectApi;
  private readonly core: CoreV1Api;
  private readonly watches = new Map<string, DaemonSetWatch>();
  private readonly breaker: CircuitBreakerPolicy;
  private resolvedMode: KubernetesMode | undefined;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly options: KubernetesDeployerOptions = {},
  ) {
    this.client = KubernetesObjectApi.makeApiClient(kubeConfig);
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    if (options.mode && options.mode !== 'auto') this.resolvedMode = options.mode;
    this.breaker = circuitBreaker(handleWhen(isUnavailable), {
      halfOpenAfter: options.breaker?.halfOpenAfterMs ?? 5_000,
      breaker: new ConsecutiveBreaker(options.breaker?.consecutiveFailures ?? 5),
    });
    this.breaker.onBreak(() =>
      options.logger?.warn(
        { server: kubeConfig.getCurrentCluster()?.server },
        'the Kubernetes API is not answering: circuit open',
      ),
    );
    this.breaker.onReset(() =>
      options.logger?.info(
        { server: kubeConfig.getCurrentCluster()?.server },
        'the Kubernetes API answers again: circuit closed',
      ),
    );
  }

  /**
   * Runs one API call under the retry policy and the shared circuit breaker; gives up after the
   * retry budget (or when `signal` aborts) with KubernetesApiUnavailable. Permanent refusals pass
   * through at once.
   */
  private async call<T>(what: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const budgetMs = this.options.retryBudgetMs ?? 60_000;
    let last: unknown;
    const policy = wrap(
      retry(handleWhen(isRetryable), {
        maxAttempts: Number.MAX_SAFE_INTEGER,
        backoff: new ExponentialBackoff({
          initialDelay: this.options.backoff?.initialMs ?? 200,
          maxDelay: this.options.backoff?.maxMs ?? 5_000,
        }),
      }),
      this.breaker,
    );
    const budget = AbortSignal.timeout(budgetMs);
    try {
      return await policy.execute(
        async () => {
          try {
            return await fn();
          } catch (err) {
            last = err;
            throw err;
          }
        },
        signal ? AbortSignal.any([signal, budget]) : budget,
      );
    } catch (err) {
      if (signal?.aborted) throw new Error('deploy abandoned: the worker is stopping');
      // The budget ran out: the retry stops with the cancellation, or with the last attempt's error
      // (the open circuit's refusal included).
      if (budget.aborted && (err instanceof TaskCancelledError || isRetryable(err)))
        throw new KubernetesApiUnavailable(what, budgetMs, last ?? err);
      throw err;
    }
  }

  /** Operator mode when the cluster serves the OpenTelemetryCollector CRD, plain DaemonSet otherwise. */
  async mode(namespace: string, signal?: AbortSignal): Promise<KubernetesMode> {
    if (this.resolvedMode) return this.resolvedMode;
    try {
      await this.call(
        'whether the OpenTelemetryCollector kind is served',
        () =>
          this.client.list(
            OPERATOR_API,
            'OpenTelemetryCollector',
            namespace,
            undefined,
            undefined,
            undefined,
            undefined,
            undefined,
            1,
          ),
        signal,
      );
      this.resolvedMode = 'operator';
    } catch (err) {
      // 404: the API group is not served; an Error naming the kind: the group is, the kind is not.
      if (
        !isNotFound(err) &&
        !(err instanceof Error && /Unrecognized API version and kind/.test(err.message))
      )
        throw err;
      this.resolvedMode = 'daemonset';
    }
    return this.resolvedMode;
  }

  async deploy(d: VariantDeployment, options: DeployOptions = {}): Promise<DeployOutcome> {
    return this.apply(d, undefined, options);
  }

  /**
   * A promotion's rollout is a deploy of the target's objects (named and selected for the target, see
   * buildKubernetesObjects' `promotion`): server-side apply replaces a previous promotion's config in
   * place, and the DaemonSet rolls its pods.
   */
  async rollout(r: TargetRollout, options: DeployOptions = {}): Promise<DeployOutcome> {
    return this.apply(r, { target: targetKeyOf(r.namespace, r.nodeSelector), commit: r.commit }, options);
  }

  private async apply(
    d: VariantDeployment | TargetRollout,
    promotion: { readonly target: string; readonly commit: string } | undefined,
    options: DeployOptions,
  ): Promise<DeployOutcome> {
    try {
      return await this.applyOrThrow(d, promotion, options);
    } catch (err) {
      if (isPermanent(err)) return { ok: false, reason: `${d.namespace}: ${describeApiError(err)}` };
      if (err instanceof KubernetesApiUnavailable) return { ok: false, reason: err.message };
      throw err;
    }
  }

  private async applyOrThrow(
    d: VariantDeployment | TargetRollout,
    promotion: { readonly target: string; readonly commit: string } | undefined,
    options: DeployOptions,
  ): Promise<DeployOutcome> {
    const mode = await this.mode(d.namespace, options.signal);
    const built = buildKubernetesObjects({
      experimentId: d.experimentId,
      variant: d.variant,
      template: d.template,
      config: d.config,
      namespace: d.namespace,
      nodeSelector: d.nodeSelector,
      mode,
      ...(this.options.image ? { image: this.options.image } : {}),
      ...(promotion ? { promotion } : {}),
    });
    if (built.errors.length > 0) {
      return {
        ok: false,
        reason: `invalid objects: ${built.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`,
      };
    }
    // The DaemonSet first: the ConfigMap it mounts is then applied as its dependent (an owner
    // reference), so deleting the DaemonSet takes the ConfigMap with it, and one label selector or
    // one owner finds everything a variant made.
    const objects = [...built.objects].sort(
      (a, b) => (a.kind === 'ConfigMap' ? 1 : 0) - (b.kind === 'ConfigMap' ? 1 : 0),
    );
    const applied: string[] = [];
    let owner: KubernetesObject | undefined;
    for (const object of objects) {
      const o = structuredClone(object) as unknown as KubernetesObject;
      if (o.kind === 'ConfigMap' && owner?.metadata?.uid) {
        o.metadata = {
          ...o.metadata,
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'DaemonSet',
              name: owner.metadata.name ?? '',
              uid: owner.metadata.uid,
            },
          ],
        };
      }
      const ref = `${o.kind}/${o.metadata?.name}`;
      try {
        const result = await this.call(
          `apply ${ref}`,
          () =>
            this.client.patch(
              o,
              undefined,
              undefined,
              this.options.fieldManager ?? 'phoenix',
              true,
              PatchStrategy.ServerSideApply,
            ),
          options.signal,
        );
        if (o.kind === 'DaemonSet') owner = result;
        applied.push(ref);
      } catch (err) {
        if (isPermanent(err))
          return { ok: false, reason: `apply ${ref} in ${d.namespace}: ${describeApiError(err)}` };
        throw err;
      }
    }
    const name = promotion ? targetCollectorName(promotion.target) : collectorName(d.experimentId, d.variant);
    const daemonSet = mode === 'operator' ? `${name}-collector` : name;
    const pods = promotion
      ? `${LABEL_KEYS.target}=${targetLabelValue(promotion.target)}`
      : `${LABEL_KEYS.experimentId}=${d.experimentId},${LABEL_KEYS.variant}=${d.variant}`;
    // In daemonset mode the apply's answer is the DaemonSet: readiness counts from its generation on.
    const ready = await this.waitReady(d, daemonSet, pods, owner?.metadata?.generation ?? 0, options.signal);
    if (!ready.ok) return ready;
    return {
      ok: true,
      detail: {
        dataPlane: 'kubernetes',
        mode,
        namespace: d.namespace,
        objects: applied,
        daemonSet,
        ...(promotion ? { target: promotion.target, commit: promotion.commit } : {}),
        ...ready.detail,
      },
    };
  }

  private watchOf(namespace: string): DaemonSetWatch {
    let watch = this.watches.get(namespace);
    if (!watch) {
      watch = new DaemonSetWatch(this.kubeConfig, namespace, this.options.logger);
      this.watches.set(namespace, watch);
    }
    return watch;
  }

  /**
   * Waits, on the namespace's DaemonSet watch, until the DaemonSet is ready at its current generation:
   * `numberReady` reaches the pods its node selector schedules, every one of them updated. A DaemonSet
   * that schedules no pod fails at once; one not ready at the deadline fails with what its pods wait on.
   */
  private async waitReady(
    d: VariantDeployment | TargetRollout,
    name: string,
    podSelector: string,
    minGeneration: number,
    signal: AbortSignal | undefined,
  ): Promise<DeployOutcome> {
    const timeoutMs = this.options.readinessTimeoutMs ?? 300_000;
    const deadline = AbortSignal.timeout(timeoutMs);
    const until = signal ? AbortSignal.any([signal, deadline]) : deadline;
    const watch = this.watchOf(d.namespace);
    await this.call('the DaemonSet watch', () => watch.ensureStarted(), signal);
    for (;;) {
      if (signal?.aborted) throw new Error('deploy abandoned: the worker is stopping');
      // Registered before the look, so a change between the look and the wait is not missed.
      const next = watch.changed(name, until);
      const current = watch.get(name) as DaemonSetStatus | undefined;
      const readiness = readinessOf(current, minGeneration);
      if (readiness.state === 'ready')
        return {
          ok: true,
          detail: { desiredNumberScheduled: readiness.desired, numberReady: readiness.ready },
        };
      if (readiness.state === 'unschedulable')
        return {
          ok: false,
          reason: `DaemonSet ${d.namespace}/${name} is scheduled on no node: nothing matches the node selector ${JSON.stringify(d.nodeSelector)}`,
        };
      if (until.aborted) break;
      await next;
    }
    if (signal?.aborted) throw new Error('deploy abandoned: the worker is stopping');
    const s = (watch.get(name) as DaemonSetStatus | undefined)?.status;
    const progress = s
      ? `${s.numberReady ?? 0}/${s.desiredNumberScheduled ?? 0} ready`
      : 'the DaemonSet was never created';
    return {
      ok: false,
      reason: `DaemonSet ${d.namespace}/${name} not ready after ${Math.round(timeoutMs / 1000)} s: ${progress}${await this.trouble(d.namespace, name, podSelector)}`,
    };
  }

  /** What the API says is in the way, for a readiness timeout's reason: pods' waits and warnings. */
  private async trouble(namespace: string, daemonSet: string, podSelector: string): Promise<string> {
    const found: string[] = [];
    try {
      const pods = await this.listByLabels('v1', 'Pod', namespace, podSelector);
      found.push(
        ...(pods as PodLike[])
          .flatMap((p) =>
            (p.status?.containerStatuses ?? []).flatMap((c) =>
              c.state?.waiting?.reason
                ? [
                    `${p.metadata?.name}: ${c.state.waiting.reason}${c.state.waiting.message ? ` (${c.state.waiting.message})` : ''}`,
                  ]
                : [],
            ),
          )
          .slice(0, 3),
      );
    } catch {
      // the reason is complete without it
    }
    try {
      const events = await this.core.listNamespacedEvent({
        namespace,
        fieldSelector: `involvedObject.name=${daemonSet},type=Warning`,
      });
      const latest = events.items.slice(-2);
      found.push(...latest.map((e) => `${e.reason ?? 'Warning'}: ${e.message ?? ''}`));
    } catch {
      // idem
    }
    return found.length > 0 ? `; ${found.join('; ')}` : '';
  }

  /** Stops the DaemonSet watches. */
  async close(): Promise<void> {
    await Promise.all([...this.watches.values()].map((w) => w.stop()));
    this.watches.clear();
  }

  async teardown(
    experimentId: string,
    namespace: string,
  ): Promise<{ readonly variants: readonly Variant[] }> {
    const removed = new Set<Variant>();
    for (const { apiVersion, kind } of KINDS) {
      let items: KubernetesObject[];
      try {
        items = await this.listByLabels(
          apiVersion,
          kind,
          namespace,
          `${LABEL_KEYS.experimentId}=${experimentId}`,
        );
      } catch (err) {
        if (isNotFound(err)) continue; // the operator's CRD is not installed
        throw err;
      }
      for (const item of items) {
        try {
          // Background: the garbage collector removes what the object owns (pods, the operator's
          // DaemonSet, a ConfigMap) after it.
          await this.call(`delete ${kind}/${item.metadata?.name}`, () =>
            this.client.delete(
              { apiVersion, kind, metadata: { name: item.metadata?.name, namespace } },
              undefined,
              undefined,
              undefined,
              undefined,
              'Background',
            ),
          );
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
        const variant = item.metadata?.labels?.[LABEL_KEYS.variant];
        if (variant && (VARIANTS as readonly string[]).includes(variant)) removed.add(variant as Variant);
      }
    }
    return { variants: VARIANTS.filter((v) => removed.has(v)) };
  }

  async isDeployed(experimentId: string, variant: Variant, namespace: string): Promise<boolean> {
    const mode = await this.mode(namespace);
    const { apiVersion, kind } =
      mode === 'operator' ? (KINDS[0] as (typeof KINDS)[0]) : (KINDS[1] as (typeof KINDS)[0]);
    const items = await this.listByLabels(
      apiVersion,
      kind,
      namespace,
      `${LABEL_KEYS.experimentId}=${experimentId},${LABEL_KEYS.variant}=${variant}`,
    );
    return items.length > 0;
  }

  async deployedVariants(experimentId: string, namespace: string): Promise<readonly Variant[]> {
    const mode = await this.mode(namespace);
    const { apiVersion, kind } =
      mode === 'operator' ? (KINDS[0] as (typeof KINDS)[0]) : (KINDS[1] as (typeof KINDS)[0]);
    const items = await this.listByLabels(
      apiVersion,
      kind,
      namespace,
      `${LABEL_KEYS.experimentId}=${experimentId}`,
    );
    const held = new Set(items.map((item) => item.metadata?.labels?.[LABEL_KEYS.variant]));
    return VARIANTS.filter((v) => held.has(v));
  }

  /** The objects of a kind in a namespace that carry the given labels (a label selector). */
  private async listByLabels(
    apiVersion: string,
    kind: string,
    namespace: string,
    labelSelector: string,
  ): Promise<KubernetesObject[]> {
    const list = await this.call(`list ${kind} in ${namespace}`, () =>
      this.client.list(
        apiVersion,
        kind,
        namespace,
        undefined,
        undefined,
        undefined,
        undefined,
        labelSelector,
      ),
    );
    return list.items;
  }

  /**
   * The experiment ids on the objects of every kind in the namespace that carry the experiment label.
   * A promotion's objects carry the target's label instead, and are excluded besides; the operator's
   * kind not served means its CRD is not installed, and nothing of that kind is held.
   */
  async heldExperiments(namespace: string): Promise<readonly string[]> {
    const held = new Set<string>();
    for (const { apiVersion, kind } of KINDS) {
      let items: KubernetesObject[];
      try {
        items = await this.listByLabels(
          apiVersion,
          kind,
          namespace,
          `${LABEL_KEYS.experimentId},!${LABEL_KEYS.target}`,
        );
      } catch (err) {
        // The operator's kind not served: its group absent (404) or the group without the kind.
        if (
          isNotFound(err) ||
          (err instanceof Error && /Unrecognized API version and kind/.test(err.message))
        )
          continue;
        throw err;
      }
      for (const item of items) {
        // Being deleted already (a teardown's background deletion): on its way out, not held.
        if (item.metadata?.deletionTimestamp) continue;
        const id = item.metadata?.labels?.[LABEL_KEYS.experimentId];
        if (id) held.add(id);
      }
    }
    return [...held];
  }
}

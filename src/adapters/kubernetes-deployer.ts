import { setTimeout as delay } from 'node:timers/promises';
import {
  ApiException,
  type KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
} from '@kubernetes/client-node';
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
  readonly pollMs?: number;
  readonly fieldManager?: string;
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

/** 4xx other than 408/429 will not change on retry; everything else might. */
const isPermanent = (err: unknown): err is ApiException<unknown> =>
  err instanceof ApiException && err.code >= 400 && err.code < 500 && err.code !== 408 && err.code !== 429;

const isNotFound = (err: unknown): boolean => err instanceof ApiException && err.code === 404;

const describeApiError = (err: ApiException<unknown>): string => {
  const status = statusOf(err);
  return `${status.reason ?? `HTTP ${err.code}`}: ${status.message ?? 'no message'}`;
};

interface DaemonSetStatus {
  readonly metadata?: { readonly generation?: number };
  readonly status?: {
    readonly observedGeneration?: number;
    readonly desiredNumberScheduled?: number;
    readonly numberReady?: number;
    readonly updatedNumberScheduled?: number;
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

export class KubernetesDeployer implements Deployer {
  private readonly client: KubernetesObjectApi;
  private resolvedMode: KubernetesMode | undefined;

  constructor(
    kubeConfig: KubeConfig,
    private readonly options: KubernetesDeployerOptions = {},
  ) {
    this.client = KubernetesObjectApi.makeApiClient(kubeConfig);
    if (options.mode && options.mode !== 'auto') this.resolvedMode = options.mode;
  }

  /** Operator mode when the cluster serves the OpenTelemetryCollector CRD, plain DaemonSet otherwise. */
  async mode(namespace: string): Promise<KubernetesMode> {
    if (this.resolvedMode) return this.resolvedMode;
    try {
      await this.client.list(
        OPERATOR_API,
        'OpenTelemetryCollector',
        namespace,
        undefined,
        undefined,
        undefined,
        undefined,
        undefined,
        1,
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
    const mode = await this.mode(d.namespace);
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
    const applied: string[] = [];
    for (const object of built.objects) {
      const o = object as unknown as KubernetesObject;
      const ref = `${o.kind}/${o.metadata?.name}`;
      try {
        await this.client.patch(
          o,
          undefined,
          undefined,
          this.options.fieldManager ?? 'phoenix',
          true,
          PatchStrategy.ServerSideApply,
        );
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
    const ready = await this.waitReady(d, daemonSet, pods, options.signal);
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

  private async waitReady(
    d: VariantDeployment | TargetRollout,
    name: string,
    podSelector: string,
    signal: AbortSignal | undefined,
  ): Promise<DeployOutcome> {
    const timeoutMs = this.options.readinessTimeoutMs ?? 300_000;
    const deadline = Date.now() + timeoutMs;
    let last: DaemonSetStatus | undefined;
    for (;;) {
      if (signal?.aborted) throw new Error('deploy abandoned: the worker is stopping');
      try {
        last = (await this.client.read({
          apiVersion: 'apps/v1',
          kind: 'DaemonSet',
          metadata: { name, namespace: d.namespace },
        })) as DaemonSetStatus;
      } catch (err) {
        // The operator has not made it yet.
        if (!isNotFound(err)) {
          if (isPermanent(err))
            return { ok: false, reason: `read DaemonSet/${name}: ${describeApiError(err)}` };
          throw err;
        }
      }
      const s = last?.status;
      const observed =
        s !== undefined &&
        (s.observedGeneration ?? 0) >= (last?.metadata?.generation ?? Number.POSITIVE_INFINITY);
      if (observed && s !== undefined) {
        const desired = s.desiredNumberScheduled ?? 0;
        if (desired === 0) {
          return {
            ok: false,
            reason: `DaemonSet ${d.namespace}/${name} is scheduled on no node: nothing matches the node selector ${JSON.stringify(d.nodeSelector)}`,
          };
        }
        if ((s.numberReady ?? 0) === desired && (s.updatedNumberScheduled ?? desired) === desired) {
          return { ok: true, detail: { desiredNumberScheduled: desired, numberReady: s.numberReady ?? 0 } };
        }
      }
      if (Date.now() >= deadline) break;
      // An abort ends the wait; the loop's first line then abandons the deploy.
      await delay(this.options.pollMs ?? 2_000, undefined, { signal }).catch((err: unknown) => {
        if (!signal?.aborted) throw err;
      });
    }
    const s = last?.status;
    const progress = s
      ? `${s.numberReady ?? 0}/${s.desiredNumberScheduled ?? 0} ready`
      : 'the DaemonSet was never created';
    return {
      ok: false,
      reason: `DaemonSet ${d.namespace}/${name} not ready after ${Math.round(timeoutMs / 1000)} s: ${progress}${await this.podTrouble(d.namespace, podSelector)}`,
    };
  }

  /** What the variant's pods are waiting on, for a readiness timeout's reason. */
  private async podTrouble(namespace: string, selector: string): Promise<string> {
    try {
      const pods = await this.listByLabels('v1', 'Pod', namespace, selector);
      const troubles = (pods as PodLike[]).flatMap((p) =>
        (p.status?.containerStatuses ?? []).flatMap((c) =>
          c.state?.waiting?.reason
            ? [
                `${p.metadata?.name}: ${c.state.waiting.reason}${c.state.waiting.message ? ` (${c.state.waiting.message})` : ''}`,
              ]
            : [],
        ),
      );
      return troubles.length > 0 ? `; ${troubles.slice(0, 3).join('; ')}` : '';
    } catch {
      return '';
    }
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
          await this.client.delete(
            { apiVersion, kind, metadata: { name: item.metadata?.name, namespace } },
            undefined,
            undefined,
            undefined,
            undefined,
            'Background',
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
    const list = await this.client.list(
      apiVersion,
      kind,
      namespace,
      undefined,
      undefined,
      undefined,
      undefined,
      labelSelector,
    );
    return list.items;
  }
}

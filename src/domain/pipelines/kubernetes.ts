import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { ValidationIssue } from './params.js';
import { COLLECTOR_PORTS, type CollectorConfig, NODE_NAME_ENV, toYaml, type Variant } from './render.js';
import { validateCollectorConfig } from './validate.js';

/** How a variant lands on the cluster: the OpenTelemetry Operator's CRD, or plain built-in objects. */
export type KubernetesMode = 'operator' | 'daemonset';

export interface BuildKubernetesInput {
  readonly experimentId: string;
  readonly variant: Variant;
  readonly template: string;
  /** A config from renderVariant (checked again here: objects are never built around a broken config). */
  readonly config: CollectorConfig;
  readonly namespace?: string;
  /** The experiment target's node selector; both variants get the same one, so they run side by side. */
  readonly nodeSelector?: Readonly<Record<string, string>>;
  readonly mode?: KubernetesMode;
  readonly image?: string;
  /**
   * A promotion: the objects are the target's (named and selected by `target`, a label-safe key of
   * the namespace and node selector), replacing whatever collector a previous promotion put there;
   * the experiment and the commit are recorded, but are not part of the names.
   */
  readonly promotion?: { readonly target: string; readonly commit?: string | undefined };
}

export interface KubernetesObjects {
  readonly objects: readonly Record<string, unknown>[];
  /** All objects as one multi-document YAML stream, ready for `kubectl apply -f -`. */
  readonly yaml: string;
  readonly errors: readonly ValidationIssue[];
}

export const DEFAULT_NAMESPACE = 'phoenix-experiments';
/**
 * The release the rendered configs are validated against (otelcol/builder-config.yaml pins the same
 * v0.165.0 for the tests' collector), so what runs on the cluster is the version that said "valid".
 */
export const DEFAULT_COLLECTOR_IMAGE = 'otel/opentelemetry-collector-contrib:0.165.0';

/** Labels Phoenix puts on every object (and, through the operator or the pod template, on every pod). */
export const LABEL_KEYS = {
  experimentId: 'phoenix.io/experiment-id',
  variant: 'phoenix.io/variant',
  template: 'phoenix.io/template',
  /** On a promotion's objects, instead of the experiment id: the target they run over. */
  target: 'phoenix.io/target',
  /** On a promotion's objects: the experiment whose variant they run. */
  promotedFrom: 'phoenix.io/promoted-from',
} as const;

/** The object name of a target's promoted collector: stable for the target, whatever is promoted. */
export const targetCollectorName = (target: string): string => {
  const slug = target
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  const name = `phx-target-${slug}`;
  if (name.length <= 53 && slug !== '') return name;
  return `phx-target-${slug.slice(0, 53 - 'phx-target--'.length - 7).replace(/-+$/, '')}-${shortHash(target)}`;
};

/** A target key as a label value (63 characters at most, alphanumeric at both ends). */
export const targetLabelValue = (target: string): string => {
  const slug = target.replace(/[^A-Za-z0-9_.-]+/g, '_').replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  return slug.length <= 63 ? slug : `${slug.slice(0, 55).replace(/[^A-Za-z0-9]+$/, '')}-${shortHash(target)}`;
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** FNV-1a, to keep truncated object names unique per experiment without a clock or random source. */
const shortHash = (text: string): string => {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(36).padStart(7, '0').slice(0, 7);
};

/** 64 bits of FNV-1a (two 32-bit lanes with other offsets): enough to tell one config from another. */
const contentDigest = (text: string): string => {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x01000193) >>> 0;
    b = (b ^ (b >>> 13)) >>> 0;
  }
  return a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0');
};

/**
 * The object name of a variant: a DNS label short enough for the operator's `-collector` suffix
 * (63 − 10 characters), stable for an experiment id and variant.
 */
export const collectorName = (experimentId: string, variant: Variant): string => {
  const slug = experimentId
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  const name = `phx-${slug}-${variant}`;
  if (name.length <= 53 && slug !== '') return name;
  const room = 53 - `phx--${variant}`.length - 8;
  return `phx-${slug.slice(0, room).replace(/-+$/, '')}-${shortHash(experimentId)}-${variant}`;
};

const labelsFor = (input: BuildKubernetesInput, name: string): Record<string, string> => ({
  'app.kubernetes.io/name': 'phoenix-collector',
  'app.kubernetes.io/instance': name,
  'app.kubernetes.io/component': 'process-metrics',
  'app.kubernetes.io/managed-by': 'phoenix',
  ...(input.promotion
    ? {
        [LABEL_KEYS.target]: targetLabelValue(input.promotion.target),
        [LABEL_KEYS.promotedFrom]: input.experimentId,
      }
    : { [LABEL_KEYS.experimentId]: input.experimentId }),
  [LABEL_KEYS.variant]: input.variant,
  [LABEL_KEYS.template]: input.template,
});

const envFor = (input: BuildKubernetesInput) => [
  { name: NODE_NAME_ENV, valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
  { name: 'PHOENIX_EXPERIMENT_ID', value: input.experimentId },
  { name: 'PHOENIX_VARIANT', value: input.variant },
];

const hostfsVolume = { name: 'hostfs', hostPath: { path: '/' } };
const hostfsMount = {
  name: 'hostfs',
  mountPath: '/hostfs',
  readOnly: true,
  mountPropagation: 'HostToContainer' as const,
};

/** Requests and limits: memory_limiter's percentages are of this limit, so there must be one. */
const resources = { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '500m', memory: '512Mi' } };

/**
 * The process scraper reads /proc/<pid>/exe and /proc/<pid>/io of every user's processes; as the image's
 * non-root user those reads fail and the processes go missing, so the collector runs as root, read-only.
 */
const securityContext = {
  runAsUser: 0,
  runAsGroup: 0,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
};

/**
 * A node agent runs wherever the target's node selector points, whatever the pool is tainted with
 * (dedicated pools usually are: `dedicated=otel:NoSchedule`); the selector, not taints, decides.
 */
const tolerations = [{ operator: 'Exists' as const, effect: 'NoSchedule' as const }];

const podAnnotations = {
  'prometheus.io/scrape': 'true',
  'prometheus.io/port': String(COLLECTOR_PORTS.prometheus),
  'prometheus.io/path': '/metrics',
};

const checkMeta = (
  input: BuildKubernetesInput,
  labels: Record<string, string>,
  namespace: string,
): ValidationIssue[] => {
  const errors: ValidationIssue[] = [];
  if (!DNS_LABEL.test(namespace) || namespace.length > 63)
    errors.push({ path: 'namespace', message: 'must be a DNS label (RFC 1123)' });
  for (const [key, value] of Object.entries({ ...labels, ...(input.nodeSelector ?? {}) })) {
    const where = key in labels ? 'labels' : 'nodeSelector';
    if (!LABEL_KEY.test(key) || (key.split('/').pop() ?? '').length > 63)
      errors.push({ path: `${where}.${key}`, message: 'invalid label key' });
    if (!LABEL_VALUE.test(value) || value.length > 63)
      errors.push({ path: `${where}.${key}`, message: `invalid label value "${value}"` });
  }
  return errors;
};

/** kubernetes-models validates built-in kinds against the Kubernetes OpenAPI schema. */
const schemaErrors = (kind: string, model: { validate(): void }): ValidationIssue[] => {
  try {
    model.validate();
    return [];
  } catch (err) {
    const detail = (err as { errors?: { instancePath?: string; message?: string }[] }).errors;
    if (Array.isArray(detail) && detail.length > 0) {
      return detail.map((e) => ({
        path: `${kind}${(e.instancePath ?? '').replace(/\//g, '.')}`,
        message: e.message ?? 'invalid',
      }));
    }
    return [{ path: kind, message: err instanceof Error ? err.message : String(err) }];
  }
};

/**
 * The Kubernetes objects that run one variant as a DaemonSet on the experiment's target nodes: an
 * OpenTelemetryCollector (operator mode, the default) or a ConfigMap + DaemonSet (for clusters without
 * the operator). Built-in kinds are validated against the Kubernetes schema; the collector config is
 * validated by validateCollectorConfig, because the operator does not validate it.
 */
export const buildKubernetesObjects = (input: BuildKubernetesInput): KubernetesObjects => {
  const name = input.promotion
    ? targetCollectorName(input.promotion.target)
    : collectorName(input.experimentId, input.variant);
  const namespace = input.namespace ?? DEFAULT_NAMESPACE;
  const labels = labelsFor(input, name);
  const image = input.image ?? DEFAULT_COLLECTOR_IMAGE;
  const nodeSelector = { 'kubernetes.io/os': 'linux', ...(input.nodeSelector ?? {}) };
  const errors: ValidationIssue[] = [
    ...checkMeta(input, labels, namespace),
    ...validateCollectorConfig(input.config).map((e) => ({ path: `config.${e.path}`, message: e.message })),
    // The API server accepts such a DaemonSet, then refuses every pod it makes: found before the apply.
    ...(/^[^\s]+$/.test(image)
      ? []
      : [{ path: 'image', message: `"${image}" is not an image reference (empty, or with spaces)` }]),
  ];
  const metadata = {
    name,
    namespace,
    labels,
    ...(input.promotion?.commit ? { annotations: { 'phoenix.io/commit': input.promotion.commit } } : {}),
  };
  let objects: Record<string, unknown>[];
  if ((input.mode ?? 'operator') === 'operator') {
    objects = [
      {
        apiVersion: 'opentelemetry.io/v1beta1',
        kind: 'OpenTelemetryCollector',
        metadata,
        spec: {
          mode: 'daemonset',
          // What the operator's defaulting webhook would set; without the webhook (or with it
          // off) an empty upgradeStrategy fails the operator's own update of the resource.
          upgradeStrategy: 'automatic',
          managementState: 'managed',
          image,
          config: input.config,
          env: envFor(input),
          volumes: [hostfsVolume],
          volumeMounts: [hostfsMount],
          nodeSelector,
          tolerations,
          resources,
          // The operator derives the exporter's port from the config; pods are scraped by annotation,
          // so neither extra ports nor a ServiceMonitor (which needs the Prometheus operator) are declared.
          podAnnotations,
          securityContext,
        },
      },
    ];
  } else {
    const configYaml = toYaml(input.config);
    const configMap = new ConfigMap({
      metadata: { ...metadata, name: `${name}-config` },
      data: { 'collector.yaml': configYaml },
    });
    // Pods do not notice a ConfigMap's new content: the config's digest in the pod template makes a
    // new config (a promotion replacing another) a new template, which the DaemonSet rolls out.
    const configDigest = contentDigest(configYaml);
    const selector: Record<string, string> = input.promotion
      ? { [LABEL_KEYS.target]: targetLabelValue(input.promotion.target) }
      : { [LABEL_KEYS.experimentId]: input.experimentId, [LABEL_KEYS.variant]: input.variant };
    const daemonSet = new DaemonSet({
      metadata,
      spec: {
        selector: { matchLabels: selector },
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '25%' } },
        template: {
          metadata: { labels, annotations: { ...podAnnotations, 'phoenix.io/config-digest': configDigest } },
          spec: {
            nodeSelector,
            tolerations,
            terminationGracePeriodSeconds: 30,
            containers: [
              {
                name: 'otc-container',
                image,
                args: ['--config=/conf/collector.yaml'],
                env: envFor(input),
                ports: [
                  { name: 'prom-exporter', containerPort: COLLECTOR_PORTS.prometheus, protocol: 'TCP' },
                  { name: 'metrics', containerPort: COLLECTOR_PORTS.telemetry, protocol: 'TCP' },
                  { name: 'health', containerPort: COLLECTOR_PORTS.healthCheck, protocol: 'TCP' },
                ],
                resources,
                securityContext,
                readinessProbe: { httpGet: { path: '/', port: COLLECTOR_PORTS.healthCheck } },
                livenessProbe: {
                  httpGet: { path: '/', port: COLLECTOR_PORTS.healthCheck },
                  initialDelaySeconds: 10,
                },
                volumeMounts: [{ name: 'config', mountPath: '/conf', readOnly: true }, hostfsMount],
              },
            ],
            volumes: [{ name: 'config', configMap: { name: `${name}-config` } }, hostfsVolume],
          },
        },
      },
    });
    errors.push(...schemaErrors('ConfigMap', configMap), ...schemaErrors('DaemonSet', daemonSet));
    objects = [configMap.toJSON() as Record<string, unknown>, daemonSet.toJSON() as Record<string, unknown>];
  }
  return { objects, yaml: objects.map((o) => toYaml(o)).join('---\n'), errors };
};

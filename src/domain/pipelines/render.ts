import { Document } from 'yaml';
import {
  type AnyTemplateParams,
  parseTemplateParams,
  type TemplateName,
  type ValidationIssue,
} from './params.js';
import { type ProcessScraperSettings, processScraperSettings } from './process-scraper.js';
import { compileCollectorRegex } from './regex.js';
import { TEMPLATE_DEFINITIONS, type TemplateParts, type Tuning } from './templates.js';
import { validateCollectorConfig } from './validate.js';

export type Variant = 'baseline' | 'candidate';
export const VARIANTS = ['baseline', 'candidate'] as const satisfies readonly Variant[];

/** A collector config as plain data: what `config:` holds in an OpenTelemetryCollector resource. */
export type CollectorConfig = {
  receivers: Record<string, unknown>;
  processors: Record<string, unknown>;
  exporters: Record<string, unknown>;
  extensions: Record<string, unknown>;
  service: {
    extensions: string[];
    telemetry: Record<string, unknown>;
    pipelines: Record<string, { receivers: string[]; processors: string[]; exporters: string[] }>;
  };
};

/** Ports and endpoints every variant uses; the Kubernetes builder and the local data plane read them too. */
export const COLLECTOR_PORTS = { prometheus: 8889, telemetry: 8888, healthCheck: 13133 } as const;

/** The env var the DaemonSet fills from `spec.nodeName`; the config reads it for `k8s.node.name`. */
export const NODE_NAME_ENV = 'K8S_NODE_NAME';

export interface RenderVariantInput {
  readonly experimentId: string;
  readonly variant: Variant;
  readonly template: string;
  /** Unvalidated parameters (API body, CLI flags); validated here, defaults filled in. */
  readonly params?: unknown;
  /** The experiment's critical-process patterns (RE2 on process.executable.name). */
  readonly criticalProcesses?: readonly string[];
  /** From the baseline via computeKeepList / computeIntelligentKeepList (top-k, intelligent). */
  readonly keepList?: readonly string[];
  /** From the baseline via computeAdaptiveThresholds (adaptive). */
  readonly thresholds?: Tuning['thresholds'];
  /** Where the OTLP exporter sends (an in-cluster gateway by default). */
  readonly otlpEndpoint?: string;
  /**
   * Render for simulation: the same config with the `hostmetrics` receiver replaced by an `otlp` receiver
   * listening at `otlpEndpoint` (host:port), every processor and exporter unchanged. The simulator then
   * sends what the scraper would have scraped ({@link RenderedVariant}'s `processScraper`).
   */
  readonly simulation?: SimulationReceiver;
}

export interface SimulationReceiver {
  /** host:port the `otlp` receiver listens on. */
  readonly otlpEndpoint: string;
  /** OTLP/HTTP (protobuf or JSON on /v1/metrics) or OTLP/gRPC; http unless said. */
  readonly protocol?: 'http' | 'grpc';
}

export type RenderedVariant =
  | {
      readonly ok: true;
      readonly template: TemplateName;
      /** The validated parameters with defaults. */
      readonly params: AnyTemplateParams['params'];
      readonly config: CollectorConfig;
      /**
       * What the `process` scraper of this config emits (interval, metrics, resource attributes), also
       * when `simulation` replaced it: the simulator must then send exactly this.
       */
      readonly processScraper: ProcessScraperSettings;
      /** The config as YAML, with a header comment naming template, experiment and variant. */
      readonly yaml: string;
      /**
       * True for top-k / intelligent without a keep-list and adaptive without thresholds: the config is a
       * valid bootstrap, and the deployer should re-render once the baseline has reported.
       */
      readonly pendingTuning: boolean;
      readonly errors: readonly [];
    }
  | { readonly ok: false; readonly errors: readonly ValidationIssue[] };

export const DEFAULT_OTLP_ENDPOINT = 'otel-gateway.phoenix-system.svc.cluster.local:4317';

/** Kubernetes label values: experiment ids and variants end up as labels on every object and series. */
const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

const hasControlCharacter = (text: string): boolean => [...text].some((c) => c.charCodeAt(0) < 0x20);

const isHostPort = (text: string): boolean => {
  const match = /^[^\s:]+:(\d{1,5})$/.exec(text);
  return match !== null && Number(match[1]) <= 65_535;
};

const checkInput = (input: RenderVariantInput): ValidationIssue[] => {
  const errors: ValidationIssue[] = [];
  if (!LABEL_VALUE.test(input.experimentId)) {
    errors.push({
      path: 'experimentId',
      message: 'must be 1–63 letters, digits, "-", "_" or ".", starting and ending alphanumeric',
    });
  }
  if (input.variant !== 'baseline' && input.variant !== 'candidate') {
    errors.push({ path: 'variant', message: 'must be baseline or candidate' });
  }
  (input.criticalProcesses ?? []).forEach((pattern, i) => {
    const check =
      typeof pattern === 'string'
        ? compileCollectorRegex(pattern)
        : { ok: false as const, message: 'must be a string' };
    if (!check.ok) errors.push({ path: `criticalProcesses.${i}`, message: check.message });
  });
  if ((input.criticalProcesses ?? []).length > 100)
    errors.push({ path: 'criticalProcesses', message: 'at most 100 patterns' });
  if (input.keepList !== undefined) {
    if (input.keepList.length > 2000) errors.push({ path: 'keepList', message: 'at most 2000 names' });
    input.keepList.forEach((name, i) => {
      if (typeof name !== 'string' || name === '' || name.length > 255 || hasControlCharacter(name)) {
        errors.push({
          path: `keepList.${i}`,
          message: 'must be a non-empty executable name without control characters',
        });
      }
    });
  }
  if (input.thresholds !== undefined) {
    const { cpuUtilization, memoryBytes } = input.thresholds;
    if (!(Number.isFinite(cpuUtilization) && cpuUtilization >= 0 && cpuUtilization <= 1)) {
      errors.push({ path: 'thresholds.cpuUtilization', message: 'must be between 0 and 1' });
    }
    if (!(Number.isFinite(memoryBytes) && memoryBytes >= 0))
      errors.push({ path: 'thresholds.memoryBytes', message: 'must be ≥ 0' });
  }
  if (input.otlpEndpoint !== undefined && !isHostPort(input.otlpEndpoint)) {
    errors.push({ path: 'otlpEndpoint', message: 'must be host:port' });
  }
  if (input.simulation !== undefined) {
    const { otlpEndpoint, protocol } = input.simulation;
    if (typeof otlpEndpoint !== 'string' || !isHostPort(otlpEndpoint))
      errors.push({ path: 'simulation.otlpEndpoint', message: 'must be host:port' });
    if (protocol !== undefined && protocol !== 'http' && protocol !== 'grpc')
      errors.push({ path: 'simulation.protocol', message: 'must be http or grpc' });
  }
  return errors;
};

const assemble = (
  input: RenderVariantInput,
  parts: TemplateParts,
  intervalSeconds: number,
): CollectorConfig => {
  const metrics = Object.fromEntries(
    Object.entries(parts.metrics).map(([name, enabled]) => [name, { enabled }]),
  );
  const resourceAttributes = Object.fromEntries(
    Object.entries(parts.resourceAttributes).map(([name, enabled]) => [name, { enabled }]),
  );
  const processScraper: Record<string, unknown> = {
    mute_process_name_error: true,
    mute_process_exe_error: true,
    mute_process_io_error: true,
    mute_process_user_error: true,
    metrics,
    ...(Object.keys(resourceAttributes).length > 0 ? { resource_attributes: resourceAttributes } : {}),
  };
  const templateProcessors = Object.fromEntries(parts.processors.map(([id, config]) => [id, config]));
  const simulation = input.simulation;
  const receivers: Record<string, unknown> =
    simulation === undefined
      ? {
          hostmetrics: {
            collection_interval: `${intervalSeconds}s`,
            root_path: '/hostfs',
            scrapers: { process: processScraper },
          },
        }
      : { otlp: { protocols: { [simulation.protocol ?? 'http']: { endpoint: simulation.otlpEndpoint } } } };
  return {
    receivers,
    processors: {
      memory_limiter: { check_interval: '1s', limit_percentage: 80, spike_limit_percentage: 20 },
      'resource/experiment': {
        attributes: [
          { key: 'experiment.id', value: input.experimentId, action: 'upsert' },
          { key: 'experiment.variant', value: input.variant, action: 'upsert' },
          // insert, not upsert: a node's own scraper never sets it, and a simulated host sending over OTLP
          // to one collector for many hosts brings its own node name, which must survive.
          { key: 'k8s.node.name', value: `\${env:${NODE_NAME_ENV}}`, action: 'insert' },
        ],
      },
      ...templateProcessors,
      batch: { send_batch_size: 8192, send_batch_max_size: 16384, timeout: '10s' },
    },
    exporters: {
      prometheus: {
        endpoint: `0.0.0.0:${COLLECTOR_PORTS.prometheus}`,
        resource_to_telemetry_conversion: { enabled: true },
        // Scrape targets are told apart by variant even where the analyzer's Prometheus adds no labels.
        const_labels: { variant: input.variant },
      },
      otlp: {
        endpoint: input.otlpEndpoint ?? DEFAULT_OTLP_ENDPOINT,
        tls: { insecure: true },
        sending_queue: { enabled: true, queue_size: 1000 },
        retry_on_failure: { enabled: true },
      },
    },
    extensions: { health_check: { endpoint: `0.0.0.0:${COLLECTOR_PORTS.healthCheck}` } },
    service: {
      extensions: ['health_check'],
      telemetry: {
        resource: { 'experiment.id': input.experimentId, 'experiment.variant': input.variant },
        metrics: {
          level: 'detailed',
          readers: [
            { pull: { exporter: { prometheus: { host: '0.0.0.0', port: COLLECTOR_PORTS.telemetry } } } },
          ],
        },
        logs: { level: 'info' },
      },
      pipelines: {
        metrics: {
          receivers: Object.keys(receivers),
          processors: [
            'memory_limiter',
            'resource/experiment',
            ...parts.processors.map(([id]) => id),
            'batch',
          ],
          exporters: ['prometheus', 'otlp'],
        },
      },
    },
  };
};

/** YAML the way a person would write it: no line folding (OTTL lines are long), no anchors. */
export const toYaml = (value: unknown, header?: string): string => {
  const doc = new Document(value, { aliasDuplicateObjects: false });
  if (header !== undefined) doc.commentBefore = header;
  return doc.toString({ lineWidth: 0 });
};

/**
 * Renders one variant's collector config from a template and unvalidated parameters, and checks it with
 * {@link validateCollectorConfig}. The API (`GET …/config/{variant}`, and creation, where errors become
 * a 400), `phoenix render` and the deployers all go through here, so what is shown is what is deployed.
 */
export const renderVariant = (input: RenderVariantInput): RenderedVariant => {
  const inputErrors = checkInput(input);
  const parsed = parseTemplateParams(input.template, input.params);
  if (!parsed.ok) {
    const errors = parsed.errors.map((e) =>
      e.path === 'template' ? e : { path: `params${e.path ? `.${e.path}` : ''}`, message: e.message },
    );
    return { ok: false, errors: [...inputErrors, ...errors] };
  }
  if (inputErrors.length > 0) return { ok: false, errors: inputErrors };
  const { template, params } = parsed.value;
  const critical = [...new Set([...(input.criticalProcesses ?? []), ...params.criticalProcesses])];
  const tuning: Tuning | undefined =
    input.keepList !== undefined || input.thresholds !== undefined
      ? {
          ...(input.keepList ? { keepList: input.keepList } : {}),
          ...(input.thresholds ? { thresholds: input.thresholds } : {}),
        }
      : undefined;
  const definition = TEMPLATE_DEFINITIONS[template];
  // The registry is keyed by name, so the params of `template` are the params its build expects.
  const build = definition.build as (
    p: typeof params,
    ctx: { critical: readonly string[]; tuning: Tuning | undefined },
  ) => TemplateParts;
  const parts = build(params, { critical, tuning });
  const config = assemble(input, parts, params.collectionIntervalSeconds);
  const errors = validateCollectorConfig(config).map((e) => ({
    path: `config.${e.path}`,
    message: e.message,
  }));
  if (errors.length > 0) return { ok: false, errors };
  const pendingTuning =
    (definition.tuning === 'keepList' && input.keepList === undefined) ||
    (definition.tuning === 'thresholds' && input.thresholds === undefined);
  const header = ` Rendered by Phoenix: ${template} for experiment ${input.experimentId}, variant ${input.variant}${pendingTuning ? ' (bootstrap: not yet tuned from the baseline)' : ''}${input.simulation ? ' (simulation: an otlp receiver in place of hostmetrics)' : ''}`;
  // The YAML only when asked for (the API's render, the CLI, Kubernetes objects): a deployer on the
  // local data plane takes the config as data, and stringifying was a third of a render.
  let yaml: string | undefined;
  return {
    ok: true,
    template,
    params,
    config,
    processScraper: processScraperSettings(
      params.collectionIntervalSeconds,
      parts.metrics,
      parts.resourceAttributes,
    ),
    get yaml() {
      yaml ??= toYaml(config, header);
      return yaml;
    },
    pendingTuning,
    errors: [],
  };
};

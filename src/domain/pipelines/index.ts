/**
 * Pipeline templates, the collector config generator and its checks, keep-list tuning and the Kubernetes
 * objects of a variant. Pure: no I/O, no clock, no randomness.
 */
import {
  describeTemplateParams,
  TEMPLATE_NAMES,
  type TemplateName,
  type TemplateParamDescription,
} from './params.js';
import { TEMPLATE_DEFINITIONS } from './templates.js';

export type { BuildKubernetesInput, KubernetesMode, KubernetesObjects } from './kubernetes.js';
export {
  buildKubernetesObjects,
  collectorName,
  DEFAULT_COLLECTOR_IMAGE,
  DEFAULT_NAMESPACE,
  LABEL_KEYS,
  targetCollectorName,
  targetLabelValue,
} from './kubernetes.js';
export * from './ottl.js';
export type {
  AnyTemplateParams,
  ParseParamsResult,
  TemplateName,
  TemplateParamDescription,
  TemplateParams,
  ValidationIssue,
} from './params.js';
export { DEFAULT_PRIORITY_PATTERNS, isTemplateName, parseTemplateParams, TEMPLATE_NAMES } from './params.js';
export * from './process-scraper.js';
export type { CollectorRegex, RegexCheck } from './regex.js';
export { compileCollectorRegex, quoteMeta } from './regex.js';
export type { CollectorConfig, RenderedVariant, RenderVariantInput, Variant } from './render.js';
export {
  COLLECTOR_PORTS,
  DEFAULT_OTLP_ENDPOINT,
  NODE_NAME_ENV,
  renderVariant,
  toYaml,
  VARIANTS,
} from './render.js';
export type { Tuning, TuningKind } from './templates.js';
export { ROLLUP_PROCESS_NAME } from './templates.js';
export type { ProcessUsageTable } from './tuning.js';
export {
  computeAdaptiveThresholds,
  computeIntelligentKeepList,
  computeKeepList,
  computeTuning,
  needsTuning,
} from './tuning.js';
export {
  componentType,
  parseDurationSeconds,
  REQUIRED_RESOURCE_ATTRIBUTES,
  STOCK_COMPONENTS,
  validateCollectorConfig,
} from './validate.js';

export interface TemplateSummary {
  readonly name: TemplateName;
  readonly description: string;
  /** Whether the candidate is completed from the baseline's data (keep-list, thresholds) before measuring. */
  readonly tuning: 'none' | 'keepList' | 'thresholds';
  readonly params: readonly TemplateParamDescription[];
}

/** The template catalogue for `GET /api/v1/templates`: names, descriptions and parameter descriptions. */
export const listTemplates = (): TemplateSummary[] =>
  TEMPLATE_NAMES.map((name) => ({
    name,
    description: TEMPLATE_DEFINITIONS[name].description,
    tuning: TEMPLATE_DEFINITIONS[name].tuning,
    params: describeTemplateParams(name),
  }));

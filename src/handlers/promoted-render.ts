import type { PromotedVariant } from '../domain/lifecycle-saga.js';
import { type RenderedVariant, renderVariant, type ValidationIssue } from '../domain/pipelines/index.js';

/**
 * A promoted variant's collector config, rendered exactly as the experiment deployed it (its template,
 * params and the tuning its deployment reported), for the promoter's commit and the deployer's
 * rollout alike: what is committed is what runs.
 */
export function renderPromoted(
  experimentId: string,
  promoted: Pick<PromotedVariant, 'variant' | 'template' | 'params' | 'tuning'>,
  criticalProcesses: readonly string[],
  otlpEndpoint?: string,
): { ok: true; rendered: Extract<RenderedVariant, { ok: true }> } | { ok: false; reason: string } {
  const tuning = promoted.tuning ?? {};
  const keepList = Array.isArray(tuning.keepList) ? (tuning.keepList as string[]) : undefined;
  const thresholds = tuning.thresholds as Parameters<typeof renderVariant>[0]['thresholds'];
  const rendered = renderVariant({
    experimentId,
    variant: promoted.variant,
    template: promoted.template,
    params: promoted.params,
    criticalProcesses,
    ...(keepList ? { keepList } : {}),
    ...(thresholds ? { thresholds } : {}),
    ...(otlpEndpoint ? { otlpEndpoint } : {}),
  });
  if (!rendered.ok)
    return { ok: false, reason: `the ${promoted.variant} config is invalid: ${describe(rendered.errors)}` };
  if (rendered.pendingTuning)
    return {
      ok: false,
      reason: `${promoted.template} is tuned from the baseline, and the experiment recorded no tuning for the ${promoted.variant}`,
    };
  return { ok: true, rendered };
}

const describe = (errors: readonly ValidationIssue[]): string =>
  errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join('; ');

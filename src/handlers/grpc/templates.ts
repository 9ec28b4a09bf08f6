import { listTemplates } from '../../domain/pipelines/index.js';
import { type CallDependencies, unary } from './calls.js';
import type { TemplateServiceServer } from './gen/phoenix/v1/templates.js';

/** `phoenix.v1.TemplateService`: the catalogue of GET /api/v1/templates (viewer). */
export const templateService = (deps: CallDependencies): TemplateServiceServer => ({
  listTemplates: unary(deps, 'ListTemplates', 'viewer', async () => ({
    templates: listTemplates().map((t) => ({
      name: t.name,
      description: t.description,
      tuning: t.tuning,
      params: t.params.map((p) => JSON.parse(JSON.stringify(p)) as Record<string, unknown>),
    })),
  })),
});

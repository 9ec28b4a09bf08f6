import { z } from 'zod';
import { regexSource } from '../../application/schemas.js';
import { renderVariant, TEMPLATE_NAMES } from '../../domain/pipelines/index.js';
import { HttpProblem } from './problem.js';
import type { TypedApp } from './typed-app.js';

const renderParams = z.object({
  name: z.enum(TEMPLATE_NAMES, { message: `must be one of ${TEMPLATE_NAMES.join(', ')}` }),
});

/** What `phoenix render` takes from its flags: the template's params and the experiment's patterns. */
const renderBody = z
  .strictObject({
    params: z.record(z.string().max(100), z.unknown()).default({}),
    criticalProcesses: z.array(regexSource).max(100).default([]),
    variant: z.enum(['baseline', 'candidate']).default('candidate'),
  })
  .nullish();

/**
 * `POST /api/v1/templates/{name}/render`: the collector config a template renders with these params,
 * before any experiment exists (the dashboard's preview, a script's dry run). The same generator and
 * checks as creating an experiment: a params error is a 400 naming the field, as the create answers it.
 */
export function templateRenderRoute(app: TypedApp): void {
  app.post(
    '/api/v1/templates/:name/render',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['templates'],
        summary: 'Render a template to a collector config',
        params: renderParams,
        body: renderBody,
      },
    },
    async (request, reply) => {
      const body = request.body ?? { params: {}, criticalProcesses: [], variant: 'candidate' as const };
      const rendered = renderVariant({
        // Rendered for no experiment yet: the same placeholder id the create's validation renders with.
        experimentId: 'preview',
        variant: body.variant,
        template: request.params.name,
        params: body.params,
        criticalProcesses: body.criticalProcesses,
      });
      if (!rendered.ok) {
        const errors = rendered.errors.map((e) => ({
          path: e.path === 'template' ? 'path.name' : `body.${e.path}`,
          message: e.message,
        }));
        const first = errors[0];
        const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
        throw new HttpProblem(
          400,
          'validation',
          `the body is invalid${first ? `: ${first.path}: ${first.message}${more}` : ''}`,
          { errors },
        );
      }
      return reply.type('text/yaml; charset=utf-8').send(rendered.yaml);
    },
  );
}

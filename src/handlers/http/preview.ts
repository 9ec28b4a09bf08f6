import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { commandHash, experimentIdForKey } from '../../application/command-service.js';
import { streamIdOf } from '../../application/experiment-commands.js';
import type { EventStore } from '../../application/ports/event-store.js';
import { PreviewBusy, PreviewRefused, type PreviewService } from '../../application/preview.js';
import type { PricingProfile } from '../../domain/cost.js';
import { type ExistingExperiment, type ExperimentEvent, fold } from '../../domain/experiment.js';
import type { ExperimentSpec } from '../../domain/experiment-spec.js';
import { createExperimentSchema } from './experiments.js';
import { HttpProblem } from './problem.js';
import type { TypedApp } from './typed-app.js';

export interface PreviewRoutesDependencies {
  readonly store: EventStore<ExperimentEvent>;
  readonly previews: PreviewService;
  readonly pricingProfiles: readonly PricingProfile[];
}

/**
 * The preview before a run (POST /api/v1/experiments/preview with a create body, or GET
 * /api/v1/experiments/{id}/preview for a created experiment) and the pricing profiles
 * (GET /api/v1/pricing-profiles). Nothing here writes.
 */
export async function previewRoutes(app: TypedApp, deps: PreviewRoutesDependencies): Promise<void> {
  const body = createExperimentSchema({ pricingProfiles: deps.pricingProfiles.map((p) => p.name) });

  const run = async (request: FastifyRequest, experimentId: string, spec: ExperimentSpec) => {
    // The client going away frees the slot.
    const abort = new AbortController();
    const onClose = () => {
      if (!request.raw.complete || request.raw.destroyed) abort.abort(new Error('client went away'));
    };
    request.raw.socket?.once('close', onClose);
    try {
      return await deps.previews.preview(experimentId, spec, { signal: abort.signal });
    } catch (err) {
      if (err instanceof PreviewRefused)
        throw new HttpProblem(400, 'preview-refused', `the spec cannot be previewed: ${err.message}`);
      if (err instanceof PreviewBusy)
        throw new HttpProblem(503, 'preview-saturated', err.message, {
          headers: { 'retry-after': String(err.retryAfterSeconds) },
        });
      if (abort.signal.aborted) throw err;
      request.log.warn({ err }, 'fleet sample failed');
      throw new HttpProblem(
        503,
        'preview-unavailable',
        'the fleet sample could not be completed; retry later',
        {
          headers: { 'retry-after': '5' },
        },
      );
    } finally {
      request.raw.socket?.off('close', onClose);
    }
  };

  app.post(
    '/api/v1/experiments/preview',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['experiments'],
        summary: 'Preview an experiment before creating it: the series the candidate removes',
        body,
        headers: z
          .object({
            'idempotency-key': z
              .string()
              .min(1)
              .max(200)
              .regex(/^[\x21-\x7e]+$/)
              .optional(),
          })
          .loose(),
      },
    },
    async (request) => {
      const key = request.headers['idempotency-key'];
      // With the key the create will use, the fleet is exactly the one the run will get; without one,
      // a fleet of the spec's own (the same spec previews the same).
      const experimentId =
        typeof key === 'string'
          ? experimentIdForKey(request.principal!.sub, key)
          : experimentIdForKey(
              'preview',
              commandHash({ type: 'CreateExperiment', spec: request.body }, undefined),
            );
      return run(request, experimentId, request.body);
    },
  );

  app.get(
    '/api/v1/experiments/:id/preview',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['experiments'],
        summary: 'Preview a created experiment on the fleet its run gets',
        params: z.object({ id: z.uuid({ message: 'must be a UUID' }) }),
      },
    },
    async (request) => {
      const events = await deps.store.readStream(streamIdOf(request.params.id));
      if (events.length === 0) throw new HttpProblem(404, 'experiment-not-found', 'unknown experiment');
      const experiment = fold(events as readonly ExperimentEvent[]) as ExistingExperiment;
      return run(request, request.params.id, experiment.spec);
    },
  );

  app.get(
    '/api/v1/pricing-profiles',
    {
      config: { role: 'viewer' },
      schema: { tags: ['pricing'], summary: 'The pricing profiles analyses are priced with' },
    },
    async () => ({ items: deps.pricingProfiles }),
  );
}

import type { FastifyReply, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import {
  type CommandService,
  createCommandService,
  type ServiceCommand,
} from '../../application/command-service.js';
import { type KnownStreams, streamIdOf } from '../../application/experiment-commands.js';
import { type EventStore, isPosition } from '../../application/ports/event-store.js';
import type { IdempotencyStore } from '../../application/ports/idempotency.js';
import type { ReadModels } from '../../application/ports/read-models.js';
import { dbText, experimentSpecSchema, rejudgeCriteriaSchema } from '../../application/schemas.js';
import { type ExistingExperiment, type ExperimentEvent, fold, STATUSES } from '../../domain/experiment.js';
import { VARIANTS } from '../../domain/experiment-spec.js';
import { listTemplates, type RenderVariantInput, renderVariant } from '../../domain/pipelines/index.js';
import { eventsUpTo, eventView, stateView } from '../experiment-views.js';
import { commandMetricsOf, type Metrics } from '../metrics.js';
import { HttpProblem } from './problem.js';
import { templateRenderRoute } from './templates.js';
import type { TypedApp } from './typed-app.js';

export interface ExperimentRoutesDependencies {
  readonly store: EventStore<ExperimentEvent>;
  readonly readModels: ReadModels;
  readonly idempotency: IdempotencyStore;
  readonly metrics: Metrics;
  readonly clock: () => Date;
  readonly newId: () => string;
  /** Streams this process decided on lately: commands on them skip the read (see KnownStreams). */
  readonly known?: KnownStreams;
  /** The command service shared with other transports; built from the dependencies above when absent. */
  readonly commands?: CommandService;
  /** Names of the configured pricing profiles: a create naming another is refused (400). */
  readonly pricingProfiles?: readonly string[];
  /** Whether a GitOps repository is configured (PHOENIX_GITOPS_REPO): without one, promote and rollback are 409. */
  readonly promotionEnabled?: boolean;
}

/** What promote and rollback answer while no GitOps repository is configured. */
export const PROMOTION_DISABLED =
  'promotion is disabled: set PHOENIX_GITOPS_REPO to the Git repository (a path or a URL) that promotions commit to';

const MIN_POSITION_WAIT_MS = 5_000;

const uuidParam = z.object({ id: z.uuid({ message: 'must be a UUID' }) });
const position = z.string().max(64).refine(isPosition, 'must be a position returned by this service');
const minPositionQuery = z.object({ minPosition: position.optional() });

/**
 * The create body, plus what only the pipelines module can check: templates, params, the rendered
 * config. Rendering is memoised per distinct variant input (creates repeat the same specs a lot).
 */
export function createExperimentSchema(options: { readonly pricingProfiles?: readonly string[] } = {}) {
  // Least recently used out first, 1,000 inputs as before; the keys are the clients' params, so their
  // total length is bounded too (8 Mi characters): a few large bodies cannot pin memory.
  const cache = new LRUCache<string, readonly { path: string; message: string }[]>({
    max: 1_000,
    maxSize: 8 * 1024 * 1024,
    sizeCalculation: (_errors, key) => key.length,
  });
  const validateVariant = (template: string, params: unknown, criticalProcesses: readonly string[]) => {
    const key = JSON.stringify([template, params, criticalProcesses]);
    const cached = cache.get(key);
    if (cached) return cached;
    const rendered = renderVariant({
      experimentId: '00000000-0000-4000-8000-000000000000',
      variant: 'baseline',
      template,
      params,
      criticalProcesses: [...criticalProcesses],
    });
    const errors = rendered.ok ? [] : rendered.errors;
    cache.set(key, errors);
    return errors;
  };
  const profiles = options.pricingProfiles;
  return experimentSpecSchema.superRefine((spec, ctx) => {
    if (
      profiles !== undefined &&
      spec.pricingProfile !== undefined &&
      !profiles.includes(spec.pricingProfile)
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['pricingProfile'],
        message: `unknown pricing profile '${spec.pricingProfile}' (configured: ${profiles.join(', ')})`,
      });
    }
    for (const variant of VARIANTS) {
      for (const e of validateVariant(spec[variant].template, spec[variant].params, spec.criticalProcesses)) {
        // The experiment's own patterns are checked where the user sent them (regexSource, with the
        // same compiler): rendering them into each variant would report one problem three times.
        if (e.path === 'criticalProcesses' || e.path.startsWith('criticalProcesses.')) continue;
        ctx.addIssue({ code: 'custom', path: [variant, ...e.path.split('.')], message: e.message });
      }
    }
  });
}

const cancelBody = z.strictObject({ reason: dbText().trim().min(1).max(1000).optional() }).nullish();
const startBody = z.strictObject({}).nullish();
const promoteBody = z.strictObject({}).nullish();
const rollbackBody = z.strictObject({ reason: dbText().trim().min(1).max(1000).optional() }).nullish();
const rejudgeBody = z.strictObject({ successCriteria: rejudgeCriteriaSchema });

export async function experimentRoutes(app: TypedApp, deps: ExperimentRoutesDependencies): Promise<void> {
  const { store, readModels } = deps;
  const createBody = createExperimentSchema(
    deps.pricingProfiles ? { pricingProfiles: deps.pricingProfiles } : {},
  );

  const commands =
    deps.commands ??
    createCommandService({
      store,
      idempotency: deps.idempotency,
      metrics: commandMetricsOf(deps.metrics),
      clock: deps.clock,
      newId: deps.newId,
      known: deps.known,
    });

  /** Runs a command with the contract's Idempotency-Key and If-Match semantics, and answers it. */
  async function runCommand(
    request: FastifyRequest,
    reply: FastifyReply,
    command: ServiceCommand,
    options: { successStatus: number; location?: boolean },
  ) {
    const key = idempotencyKeyOf(request);
    const outcome = await commands.execute(command, {
      actor: request.principal!.sub,
      correlationId: request.id,
      idempotencyKey: key,
      expectedVersion: ifMatchOf(request),
    });
    const { experimentId: id, state, version, position } = outcome;
    const headers: Record<string, string> = { etag: `"${version}"` };
    if (options.location) headers.location = `/api/v1/experiments/${id}`;
    if (outcome.replayed) headers['idempotent-replayed'] = 'true';
    return reply.code(options.successStatus).headers(headers).send({ id, state, version, position });
  }

  app.post(
    '/api/v1/experiments',
    {
      config: { role: 'operator' },
      schema: {
        tags: ['experiments'],
        summary: 'Create an experiment (state pending)',
        body: createBody,
        headers: commandHeaders,
      },
    },
    async (request, reply) =>
      runCommand(
        request,
        reply,
        { type: 'CreateExperiment', spec: request.body },
        { successStatus: 201, location: true },
      ),
  );

  app.post(
    '/api/v1/experiments/:id/start',
    {
      config: { role: 'operator' },
      schema: {
        tags: ['experiments'],
        summary: 'Start an experiment',
        params: uuidParam,
        body: startBody,
        headers: commandHeaders,
      },
    },
    async (request, reply) =>
      runCommand(
        request,
        reply,
        { type: 'StartExperiment', experimentId: request.params.id },
        { successStatus: 202 },
      ),
  );

  app.post(
    '/api/v1/experiments/:id/cancel',
    {
      config: { role: 'operator' },
      schema: {
        tags: ['experiments'],
        summary: 'Cancel an experiment',
        params: uuidParam,
        body: cancelBody,
        headers: commandHeaders,
      },
    },
    async (request, reply) =>
      runCommand(
        request,
        reply,
        { type: 'CancelExperiment', experimentId: request.params.id, reason: request.body?.reason },
        { successStatus: 202 },
      ),
  );

  const promotionEnabled = () => {
    if (!deps.promotionEnabled) throw new HttpProblem(409, 'promotion-disabled', PROMOTION_DISABLED);
  };

  app.post(
    '/api/v1/experiments/:id/promote',
    {
      config: { role: 'operator' },
      schema: {
        tags: ['experiments'],
        summary:
          'Promote a passing candidate: commit its configs and the evidence to Git, then roll it out over the target',
        params: uuidParam,
        body: promoteBody,
        headers: commandHeaders,
      },
    },
    async (request, reply) => {
      promotionEnabled();
      return runCommand(
        request,
        reply,
        { type: 'RequestPromotion', experimentId: request.params.id, actor: request.principal!.sub },
        { successStatus: 202 },
      );
    },
  );

  app.post(
    '/api/v1/experiments/:id/rollback',
    {
      config: { role: 'operator' },
      schema: {
        tags: ['experiments'],
        summary: 'Roll a promotion back: revert its commit and roll the baseline out again',
        params: uuidParam,
        body: rollbackBody,
        headers: commandHeaders,
      },
    },
    async (request, reply) => {
      promotionEnabled();
      return runCommand(
        request,
        reply,
        {
          type: 'RequestRollback',
          experimentId: request.params.id,
          actor: request.principal!.sub,
          reason: request.body?.reason,
        },
        { successStatus: 202 },
      );
    },
  );

  app.post(
    '/api/v1/experiments/:id/rejudge',
    {
      config: { role: 'operator' },
      schema: {
        tags: ['experiments'],
        summary: 'Judge a finished experiment again under other success criteria, from its stored evidence',
        params: uuidParam,
        body: rejudgeBody,
        headers: commandHeaders,
      },
    },
    async (request, reply) =>
      runCommand(
        request,
        reply,
        {
          type: 'RejudgeAnalysis',
          experimentId: request.params.id,
          actor: request.principal!.sub,
          criteria: request.body.successCriteria,
        },
        { successStatus: 202 },
      ),
  );

  const catchUp = catchUpWith(readModels);

  app.get(
    '/api/v1/experiments',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['experiments'],
        summary: 'List experiments, newest first',
        querystring: z.strictObject({
          state: z.enum(STATUSES).optional(),
          limit: z.coerce.number().int().min(1).max(500).default(50),
          cursor: dbText().min(1).max(512).optional(),
          minPosition: position.optional(),
        }),
      },
    },
    async (request) => {
      const { state, limit, cursor, minPosition } = request.query;
      await catchUp(minPosition);
      return readModels.listExperiments({
        limit,
        ...(state ? { state } : {}),
        ...(cursor ? { cursor } : {}),
      });
    },
  );

  app.get(
    '/api/v1/experiments/:id',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['experiments'],
        summary: 'One experiment',
        params: uuidParam,
        querystring: minPositionQuery.strict(),
      },
    },
    async (request, reply) => {
      await catchUp(request.query.minPosition);
      const experiment = await readModels.getExperiment(request.params.id);
      if (!experiment) throw notFound();
      reply.header('etag', `"${experiment.version}"`);
      return experiment;
    },
  );

  app.get(
    '/api/v1/experiments/:id/history',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['experiments'],
        summary: 'State transitions in order',
        params: uuidParam,
        querystring: minPositionQuery.strict(),
      },
    },
    async (request) => {
      await catchUp(request.query.minPosition);
      const items = await readModels.getHistory(request.params.id);
      if (!items) throw notFound();
      return { items };
    },
  );

  app.get(
    '/api/v1/experiments/:id/events',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['experiments'],
        summary: 'Raw events from the event store',
        params: uuidParam,
        querystring: z.strictObject({
          fromVersion: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER).default(1),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
          minPosition: position.optional(),
        }),
      },
    },
    async (request) => {
      const { fromVersion, limit } = request.query;
      const events = await store.readStream(streamIdOf(request.params.id), { fromVersion, limit });
      if (events.length === 0 && fromVersion === 1) throw notFound();
      return { items: events.map(eventView) };
    },
  );

  app.get(
    '/api/v1/experiments/:id/state',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['experiments'],
        summary: 'The aggregate folded up to a version or a time',
        params: uuidParam,
        querystring: z
          .strictObject({
            version: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
            at: z.iso.datetime({ offset: true }).optional(),
            minPosition: position.optional(),
          })
          .refine((q) => !(q.version !== undefined && q.at !== undefined), 'give version or at, not both'),
      },
    },
    async (request) => {
      const { version, at } = request.query;
      const events = await store.readStream(streamIdOf(request.params.id), {
        ...(version !== undefined ? { toVersion: version } : {}),
      });
      if (events.length === 0) throw notFound();
      if (version !== undefined && events.length < version) {
        throw new HttpProblem(
          404,
          'version-not-found',
          `the experiment has ${events.length} events; there is no version ${version}`,
        );
      }
      const upTo = eventsUpTo(events, { at });
      if (upTo.length === 0)
        throw new HttpProblem(404, 'not-yet-created', `the experiment did not exist at ${at}`);
      return stateView(fold(upTo as readonly ExperimentEvent[]) as ExistingExperiment, upTo);
    },
  );

  app.get(
    '/api/v1/experiments/:id/config/:variant',
    {
      config: { role: 'viewer' },
      schema: {
        tags: ['experiments'],
        summary: 'The rendered OpenTelemetry Collector config of a variant (text/yaml)',
        params: z.object({ id: z.uuid({ message: 'must be a UUID' }), variant: z.enum(VARIANTS) }),
      },
    },
    async (request, reply) => {
      const events = await store.readStream(streamIdOf(request.params.id));
      if (events.length === 0) throw notFound();
      const state = fold(events as readonly ExperimentEvent[]) as ExistingExperiment;
      const { variant } = request.params;
      // The deployer records the tuning it rendered with (top-k/intelligent keep-lists, adaptive thresholds).
      const tuning = (state.deployments[variant]?.detail ?? {}) as Pick<
        RenderVariantInput,
        'keepList' | 'thresholds'
      >;
      const rendered = renderVariant({
        experimentId: state.id,
        variant,
        template: state.spec[variant].template,
        params: state.spec[variant].params,
        criticalProcesses: [...state.spec.criticalProcesses],
        ...(Array.isArray(tuning.keepList) ? { keepList: tuning.keepList } : {}),
        ...(tuning.thresholds ? { thresholds: tuning.thresholds } : {}),
      });
      if (!rendered.ok) {
        throw new HttpProblem(
          409,
          'unrenderable',
          `the ${variant} config cannot be rendered: ${rendered.errors[0]?.message ?? ''}`,
        );
      }
      return reply.type('text/yaml; charset=utf-8').send(rendered.yaml);
    },
  );

  app.get(
    '/api/v1/templates',
    {
      config: { role: 'viewer' },
      schema: { tags: ['templates'], summary: 'Pipeline templates and their parameters' },
    },
    async () => ({ items: listTemplates() }),
  );
  templateRenderRoute(app);
}

/** `minPosition`: wait (bounded) until the read models have applied it, else 503. */
export const catchUpWith =
  (readModels: ReadModels) =>
  async (minPosition: string | undefined): Promise<void> => {
    if (minPosition === undefined) return;
    if (!(await readModels.waitFor(minPosition, MIN_POSITION_WAIT_MS))) {
      throw new HttpProblem(
        503,
        'read-models-behind',
        `the read models have not reached ${minPosition} within 5 s`,
        {
          headers: { 'retry-after': '1' },
        },
      );
    }
  };

const commandHeaders = z
  .object({
    'idempotency-key': dbText()
      .min(1)
      .max(200)
      .regex(/^[\x21-\x7e]+$/, 'printable ASCII, no spaces')
      .optional(),
    'if-match': dbText().max(100).optional(),
  })
  .loose();

const notFound = () => new HttpProblem(404, 'experiment-not-found', 'unknown experiment');

const idempotencyKeyOf = (request: FastifyRequest): string | undefined => {
  const v = request.headers['idempotency-key'];
  return typeof v === 'string' ? v : undefined;
};

/** `If-Match: "<version>"` (or `*`, any existing version); anything else is a 400. */
const ifMatchOf = (request: FastifyRequest): number | undefined => {
  const v = request.headers['if-match'];
  if (v === undefined || v.trim() === '*') return undefined;
  const m = /^\s*(?:W\/)?"(\d{1,15})"\s*$/.exec(String(v));
  if (!m) {
    throw new HttpProblem(400, 'validation', 'If-Match must be an ETag this service returned, such as "3"', {
      errors: [{ path: 'headers.if-match', message: 'must look like "3"' }],
    });
  }
  return Number(m[1]);
};

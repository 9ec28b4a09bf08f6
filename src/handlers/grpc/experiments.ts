import { type handleServerStreamingCall, status } from '@grpc/grpc-js';
import { z } from 'zod';
import type { CommandOutcome, CommandService, ServiceCommand } from '../../application/command-service.js';
import { commandHash, experimentIdForKey } from '../../application/command-service.js';
import { experimentIdOf, streamIdOf } from '../../application/experiment-commands.js';
import { type EventStore, isPosition, type StoredEvent } from '../../application/ports/event-store.js';
import type {
  ExperimentView,
  HistoryEntry as HistoryView,
  ReadModels,
} from '../../application/ports/read-models.js';
import { PreviewBusy, PreviewRefused, type PreviewService } from '../../application/preview.js';
import { dbText, rejudgeCriteriaSchema } from '../../application/schemas.js';
import type { PricingProfile } from '../../domain/cost.js';
import {
  type ExistingExperiment,
  type ExperimentEvent,
  type ExperimentStatus,
  fold,
  STATUSES,
} from '../../domain/experiment.js';
import type { ExperimentSpec as DomainSpec } from '../../domain/experiment-spec.js';
import { eventsUpTo, stateView } from '../experiment-views.js';
import { createExperimentSchema, PROMOTION_DISABLED } from '../http/experiments.js';
import { type CallContext, type CallDependencies, unary } from './calls.js';
import { GrpcRefusal, invalidArgument, violationsOf } from './errors.js';
import {
  type CommandOutcome as CommandOutcomeMessage,
  type Event,
  type Experiment,
  type ExperimentServiceServer,
  type ExperimentSpec,
  ExperimentState,
  type HistoryEntry,
  type WatchRequest,
  type WatchResponse,
} from './gen/phoenix/v1/experiments.js';

export interface ExperimentServiceDependencies extends CallDependencies {
  readonly commands: CommandService;
  readonly store: EventStore<ExperimentEvent>;
  readonly readModels: ReadModels;
  /** `Watch`, served by the live feed's Watcher (src/handlers/grpc/watch.ts). */
  readonly watch: handleServerStreamingCall<WatchRequest, WatchResponse>;
  /** `PreviewExperiment`; without it the call is UNIMPLEMENTED. */
  readonly previews?: PreviewService;
  /** The pricing profiles in force: `ListPricingProfiles`, and the names a create may use. */
  readonly pricingProfiles?: readonly PricingProfile[];
  /** Whether a GitOps repository is configured: without one, promote and rollback are refused. */
  readonly promotionEnabled?: boolean;
}

/** How long a read with `min_position` waits for the read models, as over HTTP. */
const MIN_POSITION_WAIT_MS = 5_000;

export const stateOf = (s: ExperimentStatus): ExperimentState =>
  ExperimentState[`EXPERIMENT_STATE_${s.toUpperCase()}` as keyof typeof ExperimentState];

/** The domain's status of a proto state; undefined for UNSPECIFIED (no filter); a bad number refuses. */
export const statusOf = (state: ExperimentState, field: string): ExperimentStatus | undefined => {
  if (state === ExperimentState.EXPERIMENT_STATE_UNSPECIFIED) return undefined;
  const name = ExperimentState[state];
  const s = typeof name === 'string' ? name.replace('EXPERIMENT_STATE_', '').toLowerCase() : undefined;
  if (s === undefined || !(STATUSES as readonly string[]).includes(s)) {
    throw invalidArgument([{ field, description: `${state} is not an ExperimentState` }]);
  }
  return s as ExperimentStatus;
};

/**
 * Parses with a zod schema; its issues become INVALID_ARGUMENT with field violations under `prefix`,
 * a top-level name the schema spells otherwise than the proto (`limit` for `page_size`) renamed.
 */
export function parse<T extends z.ZodType>(
  schema: T,
  value: unknown,
  prefix = '',
  renamed: Readonly<Record<string, string>> = {},
): z.output<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw invalidArgument(
      violationsOf(parsed.error, prefix).map((v) => {
        const [head = '', ...rest] = v.field.split('.');
        const name = renamed[head];
        return name === undefined ? v : { ...v, field: [name, ...rest].join('.') };
      }),
    );
  }
  return parsed.data;
}

const uuid = z.uuid({ message: 'must be a UUID' });
const position = z.string().max(64).refine(isPosition, 'must be a position returned by this service');
const idempotencyKey = dbText()
  .min(1)
  .max(200)
  .regex(/^[\x21-\x7e]+$/, 'printable ASCII, no spaces');
const expectedVersion = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const reason = dbText().trim().min(1).max(1000);

/** The command's conditions, as HTTP's Idempotency-Key and If-Match headers give them. */
const conditionsOf = (request: { idempotencyKey: string; expectedVersion?: number | undefined }) => ({
  idempotencyKey:
    request.idempotencyKey === ''
      ? undefined
      : parse(idempotencyKey, request.idempotencyKey, 'idempotency_key'),
  expectedVersion:
    request.expectedVersion === undefined
      ? undefined
      : parse(expectedVersion, request.expectedVersion, 'expected_version'),
});

/** The create body as HTTP takes it (JSON), from the proto's spec: absent fields stay absent. */
export const specInputOf = (spec: ExperimentSpec | undefined): unknown => {
  if (spec === undefined) return undefined;
  const variant = (v: ExperimentSpec['baseline']) =>
    v === undefined ? undefined : { template: v.template, params: v.params ?? {} };
  const criteria = spec.successCriteria;
  return {
    name: spec.name,
    ...(spec.description !== undefined ? { description: spec.description } : {}),
    baseline: variant(spec.baseline),
    candidate: variant(spec.candidate),
    target:
      spec.target === undefined
        ? undefined
        : {
            ...(spec.target.namespace !== undefined ? { namespace: spec.target.namespace } : {}),
            nodeSelector: spec.target.nodeSelector,
            hosts: spec.target.hosts,
          },
    durationSeconds: spec.durationSeconds,
    criticalProcesses: spec.criticalProcesses,
    ...(spec.pricingProfile !== undefined ? { pricingProfile: spec.pricingProfile } : {}),
    ...(spec.compatibilityQueries.length > 0
      ? {
          compatibilityQueries: spec.compatibilityQueries.map((q) => ({
            name: q.name,
            query: q.query,
            ...(q.maxDivergencePct !== undefined ? { maxDivergencePct: q.maxDivergencePct } : {}),
          })),
        }
      : {}),
    ...(criteria
      ? {
          successCriteria: {
            ...(criteria.minCardinalityReductionPct !== undefined
              ? { minCardinalityReductionPct: criteria.minCardinalityReductionPct }
              : {}),
            ...(criteria.maxCriticalProcessLossPct !== undefined
              ? { maxCriticalProcessLossPct: criteria.maxCriticalProcessLossPct }
              : {}),
            ...(criteria.maxCollectorCpuOverheadPct !== undefined
              ? { maxCollectorCpuOverheadPct: criteria.maxCollectorCpuOverheadPct }
              : {}),
            ...(criteria.dryRun.length > 0 ? { dryRun: criteria.dryRun } : {}),
            ...(criteria.minHosts !== undefined ? { minHosts: criteria.minHosts } : {}),
            ...(criteria.minSamplesPerHost !== undefined
              ? { minSamplesPerHost: criteria.minSamplesPerHost }
              : {}),
            ...(criteria.confidence !== undefined ? { confidence: criteria.confidence } : {}),
            ...(criteria.maxInputMismatchPct !== undefined
              ? { maxInputMismatchPct: criteria.maxInputMismatchPct }
              : {}),
          },
        }
      : {}),
  };
};

const specMessage = (s: DomainSpec): ExperimentSpec => ({
  name: s.name,
  description: s.description,
  baseline: { template: s.baseline.template, params: { ...s.baseline.params } },
  candidate: { template: s.candidate.template, params: { ...s.candidate.params } },
  target: {
    namespace: s.target.namespace,
    nodeSelector: { ...s.target.nodeSelector },
    hosts: s.target.hosts,
  },
  durationSeconds: s.durationSeconds,
  criticalProcesses: [...s.criticalProcesses],
  successCriteria: { ...s.successCriteria, dryRun: [...(s.successCriteria.dryRun ?? [])] },
  compatibilityQueries: (s.compatibilityQueries ?? []).map((q) => ({
    name: q.name,
    query: q.query,
    maxDivergencePct: q.maxDivergencePct,
  })),
  pricingProfile: s.pricingProfile,
});

type ExperimentLike = DomainSpec & {
  id: string;
  state: ExperimentStatus;
  version: number;
  createdAt: string;
  updatedAt: string;
  startedAt?: string | undefined;
  runStartedAt?: string | undefined;
  runEndsAt?: string | undefined;
  endedAt?: string | undefined;
  statusReason?: string | undefined;
  deployments?: unknown;
  analysis?: unknown;
  promotion?: unknown;
};

export const experimentMessage = (e: ExperimentLike): Experiment => ({
  id: e.id,
  state: stateOf(e.state),
  version: e.version,
  spec: specMessage(e),
  createdAt: e.createdAt,
  updatedAt: e.updatedAt,
  startedAt: e.startedAt,
  runStartedAt: e.runStartedAt,
  runEndsAt: e.runEndsAt,
  endedAt: e.endedAt,
  statusReason: e.statusReason,
  deployments: jsonObject(e.deployments),
  analysis: jsonObject(e.analysis),
  promotion: jsonObject(e.promotion),
});

/** A value as a Struct holds it: JSON's (no undefined, no Date). */
const jsonObject = (v: unknown): Record<string, unknown> | undefined =>
  v === undefined || v === null ? undefined : (JSON.parse(JSON.stringify(v)) as Record<string, unknown>);

export const eventMessage = (e: StoredEvent<ExperimentEvent>): Event => ({
  experimentId: experimentIdOf(e.streamId),
  version: e.version,
  position: e.position,
  type: e.type,
  data: jsonObject(e.data),
  metadata: {
    eventId: e.metadata.eventId,
    actor: e.metadata.actor,
    correlationId: e.metadata.correlationId,
    causationId: e.metadata.causationId ?? undefined,
    occurredAt: e.metadata.occurredAt,
    schemaVersion: e.metadata.schemaVersion,
  },
});

const historyMessage = (h: HistoryView): HistoryEntry => ({
  from: h.from === null ? ExperimentState.EXPERIMENT_STATE_UNSPECIFIED : stateOf(h.from),
  to: stateOf(h.to),
  reason: h.reason,
  actor: h.actor,
  at: h.at,
  durationMs: h.durationMs ?? undefined,
});

const outcomeMessage = (o: CommandOutcome): CommandOutcomeMessage => ({
  experimentId: o.experimentId,
  state:
    o.state === 'unknown'
      ? ExperimentState.EXPERIMENT_STATE_UNSPECIFIED
      : stateOf(o.state as ExperimentStatus),
  version: o.version,
  position: o.position,
  replayed: o.replayed,
});

const notFound = (message = 'unknown experiment', reason = 'EXPERIMENT_NOT_FOUND') =>
  new GrpcRefusal(status.NOT_FOUND, reason, message);

/** `min_position`: wait (bounded) until the read models have applied it, else UNAVAILABLE. */
export const catchUpWith =
  (readModels: ReadModels) =>
  async (minPosition: string | undefined): Promise<void> => {
    if (minPosition === undefined) return;
    const at = parse(position, minPosition, 'min_position');
    if (!(await readModels.waitFor(at, MIN_POSITION_WAIT_MS))) {
      throw new GrpcRefusal(
        status.UNAVAILABLE,
        'READ_MODELS_BEHIND',
        `the read models have not reached ${at} within 5 s`,
        { retryAfterSeconds: 1 },
      );
    }
  };

/**
 * `phoenix.v1.ExperimentService`: what /api/v1/experiments does, through the same command service,
 * read models, schemas and roles. Only parsing the messages and building the answers is its own.
 */
export function experimentService(deps: ExperimentServiceDependencies): ExperimentServiceServer {
  const { commands, store, readModels } = deps;
  const createSpec = createExperimentSchema(
    deps.pricingProfiles ? { pricingProfiles: deps.pricingProfiles.map((p) => p.name) } : {},
  );
  const catchUp = catchUpWith(readModels);

  const promotionEnabled = () => {
    if (!deps.promotionEnabled)
      throw new GrpcRefusal(status.FAILED_PRECONDITION, 'PROMOTION_DISABLED', PROMOTION_DISABLED);
  };
  const run = async (
    command: ServiceCommand,
    conditions: ReturnType<typeof conditionsOf>,
    ctx: CallContext,
  ) =>
    outcomeMessage(
      await commands.execute(command, {
        actor: ctx.principal.sub,
        correlationId: ctx.correlationId,
        idempotencyKey: conditions.idempotencyKey,
        expectedVersion: conditions.expectedVersion,
      }),
    );

  return {
    createExperiment: unary(deps, 'CreateExperiment', 'operator', async (request, ctx) => {
      const spec = parse(createSpec, specInputOf(request.spec), 'spec');
      const conditions = conditionsOf(request);
      return { outcome: await run({ type: 'CreateExperiment', spec }, conditions, ctx) };
    }),

    startExperiment: unary(deps, 'StartExperiment', 'operator', async (request, ctx) => {
      const experimentId = parse(uuid, request.id, 'id');
      const conditions = conditionsOf(request);
      return { outcome: await run({ type: 'StartExperiment', experimentId }, conditions, ctx) };
    }),

    cancelExperiment: unary(deps, 'CancelExperiment', 'operator', async (request, ctx) => {
      const experimentId = parse(uuid, request.id, 'id');
      const why = request.reason === undefined ? undefined : parse(reason, request.reason, 'reason');
      const conditions = conditionsOf(request);
      return {
        outcome: await run({ type: 'CancelExperiment', experimentId, reason: why }, conditions, ctx),
      };
    }),

    promoteExperiment: unary(deps, 'PromoteExperiment', 'operator', async (request, ctx) => {
      const experimentId = parse(uuid, request.id, 'id');
      promotionEnabled();
      return {
        outcome: await run(
          { type: 'RequestPromotion', experimentId, actor: ctx.principal.sub },
          conditionsOf(request),
          ctx,
        ),
      };
    }),

    rollbackExperiment: unary(deps, 'RollbackExperiment', 'operator', async (request, ctx) => {
      const experimentId = parse(uuid, request.id, 'id');
      const why = request.reason === undefined ? undefined : parse(reason, request.reason, 'reason');
      promotionEnabled();
      return {
        outcome: await run(
          { type: 'RequestRollback', experimentId, actor: ctx.principal.sub, reason: why },
          conditionsOf(request),
          ctx,
        ),
      };
    }),

    rejudgeExperiment: unary(deps, 'RejudgeExperiment', 'operator', async (request, ctx) => {
      const experimentId = parse(uuid, request.id, 'id');
      const c = request.successCriteria;
      const given: Record<string, unknown> = {
        minCardinalityReductionPct: c?.minCardinalityReductionPct,
        maxCriticalProcessLossPct: c?.maxCriticalProcessLossPct,
        maxCollectorCpuOverheadPct: c?.maxCollectorCpuOverheadPct,
        dryRun: c && c.dryRun.length > 0 ? c.dryRun : undefined,
        minHosts: c?.minHosts,
        minSamplesPerHost: c?.minSamplesPerHost,
        confidence: c?.confidence,
        maxInputMismatchPct: c?.maxInputMismatchPct,
      };
      const criteria = parse(
        rejudgeCriteriaSchema,
        Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)),
        'success_criteria',
      );
      const conditions = conditionsOf(request);
      return {
        outcome: await run(
          { type: 'RejudgeAnalysis', experimentId, actor: ctx.principal.sub, criteria },
          conditions,
          ctx,
        ),
      };
    }),

    getExperiment: unary(deps, 'GetExperiment', 'viewer', async (request) => {
      const id = parse(uuid, request.id, 'id');
      await catchUp(request.minPosition);
      const experiment = await readModels.getExperiment(id);
      if (!experiment) throw notFound();
      return { experiment: experimentMessage(experiment as ExperimentView & ExperimentLike) };
    }),

    listExperiments: unary(deps, 'ListExperiments', 'viewer', async (request) => {
      const state = statusOf(request.state, 'state');
      const limit =
        request.pageSize === 0 ? 50 : parse(z.number().int().min(1).max(500), request.pageSize, 'page_size');
      const cursor =
        request.pageToken === '' ? undefined : parse(dbText().max(512), request.pageToken, 'page_token');
      await catchUp(request.minPosition);
      const page = await readModels.listExperiments({
        limit,
        ...(state ? { state } : {}),
        ...(cursor ? { cursor } : {}),
      });
      return {
        experiments: page.items.map((e) => experimentMessage(e as ExperimentView & ExperimentLike)),
        nextPageToken: page.nextCursor ?? '',
      };
    }),

    getExperimentHistory: unary(deps, 'GetExperimentHistory', 'viewer', async (request) => {
      const id = parse(uuid, request.id, 'id');
      await catchUp(request.minPosition);
      const items = await readModels.getHistory(id);
      if (!items) throw notFound();
      return { entries: items.map(historyMessage) };
    }),

    listExperimentEvents: unary(deps, 'ListExperimentEvents', 'viewer', async (request) => {
      const id = parse(uuid, request.id, 'id');
      const fromVersion =
        request.fromVersion === 0
          ? 1
          : parse(z.number().int().min(1).max(Number.MAX_SAFE_INTEGER), request.fromVersion, 'from_version');
      const limit =
        request.limit === 0 ? 100 : parse(z.number().int().min(1).max(1000), request.limit, 'limit');
      const events = await store.readStream(streamIdOf(id), { fromVersion, limit });
      if (events.length === 0 && fromVersion === 1) throw notFound();
      return { events: events.map(eventMessage) };
    }),

    getExperimentState: unary(deps, 'GetExperimentState', 'viewer', async (request) => {
      const id = parse(uuid, request.id, 'id');
      const point = request.point;
      const version =
        point?.$case === 'version'
          ? parse(z.number().int().min(1).max(Number.MAX_SAFE_INTEGER), point.value, 'version')
          : undefined;
      const at =
        point?.$case === 'at' ? parse(z.iso.datetime({ offset: true }), point.value, 'at') : undefined;
      const events = await store.readStream(streamIdOf(id), {
        ...(version !== undefined ? { toVersion: version } : {}),
      });
      if (events.length === 0) throw notFound();
      if (version !== undefined && events.length < version) {
        throw notFound(
          `the experiment has ${events.length} events; there is no version ${version}`,
          'VERSION_NOT_FOUND',
        );
      }
      const upTo = eventsUpTo(events, { at });
      if (upTo.length === 0) throw notFound(`the experiment did not exist at ${at}`, 'NOT_YET_CREATED');
      const view = stateView(fold(upTo as readonly ExperimentEvent[]) as ExistingExperiment, upTo);
      return { experiment: experimentMessage(view), position: view.position, at: view.at };
    }),

    previewExperiment: unary(deps, 'PreviewExperiment', 'viewer', async (request, ctx) => {
      const previews = deps.previews;
      if (previews === undefined)
        throw new GrpcRefusal(status.UNIMPLEMENTED, 'PREVIEW_UNAVAILABLE', 'previews are not served here');
      const subject = request.subject;
      let experimentId: string;
      let spec: DomainSpec;
      if (subject?.$case === 'id') {
        experimentId = parse(uuid, subject.value, 'id');
        const events = await store.readStream(streamIdOf(experimentId));
        if (events.length === 0) throw notFound();
        spec = (fold(events as readonly ExperimentEvent[]) as ExistingExperiment).spec;
      } else if (subject?.$case === 'spec') {
        spec = parse(createSpec, specInputOf(subject.value), 'spec');
        const key =
          request.idempotencyKey === ''
            ? undefined
            : parse(idempotencyKey, request.idempotencyKey, 'idempotency_key');
        experimentId =
          key !== undefined
            ? experimentIdForKey(ctx.principal.sub, key)
            : experimentIdForKey('preview', commandHash({ type: 'CreateExperiment', spec }, undefined));
      } else {
        throw invalidArgument([{ field: 'subject', description: 'give an experiment id or a spec' }]);
      }
      try {
        const p = await previews.preview(experimentId, spec, { signal: ctx.signal });
        return {
          hosts: p.hosts,
          sampledHosts: p.sampledHosts,
          baseline: p.baseline,
          candidate: p.candidate,
          removedSeries: p.removedSeries,
          ...(p.removedSeriesPct !== null ? { removedSeriesPct: p.removedSeriesPct } : {}),
          criticalInBaseline: p.criticalInBaseline,
          droppedCriticalProcesses: [...p.droppedCriticalProcesses],
          droppedCriticalPairs: [...p.droppedCriticalPairs],
        };
      } catch (err) {
        if (err instanceof PreviewRefused)
          throw new GrpcRefusal(
            status.INVALID_ARGUMENT,
            'PREVIEW_REFUSED',
            `the spec cannot be previewed: ${err.message}`,
          );
        if (err instanceof PreviewBusy)
          throw new GrpcRefusal(status.UNAVAILABLE, 'PREVIEW_SATURATED', err.message, {
            retryAfterSeconds: err.retryAfterSeconds,
          });
        if (ctx.signal.aborted) throw err;
        deps.logger.warn({ err }, 'fleet sample failed');
        throw new GrpcRefusal(
          status.UNAVAILABLE,
          'PREVIEW_UNAVAILABLE',
          'the fleet sample could not be completed; retry later',
          {
            retryAfterSeconds: 5,
          },
        );
      }
    }),

    listPricingProfiles: unary(deps, 'ListPricingProfiles', 'viewer', async () => ({
      profiles: (deps.pricingProfiles ?? []).map((p) => ({ ...p, sources: [...(p.sources ?? [])] })),
    })),

    watch: deps.watch,
  };
}

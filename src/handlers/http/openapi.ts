import type {
  FastifyDynamicSwaggerOptions,
  SwaggerTransform,
  SwaggerTransformObject,
} from '@fastify/swagger';
import type { FastifySwaggerUiOptions } from '@fastify/swagger-ui';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  analysisSchema,
  eventMetadataSchema,
  experimentSpecSchema,
  successCriteriaSchema,
} from '../../application/schemas.js';
import { STATUSES } from '../../domain/experiment.js';
import { VARIANTS } from '../../domain/experiment-spec.js';
import type { Role } from '../auth.js';
import { CLOSE_TOO_SLOW } from './live.js';

/**
 * The OpenAPI document is the contract a client generator reads. The routes declare what they accept
 * (zod schemas, turned into parameters and bodies by `jsonSchemaTransform`); this module adds what they
 * answer: every status each operation can return, the response bodies and headers, operationIds, tags,
 * security and servers. Fastify never sees these response schemas: they document, they do not
 * serialize. Every route must have an entry in OPERATIONS (see test/openapi.int.test.ts).
 */

export const DOCS_PREFIX = '/docs';

const TOKEN_HELP =
  'Every `/api/*` request and the live feed need `Authorization: Bearer <JWT>` (HS256). To get one, ' +
  'run `npx phoenix token --role operator --sub you` (roles: `viewer` reads, `operator` also runs commands, ' +
  '`admin` also reads the audit trail; `--ttl 1h` limits its life), or use the admin token that ' +
  '`npm start` prints in its start-up banner. Missing or invalid token: 401; role too low: 403.';

// ---------------------------------------------------------------------------------------------
// Response bodies, as the handlers build them (experiment-views.ts, ports/read-models.ts, live.ts).

const isoTime = z.iso.datetime({ offset: true });
const status = z.enum(STATUSES);
const position = z.string().describe('Opaque global position of an event in the log.');

const problem = z
  .looseObject({
    type: z
      .string()
      .describe('A URI naming the kind of problem, e.g. https://phoenix.dev/problems/validation.'),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    errors: z
      .array(z.object({ path: z.string(), message: z.string() }))
      .optional()
      .describe('Validation failures, one per field.'),
  })
  .describe(
    'RFC 9457 problem details. Some problems carry extension members: `currentState` and `allowedIn` ' +
      '(409 invalid-transition), `currentVersion` (412).',
  );

const commandResult = z.object({
  id: z.uuid(),
  state: status,
  version: z.number().int().min(1).describe('Events in the experiment stream after the command.'),
  position,
});

const deployment = z.object({
  status: z.enum(['deployed', 'failed', 'torn_down']),
  at: isoTime,
  reason: z.string().optional(),
  detail: z.record(z.string(), z.unknown()).optional(),
});
const deployments = z.object(Object.fromEntries(VARIANTS.map((v) => [v, deployment.optional()])));

const experimentFields = {
  id: z.uuid(),
  state: status,
  version: z.number().int().min(1),
  createdAt: isoTime,
  updatedAt: isoTime,
  startedAt: isoTime.optional(),
  runEndsAt: isoTime.optional(),
  endedAt: isoTime.optional(),
  statusReason: z.string().optional().describe('Why the experiment is in its current state.'),
  analysis: analysisSchema.optional(),
  rejudgements: z
    .array(
      z.object({
        at: isoTime,
        actor: z.string(),
        criteria: successCriteriaSchema,
        analysis: analysisSchema,
      }),
    )
    .optional()
    .describe(
      'Re-judgements of the stored evidence under other criteria, oldest first; `analysis` stays the verdict.',
    ),
};

const experiment = experimentSpecSchema
  .extend({ ...experimentFields, deployments: deployments.optional() })
  .describe('The create body plus the experiment state, from the read models.');

const experimentPage = z.object({ items: z.array(experiment), nextCursor: z.string().nullable() });

const historyEntry = z.object({
  from: status.nullable().describe('null for creation'),
  to: status,
  reason: z.string(),
  actor: z.string(),
  at: isoTime,
  durationMs: z.number().nullable().describe('Time spent in `from`; null for creation.'),
});
const history = z.object({ items: z.array(historyEntry) });

const storedEvent = z.object({
  version: z.number().int().min(1),
  position,
  type: z.string(),
  data: z.record(z.string(), z.unknown()),
  metadata: eventMetadataSchema,
});
const eventPage = z.object({ items: z.array(storedEvent) });

const stateAt = experimentSpecSchema
  .extend({
    ...experimentFields,
    runStartedAt: isoTime.optional(),
    deployments,
    position,
    at: isoTime.describe('When the last folded event occurred.'),
  })
  .describe('The aggregate folded from its events up to the requested version or time.');

const templateParam = z.object({
  name: z.string(),
  type: z.enum(['integer', 'number', 'boolean', 'string', 'array']),
  description: z.string(),
  default: z.unknown(),
  minimum: z.number().optional(),
  maximum: z.number().optional(),
  exclusiveMinimum: z.number().optional(),
  enum: z.array(z.string()).optional(),
  items: z
    .object({ type: z.string(), enum: z.array(z.string()).optional(), format: z.string().optional() })
    .optional(),
  maxItems: z.number().int().optional(),
});
const templates = z.object({
  items: z.array(
    z.object({
      name: z.string(),
      description: z.string(),
      tuning: z.enum(['none', 'keepList', 'thresholds']),
      params: z.array(templateParam),
    }),
  ),
});

const previewFigures = z.object({ series: z.number().int(), datapointsPerMinute: z.number() });
const preview = z
  .object({
    hosts: z.number().int().describe("The target's hosts."),
    sampledHosts: z
      .number()
      .int()
      .describe('Hosts actually run (at most 50, the first of the target); counts are scaled to `hosts`.'),
    baseline: previewFigures,
    candidate: previewFigures,
    removedSeries: z.number().int(),
    removedSeriesPct: z.number().nullable(),
    criticalInBaseline: z.number().int().describe('Critical (node, executable) pairs in the baseline.'),
    droppedCriticalProcesses: z
      .array(z.string())
      .describe('Critical executables the candidate drops somewhere.'),
    droppedCriticalPairs: z
      .array(z.string())
      .describe('The same as `node/executable` of the sampled hosts (50 at most).'),
  })
  .describe('One sample of the fleet through both rendered pipelines.');

const pricingProfiles = z.object({
  items: z.array(
    z.object({
      name: z.string(),
      description: z.string().optional(),
      currency: z.string(),
      perSeriesMonth: z.number(),
      perMillionDatapoints: z.number(),
      perGbIngested: z.number(),
      bytesPerDatapoint: z.number(),
      cpuCoreHour: z.number(),
      memoryGbHour: z.number(),
      fleetHosts: z.number().int().optional(),
      sources: z.array(z.string()).optional(),
    }),
  ),
});

const auditEntry = historyEntry.extend({
  experimentId: z.uuid(),
  experimentName: z.string(),
  correlationId: z.string(),
});
const auditPage = z.object({ items: z.array(auditEntry), nextCursor: z.string().nullable() });

const liveEvent = z.object({
  kind: z.literal('event'),
  position,
  experimentId: z.uuid(),
  version: z.number().int().min(1),
  type: z.string(),
  data: z.record(z.string(), z.unknown()),
  metadata: eventMetadataSchema,
});
const liveReady = z
  .object({ kind: z.literal('live'), position })
  .describe('Sent once, when the backlog is delivered and the feed is live.');
const liveMessage = z.discriminatedUnion('kind', [liveEvent, liveReady]);

const health = z.object({ status: z.literal('ok') });
const readiness = z.object({
  status: z.enum(['ready', 'not ready']),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), error: z.string().optional() })),
});

/** The schemas a client generator gets, by component name; tests parse real answers with them. */
export const RESPONSE_SCHEMAS = {
  Problem: problem,
  CommandResult: commandResult,
  Experiment: experiment,
  ExperimentPage: experimentPage,
  History: history,
  EventPage: eventPage,
  ExperimentState: stateAt,
  Templates: templates,
  Preview: preview,
  PricingProfiles: pricingProfiles,
  AuditPage: auditPage,
  LiveMessage: liveMessage,
  Health: health,
  Readiness: readiness,
} as const;
type SchemaName = keyof typeof RESPONSE_SCHEMAS;

// ---------------------------------------------------------------------------------------------
// The operations

type ErrorStatus = 400 | 401 | 403 | 404 | 409 | 412 | 413 | 415 | 422 | 429 | 500 | 503;

interface Success {
  readonly status: 101 | 200 | 201 | 202;
  readonly description: string;
  /** Media type → component schema name, or a plain JSON Schema for non-JSON bodies. */
  readonly content?: Readonly<Record<string, SchemaName | Readonly<Record<string, unknown>>>>;
  readonly headers?: readonly HeaderName[];
}

export interface OperationDoc {
  readonly operationId: string;
  readonly tag: TagName;
  readonly summary: string;
  readonly description?: string;
  readonly success: readonly Success[];
  /** Every error status the operation can answer; each is a problem+json body. */
  readonly errors: readonly ErrorStatus[];
  /** The body may be left out (fastify's schema says `nullish`, which swagger still marks required). */
  readonly optionalBody?: boolean;
  /** Message shapes of a WebSocket operation. */
  readonly messages?: SchemaName;
}

const TAGS = {
  experiments: 'Create and drive experiments, and read them back (eventually consistent; see `minPosition`).',
  templates: 'Pipeline templates an experiment variant can use.',
  pricing: 'The pricing profiles that turn a reduction into money (`analysis.cost`).',
  audit: 'Who moved which experiment when (admin).',
  live: 'The event log, live, over WebSocket.',
  operations: 'Health, readiness and metrics, without authentication.',
} as const;
type TagName = keyof typeof TAGS;

const HEADERS = {
  ETag: {
    description: 'The experiment version, `"<version>"`; send it back in `If-Match`.',
    schema: { type: 'string', example: '"3"' },
  },
  Location: {
    description: 'The new experiment.',
    schema: { type: 'string', example: '/api/v1/experiments/{id}' },
  },
  'Retry-After': { description: 'Seconds to wait before retrying.', schema: { type: 'integer', minimum: 0 } },
  'Idempotent-Replayed': {
    description:
      '`true` when this is the stored first answer to an earlier request with the same Idempotency-Key.',
    schema: { type: 'string', enum: ['true'] },
  },
  'WWW-Authenticate': { description: '`Bearer realm="phoenix"`', schema: { type: 'string' } },
  'Content-Disposition': { description: 'CSV answers come as an attachment.', schema: { type: 'string' } },
  'X-Next-Cursor': {
    description: 'CSV pages: the cursor of the next page, when there is one.',
    schema: { type: 'string' },
  },
} as const;
type HeaderName = keyof typeof HEADERS;

const ERRORS: Record<ErrorStatus, { name: string; description: string; headers?: readonly HeaderName[] }> = {
  400: {
    name: 'BadRequest',
    description: 'The path, query, headers or body failed validation; `errors` names each field.',
  },
  401: {
    name: 'Unauthorized',
    description: 'Missing, expired or invalid bearer token.',
    headers: ['WWW-Authenticate'],
  },
  403: { name: 'Forbidden', description: "The token's role is too low for this operation." },
  404: { name: 'NotFound', description: 'Unknown experiment (or no such version, or not yet created then).' },
  409: {
    name: 'Conflict',
    description:
      "The command is not allowed in the experiment's current state, or a concurrent change won (reload and retry).",
  },
  412: { name: 'PreconditionFailed', description: '`If-Match` names a version that is not the current one.' },
  413: { name: 'ContentTooLarge', description: 'The body is over 1 MiB.' },
  415: { name: 'UnsupportedMediaType', description: 'The body is not `application/json`.' },
  422: {
    name: 'IdempotencyKeyReused',
    description: 'The `Idempotency-Key` was used before with a different request.',
  },
  429: { name: 'TooManyRequests', description: 'Rate limit exceeded.', headers: ['Retry-After'] },
  500: { name: 'InternalError', description: 'An internal error; the detail quotes the request id.' },
  503: {
    name: 'Unavailable',
    description:
      'A backing service is down (nothing was written), or the read models did not reach `minPosition` within 5 s.',
    headers: ['Retry-After'],
  },
};

const COMMAND_ERRORS = [400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 500, 503] as const;
const READ_BY_ID_ERRORS = [400, 401, 404, 429, 500, 503] as const;

const commandSuccess = (status: 201 | 202, description: string, headers: readonly HeaderName[]): Success => ({
  status,
  description,
  content: { 'application/json': 'CommandResult' },
  headers: [...headers, 'Idempotent-Replayed'],
});

const COMMAND_DESCRIPTION =
  'Answers `{ id, state, version, position }` and `ETag: "<version>"`. `If-Match: "<version>"` makes the ' +
  'command conditional (412 when the experiment has moved on). A retry with the same `Idempotency-Key` and ' +
  'body returns the first answer and writes nothing; the same key with another body is a 422.';

const MIN_POSITION =
  ' With `minPosition`, waits up to 5 s for the read models to apply that position (read-your-writes), else 503.';

/**
 * Every route of the app, by `METHOD /openapi/path`. A route missing here is served undocumented and
 * fails the OpenAPI test; `null` hides a route on purpose.
 */
export const OPERATIONS: Readonly<Record<string, OperationDoc | null>> = {
  'POST /api/v1/experiments': {
    operationId: 'createExperiment',
    tag: 'experiments',
    summary: 'Create an experiment (state pending)',
    description: `With an \`Idempotency-Key\` the id derives from it, so a retry lands on the same experiment. ${COMMAND_DESCRIPTION}`,
    success: [commandSuccess(201, 'Created, state `pending`.', ['ETag', 'Location'])],
    errors: COMMAND_ERRORS.filter((s) => s !== 404),
  },
  'POST /api/v1/experiments/{id}/start': {
    operationId: 'startExperiment',
    tag: 'experiments',
    summary: 'Start an experiment',
    description: `The body is optional (an empty object at most). ${COMMAND_DESCRIPTION}`,
    success: [commandSuccess(202, 'Accepted, state `initializing`; the sagas drive the rest.', ['ETag'])],
    errors: COMMAND_ERRORS,
    optionalBody: true,
  },
  'POST /api/v1/experiments/{id}/cancel': {
    operationId: 'cancelExperiment',
    tag: 'experiments',
    summary: 'Cancel an experiment',
    description: `The body, \`{ "reason": "…" }\`, is optional. ${COMMAND_DESCRIPTION}`,
    success: [commandSuccess(202, 'Accepted, state `cancelled`.', ['ETag'])],
    errors: COMMAND_ERRORS,
    optionalBody: true,
  },
  'POST /api/v1/experiments/{id}/promote': {
    operationId: 'promoteExperiment',
    tag: 'experiments',
    summary: 'Promote a passing candidate through Git',
    description: `Only a \`completed\` experiment whose verdict is \`pass\`, one promotion at a time (409 otherwise, and while \`PHOENIX_GITOPS_REPO\` is unset). The candidate's Kubernetes objects, collector config and evidence are committed to the GitOps repository, then rolled out over the whole target; each step is an event (\`promotion\` on the experiment). The body is optional (an empty object at most). ${COMMAND_DESCRIPTION}`,
    success: [commandSuccess(202, 'Accepted, state `completed`; the saga commits and rolls out.', ['ETag'])],
    errors: COMMAND_ERRORS,
    optionalBody: true,
  },
  'POST /api/v1/experiments/{id}/rollback': {
    operationId: 'rollbackExperiment',
    tag: 'experiments',
    summary: 'Roll a promotion back',
    description: `Reverts the promotion's commit (pushed) and rolls the baseline out over the target again. Only a committed or rolled-out promotion (or a failed rollback); 409 otherwise. The body, \`{ "reason": "…" }\`, is optional. ${COMMAND_DESCRIPTION}`,
    success: [commandSuccess(202, 'Accepted, state `completed`; the saga reverts and rolls back.', ['ETag'])],
    errors: COMMAND_ERRORS,
    optionalBody: true,
  },
  'POST /api/v1/experiments/{id}/rejudge': {
    operationId: 'rejudgeExperiment',
    tag: 'experiments',
    summary: 'Judge a finished experiment again under other success criteria',
    description:
      'Body `{ "successCriteria": { … } }`: each criterion given replaces the experiment’s own, the rest stay. ' +
      'Nothing is measured again: the stored evidence (per-host means, figures, collector health, query ' +
      'results) is judged anew and the result appended to the experiment’s `rejudgements`; its `analysis` ' +
      'stays the verdict. 409 unless the experiment is `completed` or `failed` with a stored analysis that ' +
      `kept its evidence. ${COMMAND_DESCRIPTION}`,
    success: [
      commandSuccess(202, 'Accepted: an `AnalysisRejudged` event; the state does not change.', ['ETag']),
    ],
    errors: COMMAND_ERRORS,
  },
  'GET /api/v1/experiments': {
    operationId: 'listExperiments',
    tag: 'experiments',
    summary: 'List experiments, newest first',
    description: `Pages with \`limit\` and the \`nextCursor\` of the previous page.${MIN_POSITION}`,
    success: [
      {
        status: 200,
        description: 'A page of experiments.',
        content: { 'application/json': 'ExperimentPage' },
      },
    ],
    errors: [400, 401, 429, 500, 503],
  },
  'GET /api/v1/experiments/{id}': {
    operationId: 'getExperiment',
    tag: 'experiments',
    summary: 'One experiment',
    description: `From the read models.${MIN_POSITION}`,
    success: [
      {
        status: 200,
        description: 'The experiment.',
        content: { 'application/json': 'Experiment' },
        headers: ['ETag'],
      },
    ],
    errors: READ_BY_ID_ERRORS,
  },
  'GET /api/v1/experiments/{id}/history': {
    operationId: 'getExperimentHistory',
    tag: 'experiments',
    summary: 'State transitions in order',
    description: `From the read models.${MIN_POSITION}`,
    success: [{ status: 200, description: 'The transitions.', content: { 'application/json': 'History' } }],
    errors: READ_BY_ID_ERRORS,
  },
  'GET /api/v1/experiments/{id}/events': {
    operationId: 'listExperimentEvents',
    tag: 'experiments',
    summary: 'Raw events from the event store',
    description:
      'Read from the event store itself, so always current; `minPosition` is accepted and has nothing to wait for.',
    success: [
      {
        status: 200,
        description: 'The events from `fromVersion` on.',
        content: { 'application/json': 'EventPage' },
      },
    ],
    errors: READ_BY_ID_ERRORS,
  },
  'GET /api/v1/experiments/{id}/state': {
    operationId: 'getExperimentState',
    tag: 'experiments',
    summary: 'The aggregate folded up to a version or a time',
    description:
      'Give `version` or `at` (not both); neither folds every event. 404 also when there is no such version, or the experiment did not exist at `at`.',
    success: [
      { status: 200, description: 'The folded state.', content: { 'application/json': 'ExperimentState' } },
    ],
    errors: READ_BY_ID_ERRORS,
  },
  'GET /api/v1/experiments/{id}/config/{variant}': {
    operationId: 'getVariantConfig',
    tag: 'experiments',
    summary: 'The rendered OpenTelemetry Collector config of a variant',
    description: 'A 409 when the stored spec no longer renders.',
    success: [
      {
        status: 200,
        description: 'The collector config.',
        content: { 'text/yaml': { type: 'string' } },
      },
    ],
    errors: [400, 401, 404, 409, 429, 500, 503],
  },
  'POST /api/v1/experiments/preview': {
    operationId: 'previewExperimentSpec',
    tag: 'experiments',
    summary: 'Preview an experiment before creating it',
    description:
      'The body is a create body, validated as a create is. One sample of the fleet (at most 50 hosts, the first of the target, ' +
      'scaled up) runs through both rendered pipelines on the local emulator; nothing is written. With the `Idempotency-Key` the ' +
      'create will use, the sample is the fleet the run will get. 503 when every preview slot is taken.',
    success: [{ status: 200, description: 'The estimate.', content: { 'application/json': 'Preview' } }],
    errors: [400, 401, 403, 413, 415, 429, 500, 503],
  },
  'GET /api/v1/experiments/{id}/preview': {
    operationId: 'previewExperiment',
    tag: 'experiments',
    summary: 'Preview a created experiment on the fleet its run gets',
    description:
      'As `POST /api/v1/experiments/preview`, for the stored spec. 503 when every preview slot is taken.',
    success: [{ status: 200, description: 'The estimate.', content: { 'application/json': 'Preview' } }],
    errors: [400, 401, 404, 429, 500, 503],
  },
  'GET /api/v1/pricing-profiles': {
    operationId: 'listPricingProfiles',
    tag: 'pricing',
    summary: 'The pricing profiles analyses are priced with',
    description:
      'The built-in profiles (public list prices, with their sources) and those of `PHOENIX_PRICING_FILE`. `spec.pricingProfile` names one; `default` otherwise.',
    success: [
      { status: 200, description: 'Every profile.', content: { 'application/json': 'PricingProfiles' } },
    ],
    errors: [401, 429, 500],
  },
  'GET /api/v1/templates': {
    operationId: 'listTemplates',
    tag: 'templates',
    summary: 'Pipeline templates and their parameters',
    success: [{ status: 200, description: 'Every template.', content: { 'application/json': 'Templates' } }],
    errors: [401, 429, 500],
  },
  'POST /api/v1/templates/{name}/render': {
    operationId: 'renderTemplate',
    tag: 'templates',
    summary: 'Render a template to a collector config',
    description:
      'The config a variant with this template and these params would run, before any experiment exists ' +
      "(the dashboard previews both variants with it). `criticalProcesses` are the experiment's patterns " +
      "(RE2), kept by every template; `variant` names the config's variant (default `candidate`). A bad " +
      'param is a 400 whose `errors[].path` names it (`body.params.k`), as creating an experiment answers it.',
    success: [
      {
        status: 200,
        description: 'The collector config.',
        content: { 'text/yaml': { type: 'string' } },
      },
    ],
    errors: [400, 401, 413, 415, 429, 500],
    optionalBody: true,
  },
  'GET /api/v1/audit': {
    operationId: 'queryAudit',
    tag: 'audit',
    summary: 'The audit trail of state transitions (admin)',
    description:
      `Oldest first. \`Accept: text/csv\` gives CSV: the requested page when \`limit\` or \`cursor\` is given ` +
      `(its next cursor in \`X-Next-Cursor\`), otherwise every matching row, streamed.${MIN_POSITION}`,
    success: [
      {
        status: 200,
        description: 'A page of audit entries, or CSV.',
        content: {
          'application/json': 'AuditPage',
          'text/csv': {
            type: 'string',
            description:
              'Header row experimentId,experimentName,from,to,actor,reason,at,durationMs,correlationId, then one row per entry.',
          },
        },
        headers: ['Content-Disposition', 'X-Next-Cursor'],
      },
    ],
    errors: [400, 401, 403, 429, 500, 503],
  },
  'GET /api/v1/live': {
    operationId: 'liveFeed',
    tag: 'live',
    summary: 'The event log, live, over WebSocket',
    description: [
      'Upgrade to WebSocket (`Connection: Upgrade`, `Upgrade: websocket`). The token goes in the',
      '`Authorization` header or, for browsers, the `access_token` query parameter; a bad token is refused at',
      'the upgrade with 401, a bad query (such as a `from` this store could not have issued) with 400.',
      '',
      'Each text frame is one JSON message (schema `LiveMessage`):',
      '- `{ "kind": "event", "position", "experimentId", "version", "type", "data", "metadata" }`: in global',
      '  order, each event once per connection; with `from`, the first is the one right after that position.',
      '- `{ "kind": "live", "position" }`: sent once, when the backlog is delivered and the feed is live.',
      '',
      'Without `from` the feed starts at the current head of the log; `from=0` replays from the first event.',
      '',
      'Close codes:',
      `- \`${CLOSE_TOO_SLOW}\`: the consumer fell too far behind; reconnect with \`from\` = the last position seen.`,
      '- `4401`: the token expired; reconnect with a fresh token and `from`.',
      '- `1001`: the server is shutting down; reconnect later with `from`.',
      '- `1011`: the feed failed; reconnect with `from`.',
    ].join('\n'),
    success: [{ status: 101, description: 'Switching to the WebSocket protocol; messages as described.' }],
    errors: [400, 401, 429],
    messages: 'LiveMessage',
  },
  'GET /healthz': {
    operationId: 'health',
    tag: 'operations',
    summary: 'The process is alive',
    success: [{ status: 200, description: 'Alive.', content: { 'application/json': 'Health' } }],
    errors: [],
  },
  'GET /readyz': {
    operationId: 'readiness',
    tag: 'operations',
    summary: 'Backing services reachable and read models caught up',
    success: [
      {
        status: 200,
        description: 'Ready; `checks` names each check.',
        content: { 'application/json': 'Readiness' },
      },
    ],
    errors: [],
  },
  // The dashboard (dashboard.ts): its page and files, not part of the API.
  'GET /': null,
  'GET /*': null,
  'GET /metrics': {
    operationId: 'metrics',
    tag: 'operations',
    summary: 'Prometheus metrics',
    success: [
      {
        status: 200,
        description: 'Prometheus text exposition format.',
        content: { 'text/plain': { type: 'string' } },
      },
    ],
    errors: [],
  },
};

/** /readyz's not-ready answer is not a problem: it is the readiness body with status 503. */
const EXTRA_RESPONSES: Readonly<Record<string, Record<string, unknown>>> = {
  'GET /readyz': {
    '503': {
      description: 'Not ready; `checks` says which check failed.',
      headers: { 'Retry-After': { $ref: '#/components/headers/Retry-After' } },
      content: { 'application/json': { schema: { $ref: '#/components/schemas/Readiness' } } },
    },
  },
};

/** `/api/v1/experiments/:id` → `/api/v1/experiments/{id}`. */
export const openapiPath = (url: string): string => url.replace(/:(\w+)/g, '{$1}');
export const operationKey = (method: string, url: string): string =>
  `${method.toUpperCase()} ${openapiPath(url)}`;

// ---------------------------------------------------------------------------------------------
// Applying it

/** Per route: the zod-derived parameters and body, plus the operation's identity, tag, role and security. */
const transform: SwaggerTransform = (input) => {
  const methods = ([] as string[]).concat(input.route.method);
  // fastify-static's catch-all arrives as `/{*}`, its HEAD twin registered by hand (not by fastify's
  // exposeHeadRoutes, which swagger leaves out): both are the GET /* entry's.
  const url = input.url.replace(/\{\*\}$/, '*');
  const method = methods[0] === 'HEAD' ? 'GET' : (methods[0] ?? 'GET');
  const entry = OPERATIONS[operationKey(method, url)];
  if (entry === null || (entry === undefined && input.url.startsWith(DOCS_PREFIX))) {
    return { schema: { hide: true }, url: input.url };
  }
  // A route missing from OPERATIONS is shown anyway (even when hidden), so the test finds it.
  const base = jsonSchemaTransform({
    ...input,
    schema: { ...input.schema, hide: false },
  } as Parameters<typeof jsonSchemaTransform>[0]);
  const role = input.route.config?.role as Role | undefined;
  const schema: Record<string, unknown> = { ...(base.schema as Record<string, unknown>) };
  delete schema.hide;
  if (role) {
    schema['x-required-role'] = role;
    schema.security = input.route.config?.queryToken
      ? [{ bearer: [] }, { accessToken: [] }]
      : [{ bearer: [] }];
  } else {
    schema.security = [];
  }
  if (entry) {
    schema.operationId = entry.operationId;
    schema.tags = [entry.tag];
    schema.summary = entry.summary;
    if (entry.description) schema.description = entry.description;
  }
  return { schema, url: input.url };
};

type Json = Record<string, unknown>;
const ref = (kind: 'schemas' | 'responses' | 'headers', name: string) => ({
  $ref: `#/components/${kind}/${name}`,
});

const media = (content: Success['content']) =>
  content
    ? Object.fromEntries(
        Object.entries(content).map(([type, schema]) => [
          type,
          { schema: typeof schema === 'string' ? ref('schemas', schema) : schema },
        ]),
      )
    : undefined;

const headerRefs = (names: readonly HeaderName[] | undefined) =>
  names && names.length > 0 ? Object.fromEntries(names.map((n) => [n, ref('headers', n)])) : undefined;

/** OpenAPI 3.0 schema objects: zod's output, without `$id`, and open to members added later. */
function componentSchemas(): Json {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(RESPONSE_SCHEMAS)) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, {
    target: 'openapi-3.0',
    io: 'output',
    unrepresentable: 'any',
    uri: (id) => `#/components/schemas/${id}`,
  });
  const open = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(open);
    if (!node || typeof node !== 'object') return node;
    const out: Json = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === '$id' || (k === 'additionalProperties' && v === false)) continue;
      out[k] = open(v);
    }
    return out;
  };
  return open(schemas) as Json;
}

const PARAMETER_DESCRIPTIONS: Readonly<Record<string, string>> = {
  'header idempotency-key':
    'Makes the command safe to retry: the same key and body return the first answer and write nothing (kept 24 h).',
  'header if-match':
    'Run only if the experiment is at this version, `"<version>"` as the ETag gave it (else 412).',
  'query minPosition':
    'Wait (up to 5 s) until the read models have applied this position, as a command answered it (else 503).',
  'query cursor': 'The `nextCursor` of the previous page.',
  'query from':
    'Resume after this position; `0` replays from the first event; absent: from the current head.',
  'query experimentId': 'Only this experiment.',
  'path id': 'The experiment id.',
};

/** The whole document: responses per operation, components, tags, servers, info. */
const transformObject: SwaggerTransformObject = (documentObject) => {
  const document = (documentObject as { openapiObject: Json }).openapiObject;
  const paths = (document.paths ?? {}) as Record<string, Record<string, Json>>;
  const usedErrors = new Set<ErrorStatus>();
  for (const [path, operations] of Object.entries(paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const key = operationKey(method, path);
      const entry = OPERATIONS[key];
      for (const parameter of (operation.parameters ?? []) as Json[]) {
        const description = PARAMETER_DESCRIPTIONS[`${parameter.in} ${parameter.name}`];
        if (description && !parameter.description) parameter.description = description;
      }
      if (!entry) continue;
      const responses: Json = {};
      for (const s of entry.success) {
        const content = media(s.content);
        const headers = headerRefs(s.headers);
        responses[String(s.status)] = {
          description: s.description,
          ...(headers ? { headers } : {}),
          ...(content ? { content } : {}),
        };
      }
      for (const e of entry.errors) {
        usedErrors.add(e);
        responses[String(e)] = ref('responses', ERRORS[e].name);
      }
      Object.assign(responses, EXTRA_RESPONSES[key]);
      operation.responses = responses;
      if (entry.optionalBody && operation.requestBody) (operation.requestBody as Json).required = false;
      if (entry.messages) operation['x-websocket-messages'] = ref('schemas', entry.messages);
    }
  }
  const errorResponses = Object.fromEntries(
    [...usedErrors].sort().map((e) => [
      ERRORS[e].name,
      {
        description: ERRORS[e].description,
        ...(ERRORS[e].headers ? { headers: headerRefs(ERRORS[e].headers) } : {}),
        content: { 'application/problem+json': { schema: ref('schemas', 'Problem') } },
      },
    ]),
  );
  const components = (document.components ?? {}) as Json;
  return {
    ...document,
    components: {
      ...components,
      schemas: { ...(components.schemas as Json), ...componentSchemas() },
      responses: errorResponses,
      headers: HEADERS,
    },
  } as unknown as ReturnType<SwaggerTransformObject>;
};

/** The options of `app.register(swagger, …)`. */
export const swaggerOptions: FastifyDynamicSwaggerOptions = {
  openapi: {
    openapi: '3.0.3',
    info: {
      title: 'Phoenix control plane',
      version: '1.0.0',
      description: `Telemetry-cost A/B experiments: create an experiment, start it, follow it to its verdict.\n\n## Authentication\n\n${TOKEN_HELP}\n\n## Errors\n\nEvery error is \`application/problem+json\` (RFC 9457). Commands carry \`ETag\`, accept \`If-Match\` and \`Idempotency-Key\`; reads accept \`minPosition\` to read their own writes.`,
      license: { name: 'Apache-2.0', url: 'https://www.apache.org/licenses/LICENSE-2.0' },
    },
    servers: [
      {
        url: '{scheme}://{host}',
        description: 'A Phoenix server; `npm start` serves on http://127.0.0.1:8080.',
        variables: {
          scheme: { default: 'http', enum: ['http', 'https'] },
          host: { default: '127.0.0.1:8080', description: 'host:port of the server' },
        },
      },
    ],
    tags: Object.entries(TAGS).map(([name, description]) => ({ name, description })),
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: TOKEN_HELP },
        accessToken: {
          type: 'apiKey',
          in: 'query',
          name: 'access_token',
          description: `The same JWT as a query parameter, for browsers opening the live feed. ${TOKEN_HELP}`,
        },
      },
    },
    security: [{ bearer: [] }],
  },
  transform,
  transformObject,
};

/** The options of `app.register(swaggerUi, …)`. */
export const swaggerUiOptions: FastifySwaggerUiOptions = {
  routePrefix: DOCS_PREFIX,
  uiConfig: { persistAuthorization: true, displayOperationId: true },
};

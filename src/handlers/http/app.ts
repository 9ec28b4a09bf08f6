import { randomUUID } from 'node:crypto';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import websocket from '@fastify/websocket';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  isResponseSerializationError,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import {
  DomainError,
  ExperimentAlreadyExistsError,
  ExperimentNotFoundError,
  InvalidTransitionError,
  RunNotFinishedError,
} from '../../domain/experiment.js';
import { AuthenticationError, type Principal, type Role, roleAtLeast, type TokenService } from '../auth.js';
import { ConcurrencyConflictError, VersionMismatchError } from '../experiment-commands.js';
import type { Metrics } from '../metrics.js';
import { CorruptEventError, isUnreachableError, WrongExpectedVersionError } from '../ports/event-store.js';
import { InvalidCursorError } from '../ports/read-models.js';
import { swaggerOptions, swaggerUiOptions } from './openapi.js';
import { HttpProblem, type Problem, problemType, titleOf } from './problem.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
  interface FastifyContextConfig {
    /** The least role that may call the route; undefined: no authentication. */
    role?: Role;
    /** Also take the token from the `access_token` query parameter (browsers cannot set headers on WebSockets). */
    queryToken?: boolean;
  }
}

export type App = FastifyInstance;
export type TypedApp = FastifyInstance<
  FastifyInstance['server'],
  FastifyInstance['server'] extends never ? never : import('node:http').IncomingMessage,
  import('node:http').ServerResponse,
  Logger,
  ZodTypeProvider
>;

export interface AppDependencies {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly tokens: TokenService;
  /** Named checks that /readyz runs; each throws when its service is not ready. */
  readonly readiness: Readonly<Record<string, () => Promise<void>>>;
  /** Requests per minute per token (or per address without one). */
  readonly rateLimitPerMinute?: number;
  /** Registers the API's routes; called inside the app with its plugins in place. */
  readonly routes?: ReadonlyArray<(app: TypedApp) => Promise<void> | void>;
}

export const BODY_LIMIT = 1024 * 1024;

/** Builds the HTTP app without listening: tests drive it with `inject`, the server calls `listen`. */
export async function buildApp(deps: AppDependencies): Promise<App> {
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: BODY_LIMIT,
    requestIdHeader: 'x-request-id',
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
    },
    // Long path parameters reach the schemas, which refuse them with a 400 like any other bad id.
    routerOptions: { maxParamLength: 4096 },
    // Errors the router raises before any route runs (a malformed URL…) are problems too.
    frameworkErrors: (error, _request, reply) => {
      const problem: Problem = {
        type: problemType('bad-request'),
        title: titleOf(400),
        status: 400,
        detail: error.message,
      };
      void (reply as FastifyReply).code(400).type('application/problem+json').send(problem);
    },
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.addHook('onSend', async (request, reply, payload) => {
    reply.header('x-request-id', request.id);
    return payload;
  });

  // A refused WebSocket upgrade keeps a raw socket that no HTTP parser owns any more: end it, or it
  // lingers half-open and holds the server's shutdown.
  app.addHook('onResponse', async (request, reply) => {
    if (!request.headers.upgrade || reply.statusCode === 101) return;
    const socket = request.raw.socket;
    if (!socket || socket.destroyed) return;
    socket.end();
    setTimeout(() => socket.destroy(), 1000).unref();
  });

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    deps.metrics.commandDuration
      .labels(route, request.method, String(reply.statusCode))
      .observe(reply.elapsedTime / 1000);
  });

  // Authentication: every route that names a role needs a valid bearer token of that role or above.
  app.addHook('onRequest', async (request) => {
    const role = request.routeOptions.config.role;
    if (!role) return;
    const token =
      bearerToken(request) ??
      (request.routeOptions.config.queryToken
        ? (request.query as { access_token?: unknown }).access_token
        : undefined);
    if (typeof token !== 'string' || !token) {
      throw new HttpProblem(401, 'unauthenticated', 'a bearer token is required', {
        headers: wwwAuthenticate,
      });
    }
    try {
      request.principal = await deps.tokens.verify(token);
    } catch (err) {
      const detail = err instanceof AuthenticationError ? err.message : 'invalid token';
      throw new HttpProblem(401, 'unauthenticated', detail, { headers: wwwAuthenticate });
    }
    if (!roleAtLeast(request.principal.role, role)) {
      throw new HttpProblem(
        403,
        'forbidden',
        `this needs the ${role} role; the token has ${request.principal.role}`,
      );
    }
  });

  await app.register(rateLimit, {
    global: true,
    hook: 'preHandler',
    max: deps.rateLimitPerMinute ?? 6000,
    timeWindow: 60_000,
    keyGenerator: (request) => (request.principal ? `sub:${request.principal.sub}` : `ip:${request.ip}`),
    allowList: (request) => !request.routeOptions.config.role,
    errorResponseBuilder: (_request, context) =>
      new HttpProblem(
        429,
        'rate-limited',
        `rate limit of ${context.max} requests per minute exceeded; retry in ${Math.ceil(context.ttl / 1000)} s`,
        {
          headers: { 'retry-after': String(Math.ceil(context.ttl / 1000)) },
        },
      ),
  });

  await app.register(swagger, swaggerOptions);
  await app.register(swaggerUi, swaggerUiOptions);
  await app.register(websocket, {
    options: { maxPayload: 64 * 1024 },
    // On shutdown every feed client gets a close frame saying so (1001), not a dropped connection.
    preClose(done) {
      const clients = [...app.websocketServer.clients];
      if (clients.length === 0) return done();
      let open = clients.length;
      const closed = () => {
        if (--open === 0) {
          clearTimeout(deadline);
          done();
        }
      };
      // A client that does not answer the close handshake in time is cut off: shutdown is bounded.
      const deadline = setTimeout(() => {
        for (const client of clients) client.terminate();
      }, 2000);
      for (const client of clients) {
        client.once('close', closed);
        client.close(1001, 'server shutting down');
      }
    },
  });

  app.setErrorHandler((error: FastifyError, request, reply) => sendError(error, request, reply, deps.logger));
  app.setNotFoundHandler((request, reply) => {
    void sendProblem(
      reply,
      new HttpProblem(
        404,
        'not-found',
        `no route ${request.method} ${request.url.split('?')[0]}`,
      ).toProblem(),
    );
  });

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
    const results = await Promise.all(
      Object.entries(deps.readiness).map(async ([name, check]) => {
        try {
          await check();
          return [name, { ok: true }] as const;
        } catch (err) {
          return [name, { ok: false, error: err instanceof Error ? err.message : String(err) }] as const;
        }
      }),
    );
    const checks = Object.fromEntries(results);
    const ready = results.every(([, r]) => r.ok);
    if (!ready) reply.code(503).header('retry-after', '5');
    return { status: ready ? 'ready' : 'not ready', checks };
  });
  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
    reply.type(deps.metrics.registry.contentType);
    return deps.metrics.registry.metrics();
  });

  for (const register of deps.routes ?? [])
    await app.register(async (scope) => register(scope as unknown as TypedApp));
  return app as unknown as App;
}

const wwwAuthenticate = { 'www-authenticate': 'Bearer realm="phoenix"' };

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
    return m?.[1];
  }
  return undefined;
}

function sendProblem(
  reply: FastifyReply,
  problem: Problem,
  headers: Record<string, string> = {},
): FastifyReply {
  return reply.code(problem.status).headers(headers).type('application/problem+json').send(problem);
}

/** The one place where errors become HTTP: domain and port errors map to their statuses, the rest to 500. */
function sendError(
  error: FastifyError | Error,
  request: FastifyRequest,
  reply: FastifyReply,
  logger: Logger,
): FastifyReply {
  if (request.headers.upgrade) reply.header('connection', 'close');
  if (error instanceof HttpProblem)
    return sendProblem(reply, error.toProblem(), (error.extra.headers ?? {}) as Record<string, string>);

  if (hasZodFastifySchemaValidationErrors(error)) {
    const where = (error as { validationContext?: string }).validationContext ?? 'request';
    const errors = error.validation.map((v) => ({
      path: [
        where,
        ...String(v.instancePath ?? '')
          .split('/')
          .filter(Boolean),
      ].join('.'),
      message: v.message ?? 'invalid',
    }));
    return sendProblem(reply, {
      type: problemType('validation'),
      title: titleOf(400),
      status: 400,
      detail: `the ${where} is invalid`,
      errors,
    });
  }
  if (isResponseSerializationError(error)) {
    logger.error({ err: error, requestId: request.id }, 'response failed its schema');
    return sendProblem(reply, internalProblem(request));
  }

  const mapped = mapKnownError(error);
  if (mapped) return sendProblem(reply, mapped.problem, mapped.headers);

  const status = (error as FastifyError).statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const code = (error as FastifyError).code ?? '';
    const slug =
      code === 'FST_ERR_CTP_BODY_TOO_LARGE'
        ? 'body-too-large'
        : code.startsWith('FST_ERR_CTP')
          ? 'bad-body'
          : 'bad-request';
    return sendProblem(reply, {
      type: problemType(slug),
      title: titleOf(status),
      status,
      detail: error.message,
    });
  }
  logger.error({ err: error, requestId: request.id }, 'unhandled error');
  return sendProblem(reply, internalProblem(request));
}

const internalProblem = (request: FastifyRequest): Problem => ({
  type: problemType('internal'),
  title: titleOf(500),
  status: 500,
  detail: `an internal error occurred; quote request id ${request.id}`,
});

export function mapKnownError(
  error: unknown,
): { problem: Problem; headers?: Record<string, string> } | undefined {
  const p = (status: number, slug: string, detail: string, extra: Record<string, unknown> = {}): Problem => ({
    type: problemType(slug),
    title: titleOf(status),
    status,
    detail,
    ...extra,
  });
  if (error instanceof ExperimentNotFoundError)
    return { problem: p(404, 'experiment-not-found', 'unknown experiment') };
  if (error instanceof InvalidTransitionError) {
    return {
      problem: p(409, 'invalid-transition', error.message, {
        currentState: error.actual,
        allowedIn: error.expected,
      }),
    };
  }
  if (error instanceof ExperimentAlreadyExistsError || error instanceof RunNotFinishedError) {
    return { problem: p(409, 'conflict', error.message) };
  }
  if (error instanceof DomainError) return { problem: p(409, 'conflict', error.message) };
  if (error instanceof VersionMismatchError) {
    return { problem: p(412, 'version-mismatch', error.message, { currentVersion: error.actual }) };
  }
  if (error instanceof ConcurrencyConflictError || error instanceof WrongExpectedVersionError) {
    return {
      problem: p(409, 'concurrent-change', 'a concurrent change to this experiment won; reload and retry'),
    };
  }
  if (error instanceof InvalidCursorError) {
    return {
      problem: p(400, 'validation', error.message, {
        errors: [{ path: 'query.cursor', message: error.message }],
      }),
    };
  }
  if (isUnreachableError(error)) {
    return {
      problem: p(503, 'unavailable', 'a backing service is unavailable; nothing was written'),
      headers: { 'retry-after': '5' },
    };
  }
  if (error instanceof CorruptEventError) return undefined; // a 500: it is ours, not the user's
  return undefined;
}

import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import cors from '@fastify/cors';
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
import { IdempotencyKeyReusedError } from '../../application/command-service.js';
import { ConcurrencyConflictError, VersionMismatchError } from '../../application/experiment-commands.js';
import {
  CorruptEventError,
  StoreUnavailableError,
  UnstorableEventError,
  WrongExpectedVersionError,
} from '../../application/ports/event-store.js';
import { InvalidCursorError } from '../../application/ports/read-models.js';
import {
  DomainError,
  ExperimentAlreadyExistsError,
  ExperimentNotFoundError,
  InvalidTransitionError,
  RunNotFinishedError,
} from '../../domain/experiment.js';
import { AuthenticationError, type Principal, type Role, roleAtLeast, type TokenService } from '../auth.js';
import type { Metrics } from '../metrics.js';
import { type DashboardOptions, registerDashboard } from './dashboard.js';
import { swaggerOptions, swaggerUiOptions } from './openapi.js';
import { HttpProblem, type Problem, problemType, titleOf } from './problem.js';
import type { App, TypedApp } from './typed-app.js';

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

export interface AppDependencies {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly tokens: TokenService;
  /** Named checks that /readyz runs; each throws when its service is not ready. */
  readonly readiness: Readonly<Record<string, () => Promise<void>>>;
  /** Requests per minute per token's subject (per client address for requests without a valid token). */
  readonly rateLimitPerMinute?: number;
  /** Browser origins allowed to call the API (CORS); none: only pages of the API's own origin. */
  readonly corsOrigins?: readonly string[];
  /** Serves the dashboard (ui/, built) at `/`; none: the server has no pages but the API docs. */
  readonly dashboard?: DashboardOptions;
  /** Registers the API's routes; called inside the app with its plugins in place. */
  readonly routes?: ReadonlyArray<(app: TypedApp) => Promise<void> | void>;
}

export const BODY_LIMIT = 1024 * 1024;

/** Builds the HTTP app without listening: tests drive it with `inject`, the server calls `listen`. */
export async function buildApp(deps: AppDependencies): Promise<App> {
  // The live feed's `access_token`, taken out of the URL before anything sees it (router, logs, error
  // messages): a request's URL is logged, and a token in a log is a token anyone with the log can use.
  const queryTokens = new WeakMap<IncomingMessage, string[]>();
  const routes = new RouteTable();
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
    rewriteUrl: (req) => {
      const url = req.url ?? '/';
      const { rest, tokens } = takeAccessTokens(url);
      if (tokens.length === 0) return url;
      queryTokens.set(req, tokens);
      // Fastify keeps the URL as received too (`originalUrl`): that copy must not hold the token either.
      (req as IncomingMessage & { originalUrl?: string }).originalUrl = rest;
      return rest;
    },
    // Errors the router raises before any route runs (a malformed URL…) are problems too.
    frameworkErrors: (error, request, reply) => {
      void sendError(
        new HttpProblem(400, 'bad-request', error.message),
        request as FastifyRequest,
        reply as FastifyReply,
        deps.logger,
      );
    },
    // Errors Node's HTTP parser raises before there is a request (headers too large, a request not
    // received in time, bytes that are not HTTP): problem+json too, written to the socket directly.
    clientErrorHandler: (error, socket) => {
      if (error.code === 'ECONNRESET' || socket.destroyed) return;
      const status =
        error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      // Not the error itself: its `rawPacket` holds the request's bytes, and a token among them.
      deps.logger.debug({ code: error.code, status }, 'client error before a request was read');
      if (socket.writable) socket.write(rawProblemResponse(clientErrorProblem(status)));
      socket.destroy();
    },
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.addHook('onRoute', (route) => routes.add(route.url, route.method));

  app.addHook('onSend', async (request, reply, payload) => {
    reply.header('x-request-id', request.id);
    for (const [name, value] of Object.entries(safetyHeaders(request.url))) reply.header(name, value);
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

  // CORS before authentication, so that a browser may read the 401 of an allowed origin too. An origin
  // not on the list gets no CORS headers at all: its preflight falls through to the OPTIONS answer
  // below (the route's Allow), and the browser refuses the call.
  const allowedOrigins = new Set(deps.corsOrigins ?? []);
  await app.register(cors, {
    origin: (origin, callback) => callback(null, origin !== undefined && allowedOrigins.has(origin)),
    methods: ['GET', 'HEAD', 'POST'],
    allowedHeaders: ['authorization', 'content-type', 'if-match', 'idempotency-key', 'x-request-id'],
    exposedHeaders: [
      'etag',
      'location',
      'retry-after',
      'x-request-id',
      'x-ratelimit-limit',
      'x-ratelimit-remaining',
      'x-ratelimit-reset',
    ],
    credentials: false, // bearer tokens, no cookies
    maxAge: 600,
    strictPreflight: false,
  });

  // Not global: the limit runs inside authentication (below), keyed by what authentication found.
  await app.register(rateLimit, {
    global: false,
    max: deps.rateLimitPerMinute ?? 6000,
    timeWindow: 60_000,
    keyGenerator: (request) => (request.principal ? `sub:${request.principal.sub}` : `ip:${request.ip}`),
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
  // The plugin's hook, called from authentication below; it does not use `this`.
  const limit = app.rateLimit() as unknown as (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

  // Authentication: every route that names a role needs a valid bearer token of that role or above.
  // The rate limit counts every such request, by the token's subject or, without a valid token, by the
  // client's address: a flood of bad tokens is refused with 429 like any other flood.
  app.addHook('onRequest', async (request, reply) => {
    const role = request.routeOptions.config.role;
    if (!role) return;
    let refusal: HttpProblem | undefined;
    const bearer = bearerToken(request);
    const fromQuery = request.routeOptions.config.queryToken ? queryTokens.get(request.raw) : undefined;
    const token = bearer ?? fromQuery?.[0];
    if (!token) {
      refusal = new HttpProblem(401, 'unauthenticated', 'a bearer token is required', {
        headers: wwwAuthenticate,
      });
    } else if (!bearer && fromQuery && fromQuery.length > 1) {
      refusal = new HttpProblem(401, 'unauthenticated', 'access_token may be given once', {
        headers: wwwAuthenticate,
      });
    } else {
      try {
        request.principal = await deps.tokens.verify(token);
      } catch (err) {
        const detail = err instanceof AuthenticationError ? err.message : 'invalid token';
        refusal = new HttpProblem(401, 'unauthenticated', detail, { headers: wwwAuthenticate });
      }
    }
    await limit(request, reply);
    if (refusal) throw refusal;
    const principal = request.principal!;
    if (!roleAtLeast(principal.role, role)) {
      throw new HttpProblem(403, 'forbidden', `this needs the ${role} role; the token has ${principal.role}`);
    }
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
  const dashboardPage = deps.dashboard
    ? await registerDashboard(app as unknown as FastifyInstance, deps.dashboard)
    : undefined;
  // No route for this method: 405 with Allow when the path has routes for other methods (an OPTIONS
  // request just gets the Allow), 404 when it has none. A dashboard address gets the dashboard's page.
  app.setNotFoundHandler((request, reply) => {
    const page = dashboardPage?.(request, reply);
    if (page) return page;
    const path = request.url.split('?')[0] ?? '/';
    const allowed = routes.methodsFor(path);
    if (allowed.length === 0) {
      return sendError(
        new HttpProblem(404, 'not-found', `no route ${request.method} ${path}`),
        request,
        reply,
        deps.logger,
      );
    }
    const allow = [...allowed, 'OPTIONS'].sort().join(', ');
    if (request.method === 'OPTIONS') return reply.code(204).header('allow', allow).send();
    return sendError(
      new HttpProblem(
        405,
        'method-not-allowed',
        `${request.method} is not allowed on ${path}; use ${allow}`,
        {
          headers: { allow },
        },
      ),
      request,
      reply,
      deps.logger,
    );
  });

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  // Unauthenticated, so it names the check that failed and a generic reason; what the error said
  // (addresses, database names) goes to the log.
  app.get('/readyz', { schema: { hide: true } }, async (request, reply) => {
    const results = await Promise.all(
      Object.entries(deps.readiness).map(async ([name, check]) => {
        try {
          await check();
          return [name, { ok: true }] as const;
        } catch (err) {
          request.log.warn({ err, check: name }, 'readiness check failed');
          return [
            name,
            { ok: false, error: err instanceof StoreUnavailableError ? 'unreachable' : 'not ready' },
          ] as const;
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

/** Fastify's names for the parts of a request, as a user of the API calls them (in detail and paths). */
const REQUEST_PARTS: Readonly<Record<string, string>> = {
  body: 'body',
  querystring: 'query',
  params: 'path',
  headers: 'headers',
};

/**
 * Headers every answer carries. `nosniff`: a browser takes an answer for the type it says it is (a
 * JSON body with HTML in a string stays JSON). `no-store` on the API and the operational endpoints:
 * their answers are live state, many of them for one caller's token only; a copy kept by a proxy or
 * on a browser's disk would be stale at once and readable by whoever comes next. (The API offers no
 * revalidation, so `no-cache` would buy nothing.) The docs' static files may be cached.
 */
function safetyHeaders(url: string): Readonly<Record<string, string>> {
  const path = url.split('?')[0] ?? '';
  const live = path.startsWith('/api/') || path === '/healthz' || path === '/readyz' || path === '/metrics';
  return live ? API_HEADERS : { 'x-content-type-options': 'nosniff' };
}
const API_HEADERS = { 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' } as const;

/**
 * Splits the `access_token` parameters (decoded, in order) from a request URL, and returns the URL
 * without them, every other byte as it was.
 */
export function takeAccessTokens(url: string): { rest: string; tokens: string[] } {
  const q = url.indexOf('?');
  // Cheap refusal first: nearly no URL holds a token. A key may be percent-encoded (`access%5Ftoken`).
  if (q === -1 || !/access|%/i.test(url.slice(q))) return { rest: url, tokens: [] };
  const tokens: string[] = [];
  const kept = url
    .slice(q + 1)
    .split('&')
    .filter((pair) => {
      const [key, value] = [...new URLSearchParams(pair)][0] ?? [];
      if (key !== 'access_token') return true;
      tokens.push(value ?? '');
      return false;
    });
  return { rest: kept.length > 0 ? `${url.slice(0, q)}?${kept.join('&')}` : url.slice(0, q), tokens };
}

/** The path patterns of the routes, to say which methods a path has when a request's method has none. */
class RouteTable {
  readonly #routes: { readonly segments: readonly string[]; readonly methods: readonly string[] }[] = [];

  add(url: string, method: string | readonly string[]): void {
    if (url === '*' || url === '/*') return; // a catch-all (the CORS preflight route) allows nothing by itself
    this.#routes.push({ segments: url.split('/'), methods: typeof method === 'string' ? [method] : method });
  }

  /** The methods of every route whose pattern matches `path` (`:param` segments, a trailing `*`). */
  methodsFor(path: string): string[] {
    const segments = path.split('/');
    const methods = new Set<string>();
    for (const route of this.#routes) {
      if (matches(route.segments, segments)) for (const m of route.methods) methods.add(m);
    }
    methods.delete('OPTIONS');
    return [...methods].sort();
  }
}

function matches(pattern: readonly string[], path: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    if (p === '*' && i === pattern.length - 1) return true;
    const s = path[i];
    if (s === undefined) return false;
    if (p.includes(':') ? s === '' : p !== s) return false;
  }
  return pattern.length === path.length;
}

const clientErrorProblem = (status: 400 | 408 | 431): Problem => ({
  type: problemType(
    status === 431 ? 'headers-too-large' : status === 408 ? 'request-timeout' : 'bad-request',
  ),
  title: titleOf(status),
  status,
  detail:
    status === 431
      ? 'the request header fields are too large (16 KiB in all at most)'
      : status === 408
        ? 'the request did not arrive in time'
        : 'the request is not valid HTTP/1.1',
});

/** A whole HTTP/1.1 response holding `problem`, for a socket that no request or reply owns. */
function rawProblemResponse(problem: Problem): string {
  const body = JSON.stringify(problem);
  const headers = {
    'content-type': 'application/problem+json; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    connection: 'close',
    ...API_HEADERS,
  };
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  return `HTTP/1.1 ${problem.status} ${problem.title}\r\n${lines.join('\r\n')}\r\n\r\n${body}`;
}

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
    const context = (error as { validationContext?: string }).validationContext ?? '';
    const part = REQUEST_PARTS[context] ?? 'request';
    const errors = error.validation.map((v) => ({
      path: [
        part,
        ...String(v.instancePath ?? '')
          .split('/')
          .filter(Boolean),
      ].join('.'),
      message: v.message ?? 'invalid',
    }));
    const first = errors[0];
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
    return sendProblem(reply, {
      type: problemType('validation'),
      title: titleOf(400),
      status: 400,
      detail: `the ${part} ${part === 'headers' ? 'are' : 'is'} invalid${first ? `: ${first.path}: ${first.message}${more}` : ''}`,
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
  if (error instanceof IdempotencyKeyReusedError)
    return { problem: p(422, 'idempotency-key-reused', error.message) };
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
  // The schemas refuse what the database cannot hold; this is the store's own word on what slipped past.
  if (error instanceof UnstorableEventError) {
    return {
      problem: p(
        400,
        'validation',
        'the request holds a value the event store cannot hold; nothing was written',
        {
          errors: [
            { path: 'body', message: 'holds a value the event store cannot hold (such as a NUL character)' },
          ],
        },
      ),
    };
  }
  if (error instanceof StoreUnavailableError) {
    return {
      problem: p(503, 'unavailable', 'a backing service is unavailable; nothing was written'),
      headers: { 'retry-after': '5' },
    };
  }
  if (error instanceof CorruptEventError) return undefined; // a 500: it is ours, not the user's
  return undefined;
}

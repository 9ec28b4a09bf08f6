import { randomUUID } from 'node:crypto';
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  type Metadata,
  type ServerWritableStream,
  status,
} from '@grpc/grpc-js';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { AuthenticationError, type Principal, type Role, roleAtLeast, type TokenService } from '../auth.js';
import { GrpcRefusal, toStatus } from './errors.js';

/** What every handler gets besides its request: who calls, and the call's own end. */
export interface CallContext {
  readonly principal: Principal;
  /** Aborted when the call ends early: the client cancelled, its deadline passed, the server stops. */
  readonly signal: AbortSignal;
  /** `x-request-id` metadata when given (as HTTP takes it), else a new UUID: carried into the events. */
  readonly correlationId: string;
}

export interface CallDependencies {
  readonly tokens: TokenService;
  readonly logger: Logger;
  /** Counts calls per token subject (per client address without a valid token), as HTTP's limit does. */
  readonly rateLimit?: RateLimit;
  /** Each call's end: its method, status code and duration (phoenix_grpc_request_duration_seconds). */
  readonly observe?: (method: string, code: status, seconds: number) => void;
}

/**
 * A call has ended: observed, and logged as fastify logs an HTTP request (method, code, time, who —
 * never the token).
 */
const ended = (deps: CallDependencies, method: string, code: status, started: number, sub?: string) => {
  const seconds = (performance.now() - started) / 1000;
  deps.observe?.(method, code, seconds);
  deps.logger.info(
    {
      grpc: { method, code: status[code] },
      responseTime: Math.round(seconds * 1000),
      ...(sub ? { sub } : {}),
    },
    'gRPC call completed',
  );
};

/**
 * Calls per minute per key, in fixed one-minute windows: HTTP's PHOENIX_RATE_LIMIT_PER_MINUTE, counted
 * apart from HTTP's. Keys are kept for their window only, at most 100,000 at once.
 */
export class RateLimit {
  readonly #max: number;
  readonly #windows: LRUCache<string, { count: number; resetAt: number }>;

  constructor(perMinute: number) {
    this.#max = perMinute;
    this.#windows = new LRUCache({ max: 100_000, ttl: 60_000 });
  }

  /** Counts a call of `key`; throws RESOURCE_EXHAUSTED (with when to retry) past the limit. */
  take(key: string): void {
    const now = Date.now();
    let window = this.#windows.get(key);
    if (!window || window.resetAt <= now) {
      window = { count: 0, resetAt: now + 60_000 };
      this.#windows.set(key, window);
    }
    window.count++;
    if (window.count > this.#max) {
      const retry = Math.ceil((window.resetAt - now) / 1000);
      throw new GrpcRefusal(
        status.RESOURCE_EXHAUSTED,
        'RATE_LIMITED',
        `rate limit of ${this.#max} calls per minute exceeded; retry in ${retry} s`,
        { retryAfterSeconds: retry },
      );
    }
  }
}

/** `authorization: Bearer <token>`, as HTTP reads the header. */
const bearerOf = (metadata: Metadata): string | undefined => {
  const values = metadata.get('authorization');
  if (values.length !== 1 || typeof values[0] !== 'string') return undefined;
  return /^Bearer\s+(\S+)$/i.exec(values[0].trim())?.[1];
};

/**
 * The caller, verified exactly as HTTP verifies it, and allowed `role` or above. The rate limit counts
 * every call, by the token's subject or, without a valid token, by the client's address: a flood of
 * bad tokens is refused with RESOURCE_EXHAUSTED like any other flood.
 */
async function authenticate(
  deps: CallDependencies,
  metadata: Metadata,
  peer: string,
  role: Role,
): Promise<Principal> {
  const token = bearerOf(metadata);
  let principal: Principal | undefined;
  let refusal: unknown;
  if (!token) refusal = new AuthenticationError('a bearer token is required (authorization: Bearer <token>)');
  else {
    try {
      principal = await deps.tokens.verify(token);
    } catch (err) {
      refusal = err;
    }
  }
  deps.rateLimit?.take(principal ? `sub:${principal.sub}` : `peer:${peer.replace(/:\d+$/, '')}`);
  if (!principal) throw refusal;
  if (!roleAtLeast(principal.role, role)) {
    throw new GrpcRefusal(
      status.PERMISSION_DENIED,
      'FORBIDDEN',
      `this needs the ${role} role; the token has ${principal.role}`,
    );
  }
  return principal;
}

const correlationOf = (metadata: Metadata): string => {
  const given = metadata.get('x-request-id')[0];
  return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
};

/** The status an error ends a call with; an unexpected one is logged, and the client told nothing of it. */
export const statusFor = (deps: CallDependencies, error: unknown, method: string) => {
  const mapped = toStatus(error);
  if (mapped.internal) deps.logger.error({ err: error, method }, 'gRPC call failed');
  const { internal: _internal, ...rest } = mapped;
  return rest;
};

/** A unary method that needs `role`: authenticated, its errors mapped once, aborted with its call. */
export function unary<Req, Res>(
  deps: CallDependencies,
  method: string,
  role: Role,
  handler: (request: Req, context: CallContext) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = performance.now();
    const controller = new AbortController();
    call.once('cancelled', () => controller.abort());
    void (async () => {
      let sub: string | undefined;
      try {
        const principal = await authenticate(deps, call.metadata, call.getPeer(), role);
        sub = principal.sub;
        const response = await handler(call.request, {
          principal,
          signal: controller.signal,
          correlationId: correlationOf(call.metadata),
        });
        callback(null, response);
        ended(deps, method, status.OK, started, sub);
      } catch (err) {
        const refusal = statusFor(deps, err, method);
        callback(refusal);
        ended(deps, method, refusal.code, started, sub);
      }
    })();
  };
}

/** A server-streaming method: as `unary`; the handler writes to the call and resolves when done. */
export function serverStreaming<Req, Res>(
  deps: CallDependencies,
  method: string,
  role: Role,
  handler: (call: ServerWritableStream<Req, Res>, context: CallContext) => Promise<void>,
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    const started = performance.now();
    const controller = new AbortController();
    call.once('cancelled', () => controller.abort());
    void (async () => {
      let sub: string | undefined;
      try {
        const principal = await authenticate(deps, call.metadata, call.getPeer(), role);
        sub = principal.sub;
        await handler(call, {
          principal,
          signal: controller.signal,
          correlationId: correlationOf(call.metadata),
        });
        if (!controller.signal.aborted && !call.writableEnded) call.end();
        ended(deps, method, controller.signal.aborted ? status.CANCELLED : status.OK, started, sub);
      } catch (err) {
        controller.abort();
        const refusal = statusFor(deps, err, method);
        if (!call.writableEnded) call.emit('error', refusal);
        ended(deps, method, refusal.code, started, sub);
      }
    })();
  };
}

import { Metadata, type StatusObject, status } from '@grpc/grpc-js';
import { z } from 'zod';
import { IdempotencyKeyReusedError } from '../../application/command-service.js';
import { ConcurrencyConflictError, VersionMismatchError } from '../../application/experiment-commands.js';
import {
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
} from '../../domain/experiment.js';
import { AuthenticationError } from '../auth.js';
import { Any } from './gen/google/protobuf/any.js';
import { BadRequest, ErrorInfo, RetryInfo } from './gen/google/rpc/error_details.js';
import { Status } from './gen/google/rpc/status.js';

/** The `domain` of every ErrorInfo this service sends. */
export const ERROR_DOMAIN = 'phoenix.v1';

export interface FieldViolation {
  /** The request field, in the proto's names (`spec.target.hosts`). */
  readonly field: string;
  readonly description: string;
}

/**
 * A refusal the gRPC handlers decide themselves (a missing token, a bad field): its code, a reason
 * (ErrorInfo.reason, the REST API's problem type in upper case), and what a client can act on.
 */
export class GrpcRefusal extends Error {
  constructor(
    readonly code: status,
    readonly reason: string,
    message: string,
    readonly extra: {
      readonly violations?: readonly FieldViolation[];
      readonly metadata?: Readonly<Record<string, string>>;
      readonly retryAfterSeconds?: number;
    } = {},
  ) {
    super(message);
  }
}

/** zod issues as field violations, the path in the proto's field names under `prefix`. */
export const violationsOf = (error: z.ZodError, prefix = ''): FieldViolation[] =>
  error.issues.map((i) => ({
    field: [prefix, ...i.path.map((p) => (typeof p === 'string' ? snakeCase(p) : String(p)))]
      .filter(Boolean)
      .join('.'),
    description: i.message,
  }));

/** camelCase → snake_case, as protoc names fields; a key in a map (template params) may be anything. */
const snakeCase = (s: string): string =>
  /^[a-z][A-Za-z0-9]*$/.test(s) ? s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) : s;

export const invalidArgument = (violations: readonly FieldViolation[]): GrpcRefusal => {
  const first = violations[0];
  const more = violations.length > 1 ? ` (and ${violations.length - 1} more)` : '';
  return new GrpcRefusal(
    status.INVALID_ARGUMENT,
    'VALIDATION',
    `the request is invalid${first ? `: ${first.field || '(request)'}: ${first.description}${more}` : ''}`,
    { violations },
  );
};

/**
 * The one place where errors become gRPC statuses: the same error classes the HTTP API maps
 * (src/handlers/http/app.ts mapKnownError), to the canonical codes, with a google.rpc.Status in
 * `grpc-status-details-bin` (ErrorInfo, and BadRequest or RetryInfo where they apply). Anything else
 * is INTERNAL with no detail of ours (it is logged by the caller).
 */
export function toStatus(error: unknown): Partial<StatusObject> & { code: status; internal: boolean } {
  const refusal = classify(error);
  if (!refusal) {
    return {
      code: status.INTERNAL,
      details: 'an internal error occurred',
      metadata: new Metadata(),
      internal: true,
    };
  }
  const details: Any[] = [
    Any.fromPartial({
      typeUrl: 'type.googleapis.com/google.rpc.ErrorInfo',
      value: Buffer.from(
        ErrorInfo.encode({
          reason: refusal.reason,
          domain: ERROR_DOMAIN,
          metadata: { ...(refusal.extra.metadata ?? {}) },
        }).finish(),
      ),
    }),
  ];
  if (refusal.extra.violations?.length) {
    details.push(
      Any.fromPartial({
        typeUrl: 'type.googleapis.com/google.rpc.BadRequest',
        value: Buffer.from(
          BadRequest.encode({
            fieldViolations: refusal.extra.violations.map((v) => ({ ...v })),
          }).finish(),
        ),
      }),
    );
  }
  if (refusal.extra.retryAfterSeconds !== undefined) {
    details.push(
      Any.fromPartial({
        typeUrl: 'type.googleapis.com/google.rpc.RetryInfo',
        value: Buffer.from(
          RetryInfo.encode({
            retryDelay: { seconds: refusal.extra.retryAfterSeconds, nanos: 0 },
          }).finish(),
        ),
      }),
    );
  }
  const metadata = new Metadata();
  metadata.set(
    'grpc-status-details-bin',
    Buffer.from(Status.encode({ code: refusal.code, message: refusal.message, details }).finish()),
  );
  return { code: refusal.code, details: refusal.message, metadata, internal: false };
}

function classify(error: unknown): GrpcRefusal | undefined {
  if (error instanceof GrpcRefusal) return error;
  if (error instanceof AuthenticationError)
    return new GrpcRefusal(status.UNAUTHENTICATED, 'UNAUTHENTICATED', error.message);
  if (error instanceof ExperimentNotFoundError)
    return new GrpcRefusal(status.NOT_FOUND, 'EXPERIMENT_NOT_FOUND', 'unknown experiment');
  if (error instanceof InvalidTransitionError) {
    return new GrpcRefusal(status.FAILED_PRECONDITION, 'INVALID_TRANSITION', error.message, {
      metadata: { currentState: error.actual, allowedIn: error.expected.join(',') },
    });
  }
  if (error instanceof ExperimentAlreadyExistsError)
    return new GrpcRefusal(status.ALREADY_EXISTS, 'CONFLICT', error.message);
  if (error instanceof DomainError)
    return new GrpcRefusal(status.FAILED_PRECONDITION, 'CONFLICT', error.message);
  // HTTP 422: the request is well-formed, but the key already stands for another one.
  if (error instanceof IdempotencyKeyReusedError) {
    return new GrpcRefusal(
      status.FAILED_PRECONDITION,
      'IDEMPOTENCY_KEY_REUSED',
      'this idempotency key was used with a different request',
      { violations: [{ field: 'idempotency_key', description: 'was used with a different request' }] },
    );
  }
  // HTTP 412 and 409: the caller's view is stale; re-read and retry the read-modify-write.
  if (error instanceof VersionMismatchError) {
    return new GrpcRefusal(status.ABORTED, 'VERSION_MISMATCH', error.message, {
      metadata: { currentVersion: String(error.actual), expectedVersion: String(error.expected) },
    });
  }
  if (error instanceof ConcurrencyConflictError || error instanceof WrongExpectedVersionError) {
    return new GrpcRefusal(
      status.ABORTED,
      'CONCURRENT_CHANGE',
      'a concurrent change to this experiment won; reload and retry',
    );
  }
  if (error instanceof InvalidCursorError)
    return invalidArgument([{ field: 'page_token', description: error.message }]);
  if (error instanceof UnstorableEventError) {
    return invalidArgument([
      { field: 'spec', description: 'holds a value the event store cannot hold (such as a NUL character)' },
    ]);
  }
  if (error instanceof z.ZodError) return invalidArgument(violationsOf(error));
  if (error instanceof StoreUnavailableError) {
    return new GrpcRefusal(
      status.UNAVAILABLE,
      'UNAVAILABLE',
      'a backing service is unavailable; nothing was written',
      { retryAfterSeconds: 5 },
    );
  }
  return undefined;
}

import {
  type CallOptions,
  type Client,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { BadRequest, ErrorInfo } from '../../src/handlers/grpc/gen/google/rpc/error_details.js';
import { Status } from '../../src/handlers/grpc/gen/google/rpc/status.js';
import { AuditServiceClient } from '../../src/handlers/grpc/gen/phoenix/v1/audit.js';
import {
  ExperimentServiceClient,
  type ExperimentSpec,
  type WatchRequest,
  type WatchResponse,
} from '../../src/handlers/grpc/gen/phoenix/v1/experiments.js';
import { TemplateServiceClient } from '../../src/handlers/grpc/gen/phoenix/v1/templates.js';

/** Clients of the three services, from the generated stubs, on one address. */
export function grpcClients(address: string) {
  const creds = credentials.createInsecure();
  const experiments = new ExperimentServiceClient(address, creds);
  const templates = new TemplateServiceClient(address, creds);
  const audit = new AuditServiceClient(address, creds);
  return {
    experiments,
    templates,
    audit,
    close() {
      for (const c of [experiments, templates, audit] as Client[]) c.close();
    },
  };
}

export const bearer = (token: string | undefined): Metadata => {
  const md = new Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  return md;
};

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/** A unary call as a promise: resolves with the response, rejects with the ServiceError. */
export function unaryCall<Req, Res>(
  client: Client,
  method: UnaryMethod<Req, Res>,
  request: Req,
  token: string | undefined,
  options: Partial<CallOptions> = {},
): Promise<Res> {
  return new Promise((resolve, reject) =>
    method.call(client, request, bearer(token), options, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

/** The ServiceError a call failed with (fails the test when it succeeded). */
export async function failureOf(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('the call succeeded; it should have failed');
}

/** What `grpc-status-details-bin` says: the ErrorInfo and the BadRequest field violations. */
export function detailsOf(error: ServiceError) {
  const raw = error.metadata?.get('grpc-status-details-bin')[0];
  if (!(raw instanceof Buffer)) return { status: undefined, info: undefined, violations: [] };
  const decoded = Status.decode(raw);
  let info: ErrorInfo | undefined;
  let violations: { field: string; description: string }[] = [];
  for (const any of decoded.details) {
    if (any.typeUrl.endsWith('google.rpc.ErrorInfo')) info = ErrorInfo.decode(any.value);
    if (any.typeUrl.endsWith('google.rpc.BadRequest'))
      violations = BadRequest.decode(any.value).fieldViolations;
  }
  return { status: decoded, info, violations };
}

export const codeName = (code: number): string => status[code] ?? String(code);

/** validSpec() (the REST body) as the proto's ExperimentSpec. */
export const protoSpec = (body: ReturnType<typeof import('./system.js').validSpec>): ExperimentSpec => {
  const b = body as unknown as {
    name: string;
    description?: string;
    baseline: { template: string; params: Record<string, unknown> };
    candidate: { template: string; params: Record<string, unknown> };
    target: { namespace?: string; nodeSelector: Record<string, string>; hosts: number };
    durationSeconds: number;
    criticalProcesses: string[];
    successCriteria?: {
      minCardinalityReductionPct: number;
      maxCriticalProcessLossPct: number;
      maxCollectorCpuOverheadPct: number;
    };
    compatibilityQueries?: { name: string; query: string; maxDivergencePct?: number }[];
  };
  return {
    name: b.name,
    description: b.description,
    baseline: b.baseline,
    candidate: b.candidate,
    target: b.target,
    durationSeconds: b.durationSeconds,
    criticalProcesses: b.criticalProcesses,
    successCriteria: b.successCriteria && { ...b.successCriteria, dryRun: [] },
    compatibilityQueries: b.compatibilityQueries ?? [],
  };
};

/**
 * A Watch stream: collects what arrives; `until` waits for a message that satisfies it; `ended`
 * resolves with the status the stream closed with.
 */
export function watch(
  client: ExperimentServiceClient,
  request: WatchRequest,
  token: string,
  options: Partial<CallOptions> = {},
) {
  const call = client.watch(request, bearer(token), options);
  const received: WatchResponse[] = [];
  const waiters: { test: (m: WatchResponse) => boolean; resolve: (m: WatchResponse) => void }[] = [];
  call.on('data', (m: WatchResponse) => {
    received.push(m);
    for (const w of [...waiters]) {
      if (w.test(m)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  const ended = new Promise<{ code: number; details: string; error?: ServiceError }>((resolve) => {
    call.on('error', (error: ServiceError) => resolve({ code: error.code, details: error.details, error }));
    call.on('status', (s) => {
      if (s.code === status.OK) resolve({ code: s.code, details: s.details });
    });
  });
  return {
    call,
    received,
    ended,
    events: () => received.flatMap((m) => (m.kind?.$case === 'event' ? [m.kind.value] : [])),
    until(test: (m: WatchResponse) => boolean, timeoutMs = 30_000): Promise<WatchResponse> {
      const found = received.find(test);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no such message in ${timeoutMs} ms`)), timeoutMs);
        waiters.push({
          test,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
        });
      });
    },
  };
}

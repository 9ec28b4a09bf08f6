import { fromJson, type JsonValue, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { Server, ServerCredentials, status } from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { CommandService } from '../../application/command-service.js';
import type { EventStore } from '../../application/ports/event-store.js';
import type { ReadModels } from '../../application/ports/read-models.js';
import type { PreviewService } from '../../application/preview.js';
import type { PricingProfile } from '../../domain/cost.js';
import type { ExperimentEvent } from '../../domain/experiment.js';
import type { TokenService } from '../auth.js';
import type { LiveHub } from '../live-hub.js';
import type { Metrics } from '../metrics.js';
import { auditService } from './audit.js';
import { RateLimit } from './calls.js';
import { experimentService } from './experiments.js';
import descriptorSet from './gen/descriptor-set.json' with { type: 'json' };
import { AuditServiceService } from './gen/phoenix/v1/audit.js';
import { ExperimentServiceService } from './gen/phoenix/v1/experiments.js';
import { TemplateServiceService } from './gen/phoenix/v1/templates.js';
import { templateService } from './templates.js';
import { Watcher, type WatcherOptions } from './watch.js';

export interface GrpcServerDependencies {
  readonly logger: Logger;
  readonly tokens: TokenService;
  readonly commands: CommandService;
  readonly store: EventStore<ExperimentEvent>;
  readonly readModels: ReadModels;
  readonly hub: LiveHub;
  /** `PreviewExperiment`: the same preview service as HTTP. */
  readonly previews?: PreviewService;
  /** The pricing profiles in force (`ListPricingProfiles`; a create naming another is refused). */
  readonly pricingProfiles?: readonly PricingProfile[];
  /** The checks HTTP's /readyz runs; the health service reports SERVING while all pass. */
  readonly readiness: Readonly<Record<string, () => Promise<void>>>;
  readonly watch?: WatcherOptions;
  /** Calls per minute per token subject (per client address without a valid token); none: unlimited. */
  readonly rateLimitPerMinute?: number;
  /** How often readiness is checked for the health service; default 5 s. */
  readonly healthIntervalMs?: number;
  /** Where each call's duration is recorded (phoenix_grpc_request_duration_seconds). */
  readonly metrics?: Metrics;
  /** Whether promote and rollback are served (a GitOps repository is configured). */
  readonly promotionEnabled?: boolean;
}

/** The services this server implements, by their full names (health answers for each, and for ''). */
export const SERVICES = [
  'phoenix.v1.ExperimentService',
  'phoenix.v1.TemplateService',
  'phoenix.v1.AuditService',
];

/** The largest message accepted: the REST API's body limit (1 MiB). A larger one is RESOURCE_EXHAUSTED. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

export interface GrpcServer {
  /** Listens on host:port (0: a free port); resolves with the port bound. */
  listen(host: string, port: number): Promise<number>;
  /** Watch streams open now. */
  readonly watchStreams: number;
  /** Stops taking calls, ends the Watch streams (UNAVAILABLE), waits up to `graceMs` for the rest. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * The gRPC API (`phoenix.v1`) with standard health checking (`grpc.health.v1.Health`, wired to the
 * readiness checks of HTTP's /readyz) and server reflection (v1 and v1alpha, so grpcurl needs no
 * .proto files). Built without listening, like the HTTP app: the server entry calls `listen`.
 */
export function createGrpcServer(deps: GrpcServerDependencies): GrpcServer {
  const server = new Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': 4 * MAX_MESSAGE_BYTES,
    // Streams one connection may have open at once: one client cannot hold the server's capacity.
    'grpc.max_concurrent_streams': 100,
    // A connection that sends nothing for long is closed; keepalive pings find dead peers.
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.max_connection_idle_ms': 15 * 60_000,
  });
  const calls = {
    tokens: deps.tokens,
    logger: deps.logger,
    ...(deps.rateLimitPerMinute !== undefined ? { rateLimit: new RateLimit(deps.rateLimitPerMinute) } : {}),
    ...(deps.metrics ? { observe: observerOf(deps.metrics) } : {}),
  };
  const watcher = new Watcher({ ...calls, hub: deps.hub }, deps.watch);
  server.addService(
    ExperimentServiceService,
    experimentService({
      ...calls,
      commands: deps.commands,
      store: deps.store,
      readModels: deps.readModels,
      watch: watcher.handler,
      ...(deps.previews ? { previews: deps.previews } : {}),
      ...(deps.pricingProfiles ? { pricingProfiles: deps.pricingProfiles } : {}),
      ...(deps.promotionEnabled !== undefined ? { promotionEnabled: deps.promotionEnabled } : {}),
    }),
  );
  server.addService(TemplateServiceService, templateService(calls));
  server.addService(AuditServiceService, auditService({ ...calls, readModels: deps.readModels }));

  const health = new HealthImplementation({ '': 'NOT_SERVING', ...statuses('NOT_SERVING') });
  health.addToServer(server);
  new ReflectionService(descriptors()).addToServer(server);

  let stopped = false;
  const checkReadiness = async () => {
    const results = await Promise.all(
      Object.values(deps.readiness).map((check) =>
        check().then(
          () => true,
          () => false,
        ),
      ),
    );
    if (stopped) return;
    const serving = results.every(Boolean) ? 'SERVING' : 'NOT_SERVING';
    health.setStatus('', serving);
    for (const [name, s] of Object.entries(statuses(serving))) health.setStatus(name, s);
  };
  let healthTimer: NodeJS.Timeout | undefined;

  return {
    async listen(host, port) {
      const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      const bound = await new Promise<number>((resolve, reject) =>
        server.bindAsync(address, ServerCredentials.createInsecure(), (err, p) =>
          err ? reject(err) : resolve(p),
        ),
      );
      await checkReadiness();
      healthTimer = setInterval(() => void checkReadiness(), deps.healthIntervalMs ?? 5_000);
      healthTimer.unref();
      return bound;
    },
    get watchStreams() {
      return watcher.streams;
    },
    async stop(graceMs = 5_000) {
      if (stopped) return;
      stopped = true;
      clearInterval(healthTimer);
      health.setStatus('', 'NOT_SERVING');
      for (const [name, s] of Object.entries(statuses('NOT_SERVING'))) health.setStatus(name, s);
      watcher.close();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        force.unref();
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    },
  };
}

/**
 * The files for reflection, as buf built them with the code (npm run proto:gen): the contract and
 * grpc.health.v1, each file under its own name with its imports, the well-known types included.
 * proto-loader would merge them per package and drop the imports (grpc-node#2958: grpcurl then cannot
 * resolve google.protobuf.Struct) and misname the health service's map entries; the reflection service
 * reads nothing but `fileDescriptorProtos`.
 */
function descriptors(): PackageDefinition {
  const set = fromJson(FileDescriptorSetSchema, descriptorSet as unknown as JsonValue);
  const fileDescriptorProtos = set.file.map((file) => Buffer.from(toBinary(FileDescriptorProtoSchema, file)));
  return {
    'phoenix.v1': { format: 'Protocol Buffer 3 DescriptorProto', type: {}, fileDescriptorProtos },
  } as unknown as PackageDefinition;
}

const statuses = (s: 'SERVING' | 'NOT_SERVING') => Object.fromEntries(SERVICES.map((name) => [name, s]));

const observerOf =
  (metrics: Metrics) =>
  (method: string, code: status, seconds: number): void =>
    metrics.grpcDuration.labels(method, status[code]).observe(seconds);

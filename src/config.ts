import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { pricingFileSchema, resolvePricingProfiles } from './application/pricing.js';
import type { PricingProfile } from './domain/cost.js';

/**
 * Configuration, from the environment, validated once at start-up. A bad value stops the process
 * with a message naming the variable (the contract in shared/api.md).
 */
const postgresUrl = z
  .string()
  .refine(
    (v) => /^postgres(ql)?:\/\//.test(v) && URL.canParse(v),
    'must be a postgres:// or postgresql:// URL',
  );

/**
 * `PHOENIX_CORS_ORIGINS`: the browser origins (scheme://host[:port], nothing after) that may call the
 * API, comma-separated. An origin is compared as the browser sends it, so anything more than an origin
 * (a path, a trailing slash, a wildcard) would never match: it is refused here rather than ignored.
 */
const corsOrigins = z
  .string()
  .transform((v) =>
    v
      .split(',')
      .map((o) => o.trim())
      .filter(Boolean),
  )
  .superRefine((origins, ctx) => {
    for (const origin of origins) {
      const url = URL.canParse(origin) ? new URL(origin) : undefined;
      if (!url || !/^https?:$/.test(url.protocol) || url.origin !== origin) {
        const suggestion = url && /^https?:$/.test(url.protocol) ? ` (did you mean '${url.origin}'?)` : '';
        ctx.addIssue({
          code: 'custom',
          message: `'${origin}' is not an origin as a browser sends it: http(s)://host[:port], lower case, no default port, no path${suggestion}`,
        });
      }
    }
  });

const configSchema = z.object({
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  /** The gRPC API's port (on HOST); 0 disables it. */
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50051),
  PHOENIX_DATA_DIR: z.string().min(1).default('./.phoenix'),
  DATABASE_URL: postgresUrl.optional(),
  EVENTSTORE_URL: z
    .string()
    .refine(
      (v) => /^(esdb|kurrentdb|kurrent|kdb)(\+discover)?:\/\/\S+$/.test(v),
      'must be an esdb:// (or kurrentdb://) connection string',
    )
    .optional(),
  NATS_URL: z
    .string()
    .refine(
      (v) => v.split(',').every((u) => /^(nats|tls|wss?):\/\/\S+$/.test(u.trim())),
      'must be nats://host:port (comma-separated for a cluster)',
    )
    .optional(),
  PHOENIX_DEPLOYER: z.enum(['local', 'kubernetes', 'otelcol']).default('local'),
  /** The collector binary of PHOENIX_DEPLOYER=otelcol: the one `npm run build:otelcol` builds, or a user's own `otelcol-contrib`. */
  PHOENIX_OTELCOL: z.string().min(1).default('.phoenix-otelcol/phoenix-otelcol'),
  /** Simulated processes per host that PHOENIX_DEPLOYER=otelcol sends to each collector. */
  PHOENIX_OTELCOL_PROCESSES_PER_HOST: z.coerce.number().int().min(1).max(5000).default(50),
  /** Most simulated processes one PHOENIX_DEPLOYER=otelcol collector is sent; a bigger target runs as shards. */
  PHOENIX_OTELCOL_MAX_PROCESSES_PER_COLLECTOR: z.coerce.number().int().min(1).max(1_000_000).default(10_000),
  /** Most collectors (shards) one variant runs as under PHOENIX_DEPLOYER=otelcol; a bigger target is refused. */
  PHOENIX_OTELCOL_MAX_SHARDS: z.coerce.number().int().min(1).max(64).default(8),
  /** The Prometheus Phoenix starts for PHOENIX_DEPLOYER=otelcol when PROMETHEUS_URL is not set (on PATH unless a path). */
  PHOENIX_PROMETHEUS_BIN: z.string().min(1).default('prometheus'),
  /** Where PHOENIX_DEPLOYER=otelcol writes Prometheus file_sd targets; `<PHOENIX_DATA_DIR>/prometheus/targets` unless set. */
  PHOENIX_PROMETHEUS_SD_DIR: z.string().min(1).optional(),
  /**
   * How PHOENIX_DEPLOYER=kubernetes lands a variant: an OpenTelemetryCollector for the operator, a
   * ConfigMap and a DaemonSet, or `auto` (the operator's kind when the cluster serves it).
   */
  PHOENIX_KUBERNETES_MODE: z.enum(['auto', 'operator', 'daemonset']).default('auto'),
  /**
   * Deploys (and, apart, teardowns) the deployer worker carries out at once. Unset: 4, or 32 with
   * PHOENIX_DEPLOYER=kubernetes, where a deploy mostly waits on the cluster's watch.
   */
  PHOENIX_DEPLOYER_CONCURRENCY: z.coerce.number().int().min(1).max(1000).optional(),
  /** How long a variant's DaemonSet may take to become ready before its deploy fails. */
  PHOENIX_KUBERNETES_READINESS_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(86_400).default(300),
  /** How long one Kubernetes API call retries an unreachable or failing API server before it gives up. */
  PHOENIX_KUBERNETES_RETRY_SECONDS: z.coerce.number().int().min(1).max(3_600).default(60),
  /**
   * A standalone worker (`phoenix worker …`) serves /healthz, /readyz and /metrics on HOST:this port
   * (0: any free port); unset: none.
   */
  PHOENIX_WORKER_HEALTH_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  PHOENIX_ANALYZER: z.enum(['local', 'prometheus']).default('local'),
  PROMETHEUS_URL: z.url({ protocol: /^https?$/ }).optional(),
  PHOENIX_JWT_SECRET: z
    .string()
    .refine((v) => Buffer.byteLength(v, 'utf8') >= 32, 'must be at least 32 bytes')
    .optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  PHOENIX_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().min(1).default(6000),
  /** Most experiments whose verdicts /metrics exports, the most recently ended first; 0: none. */
  PHOENIX_METRICS_EXPERIMENTS: z.coerce.number().int().min(0).max(1000).default(100),
  /** /metrics exports the verdicts of experiments that ended within this many days. */
  PHOENIX_METRICS_EXPERIMENT_DAYS: z.coerce.number().int().min(1).max(366).default(30),
  /** Browser origins allowed to call the API; none (the default): only pages served from the API's own origin. */
  PHOENIX_CORS_ORIGINS: corsOrigins.default([]),
  /** NATS subject and stream prefix: servers and workers of one installation share it. */
  PHOENIX_NATS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,32}$/, 'letters, digits, _ and -, at most 32')
    .default('phoenix'),
  /** Where the local (simulated) data plane serves its variants' metrics for Prometheus; 0: any free port. */
  PHOENIX_DATAPLANE_HOST: z.string().min(1).default('127.0.0.1'),
  PHOENIX_DATAPLANE_PORT: z.coerce.number().int().min(0).max(65535).default(0),
  /**
   * A JSON or YAML file of pricing profiles (`{ profiles: [...] }`, docs/pricing.md) added to the
   * built-in ones; checked at start-up.
   */
  PHOENIX_PRICING_FILE: z.string().min(1).optional(),
  /** Hosts in the whole fleet, for the fleet-wide saving of every profile that names no fleet size. */
  PHOENIX_FLEET_HOSTS: z.coerce.number().int().min(1).max(10_000_000).optional(),
  /** The Git repository (a path or a URL) promotions commit to; without it, promotion is disabled. */
  PHOENIX_GITOPS_REPO: z.string().trim().min(1).optional(),
  PHOENIX_GITOPS_BRANCH: z
    .string()
    .regex(/^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,100}$/, 'must be a branch name')
    .default('main'),
  /** HTTPS credentials of PHOENIX_GITOPS_REPO: a user name (default x-access-token) and a token, or a file holding it. */
  PHOENIX_GITOPS_USERNAME: z.string().min(1).optional(),
  PHOENIX_GITOPS_TOKEN: z.string().min(1).optional(),
  PHOENIX_GITOPS_TOKEN_FILE: z.string().min(1).optional(),
  /** The promoter's working clone; `<PHOENIX_DATA_DIR>/gitops` unless set. */
  PHOENIX_GITOPS_WORKDIR: z.string().min(1).optional(),
  /** How often the saga probes each running experiment for early abort (seconds, fractions allowed); 0: never. */
  PHOENIX_PROBE_INTERVAL_SECONDS: z.coerce.number().min(0).max(3600).default(30),
  /**
   * How often the saga sweeps the data plane again for what ended experiments left (a teardown that
   * kept failing); it always sweeps at start. 0: at start only.
   */
  PHOENIX_SWEEP_INTERVAL_SECONDS: z.coerce
    .number()
    .int()
    .min(0)
    .max(86_400)
    .refine(
      (v) => v === 0 || v >= 60,
      'must be 0 (at start only) or at least 60: each sweep lists every namespace',
    )
    .default(600),
  /** Run the deployer and analyzer workers inside the server too (always needed without NATS). */
  PHOENIX_INPROCESS_WORKERS: z
    .enum(['true', 'false'])
    .default('true')
    .transform((v) => v === 'true'),
});

/** The deployer worker's concurrency: PHOENIX_DEPLOYER_CONCURRENCY, else by deployer. */
export const deployerConcurrency = (config: {
  readonly PHOENIX_DEPLOYER_CONCURRENCY?: number | undefined;
  readonly PHOENIX_DEPLOYER: string;
}): number => config.PHOENIX_DEPLOYER_CONCURRENCY ?? (config.PHOENIX_DEPLOYER === 'kubernetes' ? 32 : 4);

export type Config = z.infer<typeof configSchema> & {
  /** The pricing profiles in force: the built-in ones and PHOENIX_PRICING_FILE's. */
  readonly pricingProfiles: readonly PricingProfile[];
};

export class ConfigError extends Error {
  constructor(readonly problems: readonly { variable: string; message: string }[]) {
    super(problems.map((p) => `${p.variable}: ${p.message}`).join('; '));
  }
}

/** Reads the environment; throws ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings mean "not set": a compose file or shell often leaves `VAR=`.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = configSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => ({
        variable: String(i.path[0] ?? '(environment)'),
        message: i.message,
      })),
    );
  }
  const config: Config = {
    ...parsed.data,
    pricingProfiles: resolvePricingProfiles(
      parsed.data.PHOENIX_PRICING_FILE ? readPricingFile(parsed.data.PHOENIX_PRICING_FILE) : [],
      parsed.data.PHOENIX_FLEET_HOSTS,
    ),
  };
  if (!config.PHOENIX_INPROCESS_WORKERS && !config.NATS_URL) {
    throw new ConfigError([
      {
        variable: 'PHOENIX_INPROCESS_WORKERS',
        message: 'may be false only with NATS_URL (someone must run the workers)',
      },
    ]);
  }
  if (config.PHOENIX_DEPLOYER === 'otelcol') {
    if (!isExecutable(config.PHOENIX_OTELCOL)) {
      throw new ConfigError([
        {
          variable: 'PHOENIX_OTELCOL',
          message: `no collector binary at ${config.PHOENIX_OTELCOL} (PHOENIX_DEPLOYER=otelcol): run \`npm run build:otelcol\` or set PHOENIX_OTELCOL to an otelcol-contrib`,
        },
      ]);
    }
    // Without PROMETHEUS_URL, Phoenix runs the data plane's Prometheus itself.
    if (!config.PROMETHEUS_URL && findExecutable(config.PHOENIX_PROMETHEUS_BIN) === undefined) {
      throw new ConfigError([
        {
          variable: 'PHOENIX_PROMETHEUS_BIN',
          message: `${config.PHOENIX_PROMETHEUS_BIN} is not an executable (on PATH): install prometheus (apt-get install prometheus), set PHOENIX_PROMETHEUS_BIN, or set PROMETHEUS_URL to a Prometheus of yours`,
        },
      ]);
    }
  }
  // PHOENIX_DEPLOYER=otelcol brings its own Prometheus when none is named.
  if (
    config.PHOENIX_ANALYZER === 'prometheus' &&
    !config.PROMETHEUS_URL &&
    config.PHOENIX_DEPLOYER !== 'otelcol'
  ) {
    throw new ConfigError([
      {
        variable: 'PROMETHEUS_URL',
        message:
          'is required when PHOENIX_ANALYZER=prometheus (unless PHOENIX_DEPLOYER=otelcol, which runs one)',
      },
    ]);
  }
  return config;
}

/** The profiles of PHOENIX_PRICING_FILE; a file that cannot be read or is not valid stops start-up. */
function readPricingFile(path: string): PricingProfile[] {
  const fail = (message: string): never => {
    throw new ConfigError([{ variable: 'PHOENIX_PRICING_FILE', message: `${path}: ${message}` }]);
  };
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    fail(`cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let data: unknown;
  try {
    // YAML 1.2 is a superset of JSON: one parser reads both.
    data = parseYaml(text);
  } catch (err) {
    fail(`is neither JSON nor YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const checked = pricingFileSchema.safeParse(data);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const at = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    fail(`${at}${issue?.message ?? 'invalid'}`);
  }
  return checked.data!.profiles;
}

const isExecutable = (path: string): boolean => {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/** A path as given, or a bare name looked up on PATH, as a shell would; undefined when not found. */
const findExecutable = (name: string): string | undefined => {
  if (isAbsolute(name) || name.includes('/')) return isExecutable(name) ? name : undefined;
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => dir !== '')
    .map((dir) => join(dir, name))
    .find(isExecutable);
};

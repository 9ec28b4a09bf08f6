import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CollectorConfig } from '../../src/domain/pipelines/index.js';
import { freePort, PortTakenError } from './ports.js';

export { freePort, PortTakenError, withFreshPorts } from './ports.js';

/**
 * The real OpenTelemetry Collector for tests: `PHOENIX_OTELCOL` (any binary, e.g. a user's
 * `otelcol-contrib`), else the one `npm run build:otelcol` builds from otelcol/builder-config.yaml into
 * .phoenix-otelcol/. When neither is usable, `skip` says why, and the suites that need it skip with it.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MANIFEST = join(ROOT, 'otelcol', 'builder-config.yaml');
export const BUILT_COLLECTOR = join(ROOT, '.phoenix-otelcol', 'phoenix-otelcol');
const STAMP = `${BUILT_COLLECTOR}.manifest.sha256`;

const isExecutable = (path: string): boolean => {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

const hasGo = (): boolean =>
  [...(process.env.PATH ?? '').split(delimiter), '/usr/local/go/bin'].some(
    (dir) => dir !== '' && isExecutable(join(dir, 'go')),
  );

export type CollectorLookup =
  | { readonly bin: string; readonly source: 'PHOENIX_OTELCOL' | 'built'; readonly skip: false }
  | { readonly bin: undefined; readonly skip: string };

/** Finds the collector binary, or the reason there is none. */
export const findCollector = (): CollectorLookup => {
  const fromEnv = process.env.PHOENIX_OTELCOL;
  if (fromEnv !== undefined && fromEnv !== '') {
    // Named explicitly: a wrong path is a mistake to report, not a reason to skip quietly.
    if (!isExecutable(fromEnv)) throw new Error(`PHOENIX_OTELCOL=${fromEnv} is not an executable file`);
    return { bin: fromEnv, source: 'PHOENIX_OTELCOL', skip: false };
  }
  if (!isExecutable(BUILT_COLLECTOR)) {
    return {
      bin: undefined,
      skip: hasGo()
        ? `no collector at ${BUILT_COLLECTOR}: run \`npm run build:otelcol\` (or set PHOENIX_OTELCOL)`
        : 'no Go toolchain to build the collector with (go on PATH or /usr/local/go/bin/go), and PHOENIX_OTELCOL is not set',
    };
  }
  const want = createHash('sha256').update(readFileSync(MANIFEST)).digest('hex');
  const have = existsSync(STAMP) ? readFileSync(STAMP, 'utf8').trim() : '';
  if (have !== want) {
    return {
      bin: undefined,
      skip: `${BUILT_COLLECTOR} was built from another otelcol/builder-config.yaml: run \`npm run build:otelcol\``,
    };
  }
  return { bin: BUILT_COLLECTOR, source: 'built', skip: false };
};

export interface CollectorVerdict {
  /** True when `validate` exited 0. */
  readonly ok: boolean;
  /** What it printed (stderr and stdout), trimmed. */
  readonly output: string;
}

/**
 * Runs `<bin> validate --config=FILE` on a YAML text. `env` is added to a minimal environment (PATH and
 * HOME only), so the host's variables cannot change what `${env:…}` expands to.
 */
export const collectorValidate = (
  bin: string,
  yaml: string,
  env: Readonly<Record<string, string>> = {},
): Promise<CollectorVerdict> => {
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-otelcol-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, yaml);
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      ['validate', `--config=${file}`],
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? dir, ...env },
        timeout: 60_000,
        maxBuffer: 4 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        rmSync(dir, { recursive: true, force: true });
        const output = `${stderr}${stdout}`.trim();
        if (error === null) resolve({ ok: true, output });
        else if (typeof error.code === 'number') resolve({ ok: false, output });
        else reject(new Error(`${bin} validate did not finish: ${error.message}\n${output}`));
      },
    );
  });
};

/** Runs `tasks` with at most `limit` at a time (the machine is shared: the collector is not small). */
export const mapLimit = async <T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> => {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
};

export interface RunningCollector {
  /** What it printed so far (stderr and stdout). */
  output(): string;
  /** SIGTERM, then SIGKILL after 10 s; removes its config. */
  stop(): Promise<void>;
}

/**
 * Runs `<bin> --config=FILE` on a YAML text and resolves once `readyUrl` (its health_check extension)
 * answers 200. `env` is added to a minimal environment, as for {@link collectorValidate}.
 */
export const startCollector = async (
  bin: string,
  yaml: string,
  readyUrl: string,
  env: Readonly<Record<string, string>> = {},
): Promise<RunningCollector> => {
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-otelcol-run-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, yaml);
  let output = '';
  const child: ChildProcess = spawn(bin, [`--config=${file}`], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? dir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-200_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      const message = `${bin} exited with ${child.exitCode}:\n${output.slice(-4000)}`;
      throw /address already in use/i.test(output) ? new PortTakenError(message) : new Error(message);
    }
    const ready = await fetch(readyUrl).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${bin} did not become ready at ${readyUrl}:\n${output.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { output: () => output, stop };
};

/** A rendered config, made to run beside others on this machine: its listeners on free local ports. */
export const onFreePorts = async (
  config: CollectorConfig,
): Promise<{ config: CollectorConfig; metricsUrl: string; healthUrl: string; telemetryUrl: string }> => {
  const [prom, health, telemetry] = [await freePort(), await freePort(), await freePort()];
  const copy = structuredClone(config);
  (copy.exporters.prometheus as { endpoint: string }).endpoint = `127.0.0.1:${prom}`;
  (copy.extensions.health_check as { endpoint: string }).endpoint = `127.0.0.1:${health}`;
  copy.service.telemetry.metrics = {
    level: 'detailed',
    readers: [{ pull: { exporter: { prometheus: { host: '127.0.0.1', port: telemetry } } } }],
  };
  return {
    config: copy,
    metricsUrl: `http://127.0.0.1:${prom}/metrics`,
    healthUrl: `http://127.0.0.1:${health}/`,
    telemetryUrl: `http://127.0.0.1:${telemetry}/metrics`,
  };
};

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, PortTakenError, withFreshPorts } from './ports.js';

/**
 * A real Prometheus (Debian's `prometheus` package) for a test: started on a free port with a temporary
 * config and data folder, scraping the given targets every second; stopped and removed afterwards.
 */

/** Why Prometheus cannot be used here, or undefined when it can. In CI its absence is an error. */
export const prometheusSkipReason = (): string | undefined => {
  const found = spawnSync('prometheus', ['--version'], { stdio: 'ignore' });
  if (found.status === 0) return undefined;
  if (process.env.CI) {
    throw new Error(
      'the prometheus binary is missing in CI: .ci/run must install it (apt-get install -y prometheus)',
    );
  }
  return 'the prometheus binary is not installed (apt-get install -y prometheus); CI installs it';
};

export interface ScrapeTarget {
  readonly job: string;
  /** Full URL of the metrics endpoint. */
  readonly url: string;
}

export interface RunningPrometheus {
  readonly url: string;
  stop(): Promise<void>;
}

/** A Prometheus on a port picked free; started again on a new one if that port was taken first. */
export const startPrometheus = (targets: readonly ScrapeTarget[]): Promise<RunningPrometheus> =>
  withFreshPorts(() => startPrometheusOnce(targets));

const startPrometheusOnce = async (targets: readonly ScrapeTarget[]): Promise<RunningPrometheus> => {
  const dir = mkdtempSync(join(tmpdir(), 'phoenix-prometheus-'));
  const scrapeConfigs = targets
    .map((t) => {
      const u = new URL(t.url);
      return [
        `  - job_name: ${JSON.stringify(t.job)}`,
        '    honor_labels: true',
        `    metrics_path: ${JSON.stringify(u.pathname)}`,
        `    static_configs: [{ targets: [${JSON.stringify(u.host)}] }]`,
      ].join('\n');
    })
    .join('\n');
  writeFileSync(
    join(dir, 'prometheus.yml'),
    `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n${scrapeConfigs}\n`,
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let output = '';
  const child: ChildProcess = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      const message = `prometheus exited with ${child.exitCode}: ${output.slice(-2000)}`;
      throw /address already in use/i.test(output) ? new PortTakenError(message) : new Error(message);
    }
    const ready = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus did not become ready: ${output.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, stop };
};

/** Waits until every target has been scraped successfully at least `scrapes` times. */
export const waitForScrapes = async (
  url: string,
  jobs: readonly string[],
  scrapes: number,
): Promise<void> => {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const query = `min(count_over_time(up{job=~"${jobs.join('|')}"}[5m])) and min(up{job=~"${jobs.join('|')}"}) == 1`;
    const body = (await fetch(`${url}/api/v1/query?query=${encodeURIComponent(query)}`).then((r) =>
      r.json(),
    )) as {
      data?: { result?: { value: [number, string] }[] };
    };
    const count = (body.data?.result ?? []).length;
    const up = await fetch(
      `${url}/api/v1/query?query=${encodeURIComponent(`count(count_over_time(up{job=~"${jobs.join('|')}"}[5m]) >= ${scrapes})`)}`,
    ).then((r) => r.json() as Promise<{ data?: { result?: { value: [number, string] }[] } }>);
    const ready = Number(up.data?.result?.[0]?.value[1] ?? 0);
    if (count > 0 && ready === jobs.length) return;
    if (Date.now() > deadline)
      throw new Error(`Prometheus did not scrape ${jobs.join(', ')} ${scrapes} times`);
    await new Promise((r) => setTimeout(r, 250));
  }
};

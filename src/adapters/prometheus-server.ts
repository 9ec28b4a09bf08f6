/**
 * The Prometheus Phoenix manages for the `otelcol` data plane when no PROMETHEUS_URL is given: one
 * server (Debian's `prometheus`, or PHOENIX_PROMETHEUS_BIN) on a free port of 127.0.0.1, scraping the
 * file_sd targets the deployer writes. Its data lives in `dir`; a server a crashed Phoenix left behind
 * (found by its pid file and its command line) is stopped before a new one starts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, stopProcess } from './child-processes.js';

export interface ManagedPrometheusOptions {
  readonly bin: string;
  /** Its config, pid file and TSDB. */
  readonly dir: string;
  /** The file_sd folder (`*.json` target groups). */
  readonly sdDir: string;
  /**
   * Seconds between scrapes; 5 unless said. Not less: a collector's exporter answering more slowly than
   * the scrape timeout piles up abandoned renders (reference: otel-collector-verified.md §5).
   */
  readonly scrapeIntervalSeconds?: number;
  readonly readyTimeoutMs?: number;
}

/** The scrape config: one job over the file_sd targets, keeping the labels the targets expose. */
export const prometheusConfig = (sdDir: string, scrapeIntervalSeconds: number): string =>
  [
    'global:',
    `  scrape_interval: ${scrapeIntervalSeconds}s`,
    `  scrape_timeout: ${Math.max(1, scrapeIntervalSeconds - 1)}s`,
    `  evaluation_interval: ${scrapeIntervalSeconds}s`,
    'scrape_configs:',
    '  - job_name: phoenix-otelcol',
    // The exporter's series carry experiment_id and variant themselves; the collector's own metrics get
    // them from the target's labels.
    '    honor_labels: true',
    '    file_sd_configs:',
    `      - files: [${JSON.stringify(join(sdDir, '*.json'))}]`,
    '        refresh_interval: 30s',
    '',
  ].join('\n');

export class ManagedPrometheus {
  private constructor(
    readonly url: string,
    private readonly child: ChildProcess,
    private readonly marker: string,
  ) {}

  static async start(options: ManagedPrometheusOptions): Promise<ManagedPrometheus> {
    await mkdir(options.dir, { recursive: true });
    await mkdir(options.sdDir, { recursive: true });
    const configFile = join(options.dir, 'prometheus.yml');
    const marker = `--config.file=${configFile}`;
    const pidFile = join(options.dir, 'prometheus.pid');
    const previous = Number(await readFile(pidFile, 'utf8').catch(() => ''));
    if (previous > 0) await stopProcess(previous, marker);
    await writeFile(configFile, prometheusConfig(options.sdDir, options.scrapeIntervalSeconds ?? 5));
    const port = await freePort();
    const child = spawn(
      options.bin,
      [
        marker,
        `--storage.tsdb.path=${join(options.dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let output = '';
    child.stderr?.on('data', (d: Buffer) => {
      output = (output + d.toString()).slice(-4000);
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) => reject(new Error(`could not start ${options.bin}: ${err.message}`)));
    });
    await writeFile(pidFile, String(child.pid));
    const server = new ManagedPrometheus(`http://127.0.0.1:${port}`, child, marker);
    const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
    for (;;) {
      if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${output}`);
      const ready = await fetch(`${server.url}/-/ready`, { signal: AbortSignal.timeout(2_000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) return server;
      if (Date.now() > deadline) {
        await server.stop();
        throw new Error(`prometheus was not ready within the timeout: ${output}`);
      }
      await sleep(200);
    }
  }

  async stop(): Promise<void> {
    if (this.child.pid !== undefined) await stopProcess(this.child.pid, this.marker, 5_000);
  }
}

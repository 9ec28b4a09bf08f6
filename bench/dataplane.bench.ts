/**
 * Local data plane at the seed's scale: 1,000 nodes × 500 processes (3.5 million baseline series).
 * Each run, in a fresh child process so peak memory is its own: simulate the fleet and one scrape
 * interval, emulate the baseline's scrape, tune the candidate from it (keep-list / thresholds), render
 * and emulate the candidate. Prints the median of several runs per candidate template and the peak RSS.
 *
 *   npx tsx bench/dataplane.bench.ts [--runs 5] [--templates process-topk-v1,process-minimal-v1]
 */
import { execFile } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  compilePipeline,
  emulateScrape,
  type ScrapeResult,
} from '../src/adapters/local-dataplane-emulator.js';
import { ProcessFleet } from '../src/adapters/local-dataplane-fleet.js';
import {
  computeTuning,
  type ProcessUsageTable,
  parseTemplateParams,
  renderVariant,
  TEMPLATE_NAMES,
  type TemplateName,
} from '../src/domain/pipelines/index.js';

const HOSTS = 1000;
const PROCESSES = 500;
const CRITICAL = ['^postgres$', '^nginx$', '^kubelet$', '^containerd$', '^sshd$'];
const TARGET_MS = 5000;
const TARGET_RSS_MIB = 1024;

interface Measurement {
  template: TemplateName;
  fleetMs: number;
  advanceMs: number;
  baselineMs: number;
  tuneMs: number;
  candidateMs: number;
  totalMs: number;
  baselineSeries: number;
  candidateSeries: number;
  maxRssMiB: number;
}

const usageOf = (r: ScrapeResult): ProcessUsageTable => ({
  length: r.rows,
  node: r.rowHost,
  name: r.rowName,
  names: r.names,
  cpu: r.rowCpu,
  memory: r.rowMemory,
});

const render = (variant: 'baseline' | 'candidate', template: TemplateName, tuning = {}) => {
  const rendered = renderVariant({
    experimentId: 'bench',
    variant,
    template,
    criticalProcesses: CRITICAL,
    ...tuning,
  });
  if (!rendered.ok) throw new Error(JSON.stringify(rendered.errors));
  return rendered.config;
};

/** One measurement, in this process. */
const measureOnce = (template: TemplateName, seed: number): Measurement => {
  const t0 = performance.now();
  const fleet = new ProcessFleet({ hosts: HOSTS, processesPerHost: PROCESSES, seed });
  const t1 = performance.now();
  fleet.advance(60);
  const t2 = performance.now();
  const vars = { K8S_NODE_NAME: (h: number) => fleet.hostNames[h] as string };
  const baseline = emulateScrape(fleet, compilePipeline(render('baseline', 'process-baseline-v1'), vars));
  const t3 = performance.now();
  const parsed = parseTemplateParams(template, {});
  if (!parsed.ok) throw new Error('params');
  const tuning = computeTuning(parsed.value, usageOf(baseline), CRITICAL) ?? {};
  const t4 = performance.now();
  const candidate = emulateScrape(fleet, compilePipeline(render('candidate', template, tuning), vars));
  const t5 = performance.now();
  return {
    template,
    fleetMs: t1 - t0,
    advanceMs: t2 - t1,
    baselineMs: t3 - t2,
    tuneMs: t4 - t3,
    candidateMs: t5 - t4,
    totalMs: t5 - t0,
    baselineSeries: baseline.series,
    candidateSeries: candidate.series,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
  };
};

const self = fileURLToPath(import.meta.url);

const measureInChild = (template: TemplateName, seed: number): Promise<Measurement> =>
  new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', self, '--child', template, String(seed)],
      { cwd: fileURLToPath(new URL('..', import.meta.url)), maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`child failed: ${stderr || err.message}`));
        else resolve(JSON.parse(stdout.trim().split('\n').pop() as string) as Measurement);
      },
    );
  });

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

const argValue = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};

/** Runs the benchmark and prints a table; used by `npx tsx bench/dataplane.bench.ts` and the bench index. */
export async function run(): Promise<void> {
  const runs = Number(argValue('--runs') ?? 5);
  const templates = (argValue('--templates')?.split(',') ??
    TEMPLATE_NAMES.filter((t) => t !== 'process-baseline-v1')) as TemplateName[];
  process.stdout.write(
    `local data plane: ${HOSTS} hosts × ${PROCESSES} processes, baseline + candidate, one scrape; median of ${runs} runs (each in a fresh process)\n`,
  );
  process.stdout.write(
    `${'candidate'.padEnd(28)} ${'total'.padStart(8)} ${'fleet'.padStart(7)} ${'advance'.padStart(8)} ${'baseline'.padStart(9)} ${'tune'.padStart(6)} ${'candidate'.padStart(10)} ${'peak RSS'.padStart(10)} ${'series b→c'.padStart(22)}\n`,
  );
  let worstTotal = 0;
  let worstRss = 0;
  for (const template of templates) {
    const results: Measurement[] = [];
    for (let i = 0; i < runs; i++) results.push(await measureInChild(template, i + 1));
    const m = (k: keyof Measurement) => median(results.map((r) => r[k] as number));
    const ms = (k: keyof Measurement) => `${Math.round(m(k))}`.padStart(k === 'totalMs' ? 8 : 7);
    const rss = Math.max(...results.map((r) => r.maxRssMiB));
    worstTotal = Math.max(worstTotal, m('totalMs'));
    worstRss = Math.max(worstRss, rss);
    process.stdout.write(
      `${template.padEnd(28)} ${ms('totalMs')} ${ms('fleetMs')} ${ms('advanceMs').padStart(8)} ${ms('baselineMs').padStart(9)} ${`${Math.round(m('tuneMs'))}`.padStart(6)} ${ms('candidateMs').padStart(10)} ${`${Math.round(rss)} MiB`.padStart(10)} ${`${Math.round(m('baselineSeries'))}→${Math.round(m('candidateSeries'))}`.padStart(22)}\n`,
    );
  }
  process.stdout.write(
    `worst median total ${Math.round(worstTotal)} ms (target ≤ ${TARGET_MS}), worst peak RSS ${Math.round(worstRss)} MiB (target ≤ ${TARGET_RSS_MIB}) — ${worstTotal <= TARGET_MS && worstRss <= TARGET_RSS_MIB ? 'within target' : 'OVER TARGET'}\n`,
  );
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  if (process.argv[2] === '--child') {
    const result = measureOnce(process.argv[3] as TemplateName, Number(process.argv[4] ?? 1));
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    await run();
  }
}

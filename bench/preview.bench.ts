import { monitorEventLoopDelay } from 'node:perf_hooks';
import { EmulatorFleetSampler } from '../src/adapters/emulator-fleet-sampler.js';
import { createPreviewService, PreviewBusy } from '../src/application/preview.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';

/**
 * The preview before a run: how long one takes for a 1,000-host target (50 hosts sampled × 500
 * processes, both variants, on a worker thread), and what a burst of them does: how many are answered
 * busy at once, and how long the event loop is held meanwhile (the worker threads keep it free).
 * BENCH_PREVIEW_RUNS (default 5) sequential previews, then a burst of BENCH_PREVIEW_BURST (default 12).
 */
const spec = (template: string, params: Record<string, unknown> = {}): ExperimentSpec => ({
  name: 'bench',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template, params },
  target: { namespace: 'bench', nodeSelector: {}, hosts: 1000 },
  durationSeconds: 600,
  criticalProcesses: ['^postgres$', '^kubelet$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
  },
});

const ms = (v: number) => `${v.toFixed(0)} ms`;

export async function run(): Promise<string> {
  const runs = Number(process.env.BENCH_PREVIEW_RUNS ?? 5);
  const burst = Number(process.env.BENCH_PREVIEW_BURST ?? 12);
  const previews = createPreviewService({ sampler: new EmulatorFleetSampler() });
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    const p = await previews.preview(`bench-${i}`, spec('process-topk-v1', { k: 20 }));
    times.push(performance.now() - started);
    if (i === 0)
      console.log(
        `topk k=20 on 1,000 hosts (${p.sampledHosts} sampled): series ${p.baseline.series} → ${p.candidate.series} (${p.removedSeriesPct}% removed)`,
      );
  }
  times.sort((a, b) => a - b);
  console.log(
    `sequential: ${runs} previews, median ${ms(times[Math.floor(runs / 2)]!)}, max ${ms(times[runs - 1]!)}`,
  );

  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const started = performance.now();
  const outcomes = await Promise.allSettled(
    Array.from({ length: burst }, (_, i) => previews.preview(`burst-${i}`, spec('process-minimal-v1'))),
  );
  const elapsed = performance.now() - started;
  loop.disable();
  const busy = outcomes.filter((o) => o.status === 'rejected' && o.reason instanceof PreviewBusy).length;
  const done = outcomes.filter((o) => o.status === 'fulfilled').length;
  const line = `burst of ${burst}: ${done} answered in ${ms(elapsed)}, ${busy} busy at once (2 run, 4 wait); event loop delay p99 ${ms(loop.percentile(99) / 1e6)}, max ${ms(loop.max / 1e6)}`;
  console.log(line);
  return `preview median ${ms(times[Math.floor(runs / 2)]!)}; ${line}`;
}

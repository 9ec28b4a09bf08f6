/**
 * `npm run bench [-- name…]`: every benchmark in turn, or only those named (`npm run bench -- api
 * lifecycle`), each under a header, then one summary line per benchmark. A benchmark that fails prints
 * its error; the others still run, and the index exits 1.
 *
 * Defaults: DATABASE_URL postgres://postgres@127.0.0.1:5432/postgres (bench/support.ts), NATS_URL
 * nats://127.0.0.1:4222 (bench/server.ts). Sizes: the BENCH_* variables each file documents.
 */
import { BENCH_DATABASE_URL } from './support.js';

interface BenchModule {
  run(): Promise<unknown>;
}

const BENCHES: Record<string, () => Promise<BenchModule>> = {
  'event-store': () => import('./event-store.bench.js'),
  dataplane: () => import('./dataplane.bench.js'),
  projections: () => import('./projections.bench.js'),
  api: () => import('./api.bench.js'),
  lifecycle: () => import('./lifecycle.bench.js'),
  otelcol: () => import('./otelcol.bench.js'),
  preview: () => import('./preview.bench.js'),
  kubernetes: () => import('./kubernetes.bench.js'),
};

const asked = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = asked.filter((a) => !(a in BENCHES));
if (unknown.length > 0) {
  console.error(`unknown bench ${unknown.join(', ')}; choose from ${Object.keys(BENCHES).join(', ')}`);
  process.exit(2);
}
const selected = asked.length > 0 ? asked : Object.keys(BENCHES);

interface Outcome {
  readonly name: string;
  readonly ok: boolean;
  readonly seconds: number;
  readonly summary: string;
}

console.log(
  `phoenix benchmarks: ${selected.join(', ')} — PostgreSQL ${new URL(BENCH_DATABASE_URL).host}, NATS ${process.env.NATS_URL ?? 'nats://127.0.0.1:4222'}, node ${process.version}`,
);
const outcomes: Outcome[] = [];
for (const name of selected) {
  console.log(`\n=== ${name} ${'='.repeat(Math.max(3, 90 - name.length))}`);
  const started = performance.now();
  try {
    const mod = await BENCHES[name]!();
    const result = await mod.run();
    outcomes.push({
      name,
      ok: true,
      seconds: (performance.now() - started) / 1000,
      summary: typeof result === 'string' ? result : 'done (figures above)',
    });
  } catch (err) {
    console.error(`${name} failed:`, err);
    const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    outcomes.push({ name, ok: false, seconds: (performance.now() - started) / 1000, summary: message });
  }
}

console.log(`\n=== summary ${'='.repeat(83)}`);
const width = Math.max(...outcomes.map((o) => o.name.length));
for (const o of outcomes) {
  console.log(
    `${o.name.padEnd(width)}  ${(o.ok ? 'ok' : 'FAILED').padEnd(6)}  ${`${o.seconds.toFixed(0)} s`.padStart(6)}  ${o.summary}`,
  );
}
process.exit(outcomes.every((o) => o.ok) ? 0 : 1);

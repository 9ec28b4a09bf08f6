import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BOOTSTRAP_RESAMPLES,
  bootstrapInterval,
  type HostPair,
  pairedComparison,
  RANK_BISERIAL,
  relativeChangePct,
  signedRank,
  WILCOXON,
} from '../src/domain/statistics.js';

/**
 * Hollander & Wolfe (1973, p. 29 f.; 2nd ed. 1999 Example 3.1): Hamilton depression scale factor IV,
 * first (x) and second (y) visit of nine patients — the example of R's `?wilcox.test`.
 */
const x = [1.83, 0.5, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.3];
const y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29];
const xMinusY = x.map((v, i) => v - (y[i] as number));
const yMinusX = xMinusY.map((d) => -d);

const close = (actual: number, expected: number, tolerance: number, what: string) =>
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `${what}: ${actual}, expected ${expected} ± ${tolerance}`,
  );

describe('signedRank: the Wilcoxon signed-rank test against published worked examples', () => {
  it('H&W depression, exact: V = 40, two-sided p = 0.03906 (R: wilcox.test(x, y, paired = TRUE))', () => {
    const r = signedRank(xMinusY);
    assert.equal(r.statistic, 40);
    assert.equal(r.method, 'exact');
    assert.equal(r.n, 9);
    close(r.pValue, 0.03906, 5e-6, 'p');
  });

  it('H&W depression, exact one-sided: p = 0.01953 (R: alternative = "greater")', () => {
    const r = signedRank(xMinusY, { alternative: 'greater' });
    assert.equal(r.statistic, 40);
    close(r.pValue, 0.01953, 5e-6, 'p');
  });

  it('H&W large-sample approximation: V = 5, p = 0.01908 (R: wilcox.test(y - x, alternative = "less", exact = FALSE, correct = FALSE))', () => {
    // A tenth host with no change: its zero difference is dropped (Wilcoxon's method), and, as in R,
    // a zero rules the exact distribution out, so the normal approximation gives H&W's z = −2.07.
    const r = signedRank([...yMinusX, 0], { alternative: 'less', correction: false });
    assert.equal(r.statistic, 5);
    assert.equal(r.n, 9);
    assert.equal(r.method, 'normal');
    close(r.pValue, 0.01908, 5e-6, 'p');
  });

  it('the normal approximation with continuity correction (R default when it cannot be exact): p = 0.04401', () => {
    // z = (40 − 22.5 − 0.5) / sqrt(9·10·19/24) = 2.01399; two-sided p = 0.044011.
    const r = signedRank([...xMinusY, 0]);
    assert.equal(r.method, 'normal');
    close(r.pValue, 0.044011, 5e-6, 'p');
  });

  it('ties: average ranks and the tie-corrected variance', () => {
    // |d| = 1,1,2,3,4,4,5: ranks 1.5,1.5,3,4,5.5,5.5,7; V = 1.5+1.5+3+5.5+5.5+7 = 24 (the −3 is negative).
    const d = [1, 1, 2, -3, 4, 4, 5];
    const r = signedRank(d);
    assert.equal(r.statistic, 24);
    assert.equal(r.method, 'normal');
    const n = 7;
    const ties = [2, 2]; // two groups of two
    const sigma = Math.sqrt((n * (n + 1) * (2 * n + 1)) / 24 - ties.reduce((a, t) => a + t ** 3 - t, 0) / 48);
    const z = (24 - (n * (n + 1)) / 4 - 0.5) / sigma;
    const p = 2 * (1 - normalCdf(z));
    close(r.pValue, p, 1e-6, 'p');
    close(r.rankBiserial, (2 * 24) / 28 - 1, 1e-12, 'rank-biserial');
  });

  it('matched-pairs rank-biserial: (T+ − T−)/(T+ + T−); H&W gives (40 − 5)/45 = 0.778', () => {
    close(signedRank(xMinusY).rankBiserial, 35 / 45, 1e-12, 'r');
    close(signedRank(yMinusX).rankBiserial, -35 / 45, 1e-12, 'r');
  });

  it('all candidates lower on every host: V = 0, effect −1', () => {
    const r = signedRank([-5, -6, -7, -8, -9, -10]);
    assert.equal(r.statistic, 0);
    assert.equal(r.rankBiserial, -1);
    close(r.pValue, 2 / 64, 1e-12, 'p (the smallest exact p for six pairs)');
  });

  it('no change anywhere: V = 0, p = 1, effect 0 (no evidence, no throw)', () => {
    assert.deepEqual(signedRank([0, 0, 0]), {
      statistic: 0,
      pValue: 1,
      n: 0,
      method: 'exact',
      rankBiserial: 0,
    });
    assert.deepEqual(signedRank([]), { statistic: 0, pValue: 1, n: 0, method: 'exact', rankBiserial: 0 });
  });

  it('one changed host among unchanged ones: p = 1 (n < 2 decides nothing)', () => {
    const r = signedRank([0, -4, 0]);
    assert.equal(r.n, 1);
    assert.equal(r.pValue, 1);
    assert.equal(r.rankBiserial, -1);
  });

  it('three hosts can never reach p < 0.25 two-sided: why the verdict is not a p-value threshold', () => {
    close(signedRank([-1, -2, -3]).pValue, 0.25, 1e-12, 'p');
  });
});

describe('bootstrapInterval and relativeChangePct', () => {
  const spread: HostPair[] = [
    { baseline: 1000, candidate: 300 },
    { baseline: 1200, candidate: 420 },
    { baseline: 800, candidate: 320 },
    { baseline: 1100, candidate: 300 },
    { baseline: 950, candidate: 410 },
  ];

  it('relative change of the sums: 100 × (Σc − Σb)/Σb; null without a baseline', () => {
    close(relativeChangePct(spread) as number, (100 * (1750 - 5050)) / 5050, 1e-12, 'change');
    assert.equal(relativeChangePct([{ baseline: 0, candidate: 5 }]), null);
    assert.equal(relativeChangePct([]), null);
  });

  it('is deterministic: the same hosts give the same interval (a fixed seed)', () => {
    assert.deepEqual(bootstrapInterval(spread, 0.95), bootstrapInterval(spread, 0.95));
  });

  it('holds the point estimate, and widens with the confidence', () => {
    const point = relativeChangePct(spread) as number;
    const i90 = bootstrapInterval(spread, 0.9);
    const i99 = bootstrapInterval(spread, 0.99);
    assert.ok(i90 && i99);
    assert.ok(i90.low <= point && point <= i90.high, JSON.stringify({ point, i90 }));
    assert.ok(i99.low <= i90.low && i99.high >= i90.high, JSON.stringify({ i90, i99 }));
    // Per host: −70%, −65%, −60%, −72.7%, −56.8%: resamples of them cannot leave that range.
    assert.ok(i99.low >= -72.73 && i99.high <= -56.84, `within the hosts' range: ${JSON.stringify(i99)}`);
  });

  it('hosts that all change alike give a point interval', () => {
    const alike = [1000, 2000, 3000].map((b) => ({ baseline: b, candidate: b * 0.4 }));
    const i = bootstrapInterval(alike, 0.95);
    assert.ok(i);
    close(i.low, -60, 1e-9, 'low');
    close(i.high, -60, 1e-9, 'high');
  });

  it('another seed gives another (close) interval: the seed is what makes it re-computable', () => {
    const a = bootstrapInterval(spread, 0.95, BOOTSTRAP_RESAMPLES, 1);
    const b = bootstrapInterval(spread, 0.95, BOOTSTRAP_RESAMPLES, 2);
    assert.ok(a && b);
    assert.notDeepEqual(a, b);
    close(a.low, b.low, 3, 'low');
  });
});

describe('pairedComparison', () => {
  it('reports hosts, samples, means, change, interval and the test with its effect size', () => {
    const pairs = [
      { baseline: 1000, candidate: 300 },
      { baseline: 1000, candidate: 320 },
      { baseline: 1000, candidate: 280 },
    ];
    const c = pairedComparison(pairs, 30, 0.95);
    assert.ok(c);
    assert.equal(c.hosts, 3);
    assert.equal(c.samples, 30);
    assert.equal(c.baselineMean, 1000);
    assert.equal(c.candidateMean, 300);
    assert.equal(c.relativeChangePct, -70);
    assert.ok(
      c.interval && c.interval.low <= -70 && c.interval.high >= -70 && c.interval.confidence === 0.95,
    );
    assert.equal(c.test?.name, WILCOXON);
    assert.equal(c.test?.statistic, 0);
    assert.equal(c.test?.pValue, 0.25);
    assert.deepEqual(c.test?.effectSize, { name: RANK_BISERIAL, value: -1 });
  });

  it('is null when the baseline has nothing', () => {
    assert.equal(pairedComparison([{ baseline: 0, candidate: 0 }], 3, 0.95), null);
  });
});

/** Φ, by integrating the normal density (Simpson's rule): independent of the library under test. */
function normalCdf(z: number): number {
  const steps = 20_000;
  const lo = -10;
  const h = (z - lo) / steps;
  const f = (t: number) => Math.exp((-t * t) / 2) / Math.sqrt(2 * Math.PI);
  let s = f(lo) + f(z);
  for (let i = 1; i < steps; i++) s += (i % 2 === 0 ? 2 : 4) * f(lo + i * h);
  return (s * h) / 3;
}

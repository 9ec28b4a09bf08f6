import mt19937 from '@stdlib/random-base-mt19937';
import wilcoxon from '@stdlib/stats-wilcoxon';
import type { Interval, PairedComparison } from './experiment-spec.js';

/**
 * The paired statistics of the verdict: both variants run on the same hosts, so each host is its own
 * control and the unit of analysis is the host (its mean over the run's samples), not the sample —
 * samples of one host are autocorrelated and would overstate the evidence.
 *
 * Per figure, over the hosts that have it for both variants:
 * - the point estimate is the relative change of the fleet: 100 × (Σ candidate − Σ baseline) / Σ baseline
 *   of the per-host means (a ratio estimator: what the whole target would save);
 * - its interval is a percentile bootstrap over hosts (resampling hosts with replacement, so a host's
 *   two variants stay together), with a fixed-seed Mersenne Twister: the verdict is re-computable from
 *   the stored per-host means, bit for bit;
 * - the test is the Wilcoxon signed-rank test of the per-host differences (candidate − baseline), from
 *   @stdlib/stats-wilcoxon: exact below 50 hosts without ties or zero differences, else the normal
 *   approximation with continuity correction (as R's `wilcox.test`); zero differences are dropped
 *   (Wilcoxon's method);
 * - the effect size is the matched-pairs rank-biserial correlation (Kerby 2014): (T+ − T−) / (T+ + T−),
 *   in [−1, 1], negative when the candidate is lower on most hosts.
 */

/** One host's means of one figure, one per variant. */
export interface HostPair {
  readonly baseline: number;
  readonly candidate: number;
}

export const BOOTSTRAP_RESAMPLES = 2000;
/** Fixed, so that the same evidence gives the same interval on every machine and every re-judge. */
export const BOOTSTRAP_SEED = 20_200_301;

export const WILCOXON = 'wilcoxon-signed-rank';
export const RANK_BISERIAL = 'matched-pairs rank-biserial correlation';

export interface SignedRankResult {
  /** V: the sum of the ranks of the positive differences (R's `V`). */
  readonly statistic: number;
  readonly pValue: number;
  /** Differences that were not zero (the test's n). */
  readonly n: number;
  readonly method: 'exact' | 'normal';
  readonly rankBiserial: number;
}

/**
 * The two-sided Wilcoxon signed-rank test of `differences` against 0. All-zero (or no) differences
 * carry no evidence of a change: V = 0, p = 1, effect 0. One non-zero difference: p = 1 (the exact
 * distribution of one rank puts half its mass on each side; @stdlib needs two).
 */
export const signedRank = (
  differences: readonly number[],
  options: {
    /** Continuity correction of the normal approximation (default true, as R). */
    readonly correction?: boolean;
    readonly alternative?: 'two-sided' | 'less' | 'greater';
  } = {},
): SignedRankResult => {
  const nonZero = differences.filter((d) => d !== 0);
  const n = nonZero.length;
  if (n === 0) return { statistic: 0, pValue: 1, n: 0, method: 'exact', rankBiserial: 0 };
  if (n === 1) {
    const v = (nonZero[0] as number) > 0 ? 1 : 0;
    return { statistic: v, pValue: 1, n: 1, method: 'exact', rankBiserial: v === 1 ? 1 : -1 };
  }
  const result = wilcoxon([...differences], {
    zeroMethod: 'wilcox',
    correction: options.correction ?? true,
    alternative: options.alternative ?? 'two-sided',
  });
  // @stdlib's rule (its method string does not say): exact up to 50 differences without zeros or ties.
  const distinct = new Set(nonZero.map(Math.abs)).size;
  const exact = n <= 50 && nonZero.length === differences.length && distinct === n;
  const total = (n * (n + 1)) / 2;
  return {
    statistic: result.statistic,
    pValue: Math.min(1, result.pValue),
    n,
    method: exact ? 'exact' : 'normal',
    rankBiserial: (2 * result.statistic) / total - 1,
  };
};

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

/** 100 × (Σ candidate − Σ baseline) / Σ baseline; null when the baseline sums to 0 or less. */
export const relativeChangePct = (pairs: readonly HostPair[]): number | null => {
  const b = sum(pairs.map((p) => p.baseline));
  if (!(b > 0)) return null;
  return (100 * (sum(pairs.map((p) => p.candidate)) - b)) / b;
};

/** The q-quantile of sorted values (R's type 7, linear interpolation). */
const quantile = (sorted: readonly number[], q: number): number => {
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const a = sorted[lo] as number;
  const b = sorted[Math.min(lo + 1, sorted.length - 1)] as number;
  return a + (h - lo) * (b - a);
};

/**
 * The percentile bootstrap interval of relativeChangePct over hosts. Resamples whose baseline sums to
 * 0 are skipped (they have no relative change); null when no resample had one.
 */
export const bootstrapInterval = (
  pairs: readonly HostPair[],
  confidence: number,
  resamples: number = BOOTSTRAP_RESAMPLES,
  seed: number = BOOTSTRAP_SEED,
): Interval | null => {
  const n = pairs.length;
  if (n === 0) return null;
  const random = mt19937.factory({ seed });
  const changes: number[] = [];
  for (let r = 0; r < resamples; r++) {
    let b = 0;
    let c = 0;
    for (let i = 0; i < n; i++) {
      const pick = pairs[Math.floor((random() / 4_294_967_296) * n)] as HostPair;
      b += pick.baseline;
      c += pick.candidate;
    }
    if (b > 0) changes.push((100 * (c - b)) / b);
  }
  if (changes.length === 0) return null;
  changes.sort((x, y) => x - y);
  const tail = (1 - confidence) / 2;
  return { low: quantile(changes, tail), high: quantile(changes, 1 - tail), confidence };
};

const round = (v: number, digits: number): number => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

/**
 * The paired comparison of one figure over hosts: null when no host has the figure for both variants
 * or the baseline sums to 0 (no relative change to speak of). Percentages and the interval are rounded
 * to two decimals, as the verdict compares them.
 */
export const pairedComparison = (
  pairs: readonly HostPair[],
  samples: number,
  confidence: number,
): PairedComparison | null => {
  const change = relativeChangePct(pairs);
  if (change === null) return null;
  const interval = bootstrapInterval(pairs, confidence);
  const test = signedRank(pairs.map((p) => p.candidate - p.baseline));
  const n = pairs.length;
  return {
    hosts: n,
    samples,
    baselineMean: round(sum(pairs.map((p) => p.baseline)) / n, 6),
    candidateMean: round(sum(pairs.map((p) => p.candidate)) / n, 6),
    relativeChangePct: round(change, 2),
    interval:
      interval === null
        ? null
        : { low: round(interval.low, 2), high: round(interval.high, 2), confidence: interval.confidence },
    test: {
      name: WILCOXON,
      statistic: test.statistic,
      pValue: round(test.pValue, 6),
      effectSize: { name: RANK_BISERIAL, value: round(test.rankBiserial, 4) },
    },
  };
};

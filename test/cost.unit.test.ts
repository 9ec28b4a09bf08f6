import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BUILT_IN_PRICING_PROFILES, estimateCost, type PricingProfile } from '../src/domain/cost.js';
import type { PairedComparison } from '../src/domain/experiment-spec.js';
import type { VariantMeasurement } from '../src/domain/verdict.js';

const MIB = 2 ** 20;

/** Every price non-zero, so every part is exercised. */
const profile: PricingProfile = {
  name: 'test',
  currency: 'USD',
  perSeriesMonth: 0.05,
  perMillionDatapoints: 0.09,
  perGbIngested: 0.1,
  bytesPerDatapoint: 100,
  cpuCoreHour: 0.04048,
  memoryGbHour: 0.004445,
  fleetHosts: 1000,
};

const baseline: VariantMeasurement = {
  series: 10_000,
  datapointsPerMinute: 40_000,
  collectorCpuCores: 0.1,
  collectorMemoryBytes: 100 * MIB,
};
const candidate: VariantMeasurement = {
  series: 3_000,
  datapointsPerMinute: 12_000,
  collectorCpuCores: 0.12,
  collectorMemoryBytes: 110 * MIB,
};

const comparison = (relativeChangePct: number, low: number, high: number): PairedComparison => ({
  hosts: 10,
  samples: 100,
  baselineMean: 1,
  candidateMean: 1,
  relativeChangePct,
  interval: { low, high, confidence: 0.95 },
  test: null,
});

describe('estimateCost', () => {
  it('prices every part as worked by hand (no statistics: the measured difference, no interval)', () => {
    const cost = estimateCost({ profile, targetHosts: 10, baseline, candidate });
    // series: 7,000 fewer × $0.05 = $350
    // datapoints: 28,000 fewer per minute × 43,800 min = 1,226,400,000 a month; ÷ 10⁶ × $0.09 = $110.376
    // ingest: 1,226,400,000 × 100 B = 122,640,000,000 B ÷ 2³⁰ = 114.2180 GB × $0.10 = $11.4218
    // CPU: +0.02 cores × 10 hosts × 730 h × $0.04048 = $5.91008 more
    // memory: +10 MiB × 10 hosts = 100 MiB = 0.09765625 GB × 730 h × $0.004445 = $0.316880 more
    // net: 350 + 110.376 + 11.4218 − 5.91008 − 0.31688 = $465.5708
    assert.deepEqual(cost.breakdown, {
      seriesSaving: 350,
      datapointSaving: 110.38,
      ingestSaving: 11.42,
      collectorCpuExtraCost: 5.91,
      collectorMemoryExtraCost: 0.32,
    });
    assert.deepEqual(cost.monthly, {
      target: { saving: 465.57, low: null, high: null },
      // 1,000 hosts ÷ 10: × 100
      fleet: { saving: 46557.08, low: null, high: null },
    });
    assert.equal(cost.profile, 'test');
    assert.equal(cost.currency, 'USD');
    assert.equal(cost.assumptions.fleetHosts, 1000);
    assert.equal(cost.assumptions.hoursPerMonth, 730);
  });

  it('takes the change and its interval from the paired statistics', () => {
    const cost = estimateCost({
      profile: { ...profile, perMillionDatapoints: 0, perGbIngested: 0, memoryGbHour: 0 },
      targetHosts: 10,
      baseline,
      candidate,
      statistics: {
        series: comparison(-70, -74, -66),
        collectorCpuCores: comparison(20, 10, 30),
      },
    });
    // series: 10,000 × $0.05 = $500 a month in the baseline; −70% (CI −74 … −66) → saving 350 (330 … 370)
    // CPU: 0.1 × 10 × 730 × $0.04048 = $29.5504 a month; +20% (CI +10 … +30) → 5.91008 more (2.95504 … 8.86512)
    // net 344.08992; least 330 − 8.86512 = 321.13488; most 370 − 2.95504 = 367.04496
    assert.deepEqual(cost.monthly.target, { saving: 344.09, low: 321.13, high: 367.04 });
    assert.deepEqual(cost.monthly.fleet, { saving: 34408.99, low: 32113.49, high: 36704.5 });
    assert.equal(cost.assumptions.confidence, 0.95);
    assert.equal(cost.breakdown.datapointSaving, 0);
  });

  it('has no interval when a priced figure has no paired statistics', () => {
    const cost = estimateCost({
      profile,
      targetHosts: 10,
      baseline,
      candidate,
      statistics: { series: comparison(-70, -74, -66) },
    });
    assert.equal(cost.monthly.target.low, null);
    assert.equal(cost.monthly.fleet.high, null);
  });

  it('leaves an unmeasured part out and says so', () => {
    const cost = estimateCost({
      profile: { ...profile, fleetHosts: undefined },
      targetHosts: 4,
      baseline: { ...baseline, collectorCpuCores: null },
      candidate,
    });
    assert.equal(cost.breakdown.collectorCpuExtraCost, 0);
    assert.equal(cost.assumptions.missing, 'collectorCpuCores');
    // Without a fleet size the fleet is the target.
    assert.deepEqual(cost.monthly.fleet, cost.monthly.target);
    assert.equal(cost.assumptions.fleetHosts, 4);
  });

  it('counts a candidate that keeps more as a negative saving', () => {
    const cost = estimateCost({
      profile: BUILT_IN_PRICING_PROFILES.find((p) => p.name === 'default') as PricingProfile,
      targetHosts: 2,
      baseline: { ...baseline, collectorCpuCores: 0.1, collectorMemoryBytes: 100 * MIB },
      candidate: { ...baseline, series: 12_000 },
    });
    // 2,000 more series × $0.05 = $100 more a month; CPU and memory unchanged.
    assert.equal(cost.monthly.target.saving, -100);
    assert.equal(cost.breakdown.seriesSaving, -100);
  });

  it('built-in profiles carry their sources and a default exists', () => {
    const names = BUILT_IN_PRICING_PROFILES.map((p) => p.name);
    assert.ok(names.includes('default'));
    assert.equal(new Set(names).size, names.length);
    for (const p of BUILT_IN_PRICING_PROFILES) assert.ok((p.sources ?? []).length > 0, p.name);
  });
});

import type { Analysis, CostEstimate, FigureName, Interval } from './experiment-spec.js';
import type { VariantMeasurement } from './verdict.js';

/**
 * The money: what a candidate's reduction is worth per month under a pricing profile, for the
 * experiment's target and for the whole fleet, minus what the candidate's collector costs more in CPU
 * and memory. A pure function of the measured figures, the paired statistics and the profile.
 *
 * Each part is one figure × one price:
 *
 * | part | figure | monthly value of a quantity |
 * | --- | --- | --- |
 * | seriesSaving | series (target total) | series × perSeriesMonth |
 * | datapointSaving | datapointsPerMinute (target total) | dpm × 43,800 min ÷ 10⁶ × perMillionDatapoints |
 * | ingestSaving | datapointsPerMinute | dpm × 43,800 × bytesPerDatapoint ÷ 2³⁰ × perGbIngested |
 * | collectorCpuExtraCost | collectorCpuCores (per node × target hosts) | cores × 730 h × cpuCoreHour |
 * | collectorMemoryExtraCost | collectorMemoryBytes (per node × target hosts) | bytes ÷ 2³⁰ × 730 h × memoryGbHour |
 *
 * A month is 730 hours (the cloud providers' convention: 8,760 h ÷ 12); a GB is 2³⁰ bytes (as AWS
 * bills memory and Prometheus storage).
 *
 * The change of each part is the baseline's monthly value × the paired comparison's
 * `relativeChangePct` when the statistics have one for that figure (so the figure and its interval
 * agree), else the candidate's value minus the baseline's. The interval of the net saving puts every
 * part at its own interval's least (and most) favourable end at once: wider than a joint interval,
 * so it never claims more certainty than the statistics give. It is null when a priced part has no
 * interval. A part whose figures were not measured is left out, and named under `assumptions.missing`.
 * The fleet figure scales the target's per host: × fleetHosts ÷ target hosts.
 */

export const HOURS_PER_MONTH = 730;
export const MINUTES_PER_MONTH = HOURS_PER_MONTH * 60;
const GIB = 2 ** 30;

export interface PricingProfile {
  readonly name: string;
  readonly description?: string | undefined;
  /** ISO 4217 code the prices are in. */
  readonly currency: string;
  /** Per active series per month (Datadog custom metrics, Grafana Cloud active series). */
  readonly perSeriesMonth: number;
  /** Per million data points (samples) ingested (Amazon/Google managed Prometheus). */
  readonly perMillionDatapoints: number;
  /** Per GB ingested (volume-billed back ends), with `bytesPerDatapoint` turning points into bytes. */
  readonly perGbIngested: number;
  readonly bytesPerDatapoint: number;
  /** The collector's compute: one CPU core for an hour, one GB of memory for an hour. */
  readonly cpuCoreHour: number;
  readonly memoryGbHour: number;
  /** Hosts in the whole fleet; absent, the fleet is the experiment's target. */
  readonly fleetHosts?: number | undefined;
  /** Where the prices come from (page and date), for whoever reads the estimate. */
  readonly sources?: readonly string[] | undefined;
}

export interface CostInput {
  readonly profile: PricingProfile;
  /** Hosts of the experiment's target. */
  readonly targetHosts: number;
  /** Series and data points per minute as target totals; collector CPU and memory per node. */
  readonly baseline: VariantMeasurement;
  readonly candidate: VariantMeasurement;
  /** The paired comparisons, when the analysis has them: their intervals bound the saving. */
  readonly statistics?: Analysis['statistics'];
}

interface Part {
  readonly key: string;
  readonly figure: FigureName;
  /** True for a cost the candidate adds (its increase is subtracted from the saving). */
  readonly cost: boolean;
  readonly price: (p: PricingProfile) => number;
  /** The variant's quantity over the target in the price's unit, or null when not measured. */
  readonly quantity: (m: VariantMeasurement, hosts: number) => number | null;
}

const perNode = (v: number | null, hosts: number): number | null => (v === null ? null : v * hosts);

const PARTS: readonly Part[] = [
  {
    key: 'seriesSaving',
    figure: 'series',
    cost: false,
    price: (p) => p.perSeriesMonth,
    quantity: (m) => m.series,
  },
  {
    key: 'datapointSaving',
    figure: 'datapointsPerMinute',
    cost: false,
    price: (p) => (p.perMillionDatapoints * MINUTES_PER_MONTH) / 1e6,
    quantity: (m) => m.datapointsPerMinute,
  },
  {
    key: 'ingestSaving',
    figure: 'datapointsPerMinute',
    cost: false,
    price: (p) => (p.perGbIngested * MINUTES_PER_MONTH * p.bytesPerDatapoint) / GIB,
    quantity: (m) => m.datapointsPerMinute,
  },
  {
    key: 'collectorCpuExtraCost',
    figure: 'collectorCpuCores',
    cost: true,
    price: (p) => p.cpuCoreHour * HOURS_PER_MONTH,
    quantity: (m, hosts) => perNode(m.collectorCpuCores, hosts),
  },
  {
    key: 'collectorMemoryExtraCost',
    figure: 'collectorMemoryBytes',
    cost: true,
    price: (p) => (p.memoryGbHour * HOURS_PER_MONTH) / GIB,
    quantity: (m, hosts) => perNode(m.collectorMemoryBytes, hosts),
  },
];

const cents = (v: number): number => Math.round(v * 100) / 100 + 0;

/** The monthly saving of the candidate over the baseline under `input.profile` (see the module's comment). */
export function estimateCost(input: CostInput): CostEstimate {
  const { profile, targetHosts, statistics } = input;
  const breakdown: Record<string, number> = {};
  const missing: string[] = [];
  const confidences: number[] = [];
  let saving = 0;
  let low = 0;
  let high = 0;
  let bounded = true;
  for (const part of PARTS) {
    const price = part.price(profile);
    if (price === 0) {
      breakdown[part.key] = 0;
      continue;
    }
    const before = part.quantity(input.baseline, targetHosts);
    const after = part.quantity(input.candidate, targetHosts);
    const comparison = statistics?.[part.figure];
    const relative =
      comparison && Number.isFinite(comparison.relativeChangePct) ? comparison.relativeChangePct : null;
    // The change of the part's monthly value, candidate minus baseline.
    let change: number;
    if (before !== null && relative !== null) change = (before * price * relative) / 100;
    else if (before !== null && after !== null) change = (after - before) * price;
    else {
      missing.push(part.figure);
      breakdown[part.key] = 0;
      continue;
    }
    const interval: Interval | null = comparison?.interval ?? null;
    // A saving is minus the change; an extra cost is the change itself.
    breakdown[part.key] = cents(part.cost ? change : -change);
    saving -= change;
    if (interval === null || before === null) {
      bounded = false;
      continue;
    }
    confidences.push(interval.confidence);
    const lowChange = (before * price * Math.min(interval.low, interval.high)) / 100;
    const highChange = (before * price * Math.max(interval.low, interval.high)) / 100;
    // The least saving comes with the largest change, whatever the part.
    low -= highChange;
    high -= lowChange;
  }
  const fleetHosts = profile.fleetHosts ?? targetHosts;
  const scale = targetHosts > 0 ? fleetHosts / targetHosts : 0;
  const bound = (v: number) => (bounded ? cents(v) : null);
  const assumptions: Record<string, number | string> = {
    hoursPerMonth: HOURS_PER_MONTH,
    targetHosts,
    fleetHosts,
    perSeriesMonth: profile.perSeriesMonth,
    perMillionDatapoints: profile.perMillionDatapoints,
    perGbIngested: profile.perGbIngested,
    bytesPerDatapoint: profile.bytesPerDatapoint,
    cpuCoreHour: profile.cpuCoreHour,
    memoryGbHour: profile.memoryGbHour,
    interval: bounded
      ? 'each part at its own interval end (conservative)'
      : 'none: a priced figure has no paired interval',
  };
  if (bounded && confidences.length > 0) assumptions.confidence = Math.min(...confidences);
  if (missing.length > 0) assumptions.missing = [...new Set(missing)].join(', ');
  if (profile.fleetHosts === undefined) assumptions.fleet = 'the target (the profile names no fleet size)';
  return {
    profile: profile.name,
    currency: profile.currency,
    monthly: {
      target: { saving: cents(saving), low: bound(low), high: bound(high) },
      fleet: { saving: cents(saving * scale), low: bound(low * scale), high: bound(high * scale) },
    },
    breakdown,
    assumptions,
  };
}

/** AWS Fargate, Linux/x86, us-east-1, on demand: the collector's compute in every built-in profile. */
const FARGATE = {
  cpuCoreHour: 0.04048,
  memoryGbHour: 0.004445,
} as const;
const FARGATE_SOURCE =
  'AWS Fargate Linux/x86 us-east-1 on-demand: $0.04048 per vCPU-hour, $0.004445 per GB-hour (https://www.vantage.sh/blog/fargate-pricing and https://www.wring.co/blog/aws-fargate-pricing-guide, read 2026-12-06)';

const DATADOG: PricingProfile = {
  name: 'datadog-custom-metrics',
  description:
    'Datadog custom metrics beyond the per-host allotment: $5 per 100 per month (annual billing), each series a custom metric; collector on AWS Fargate',
  currency: 'USD',
  perSeriesMonth: 0.05,
  perMillionDatapoints: 0,
  perGbIngested: 0,
  bytesPerDatapoint: 0,
  ...FARGATE,
  sources: [
    'Datadog custom metrics: $5.00 per 100 custom metrics per month on annual billing beyond 100 per host (Pro) (https://signoz.io/blog/datadog-custom-metrics-pricing, read 2026-12-06); a custom metric is a metric name × tag values (https://docs.datadoghq.com/account_management/billing/custom_metrics/)',
    FARGATE_SOURCE,
  ],
};

/**
 * The profiles Phoenix knows without configuration; PHOENIX_PRICING_FILE adds to them (and may replace
 * one by name, `default` included). Their prices are public list prices, cited in `sources` and in
 * docs/pricing.md; a price that could not be confirmed says so.
 */
export const BUILT_IN_PRICING_PROFILES: readonly PricingProfile[] = [
  { ...DATADOG, name: 'default', description: `The same as datadog-custom-metrics: ${DATADOG.description}` },
  DATADOG,
  {
    name: 'amazon-managed-prometheus',
    description:
      'Amazon Managed Service for Prometheus, per sample ingested (first tier); collector on AWS Fargate. The sample price is NOT confirmed from a stored copy of the AWS page',
    currency: 'USD',
    perSeriesMonth: 0,
    perMillionDatapoints: 0.09,
    perGbIngested: 0,
    bytesPerDatapoint: 0,
    ...FARGATE,
    sources: [
      'Amazon Managed Service for Prometheus bills each metric sample ingested (https://aws.amazon.com/prometheus/pricing/); the first-tier price of $0.90 per 10 million samples could not be confirmed from the stored copy (its table was not captured); a 2026 blog reports 700 M samples ≈ US$65 (https://tianzhui.cloud/post/d7m50c7n/), consistent with it',
      FARGATE_SOURCE,
    ],
  },
  {
    name: 'alibaba-managed-prometheus-samples',
    description:
      'Alibaba Cloud Managed Service for Prometheus billed by sample count: USD 0.176 per million samples (first tier, outside the Chinese mainland); collector on AWS Fargate',
    currency: 'USD',
    perSeriesMonth: 0,
    perMillionDatapoints: 0.176,
    perGbIngested: 0,
    bytesPerDatapoint: 0,
    ...FARGATE,
    sources: [
      'Alibaba Cloud Managed Service for Prometheus: USD 0.176 per million samples (https://www.alibabacloud.com/help/en/prometheus/product-overview/billing-examples, read 2026-12-06)',
      FARGATE_SOURCE,
    ],
  },
  {
    name: 'alibaba-managed-prometheus-volume',
    description:
      'Alibaba Cloud Managed Service for Prometheus billed by remote-write volume: USD 0.087 per GB, 0.5 KB per sample as in its own examples; collector on AWS Fargate',
    currency: 'USD',
    perSeriesMonth: 0,
    perMillionDatapoints: 0,
    perGbIngested: 0.087,
    bytesPerDatapoint: 512,
    ...FARGATE,
    sources: [
      'Alibaba Cloud Managed Service for Prometheus: USD 0.087 per GB of remote-write data, examples at a 0.5 KB sample size (https://www.alibabacloud.com/help/en/prometheus/product-overview/billing-examples, read 2026-12-06)',
      FARGATE_SOURCE,
    ],
  },
];

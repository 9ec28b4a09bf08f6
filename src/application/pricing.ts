import { z } from 'zod';
import { BUILT_IN_PRICING_PROFILES, estimateCost, type PricingProfile } from '../domain/cost.js';
import type { Analysis, ExperimentSpec } from '../domain/experiment-spec.js';
import type { Measurements } from '../domain/verdict.js';

/**
 * Pricing profiles from configuration: the built-in ones (domain/cost.ts, with their public sources)
 * and a user's own from PHOENIX_PRICING_FILE, checked here once at start-up. A profile of the file
 * replaces a built-in one of the same name (`default` included).
 */

const price = () => z.number().min(0).max(1e9);

export const pricingProfileSchema = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'lower-case letters, digits, ".", "_" and "-", at most 64'),
  description: z.string().max(1000).optional(),
  currency: z
    .string()
    .regex(/^[A-Z]{3}$/, 'an ISO 4217 code such as USD')
    .default('USD'),
  perSeriesMonth: price().default(0),
  perMillionDatapoints: price().default(0),
  perGbIngested: price().default(0),
  bytesPerDatapoint: z.number().min(0).max(1e6).default(0),
  cpuCoreHour: price().default(0),
  memoryGbHour: price().default(0),
  fleetHosts: z.number().int().min(1).max(10_000_000).optional(),
  sources: z.array(z.string().max(1000)).max(20).optional(),
});

export const pricingFileSchema = z.strictObject({
  profiles: z
    .array(pricingProfileSchema)
    .min(1)
    .max(100)
    .superRefine((profiles, ctx) => {
      const seen = new Set<string>();
      profiles.forEach((p, i) => {
        if (seen.has(p.name))
          ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `'${p.name}' is named twice` });
        seen.add(p.name);
      });
    }),
});

/**
 * The profiles in force: the built-ins, then the file's (replacing by name). `fleetHosts` is the
 * fleet size of every profile that names none (PHOENIX_FLEET_HOSTS).
 */
export function resolvePricingProfiles(
  fromFile: readonly PricingProfile[] = [],
  fleetHosts?: number,
): readonly PricingProfile[] {
  const byName = new Map<string, PricingProfile>();
  for (const p of [...BUILT_IN_PRICING_PROFILES, ...fromFile]) byName.set(p.name, p);
  return [...byName.values()].map((p) =>
    p.fleetHosts === undefined && fleetHosts !== undefined ? { ...p, fleetHosts } : p,
  );
}

export const DEFAULT_PRICING_PROFILE = 'default';

/**
 * The profile an experiment's analysis is priced with: the one it names, else `default`. A name that
 * is no longer configured (the file changed since the experiment was created) falls back to
 * `default` too; `fellBack` says so, for the estimate's assumptions.
 */
export function pricingProfileFor(
  profiles: readonly PricingProfile[],
  name: string | undefined,
): { profile: PricingProfile; fellBack: boolean } | undefined {
  const wanted = name ?? DEFAULT_PRICING_PROFILE;
  const found = profiles.find((p) => p.name === wanted);
  if (found) return { profile: found, fellBack: false };
  const fallback = profiles.find((p) => p.name === DEFAULT_PRICING_PROFILE);
  return fallback ? { profile: fallback, fellBack: true } : undefined;
}

/**
 * The analysis with its cost: what the analyzer worker records. Pure: the profiles come from
 * configuration, everything else from the analysis and what was measured. Without any profile
 * (none configured, not even `default`) the analysis is returned as it is.
 */
export function withCost(
  analysis: Analysis,
  input: {
    readonly profiles: readonly PricingProfile[];
    readonly spec: Pick<ExperimentSpec, 'pricingProfile' | 'target'>;
    readonly measurements: Pick<Measurements, 'baseline' | 'candidate'>;
  },
): Analysis {
  const priced = pricingProfileFor(input.profiles, input.spec.pricingProfile);
  if (priced === undefined) return analysis;
  const cost = estimateCost({
    profile: priced.profile,
    targetHosts: input.spec.target.hosts,
    baseline: input.measurements.baseline,
    candidate: input.measurements.candidate,
    statistics: analysis.statistics,
  });
  return {
    ...analysis,
    cost: priced.fellBack
      ? {
          ...cost,
          assumptions: {
            ...cost.assumptions,
            requestedProfile: `${input.spec.pricingProfile} (no longer configured: default used)`,
          },
        }
      : cost,
  };
}

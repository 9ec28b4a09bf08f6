/**
 * Event schema evolution. Each event type has a current schema version; an upcaster turns a stored
 * payload of version N into version N + 1. Every read path (aggregate loads, projections, replay, the
 * events endpoint) runs them through the event codec, so the rest of the code sees only current shapes.
 */
export const CURRENT_SCHEMA_VERSIONS: Readonly<Record<string, number>> = {
  // v2: `spec.criticalProcesses` became required (v1 creation events may lack it: nothing was critical).
  ExperimentCreated: 2,
};

export const currentSchemaVersion = (type: string): number => CURRENT_SCHEMA_VERSIONS[type] ?? 1;

type Upcaster = (data: Record<string, unknown>) => Record<string, unknown>;

const UPCASTERS: Readonly<Record<string, Readonly<Record<number, Upcaster>>>> = {
  ExperimentCreated: {
    1: (data) => {
      const spec = (data.spec ?? {}) as Record<string, unknown>;
      return { ...data, spec: { ...spec, criticalProcesses: spec.criticalProcesses ?? [] } };
    },
  },
};

/** Brings `data` from `schemaVersion` to the current version of `type`; throws if a step is missing. */
export function upcast(
  type: string,
  schemaVersion: number,
  data: Record<string, unknown>,
): Record<string, unknown> {
  const target = currentSchemaVersion(type);
  if (schemaVersion > target) {
    throw new Error(`schema version ${schemaVersion} of ${type} is newer than this build reads (${target})`);
  }
  let current = data;
  for (let v = schemaVersion; v < target; v++) {
    const step = UPCASTERS[type]?.[v];
    if (!step) throw new Error(`no upcaster for ${type} from schema version ${v}`);
    current = step(current);
  }
  return current;
}

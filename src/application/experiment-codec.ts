import type { ExperimentEvent } from '../domain/experiment.js';
import { upcast } from '../domain/upcasters.js';
import { CorruptEventError, type EventCodec, type StoredEvent } from './ports/event-store.js';
import { eventDataSchemas, eventMetadataSchema } from './schemas.js';

const isKnownType = (type: string): type is keyof typeof eventDataSchemas =>
  Object.hasOwn(eventDataSchemas, type);

/**
 * Reads stored experiment events: checks the type is known, upcasts old schema versions, and checks
 * the payload against the current schema. Whatever it cannot read is a CorruptEventError naming the
 * stream and version, never a crash further down.
 */
export const experimentCodec: EventCodec<ExperimentEvent> = {
  decode(raw: StoredEvent): StoredEvent<ExperimentEvent> {
    const fail = (reason: string): never => {
      throw new CorruptEventError(raw.streamId, raw.version, reason);
    };
    if (!isKnownType(raw.type)) return fail(`unknown event type '${raw.type}'`);
    const metadata = eventMetadataSchema.safeParse(raw.metadata);
    if (!metadata.success) return fail(`invalid metadata: ${metadata.error.issues[0]?.message ?? ''}`);
    if (typeof raw.data !== 'object' || raw.data === null || Array.isArray(raw.data)) {
      return fail(`${raw.type} payload is not an object`);
    }
    let data: Record<string, unknown>;
    try {
      data = upcast(raw.type, metadata.data.schemaVersion, raw.data as Record<string, unknown>);
    } catch (err) {
      return fail((err as Error).message);
    }
    const parsed = eventDataSchemas[raw.type].safeParse(data);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return fail(
        `invalid ${raw.type} payload at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? ''}`,
      );
    }
    return {
      ...raw,
      metadata: metadata.data,
      type: raw.type,
      data: parsed.data,
    } as StoredEvent<ExperimentEvent>;
  },
};

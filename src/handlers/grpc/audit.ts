import type { z } from 'zod';
import type { AuditEntry as AuditView, ReadModels } from '../../application/ports/read-models.js';
import { auditFilterOf, auditQuerySchema } from '../http/audit.js';
import { type CallDependencies, unary } from './calls.js';
import { catchUpWith, parse, stateOf, statusOf } from './experiments.js';
import type { AuditEntry, AuditServiceServer } from './gen/phoenix/v1/audit.js';
import { ExperimentState } from './gen/phoenix/v1/experiments.js';

const entryMessage = (e: AuditView): AuditEntry => ({
  experimentId: e.experimentId,
  experimentName: e.experimentName,
  from: e.from === null ? ExperimentState.EXPERIMENT_STATE_UNSPECIFIED : stateOf(e.from),
  to: stateOf(e.to),
  actor: e.actor,
  reason: e.reason,
  at: e.at,
  durationMs: e.durationMs ?? undefined,
  correlationId: e.correlationId,
});

/** `phoenix.v1.AuditService`: GET /api/v1/audit's JSON pages (admin), with the same query schema. */
export function auditService(
  deps: CallDependencies & { readonly readModels: ReadModels },
): AuditServiceServer {
  const catchUp = catchUpWith(deps.readModels);
  return {
    listAuditEntries: unary(deps, 'ListAuditEntries', 'admin', async (request) => {
      const fromState = statusOf(request.fromState, 'from_state');
      const toState = statusOf(request.toState, 'to_state');
      const q = parse(
        auditQuerySchema,
        {
          ...(request.experimentId !== undefined ? { experimentId: request.experimentId } : {}),
          ...(request.actor !== undefined ? { actor: request.actor } : {}),
          ...(fromState ? { fromState } : {}),
          ...(toState ? { toState } : {}),
          ...(request.since !== undefined ? { since: request.since } : {}),
          ...(request.until !== undefined ? { until: request.until } : {}),
          ...(request.pageSize !== 0 ? { limit: request.pageSize } : {}),
          ...(request.pageToken !== '' ? { cursor: request.pageToken } : {}),
        } satisfies z.input<typeof auditQuerySchema>,
        '',
        { limit: 'page_size', cursor: 'page_token' },
      );
      await catchUp(request.minPosition);
      const page = await deps.readModels.queryAudit(auditFilterOf(q), {
        limit: q.limit ?? 100,
        ...(q.cursor ? { cursor: q.cursor } : {}),
      });
      return { entries: page.items.map(entryMessage), nextPageToken: page.nextCursor ?? '' };
    }),
  };
}

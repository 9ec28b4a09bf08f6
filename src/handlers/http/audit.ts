import { Readable } from 'node:stream';
import { z } from 'zod';
import { isPosition } from '../../application/ports/event-store.js';
import type { AuditEntry, AuditFilter, ReadModels } from '../../application/ports/read-models.js';
import { dbText, holdableTime } from '../../application/schemas.js';
import { STATUSES } from '../../domain/experiment.js';
import type { TypedApp } from './typed-app.js';

export const AUDIT_COLUMNS = [
  'experimentId',
  'experimentName',
  'from',
  'to',
  'actor',
  'reason',
  'at',
  'durationMs',
  'correlationId',
] as const satisfies readonly (keyof AuditEntry)[];

/** One RFC 4180 field; cells a spreadsheet would run as a formula are prefixed with `'`. */
export const csvField = (value: unknown): string => {
  if (value === null || value === undefined) return '';
  let s = String(value);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

export const csvRow = (entry: AuditEntry): string =>
  `${AUDIT_COLUMNS.map((c) => csvField(entry[c])).join(',')}\r\n`;
export const csvHeader = `${AUDIT_COLUMNS.join(',')}\r\n`;

/** Streams the rows as they come from the read model; nothing is buffered whole. */
export async function* csvLines(
  entries: AsyncIterable<AuditEntry> | Iterable<AuditEntry>,
): AsyncIterable<string> {
  yield csvHeader;
  for await (const entry of entries) yield csvRow(entry);
}

/**
 * The same entries, with the first one already read: a query that fails at once throws here, before
 * anything is sent, instead of in the middle of a response that has begun.
 */
export async function primed<T>(entries: AsyncIterable<T>): Promise<AsyncIterable<T>> {
  const iterator = entries[Symbol.asyncIterator]();
  const first = await iterator.next();
  return (async function* () {
    if (first.done) return;
    yield first.value;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
  })();
}

/** True when the Accept header ranks text/csv above application/json (ties go to the first listed). */
export const prefersCsv = (accept: string | undefined): boolean => {
  if (!accept) return false;
  let best: { type: string; q: number } | undefined;
  for (const part of accept.split(',')) {
    const [type = '', ...params] = part.trim().toLowerCase().split(';');
    if (type !== 'text/csv' && type !== 'application/json' && type !== '*/*' && type !== 'application/*')
      continue;
    const q = Number(params.map((p) => /^\s*q=([\d.]+)\s*$/.exec(p)?.[1]).find(Boolean) ?? 1);
    if (!best || q > best.q) best = { type, q };
  }
  return best?.type === 'text/csv';
};

export const auditQuerySchema = z
  .strictObject({
    experimentId: z.uuid({ message: 'must be a UUID' }).optional(),
    actor: dbText().min(1).max(256).optional(),
    fromState: z.enum(STATUSES).optional(),
    toState: z.enum(STATUSES).optional(),
    since: holdableTime().optional(),
    until: holdableTime().optional(),
    limit: z.coerce.number().int().min(1).max(1000).optional(),
    cursor: dbText().min(1).max(512).optional(),
    minPosition: z
      .string()
      .max(64)
      .refine(isPosition, 'must be a position returned by this service')
      .optional(),
  })
  .refine((q) => !(q.since && q.until && Date.parse(q.since) > Date.parse(q.until)), {
    message: 'since must not be after until',
    path: ['since'],
  });

export type AuditQuery = z.infer<typeof auditQuerySchema>;

export const auditFilterOf = (q: AuditQuery): AuditFilter => ({
  ...(q.experimentId ? { experimentId: q.experimentId } : {}),
  ...(q.actor ? { actor: q.actor } : {}),
  ...(q.fromState ? { fromState: q.fromState } : {}),
  ...(q.toState ? { toState: q.toState } : {}),
  ...(q.since ? { since: new Date(q.since) } : {}),
  ...(q.until ? { until: new Date(q.until) } : {}),
});

/**
 * `GET /api/v1/audit` (admin): who moved which experiment when. JSON pages by default; with
 * `Accept: text/csv`, CSV — the requested page when `limit` or `cursor` is given, otherwise every
 * matching row, streamed.
 */
export async function auditRoutes(
  app: TypedApp,
  deps: { readModels: ReadModels; catchUp: (minPosition: string | undefined) => Promise<void> },
): Promise<void> {
  app.get(
    '/api/v1/audit',
    {
      config: { role: 'admin' },
      schema: {
        tags: ['audit'],
        summary: 'The audit trail of state transitions',
        querystring: auditQuerySchema,
      },
    },
    async (request, reply) => {
      const q = request.query;
      await deps.catchUp(q.minPosition);
      const filter = auditFilterOf(q);
      const wantsCsv = prefersCsv(request.headers.accept);
      if (!wantsCsv) {
        return deps.readModels.queryAudit(filter, {
          limit: q.limit ?? 100,
          ...(q.cursor ? { cursor: q.cursor } : {}),
        });
      }
      // Everything that can refuse the request does so before the first byte: the filter is valid by
      // now, and the first page is read before the status line goes out, so a failing query is a
      // problem+json, not a 200 cut off mid-body.
      const entries =
        q.limit !== undefined || q.cursor !== undefined
          ? await deps.readModels.queryAudit(filter, {
              limit: q.limit ?? 100,
              ...(q.cursor ? { cursor: q.cursor } : {}),
            })
          : undefined;
      const rows = entries ? entries.items : await primed(deps.readModels.streamAudit(filter));
      reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', 'attachment; filename="phoenix-audit.csv"');
      if (entries?.nextCursor) reply.header('x-next-cursor', entries.nextCursor);
      return reply.send(Readable.from(csvLines(rows)));
    },
  );
}

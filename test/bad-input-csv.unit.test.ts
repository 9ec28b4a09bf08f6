import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import type { AuditEntry, ReadModels } from '../src/application/ports/read-models.js';
import { TokenService } from '../src/handlers/auth.js';
import { buildApp } from '../src/handlers/http/app.js';
import { auditRoutes } from '../src/handlers/http/audit.js';
import type { TypedApp } from '../src/handlers/http/typed-app.js';
import { createMetrics } from '../src/handlers/metrics.js';

/**
 * A CSV export either completes or fails before its first byte: the audit route reads the first page
 * before it answers, so a read model that fails at once gives a problem+json, not a 200 whose body is
 * cut off. (A read model that fails later, mid-export, can only cut the body: the status is sent.)
 */

const entry = (i: number): AuditEntry => ({
  experimentId: '11111111-1111-4111-8111-111111111111',
  experimentName: `e${i}`,
  from: null,
  to: 'pending',
  actor: 'ada',
  reason: 'created',
  at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
  durationMs: null,
  correlationId: `c${i}`,
});

const readModelsStreaming = (stream: () => AsyncIterable<AuditEntry>): ReadModels =>
  ({
    streamAudit: stream,
    queryAudit: async () => {
      throw new Error('the page query is not what this test drives');
    },
  }) as unknown as ReadModels;

async function appWith(readModels: ReadModels) {
  const tokens = new TokenService('bad-input-csv-secret-bad-input-csv-secret');
  const app = await buildApp({
    logger: pino({ level: 'silent' }),
    metrics: createMetrics({ collectDefaults: false }),
    tokens,
    readiness: {},
    routes: [(scope: TypedApp) => auditRoutes(scope, { readModels, catchUp: async () => {} })],
  });
  const token = await tokens.mint({ sub: 'ada', role: 'admin' }, 600);
  return { app, token };
}

describe('audit CSV export: fails before its first byte or completes', () => {
  it('a read model failing on the first page → a 5xx problem+json, no CSV begun', async () => {
    const { app, token } = await appWith(
      readModelsStreaming(async function* () {
        yield* [];
        throw new Error('the database refused the query');
      }),
    );
    try {
      const res = await app.inject({
        method: 'GET',
        url: '/api/v1/audit',
        headers: { authorization: `Bearer ${token}`, accept: 'text/csv' },
      });
      assert.equal(res.statusCode, 500);
      assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
      assert.equal(res.headers['content-disposition'], undefined);
    } finally {
      await app.close();
    }
  });

  it('a read model that answers → every row, then the end', async () => {
    const { app, token } = await appWith(
      readModelsStreaming(async function* () {
        for (let i = 0; i < 2500; i++) yield entry(i);
      }),
    );
    try {
      const res = await app.inject({
        method: 'GET',
        url: '/api/v1/audit',
        headers: { authorization: `Bearer ${token}`, accept: 'text/csv' },
      });
      assert.equal(res.statusCode, 200);
      const lines = res.body.trimEnd().split('\r\n');
      assert.equal(lines.length, 2501);
      assert.match(lines[2500]!, /^11111111-1111-4111-8111-111111111111,e2499,/);
    } finally {
      await app.close();
    }
  });

  it('an empty export is the header alone', async () => {
    const { app, token } = await appWith(readModelsStreaming(async function* () {}));
    try {
      const res = await app.inject({
        method: 'GET',
        url: '/api/v1/audit',
        headers: { authorization: `Bearer ${token}`, accept: 'text/csv' },
      });
      assert.equal(res.statusCode, 200);
      assert.equal(
        res.body.split('\r\n')[0],
        'experimentId,experimentName,from,to,actor,reason,at,durationMs,correlationId',
      );
      assert.equal(res.body.trimEnd().split('\r\n').length, 1);
    } finally {
      await app.close();
    }
  });
});

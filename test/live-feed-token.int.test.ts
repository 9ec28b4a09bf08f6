import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import WebSocket from 'ws';
import { loadConfig } from '../src/config.js';
import { CLOSE_TOKEN_EXPIRED } from '../src/handlers/http/live.js';
import { buildSystem, type System } from '../src/main.js';
import { TEST_SECRET, validSpec } from './support/system.js';

interface FeedMessage {
  readonly kind: string;
  readonly position: string;
  readonly experimentId?: string;
  readonly type?: string;
}

/**
 * The live feed's token: it is never written to the log, and a feed ends when its token expires. A
 * whole Phoenix in this process (embedded database), listening, with a logger whose every line,
 * down to trace, is kept for the test to read.
 */
describe('live feed tokens', () => {
  let system: System;
  let dir: string;
  let base: string;
  const logged: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phoenix-live-token-'));
    const config = loadConfig({ PHOENIX_DATA_DIR: dir, PHOENIX_JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'trace' });
    const destination = new Writable({
      write(chunk, _encoding, done) {
        logged.push(String(chunk));
        done();
      },
    });
    system = await buildSystem(config, { logger: pino({ level: 'trace' }, destination) });
    await system.start();
    base = await system.app.listen({ host: '127.0.0.1', port: 0 });
  });
  after(async () => {
    await system.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Opens the feed; resolves with the socket once it is live, or rejects with the refused status. */
  const openFeed = (query: string, headers: Record<string, string> = {}) =>
    new Promise<{ ws: WebSocket; messages: FeedMessage[] }>((resolve, reject) => {
      const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/api/v1/live?${query}`, { headers });
      const messages: FeedMessage[] = [];
      ws.on('message', (data) => {
        messages.push(JSON.parse(String(data)));
        if (messages.at(-1)?.kind === 'live') resolve({ ws, messages });
      });
      ws.once('unexpected-response', (_request, response) => {
        reject(
          Object.assign(new Error(`upgrade refused: ${response.statusCode}`), {
            status: response.statusCode,
          }),
        );
        response.resume();
        ws.terminate();
      });
      ws.once('error', reject);
    });

  const closeCode = (ws: WebSocket) =>
    new Promise<number>((resolve) => {
      if (ws.readyState === ws.CLOSED) throw new Error('already closed');
      ws.once('close', (code) => resolve(code));
    });

  it('a feed is closed with 4401 when its token expires', { timeout: 20_000 }, async () => {
    const token = await system.tokens.mint({ sub: 'brief-viewer', role: 'viewer' }, 2);
    const { ws } = await openFeed('', { authorization: `Bearer ${token}` });
    assert.equal(await closeCode(ws), CLOSE_TOKEN_EXPIRED);
  });

  it('a feed opened with access_token ends at its exp too; a fresh token and from resume it', {
    timeout: 20_000,
  }, async () => {
    const operator = await system.tokens.mint({ sub: 'op', role: 'operator' }, 3600);
    const token = await system.tokens.mint({ sub: 'brief-browser', role: 'viewer' }, 2);
    const { ws, messages } = await openFeed(`access_token=${token}`);
    assert.equal(await closeCode(ws), CLOSE_TOKEN_EXPIRED);
    const last = messages.at(-1)!.position;
    // Written after the close: the reconnect from the last position seen gets it first.
    const created = await system.app.inject({
      method: 'POST',
      url: '/api/v1/experiments',
      headers: { authorization: `Bearer ${operator}` },
      payload: validSpec(),
    });
    assert.equal(created.statusCode, 201, created.body);
    const fresh = await system.tokens.mint({ sub: 'brief-browser', role: 'viewer' }, 3600);
    const again = await openFeed(`from=${encodeURIComponent(last)}&access_token=${fresh}`);
    const first = again.messages[0]!;
    assert.deepEqual(
      { kind: first.kind, experimentId: first.experimentId, type: first.type },
      { kind: 'event', experimentId: created.json().id, type: 'ExperimentCreated' },
    );
    again.ws.close();
  });

  it('no log line holds a token given as access_token, accepted or refused', {
    timeout: 20_000,
  }, async () => {
    const good = await system.tokens.mint({ sub: 'logged-viewer', role: 'viewer' }, 3600);
    const expired = await system.tokens.mint({ sub: 'logged-viewer', role: 'viewer' }, -10);
    const forged = `${good.slice(0, -6)}AAAAAA`;
    const before = logged.length;

    const feed = await openFeed(`access_token=${good}`);
    feed.ws.close();
    for (const bad of [expired, forged]) {
      await assert.rejects(openFeed(`access_token=${bad}`), { status: 401 });
    }
    // A bad query beside a good token (400), the token percent-encoded, given twice, and sent to
    // routes that do not take it: a REST route, an unknown route, a method the feed does not have.
    await assert.rejects(openFeed(`experimentId=nope&access_token=${good}`), { status: 400 });
    await assert.rejects(openFeed(`access%5Ftoken=${forged}`), { status: 401 });
    await assert.rejects(openFeed(`access_token=${good}&access_token=${forged}`), { status: 401 });
    for (const [method, url] of [
      ['GET', `/api/v1/templates?access_token=${forged}`],
      ['GET', `/api/v1/nothing?access_token=${forged}`],
      ['POST', `/api/v1/live?access_token=${forged}`],
      ['GET', `/api/v1/experiments?limit=x&access_token=${forged}`],
    ] as const) {
      const res = await fetch(`${base}${url}`, { method });
      assert.ok(res.status >= 400, `${method} ${url}: ${res.status}`);
      await res.arrayBuffer();
    }
    await new Promise((r) => setTimeout(r, 200)); // the last lines of the closed feed

    const lines = logged.slice(before).join('');
    for (const token of [good, expired, forged]) {
      assert.ok(!lines.includes(token), 'a token is in the log');
      assert.ok(!lines.includes(token.split('.')[2]!), "a token's signature is in the log");
    }
    // The requests were logged, with their URLs: only the tokens are not there.
    assert.match(lines, /"url":"\/api\/v1\/live\?experimentId=nope"/);
    assert.match(lines, /"url":"\/api\/v1\/templates"/);
  });
});

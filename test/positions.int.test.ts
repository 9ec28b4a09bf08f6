import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { startTestSystem, tokenFor } from './support/system.js';

/**
 * A position that the store could not have issued (a part beyond what its column holds) is a 400
 * where it comes in: at the live feed's upgrade (`from`), and as `minPosition`. It used to pass the
 * check, then fail in the database (`out of range for type xid8`): the feed closed with 1011 on every
 * reconnect.
 */
const OUT_OF_RANGE = [
  '99999999999999999999-00000000000000000001',
  '18446744073709551616-00000000000000000001',
  '00000000000000000001-09223372036854775808',
];
const HIGHEST = '18446744073709551615-09223372036854775807';

describe('positions out of range (in-process app, embedded database)', () => {
  let system: Awaited<ReturnType<typeof startTestSystem>>;
  let base: string;
  let viewer: string;
  before(async () => {
    system = await startTestSystem();
    await system.app.listen({ port: 0, host: '127.0.0.1' });
    base = `ws://127.0.0.1:${(system.app.server.address() as AddressInfo).port}`;
    viewer = await tokenFor(system, 'viewer');
  });
  after(() => system?.dispose());

  /** The upgrade's answer: 101 when the feed opened (then closed by us), else the HTTP status. */
  const upgrade = (from: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const ws = new WebSocket(`${base}/api/v1/live?from=${encodeURIComponent(from)}`, {
        headers: { authorization: `Bearer ${viewer}` },
      });
      ws.once('open', () => {
        ws.close();
        resolve({ status: 101, body: '' });
      });
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      });
      ws.once('error', (err) => {
        if (!/Unexpected server response/.test(err.message)) reject(err);
      });
    });

  it('the live feed refuses `from` out of range with 400 at the upgrade, and takes the highest position', {
    timeout: 60_000,
  }, async () => {
    for (const from of OUT_OF_RANGE) {
      const answer = await upgrade(from);
      assert.equal(answer.status, 400, `${from}: ${answer.status} ${answer.body}`);
      assert.match(answer.body, /from/);
    }
    assert.equal((await upgrade(HIGHEST)).status, 101);
  });

  it('minPosition out of range is a 400 on every query that takes it', { timeout: 60_000 }, async () => {
    const admin = await tokenFor(system, 'admin');
    for (const p of OUT_OF_RANGE) {
      for (const url of [
        `/api/v1/experiments?minPosition=${p}`,
        `/api/v1/experiments/00000000-0000-4000-8000-000000000000?minPosition=${p}`,
        `/api/v1/audit?minPosition=${p}`,
      ]) {
        const res = await system.app.inject({
          method: 'GET',
          url,
          headers: { authorization: `Bearer ${admin}` },
        });
        assert.equal(res.statusCode, 400, `${url}: ${res.statusCode} ${res.body}`);
        assert.match(res.json().detail + JSON.stringify(res.json().errors ?? []), /minPosition/);
      }
    }
  });
});

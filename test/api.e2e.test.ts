import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { type RunningServer, startServer } from './support/server.js';
import { validSpec } from './support/system.js';

interface FeedMessage {
  kind: 'event' | 'live';
  position: string;
  experimentId?: string;
  version?: number;
  type?: string;
  metadata?: { actor: string };
}

/** A live-feed client that records every message; `until` waits for a condition on them. */
function openFeed(
  url: string,
  token: string | undefined,
  query: Record<string, string> = {},
  viaQuery = false,
) {
  const params = new URLSearchParams(query);
  if (viaQuery && token) params.set('access_token', token);
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/api/v1/live?${params}`, {
    headers: token && !viaQuery ? { authorization: `Bearer ${token}` } : {},
  });
  const messages: FeedMessage[] = [];
  const waiters: (() => void)[] = [];
  let closing = false;
  ws.on('message', (data) => {
    // What arrives after the client decided to close is not "seen": the client resumes after its last.
    if (closing) return;
    messages.push(JSON.parse(String(data)));
    for (const w of waiters.splice(0)) w();
  });
  const until = (done: (m: FeedMessage[]) => boolean, timeoutMs = 15_000) =>
    new Promise<FeedMessage[]>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`feed condition not met; got ${JSON.stringify(messages.slice(-3))}`)),
        timeoutMs,
      );
      const check = () => {
        if (done(messages)) {
          clearTimeout(timer);
          resolve(messages);
        } else waiters.push(check);
      };
      check();
    });
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => {
      // Left open on purpose: the server must close a refused upgrade itself.
      reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
    });
    ws.once('error', reject);
  });
  return {
    ws,
    messages,
    until,
    opened,
    close: () => {
      closing = true;
      ws.close();
    },
  };
}

describe('end to end against the started server', () => {
  let server: RunningServer;
  let operator: string;
  let viewer: string;
  let admin: string;
  const api = async (
    method: string,
    path: string,
    token: string | undefined,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
  };

  before(async () => {
    server = await startServer();
    operator = await server.token('operator', 'alice');
    viewer = await server.token('viewer', 'victor');
    admin = await server.token('admin', 'ada');
  });
  after(async () => {
    await server?.dispose();
  });

  it('create → start → cancel; history and audit show the actor', async () => {
    const created = await api('POST', '/api/v1/experiments', operator, validSpec({ durationSeconds: 3600 }));
    assert.equal(created.status, 201, created.text);
    const { id } = created.json();
    assert.equal((await api('POST', `/api/v1/experiments/${id}/start`, operator)).status, 202);
    const cancelled = await api('POST', `/api/v1/experiments/${id}/cancel`, operator, { reason: 'e2e' });
    assert.equal(cancelled.status, 202, cancelled.text);
    const position = cancelled.json().position;
    const history = (
      await api('GET', `/api/v1/experiments/${id}/history?minPosition=${position}`, viewer)
    ).json();
    const transitions = history.items.map((h: { from: string | null; to: string }) => `${h.from}→${h.to}`);
    assert.equal(transitions[0], 'null→pending');
    assert.equal(transitions[1], 'pending→initializing');
    assert.equal(
      transitions[transitions.length - 1],
      `${history.items[history.items.length - 1].from}→cancelled`,
    );
    const cancelEntry = history.items[history.items.length - 1];
    assert.equal(cancelEntry.actor, 'alice');
    assert.equal(cancelEntry.reason, 'e2e');
    assert.ok(cancelEntry.durationMs >= 0);
    const audit = (
      await api('GET', `/api/v1/audit?experimentId=${id}&actor=alice&minPosition=${position}`, admin)
    ).json();
    assert.ok(
      audit.items.some((a: { to: string; actor: string }) => a.to === 'cancelled' && a.actor === 'alice'),
    );
    const experiment = (await api('GET', `/api/v1/experiments/${id}?minPosition=${position}`, viewer)).json();
    assert.equal(experiment.state, 'cancelled');
  });

  it('20 concurrent starts of one experiment → exactly one 202, the rest 409, one start event', async () => {
    const { id } = (
      await api('POST', '/api/v1/experiments', operator, validSpec({ durationSeconds: 3600 }))
    ).json();
    const results = await Promise.all(
      Array.from({ length: 20 }, () => api('POST', `/api/v1/experiments/${id}/start`, operator)),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [202, ...Array(19).fill(409)]);
    for (const r of results.filter((x) => x.status === 409)) {
      assert.match(r.headers.get('content-type') ?? '', /problem\+json/);
    }
    const events = (await api('GET', `/api/v1/experiments/${id}/events`, viewer)).json().items;
    assert.equal(events.filter((e: { type: string }) => e.type === 'ExperimentStarted').length, 1);
    await api('POST', `/api/v1/experiments/${id}/cancel`, operator);
  });

  it('the live feed: backlog, live marker, then new events; resumed after a disconnect with nothing lost or repeated', async () => {
    const first = (
      await api('POST', '/api/v1/experiments', operator, validSpec({ name: 'feed', durationSeconds: 3600 }))
    ).json();
    const id = first.id;
    // From the very beginning, filtered to this experiment.
    const feed = openFeed(server.url, viewer, { experimentId: id, from: '0' });
    await feed.opened;
    await feed.until((m) => m.some((x) => x.kind === 'live'));
    assert.equal(feed.messages.filter((m) => m.kind === 'live').length, 1);
    assert.deepEqual(
      feed.messages.filter((m) => m.kind === 'event').map((m) => m.type),
      ['ExperimentCreated'],
    );
    await api('POST', `/api/v1/experiments/${id}/start`, operator);
    await feed.until((m) => m.some((x) => x.type === 'ExperimentStarted'));
    const lastSeen = feed.messages.filter((m) => m.kind === 'event').at(-1)!;
    feed.close();

    // While disconnected: more events.
    await api('POST', `/api/v1/experiments/${id}/cancel`, operator, { reason: 'while away' });
    const resumed = openFeed(server.url, viewer, { experimentId: id, from: lastSeen.position }, true);
    await resumed.opened;
    const all = await resumed.until(
      (m) => m.some((x) => x.type === 'ExperimentCancelled') && m.some((x) => x.kind === 'live'),
    );
    const events = all.filter((m) => m.kind === 'event');
    const seenBefore = new Set(feed.messages.filter((m) => m.kind === 'event').map((m) => m.position));
    for (const e of events) {
      assert.ok(!seenBefore.has(e.position), 'no event repeated across the reconnect');
      assert.ok(e.position > lastSeen.position);
    }
    const versions = [...feed.messages, ...events].filter((m) => m.kind === 'event').map((m) => m.version);
    const expected = Array.from({ length: versions.length }, (_, i) => i + 1);
    assert.deepEqual(versions, expected, 'versions 1..n, none lost, none repeated');
    for (let i = 1; i < events.length; i++) assert.ok(events[i - 1]!.position < events[i]!.position);
    resumed.close();
  });

  it('the live feed without from starts at the head', async () => {
    const before = (
      await api('POST', '/api/v1/experiments', operator, validSpec({ durationSeconds: 3600 }))
    ).json();
    const feed = openFeed(server.url, viewer);
    await feed.opened;
    await feed.until((m) => m.some((x) => x.kind === 'live'));
    // Nothing from before the connection is replayed (other experiments may be moving meanwhile).
    for (const m of feed.messages.filter((x) => x.kind === 'event')) assert.ok(m.position > before.position);
    const { id } = (
      await api('POST', '/api/v1/experiments', operator, validSpec({ durationSeconds: 3600 }))
    ).json();
    await feed.until((m) => m.some((x) => x.experimentId === id && x.type === 'ExperimentCreated'));
    feed.close();
  });

  it('the live feed under a burst: every feed gets each event once and in order, a filtered one only its own', async () => {
    const target = (
      await api('POST', '/api/v1/experiments', operator, validSpec({ durationSeconds: 3600 }))
    ).json();
    const everything = [openFeed(server.url, viewer), openFeed(server.url, viewer)];
    const mine = openFeed(server.url, viewer, { experimentId: target.id, from: '0' });
    for (const feed of [...everything, mine]) {
      await feed.opened;
      await feed.until((m) => m.some((x) => x.kind === 'live'));
    }
    // Written together, so that the feeds get them in batches: several frames per write.
    const created = await Promise.all(
      Array.from({ length: 20 }, () =>
        api('POST', '/api/v1/experiments', operator, validSpec({ durationSeconds: 3600 })),
      ),
    );
    const ids = created.map((r) => r.json().id as string);
    await api('POST', `/api/v1/experiments/${target.id}/cancel`, operator, { reason: 'burst' });
    for (const feed of everything) {
      const messages = await feed.until(
        (m) =>
          ids.every((id) => m.some((x) => x.experimentId === id && x.type === 'ExperimentCreated')) &&
          m.some((x) => x.experimentId === target.id && x.type === 'ExperimentCancelled'),
      );
      const events = messages.filter((m) => m.kind === 'event');
      // Strictly increasing: in global order, none repeated.
      for (let i = 1; i < events.length; i++) assert.ok(events[i - 1]!.position < events[i]!.position);
    }
    const own = (await mine.until((m) => m.some((x) => x.type === 'ExperimentCancelled'))).filter(
      (m) => m.kind === 'event',
    );
    assert.ok(own.every((m) => m.experimentId === target.id));
    assert.deepEqual(
      own.map((m) => m.version),
      own.map((_, i) => i + 1),
    );
    for (const feed of [...everything, mine]) feed.close();
  });

  it('auth: the feed refuses a bad token at the upgrade with 401; the API refuses missing and low roles', async () => {
    const bad = openFeed(server.url, 'nope');
    await assert.rejects(bad.opened, (err: { status?: number }) => err.status === 401);
    const none = openFeed(server.url, undefined);
    await assert.rejects(none.opened, (err: { status?: number }) => err.status === 401);
    assert.equal((await api('GET', '/api/v1/experiments', undefined)).status, 401);
    assert.equal((await api('POST', '/api/v1/experiments', viewer, validSpec())).status, 403);
    assert.equal((await api('GET', '/api/v1/audit', operator)).status, 403);
  });

  it('health, readiness and metrics', async () => {
    assert.equal((await api('GET', '/healthz', undefined)).status, 200);
    assert.equal((await api('GET', '/readyz', undefined)).status, 200);
    const metrics = await api('GET', '/metrics', undefined);
    assert.match(metrics.text, /phoenix_experiments_by_state\{state="cancelled"\} \d+/);
  });

  it('shuts down cleanly on SIGTERM, sending close frames to feed clients', async () => {
    const feed = openFeed(server.url, viewer);
    await feed.opened;
    const closed = new Promise<number>((resolve) => feed.ws.once('close', (code) => resolve(code)));
    const exit = await server.stop('SIGTERM');
    assert.equal(await closed, 1001);
    assert.equal(exit, 0, server.output());
  });
});

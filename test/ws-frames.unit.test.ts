import assert from 'node:assert/strict';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { messageSink, textMessage } from '../src/handlers/http/ws-frames.js';

/** A server whose connections (and their network sockets) are handed to the test, and a recording client. */
async function pair(perMessageDeflate = false) {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const accepted = new Promise<{ socket: WebSocket; stream: Socket }>((resolve) =>
    server.once('connection', (socket, request) => resolve({ socket, stream: request.socket })),
  );
  const { port } = server.address() as AddressInfo;
  const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate });
  const received: { text: string; binary: boolean }[] = [];
  const waiters: (() => void)[] = [];
  client.on('message', (data, binary) => {
    received.push({ text: String(data), binary });
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((resolve, reject) => {
    client.once('open', () => resolve());
    client.once('error', reject);
  });
  const { socket, stream } = await accepted;
  const until = (n: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`got ${received.length} of ${n} messages`)), 10_000);
      const check = () => {
        if (received.length >= n) {
          clearTimeout(timer);
          resolve();
        } else waiters.push(check);
      };
      check();
    });
  const close = async () => {
    client.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return { socket, stream, client, received, until, close };
}

/** Counts the network socket's writes: `_writev` is the one a corked batch leaves in. */
function countWrites(stream: Socket) {
  const counts = { write: 0, writev: 0, chunks: 0 };
  const s = stream as unknown as {
    _write: (...args: unknown[]) => void;
    _writev: (chunks: unknown[], cb: unknown) => void;
  };
  const write = s._write.bind(stream);
  const writev = s._writev.bind(stream);
  s._write = (...args) => {
    counts.write++;
    counts.chunks++;
    write(...args);
  };
  s._writev = (chunks, cb) => {
    counts.writev++;
    counts.chunks += chunks.length;
    writev(chunks, cb);
  };
  return counts;
}

describe('WebSocket messages encoded once, a batch in one write, through ws', () => {
  let conn: Awaited<ReturnType<typeof pair>>;
  before(async () => {
    conn = await pair();
  });
  after(async () => {
    await conn.close();
  });

  it('a standard client reads each message as one text message, at every length encoding', async () => {
    // 7-bit, 16-bit and 64-bit payload lengths on both sides of each boundary, and multi-byte UTF-8.
    const texts = [1, 125, 126, 127, 65_535, 65_536, 70_000].map((n) => 'x'.repeat(n));
    texts.push('{"name":"é – 💡"}', 'ü'.repeat(63), 'ü'.repeat(64));
    const send = messageSink(conn.socket, conn.stream);
    for (const text of texts) send([textMessage(text)]);
    await conn.until(texts.length);
    assert.deepEqual(
      conn.received.map((m) => m.text),
      texts,
    );
    assert.ok(conn.received.every((m) => !m.binary));
  });

  it('a batch is several messages, in order, in one write of the network socket, interleaved rightly with ws.send', async () => {
    conn.received.length = 0;
    const send = messageSink(conn.socket, conn.stream);
    const counts = countWrites(conn.stream);
    send(['{"n":1}', '{"n":2}', '{"n":3}'].map(textMessage));
    assert.deepEqual(
      counts,
      { write: 0, writev: 1, chunks: 6 },
      'three headers and three payloads, one write',
    );
    conn.socket.send('{"n":4}');
    send([textMessage('{"n":5}')]);
    await conn.until(5);
    assert.deepEqual(
      conn.received.map((m) => JSON.parse(m.text).n),
      [1, 2, 3, 4, 5],
    );
  });

  it('without the network socket, messages still arrive, written one by one', async () => {
    conn.received.length = 0;
    messageSink(conn.socket, undefined)(['{"n":1}', '{"n":2}'].map(textMessage));
    await conn.until(2);
    assert.deepEqual(
      conn.received.map((m) => JSON.parse(m.text).n),
      [1, 2],
    );
  });

  it('sends nothing once the connection is closing', async () => {
    const other = await pair();
    try {
      const send = messageSink(other.socket, other.stream);
      other.socket.close(1000, 'bye');
      const counts = countWrites(other.stream);
      // After the close frame, a data frame would break the protocol (RFC 6455 §5.5.1).
      send([textMessage('too late'), textMessage('and this')]);
      assert.equal(counts.chunks, 0);
      const code = await new Promise<number>((resolve) => other.client.once('close', (c) => resolve(c)));
      assert.equal(code, 1000);
      assert.deepEqual(other.received, []);
    } finally {
      await other.close();
    }
  });

  it('with per-message deflate negotiated, ws compresses the same messages and they arrive in order', async () => {
    const deflating = await pair(true);
    try {
      assert.notEqual(deflating.socket.extensions, '');
      const texts = ['{"n":1}', 'y'.repeat(5_000), '{"n":3}'];
      messageSink(deflating.socket, deflating.stream)(texts.map(textMessage));
      await deflating.until(3);
      assert.deepEqual(
        deflating.received.map((m) => m.text),
        texts,
      );
    } finally {
      await deflating.close();
    }
  });
});

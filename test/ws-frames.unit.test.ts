import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { frameSink, textFrame } from '../src/handlers/http/ws-frames.js';

/** A server whose connections are handed to the test, and a client that records what it receives. */
async function pair(perMessageDeflate = false) {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const accepted = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
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
  const socket = await accepted;
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
  return { socket, client, received, until, close };
}

describe('WebSocket frames built once, written as bytes', () => {
  let conn: Awaited<ReturnType<typeof pair>>;
  before(async () => {
    conn = await pair();
  });
  after(async () => {
    await conn.close();
  });

  it('a standard client reads each frame as one text message, at every length encoding', async () => {
    // 7-bit, 16-bit and 64-bit payload lengths on both sides of each boundary, and multi-byte UTF-8.
    const texts = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000].map((n) => 'x'.repeat(n));
    texts.push('{"name":"é – 💡"}', 'ü'.repeat(63), 'ü'.repeat(64));
    const sink = frameSink(conn.socket);
    assert.ok(sink, 'a connection without extensions can take raw frames');
    for (const text of texts) sink(textFrame(text));
    await conn.until(texts.length);
    assert.deepEqual(
      conn.received.map((m) => m.text),
      texts,
    );
    assert.ok(conn.received.every((m) => !m.binary));
  });

  it('several frames in one write are several messages, in order, interleaved rightly with ws.send', async () => {
    conn.received.length = 0;
    const sink = frameSink(conn.socket)!;
    sink(Buffer.concat(['{"n":1}', '{"n":2}', '{"n":3}'].map(textFrame)));
    conn.socket.send('{"n":4}');
    sink(textFrame('{"n":5}'));
    await conn.until(5);
    assert.deepEqual(
      conn.received.map((m) => JSON.parse(m.text).n),
      [1, 2, 3, 4, 5],
    );
  });

  it('bytes written raw count in bufferedAmount', () => {
    // Not asserted as a number (the kernel takes what it can at once): only that the sink goes through
    // the stream ws reports on, which is what the feed's slow-consumer check reads.
    const stream = (conn.socket as unknown as { _socket: { writableLength: number } })._socket;
    assert.equal(conn.socket.bufferedAmount, stream.writableLength);
  });

  it('writes nothing once the connection is closing', async () => {
    const other = await pair();
    try {
      const sink = frameSink(other.socket)!;
      const stream = (other.socket as unknown as { _socket: { write: (b: Buffer) => boolean } })._socket;
      const written: Buffer[] = [];
      const write = stream.write.bind(stream);
      stream.write = (b: Buffer) => {
        written.push(b);
        return write(b);
      };
      other.socket.close(1000, 'bye');
      const closeFrames = written.length;
      // After the close frame, a data frame would break the protocol (RFC 6455 §5.5.1).
      sink(textFrame('too late'));
      assert.equal(written.length, closeFrames);
      const code = await new Promise<number>((resolve) => other.client.once('close', (c) => resolve(c)));
      assert.equal(code, 1000);
      assert.deepEqual(other.received, []);
    } finally {
      await other.close();
    }
  });

  it('with per-message deflate negotiated there is no raw sink: ws must frame (and compress) itself', async () => {
    const deflating = await pair(true);
    try {
      assert.notEqual(deflating.socket.extensions, '');
      assert.equal(frameSink(deflating.socket), undefined);
    } finally {
      await deflating.close();
    }
  });
});

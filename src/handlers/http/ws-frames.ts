import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/**
 * WebSocket text frames built once and written to many connections as bytes.
 *
 * `ws.send` frames its argument anew for every connection (encodes the string, builds a header) and
 * issues one socket write per message: for the live feed, 1,000 connections × every event, that is
 * a million writes for a thousand events, each a system call, on the one event-loop thread. Here each
 * frame is encoded once (an unmasked, unfragmented server frame: RFC 6455 §5.2), and a connection
 * gets all of one batch's frames in one write; the bytes on the wire are what `ws.send` would write.
 */

/** One unmasked text frame (FIN, opcode 1) holding `text`. */
export function textFrame(text: string): Buffer {
  const length = Buffer.byteLength(text);
  const header = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(header + length);
  frame[0] = 0x81;
  if (length < 126) {
    frame[1] = length;
  } else if (length < 65_536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  frame.write(text, header, 'utf8');
  return frame;
}

/** Writes whole, ready-made frames to one connection. */
export type FrameSink = (frames: Buffer) => void;

/**
 * A sink for `socket`: its frames go straight to the stream `ws` itself writes to, so they keep
 * their order with the frames `ws` sends (pings, the close frame) and count in `bufferedAmount`.
 * Only when no extension (per-message deflate) is negotiated: with one, `ws` may hold frames back
 * while it compresses, and raw bytes would overtake them. Undefined when the stream is not
 * reachable; the caller then sends through `ws`.
 */
export function frameSink(socket: WebSocket): FrameSink | undefined {
  if (socket.extensions !== '') return undefined;
  const stream = (socket as unknown as { _socket?: Duplex })._socket;
  if (!stream || typeof stream.write !== 'function') return undefined;
  return (frames) => {
    if (socket.readyState !== socket.OPEN || stream.destroyed || !stream.writable) return;
    stream.write(frames);
  };
}

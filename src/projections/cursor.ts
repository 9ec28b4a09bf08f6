import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { InvalidCursorError } from '../application/ports/read-models.js';

/**
 * Pagination cursors: opaque base64url strings carrying the keyset position of the last row served,
 * the kind of listing and a digest of its filter, signed (HMAC) so that a tampered cursor, or one
 * handed out for another listing or filter, is an InvalidCursorError instead of a wrong page.
 */
export interface CursorCodec {
  encode(kind: string, filter: unknown, key: readonly (string | number)[]): string;
  /** @throws InvalidCursorError */
  decode(kind: string, filter: unknown, cursor: string): readonly (string | number)[];
}

const digest = (filter: unknown): string =>
  createHash('sha256')
    .update(JSON.stringify(filter ?? null))
    .digest('base64url')
    .slice(0, 8);

export function cursorCodec(secret: string): CursorCodec {
  const sign = (payload: string) =>
    createHmac('sha256', secret).update(payload).digest('base64url').slice(0, 22);
  return {
    encode(kind, filter, key) {
      const payload = Buffer.from(JSON.stringify([kind, digest(filter), ...key])).toString('base64url');
      return `${payload}.${sign(payload)}`;
    },
    decode(kind, filter, cursor) {
      const [payload, signature, ...rest] = cursor.split('.');
      if (!payload || !signature || rest.length > 0) throw new InvalidCursorError('malformed cursor');
      const expected = Buffer.from(sign(payload));
      const given = Buffer.from(signature);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw new InvalidCursorError('this cursor was not handed out by this service');
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      } catch {
        throw new InvalidCursorError('malformed cursor');
      }
      if (!Array.isArray(parsed) || parsed[0] !== kind || parsed[1] !== digest(filter)) {
        throw new InvalidCursorError('this cursor belongs to another listing or filter');
      }
      const key = parsed.slice(2);
      if (!key.every((k) => typeof k === 'string' || typeof k === 'number')) {
        throw new InvalidCursorError('malformed cursor');
      }
      return key as (string | number)[];
    },
  };
}

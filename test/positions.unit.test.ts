import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidPositionError, parsePosition } from '../src/adapters/postgres-event-store.js';
import { isPosition, START } from '../src/application/ports/event-store.js';

/**
 * A position is two zero-padded 20-digit numbers: the transaction id (PostgreSQL's xid8, an unsigned
 * 64-bit number; EventStoreDB's commit position) and the global position (a bigint; EventStoreDB's
 * prepare position). A string whose parts these columns cannot hold was never issued by the store, and
 * is refused where it comes in, not when the database chokes on it.
 */
const XID8_MAX = '18446744073709551615';
const INT8_MAX = '09223372036854775807';

describe('positions', () => {
  it('takes START and every pair the store can issue, up to the largest each column holds', () => {
    for (const p of [
      START,
      '00000000000000000000-00000000000000000000',
      '00000000000000000746-00000000000000000001',
      `${XID8_MAX}-${INT8_MAX}`,
      `18446744073709551614-${INT8_MAX}`,
      `09999999999999999999-09223372036854775806`,
    ]) {
      assert.equal(isPosition(p), true, p);
      assert.equal(parsePosition(p).length, 2);
    }
    assert.deepEqual(parsePosition(`${XID8_MAX}-${INT8_MAX}`), [XID8_MAX, '9223372036854775807']);
  });

  it('refuses a part out of its column range, and everything that is not two 20-digit numbers', () => {
    for (const p of [
      '99999999999999999999-00000000000000000001',
      `18446744073709551616-00000000000000000001`,
      `00000000000000000001-09223372036854775808`,
      `00000000000000000001-99999999999999999999`,
      `${'9'.repeat(20)}-${'9'.repeat(20)}`,
      '',
      '00',
      '1-1',
      '0000000000000000001-00000000000000000001',
      '000000000000000000001-00000000000000000001',
      '00000000000000000001-0000000000000000000a',
      '00000000000000000001_00000000000000000001',
      ' 00000000000000000001-00000000000000000001',
      '00000000000000000001-00000000000000000001\n',
      '-0000000000000000001-00000000000000000001',
      '１0000000000000000001-00000000000000000001',
    ]) {
      assert.equal(isPosition(p), false, JSON.stringify(p));
      assert.throws(() => parsePosition(p), InvalidPositionError, JSON.stringify(p));
    }
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AuthenticationError, TokenService } from '../src/handlers/auth.js';

const SECRET = 'a-test-secret-of-enough-length-for-hs256';

describe('TokenService', () => {
  it('verifies what it minted, and refuses another key, a tampered token and alg none', async () => {
    const now = Date.parse('2026-11-22T10:00:00Z');
    const tokens = new TokenService(SECRET, { now: () => now });
    const token = await tokens.mint({ sub: 'alice', role: 'operator' }, 3600);
    assert.deepEqual(await tokens.verify(token), { sub: 'alice', role: 'operator', exp: now / 1000 + 3600 });
    await assert.rejects(new TokenService(`${SECRET}-other`).verify(token), AuthenticationError);
    const [h, p, sig] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ sub: 'alice', role: 'admin' })).toString('base64url');
    await assert.rejects(tokens.verify(`${h}.${forged}.${sig}`), AuthenticationError);
    const none = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
    await assert.rejects(tokens.verify(`${none}.${p}.`), AuthenticationError);
  });

  it('the principal carries exp only when the token has one (the live feed ends there)', async () => {
    let now = Date.parse('2026-11-22T10:00:00Z');
    const tokens = new TokenService(SECRET, { now: () => now });
    const forever = await tokens.mint({ sub: 'carol', role: 'viewer' });
    assert.deepEqual(await tokens.verify(forever), { sub: 'carol', role: 'viewer' });
    const brief = await tokens.mint({ sub: 'dave', role: 'viewer' }, 60);
    assert.equal((await tokens.verify(brief)).exp, now / 1000 + 60);
    now += 10_000;
    assert.equal(
      (await tokens.verify(brief)).exp,
      (now - 10_000) / 1000 + 60,
      'the remembered principal too',
    );
  });

  it('a remembered token still expires at its exp', async () => {
    let now = Date.parse('2026-11-22T10:00:00Z');
    const tokens = new TokenService(SECRET, { now: () => now });
    const token = await tokens.mint({ sub: 'bob', role: 'viewer' }, 60);
    assert.equal((await tokens.verify(token)).sub, 'bob');
    now += 30_000;
    assert.equal((await tokens.verify(token)).sub, 'bob');
    now += 31_000;
    await assert.rejects(tokens.verify(token), /token expired/);
    await assert.rejects(tokens.verify(token), /token expired/);
  });

  it('remembers at most cacheSize tokens, and a token it forgot is verified again', async () => {
    const tokens = new TokenService(SECRET, { cacheSize: 2 });
    const minted = await Promise.all(
      ['a', 'b', 'c'].map((sub) => tokens.mint({ sub, role: 'viewer' }, 3600)),
    );
    for (const t of minted) await tokens.verify(t);
    for (const t of minted) assert.ok((await tokens.verify(t)).sub);
    const uncached = new TokenService(SECRET, { cacheSize: 0 });
    assert.equal((await uncached.verify(minted[0]!)).sub, 'a');
  });
});

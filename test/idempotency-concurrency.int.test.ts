import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { systemTargets } from './support/databases.js';
import { startTestSystem, tokenFor, validSpec } from './support/system.js';

/**
 * Idempotency-Key under concurrency, on both databases: requests racing with one key and different
 * bodies must not all win. The first request to claim the key decides which body it belongs to; every
 * request with another body gets 422, concurrent or not, and the stream holds one creation.
 */

type TestSystem = Awaited<ReturnType<typeof startTestSystem>>;

const targets = systemTargets();

for (const target of targets) {
  describe(`Idempotency-Key under concurrency (${target.name})`, {
    skip: target.skip,
    timeout: 120_000,
  }, () => {
    let system: TestSystem;
    let drop: () => Promise<void>;
    let operator: string;
    before(async () => {
      const prepared = await target.env();
      drop = prepared.drop;
      system = await startTestSystem({ PHOENIX_RATE_LIMIT_PER_MINUTE: '100000', ...prepared.env });
      operator = await tokenFor(system, 'operator', `idem-${randomUUID()}`);
    });
    after(async () => {
      await system?.dispose();
      await drop?.();
    });

    const create = (body: object, key: string): Promise<LightMyRequestResponse> =>
      system.app.inject({
        method: 'POST',
        url: '/api/v1/experiments',
        headers: { authorization: `Bearer ${operator}`, 'idempotency-key': key },
        payload: body,
      });
    const eventsOf = async (id: string) =>
      (
        await system.app.inject({
          method: 'GET',
          url: `/api/v1/experiments/${id}/events`,
          headers: { authorization: `Bearer ${operator}` },
        })
      ).json().items as { data: { spec: { name: string } } }[];

    it('one key, two bodies, 20 at once: one body wins (201, one id), the other gets 422', async () => {
      for (let round = 0; round < 5; round++) {
        const key = `race-${randomUUID()}`;
        const bodies = [validSpec({ name: `body A ${round}` }), validSpec({ name: `body B ${round}` })];
        const sent = Array.from({ length: 20 }, (_, i) => i % 2);
        const answers = await Promise.all(sent.map((b) => create(bodies[b]!, key)));
        const won = answers.filter((a) => a.statusCode === 201);
        const refused = answers.filter((a) => a.statusCode === 422);
        assert.equal(
          won.length + refused.length,
          20,
          answers.map((a) => `${a.statusCode} ${a.body.slice(0, 120)}`).join('\n'),
        );
        const winners = new Set(answers.flatMap((a, i) => (a.statusCode === 201 ? [sent[i]] : [])));
        assert.equal(winners.size, 1, `round ${round}: both bodies got 201`);
        const winner = [...winners][0]!;
        for (let i = 0; i < 20; i++) {
          assert.equal(
            answers[i]!.statusCode,
            sent[i] === winner ? 201 : 422,
            `round ${round}, request ${i}`,
          );
        }
        for (const r of refused) {
          assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
        }
        const ids = new Set(won.map((a) => a.json().id));
        assert.equal(ids.size, 1);
        const events = await eventsOf([...ids][0]);
        assert.equal(events.length, 1);
        assert.equal(events[0]!.data.spec.name, `body ${winner === 0 ? 'A' : 'B'} ${round}`);
        // And afterwards, not concurrent: the same answers.
        assert.equal((await create(bodies[winner]!, key)).statusCode, 201);
        assert.equal((await create(bodies[1 - winner]!, key)).statusCode, 422);
      }
    });

    it('one key, one body, 20 at once: all 201 with the same answer, one event', async () => {
      const key = `same-${randomUUID()}`;
      const answers = await Promise.all(
        Array.from({ length: 20 }, () => create(validSpec({ name: 'same body' }), key)),
      );
      for (const a of answers) assert.equal(a.statusCode, 201, a.body);
      const bodies = new Set(answers.map((a) => a.body));
      assert.equal(bodies.size, 1, [...bodies].join('\n'));
      assert.equal((await eventsOf(answers[0]!.json().id)).length, 1);
    });

    it('a command that failed does not keep its key: the key then serves the next request', async () => {
      const key = `failed-${randomUUID()}`;
      const missing = randomUUID();
      const start = (id: string) =>
        system.app.inject({
          method: 'POST',
          url: `/api/v1/experiments/${id}/start`,
          headers: { authorization: `Bearer ${operator}`, 'idempotency-key': key },
        });
      assert.equal((await start(missing)).statusCode, 404);
      const created = await system.app.inject({
        method: 'POST',
        url: '/api/v1/experiments',
        headers: { authorization: `Bearer ${operator}` },
        payload: validSpec(),
      });
      const started = await start(created.json().id);
      assert.equal(started.statusCode, 202, started.body);
      const again = await start(created.json().id);
      assert.equal(again.statusCode, 202);
      assert.equal(again.headers['idempotent-replayed'], 'true');
      assert.equal((await start(missing)).statusCode, 422);
    });
  });
}

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type Kysely, sql } from 'kysely';
import type { AuditFilter } from '../src/application/ports/read-models.js';
import { createProjections, type Projections } from '../src/projections/index.js';
import { auditQuery, type ReadModelSchema } from '../src/projections/read-models.js';
import { pgliteTestDatabase, postgresTestDatabase, type TestDatabase } from './support/databases.js';
import { applied, openFixture } from './support/projection-fixtures.js';
import { appendLifecycles } from './support/projection-lifecycles.js';

/**
 * The audit trail is partitioned by month: transitions spread over half a year land in the partition of
 * their own month, partitions for the coming months exist ahead of time, and every audit filter of the
 * contract is served by an index, scanning only the partitions of the time range asked for.
 */
for (const db of [postgresTestDatabase(), pgliteTestDatabase()] as TestDatabase[]) {
  describe(`state_transitions partitions on ${db.name}`, { skip: db.skip }, () => {
    let fx: Awaited<ReturnType<typeof openFixture>>;
    let projections: Projections;

    before(async () => {
      fx = await openFixture(db);
      projections = createProjections({ database: fx.database, log: fx.log, store: fx.store });
      await projections.start();
      const { last } = await appendLifecycles(fx.store, {
        count: 400,
        seed: 77,
        startMs: Date.UTC(2024, 9, 1),
        spreadMs: 200 * 86_400_000,
      });
      await applied(projections.runner, last);
      await sql`analyze state_transitions`.execute(fx.database.db);
    });
    after(async () => {
      await projections?.stop();
      await fx?.close();
    });

    it('puts each transition in the partition of its month', async () => {
      const { rows } = await sql<{ part: string; month: string; n: string }>`
        select tableoid::regclass::text as part, to_char(created_at at time zone 'UTC', 'YYYYMM') as month,
               count(*)::text as n
          from state_transitions group by 1, 2 order by 2`.execute(fx.database.db);
      assert.ok(rows.length >= 6, `transitions over ${rows.length} months`);
      for (const r of rows) assert.equal(r.part, `state_transitions_p${r.month}`);
    });

    it('creates partitions ahead of time', async () => {
      const ahead = new Date();
      ahead.setUTCDate(1);
      ahead.setUTCMonth(ahead.getUTCMonth() + 3);
      const name = `state_transitions_p${ahead.toISOString().slice(0, 7).replace('-', '')}`;
      const { rows } = await sql<{ ok: boolean }>`select to_regclass(${name}) is not null as ok`.execute(
        fx.database.db,
      );
      assert.equal(rows[0]?.ok, true, name);
    });

    const servesEveryFilterFromAnIndex = async () => {
      const { rows: some } = await sql<{ experiment_id: string }>`
        select experiment_id from state_transitions limit 1`.execute(fx.database.db);
      const filters: [string, AuditFilter][] = [
        ['experiment', { experimentId: some[0]!.experiment_id }],
        ['actor', { actor: 'alice' }],
        ['from state', { fromState: 'running' }],
        ['to state', { toState: 'failed' }],
        ['time range', { since: new Date('2025-01-10T00:00:00Z'), until: new Date('2025-02-20T00:00:00Z') }],
        [
          'actor in a time range',
          { actor: 'bob', since: new Date('2025-02-01T00:00:00Z'), until: new Date('2025-02-28T00:00:00Z') },
        ],
      ];
      for (const [label, filter] of filters) {
        const plan = await fx.database.db.transaction().execute(async (tx) => {
          // Test-sized partitions are small enough that a sequential scan is honestly cheaper; forbid
          // it so the plan shows whether an index can answer the filter at all.
          await sql`set local enable_seqscan = off`.execute(tx);
          const rows = await auditQuery(
            tx as unknown as Kysely<ReadModelSchema>,
            filter,
            undefined,
            100,
          ).explain();
          return rows.map((r) => String(Object.values(r)[0])).join('\n');
        });
        assert.doesNotMatch(plan, /Seq Scan/, `${label}:\n${plan}`);
        assert.match(plan, /Index (Only )?Scan|Bitmap Index Scan/, `${label}:\n${plan}`);
        if (filter.since) {
          const scanned = new Set(plan.match(/state_transitions_p\d{6}/g));
          const months = label === 'time range' ? ['202501', '202502'] : ['202502'];
          assert.deepEqual(
            [...scanned].sort(),
            months.map((m) => `state_transitions_p${m}`),
            `${label}:\n${plan}`,
          );
        }
      }
    };

    it('serves every audit filter from an index, pruning partitions by time', servesEveryFilterFromAnIndex);

    it('and so after a rebuild, whose ANALYZE gathers the filtered and sorted columns', async () => {
      const report = await projections.rebuild();
      assert.equal(report.swapped, true);
      await servesEveryFilterFromAnIndex();
      const { rows } = await sql<{ table: string; columns: string[] }>`
        select tablename as table, array_agg(attname::text order by attname) as columns from pg_stats
         where schemaname = current_schema() and tablename in ('experiments', 'experiment_states', 'state_transitions')
         group by 1 order by 1`.execute(fx.database.db);
      const wanted = [
        { table: 'experiment_states', columns: ['created_at', 'experiment_id', 'version'] },
        { table: 'experiments', columns: ['created_at', 'id', 'state'] },
        {
          table: 'state_transitions',
          columns: ['actor', 'created_at', 'experiment_id', 'from_state', 'to_state', 'version'],
        },
      ];
      // autovacuum analyzes whole tables soon after (a column list leaves their change count): once it
      // has, there are more columns
      const { rows: auto } = await sql<{ n: string }>`
        select count(*)::text as n from pg_stat_user_tables
         where schemaname = current_schema() and last_autoanalyze is not null`.execute(fx.database.db);
      if (auto[0]?.n === '0') assert.deepEqual(rows, wanted);
      else
        for (const w of wanted) {
          const got = rows.find((r) => r.table === w.table)?.columns ?? [];
          for (const c of w.columns) assert.ok(got.includes(c), `${w.table}.${c}`);
        }
    });
  });
}

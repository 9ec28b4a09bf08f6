import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { handleExperimentCommand } from '../src/application/experiment-commands.js';
import type { ExperimentCommand } from '../src/domain/experiment.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';
import { copyText, transitionsCopyText } from '../src/projections/bulk-load.js';
import { createProjections, type Projections } from '../src/projections/index.js';
import { pgliteTestDatabase, postgresTestDatabase, type TestDatabase } from './support/databases.js';
import { applied, openFixture } from './support/projection-fixtures.js';
import { validSpec } from './support/system.js';

/**
 * The rebuild's bulk load writes new rows with COPY on PostgreSQL (and through
 * phoenix_apply_read_models on PGlite): text that COPY's format treats specially — tabs, newlines,
 * carriage returns, backslashes, `\N` — must come back exactly as the live projection wrote it.
 */

const TRICKY = 'tab\there, line\nbreak, cr\r, back\\slash, \\N, "quotes", ünïcödé ✓';

describe('COPY text encoding', () => {
  it('escapes the four special characters and writes NULL as \\N', () => {
    assert.equal(copyText(null), '\\N');
    assert.equal(copyText(undefined), '\\N');
    assert.equal(copyText(42), '42');
    assert.equal(copyText('plain'), 'plain');
    assert.equal(copyText('a\tb\nc\rd\\e'), 'a\\tb\\nc\\rd\\\\e');
    assert.equal(copyText('\\N'), '\\\\N');
  });

  it('writes one line per transition to each history table, with the failure reason only when failed', () => {
    const row = {
      experiment_id: '00000000-0000-4000-8000-000000000001',
      version: 3,
      experiment_name: 'n\tx',
      from_state: null,
      to_state: 'failed' as const,
      actor: 'alice',
      reason: 'boom\n',
      duration_ms: null,
      correlation_id: 'c',
      causation_id: null,
      event_id: 'e',
      event_type: 'ExperimentFailed',
      position: 'p',
      created_at: '2026-01-01T00:00:00.000Z',
    };
    const { states, transitions } = transitionsCopyText([row, { ...row, to_state: 'running', reason: 'ok' }]);
    const stateLines = states.split('\n');
    const transitionLines = transitions.split('\n');
    assert.equal(stateLines.length, 3); // two rows and the empty string after the last newline
    assert.equal(transitionLines.length, 3);
    const failed = transitionLines[0]!.split('\t');
    assert.equal(failed.length, 13);
    assert.deepEqual(failed.slice(2, 10), ['n\\tx', '\\N', 'failed', 'alice', 'boom\\n', '\\N', 'c', 'f']);
    assert.equal(failed[10], 'boom\\n');
    const ok = transitionLines[1]!.split('\t');
    assert.equal(ok[9], 't');
    assert.equal(ok[10], '\\N');
  });
});

const spec = validSpec({
  name: `special ${TRICKY}`,
  description: TRICKY,
  target: { namespace: 'phoenix-experiments', nodeSelector: { pool: 'a-b' }, hosts: 3 },
  durationSeconds: 60,
  criticalProcesses: ['^postgres$', '\\bnginx\\b'],
}) as ExperimentSpec;

for (const db of [postgresTestDatabase(), pgliteTestDatabase()] as TestDatabase[]) {
  describe(`a rebuild keeps special text exactly (${db.name})`, { skip: db.skip }, () => {
    let fx: Awaited<ReturnType<typeof openFixture>>;
    let projections: Projections;

    before(async () => {
      fx = await openFixture(db);
      projections = createProjections({ database: fx.database, log: fx.log, store: fx.store });
      await projections.start();
    });
    after(async () => {
      await projections?.stop();
      await fx?.close();
    });

    it('rebuilds rows whose names, reasons and actors hold COPY-special characters identically', async () => {
      let last = '';
      for (const [i, final] of [
        { type: 'CancelExperiment', reason: TRICKY },
        { type: 'FailExperiment', reason: `failed: ${TRICKY}` },
      ].entries()) {
        const id = randomUUID();
        const at = (s: number) => new Date(Date.UTC(2026, i, 1, 0, 0, s)).toISOString();
        const commands: ExperimentCommand[] = [
          { type: 'CreateExperiment', experimentId: id, spec, at: at(0) },
          { type: 'StartExperiment', at: at(1) },
          { ...final, at: at(2) } as ExperimentCommand,
        ];
        for (const command of commands) {
          const r = await handleExperimentCommand(fx.store, id, command, {
            actor: `user\\${i}\twith tab`,
            correlationId: `corr\n${i}`,
          });
          last = r.position ?? last;
        }
      }
      await applied(projections.runner, last);
      const verified = await projections.rebuild({ verify: true });
      assert.deepEqual(verified.differences, []);
      const swapped = await projections.rebuild();
      assert.equal(swapped.swapped, true);
      const { rows } = await sql<{ reason: string; actor: string; name: string }>`
        select reason, actor, experiment_name as name from state_transitions
         where to_state in ('cancelled', 'failed') order by created_at`.execute(fx.database.db);
      assert.deepEqual(rows, [
        { reason: TRICKY, actor: 'user\\0\twith tab', name: spec.name },
        { reason: `failed: ${TRICKY}`, actor: 'user\\1\twith tab', name: spec.name },
      ]);
      const specs = await sql<{ spec: ExperimentSpec }>`select spec from experiments`.execute(fx.database.db);
      for (const row of specs.rows) assert.equal(row.spec.description, TRICKY);
    });
  });
}

import { availableParallelism } from 'node:os';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { streamIdOf } from '../application/experiment-commands.js';
import type { AdvisoryLock, SqlDatabase } from '../application/ports/database.js';
import type { EventStore, Position, StoredEvent } from '../application/ports/event-store.js';
import type { LogReader } from '../application/ports/log-reader.js';
import type { ExperimentEvent } from '../domain/experiment.js';
import { BulkLoader } from './bulk-load.js';
import {
  experimentReadModels,
  NEXT_SUFFIX,
  READ_MODELS,
  tableNames,
  writeCountChanges,
} from './experiment-read-models.js';
import { readAhead } from './log-reader.js';
import { loadInParallel } from './parallel-load.js';
import {
  applyBatch,
  type Db,
  ensureCheckpoint,
  type ProjectionHandler,
  readCheckpoint,
  type Tx,
  writeCheckpoint,
} from './runner.js';

/**
 * Blue/green rebuild of the read models (`phoenix replay`):
 * 1. a second set of tables (suffix `__next`, migrations/002) is filled from position zero while the
 *    live set keeps serving: the log is read in large pages, folded in memory, and written in bulk
 *    (BulkLoader: each experiment's row once), in short transactions, without secondary indexes;
 *    these are built at the end, several at once. Where the log reader can be read in slices
 *    (`log.parallel`: the PostgreSQL store on a server), worker threads read phoenix_events stream by stream, each its own slices of streams, up to the live
 *    checkpoint (parallel-load.ts); otherwise one loader reads the log in order and chases the live
 *    checkpoint;
 * 2. it catches up with the live projection's checkpoint (never beyond it);
 * 3. one transaction locks the live checkpoint row (the live runner, in any process, waits at its next
 *    batch), finishes the catch-up to exactly that position, then swaps the sets by renaming. The live
 *    checkpoint does not move, so the live runner resumes on the new tables where it was: no gap.
 *
 * With `verify`, step 3 compares the two sets row by row instead of swapping, and leaves the live set
 * in place; then every experiment's stream is read back through the store as commands and the API read
 * it, and must come in version order without a gap (checkStreams). The rebuild runs the projection's
 * handler only; a handler with side effects (a saga) is never part of it.
 */

export interface RebuildProgress {
  readonly events: number;
  /** Estimate of the events to replay (what the live read models have applied), if known. */
  readonly total: number | undefined;
  readonly perSecond: number;
  readonly secondsLeft: number | undefined;
  readonly phase: 'replaying' | 'indexing' | 'swapping' | 'verifying';
}

export interface TableDifference {
  readonly table: string;
  /** Rows only in the live table / only in the rebuilt one. */
  readonly onlyLive: number;
  readonly onlyRebuilt: number;
  /** A few of the differing rows, as JSON. */
  readonly samples: readonly string[];
}

/** `replay --verify`: the streams read back through the store (see checkStreams). */
export interface StreamCheck {
  /** Streams read back. */
  readonly checked: number;
  /** Streams whose events came back out of version order, with a gap, or fewer than the log holds. */
  readonly bad: number;
  /** A few of them, one line each: the stream, the read, what was wrong. */
  readonly samples: readonly string[];
}

export interface RebuildReport {
  readonly events: number;
  readonly seconds: number;
  /** The position both sets were at when swapped (or compared). */
  readonly position: Position;
  readonly swapped: boolean;
  /** With `verify`: every table that differs (empty when identical). */
  readonly differences: readonly TableDifference[];
  /** With `verify`: how every stream read back through the store (undefined without `verify`). */
  readonly streams?: StreamCheck;
  /** Seconds spent in each phase (replaying, indexing, swapping or verifying). */
  readonly phases: Readonly<Record<string, number>>;
}

export interface RebuildOptions {
  readonly database: SqlDatabase;
  /** The log to rebuild from: read in large pages (and, where it can, in slices on worker threads). */
  readonly log: LogReader<ExperimentEvent>;
  /** With `verify`, the streams are read back through it, as the command path reads them. */
  readonly store: Pick<EventStore<ExperimentEvent>, 'readStream'>;
  readonly logger?: Logger | undefined;
  /** Compare instead of swapping. */
  readonly verify?: boolean;
  /** Events per transaction (default 2000): a bulk write, or a batch once the tables are indexed. */
  readonly batchSize?: number;
  /** Events per read of the log while bulk-loading (default 500: small pages keep the garbage young). */
  readonly pageSize?: number;
  /** Pages read ahead of the one being folded while bulk-loading (default 4). */
  readonly readAhead?: number;
  /** Index builds at once (default 3; PGlite: 1). */
  readonly indexConcurrency?: number;
  readonly onProgress?: (progress: RebuildProgress) => void;
  readonly progressEveryMs?: number;
  /** Experiments kept folded in memory while bulk-loading (default 50,000). */
  readonly cacheSize?: number;
  /**
   * Worker threads for the bulk phase where the log reader allows them (`log.parallel`): `'auto'` (the
   * default) one per core, at most 4, when the live read models hold 100,000 events or more (fewer do
   * not repay starting them); a number, that many; 0 loads in log order on this thread, as on every other
   * store and database. (They were opt-in while live subscriptions were seen missing events after
   * worker rebuilds; the cause was the log horizon, migrations/043_log_horizon_ending.sql, with or
   * without workers.)
   */
  readonly workers?: number | 'auto';
  /** Test seam: called after the new tables are filled and before the final swap transaction. */
  readonly beforeSwap?: () => Promise<void>;
}

export class RebuildInProgressError extends Error {
  readonly code = 'rebuild_in_progress';
}

const REBUILD_CHECKPOINT = `${READ_MODELS}${NEXT_SUFFIX}`;
const SWAP_ATTEMPTS = 200;
/** The events from which `workers: 'auto'` loads on worker threads (RebuildOptions.workers). */
const PARALLEL_FROM_EVENTS = 100_000;

class Rollback extends Error {}

export async function rebuildReadModels(options: RebuildOptions): Promise<RebuildReport> {
  const { database, store, log, logger } = options;
  const db = database.db;
  const batchSize = options.batchSize ?? 2_000;
  const lock: AdvisoryLock | undefined = database.tryAdvisoryLock
    ? await database.tryAdvisoryLock(`rebuild:${READ_MODELS}`)
    : { lost: new AbortController().signal, release: async () => undefined };
  if (!lock) throw new RebuildInProgressError('another replay of the read models is running');

  const started = performance.now();
  let applied = 0;
  let lastReport = 0;
  const pageSize = Math.max(options.pageSize ?? 500, 1);
  const readAheadPages = Math.max(options.readAhead ?? 4, 1);
  // Bulk phase: folded in memory, written in bulk; then the ordinary handler for the last few events,
  // once the new tables are indexed and complete.
  const loader = new BulkLoader(db, NEXT_SUFFIX, options.cacheSize ?? 50_000, database.copyFrom);
  const handler: ProjectionHandler<ExperimentEvent> = experimentReadModels({ suffix: NEXT_SUFFIX });
  const progressEvery = options.progressEveryMs ?? 1_000;
  let total: number | undefined;
  const report = (phase: RebuildProgress['phase'], force = false) => {
    const now = performance.now();
    if (!options.onProgress || (!force && now - lastReport < progressEvery)) return;
    lastReport = now;
    const perSecond = applied / Math.max((now - started) / 1000, 1e-3);
    const left = total !== undefined ? Math.max(total - applied, 0) : undefined;
    options.onProgress({
      events: applied,
      total,
      perSecond,
      secondsLeft: left !== undefined && perSecond > 0 ? left / perSecond : undefined,
      phase,
    });
  };

  const phases: Record<string, number> = {};
  let phase = 'preparing';
  let phaseStarted = performance.now();
  const enter = (next: string) => {
    const now = performance.now();
    phases[phase] = (phases[phase] ?? 0) + (now - phaseStarted) / 1000;
    phase = next;
    phaseStarted = now;
  };

  let position: Position;
  try {
    await sql`select phoenix_drop_read_models(${NEXT_SUFFIX})`.execute(db);
    await sql`select phoenix_create_read_models(${NEXT_SUFFIX})`.execute(db);
    await sql`delete from projection_checkpoints where name = ${REBUILD_CHECKPOINT}`.execute(db);
    position = await ensureCheckpoint(db, REBUILD_CHECKPOINT);
    await handler.maintain?.(db);
    const { rows } = await sql<{ n: string | null }>`
      select sum(version)::text as n from ${sql.table(tableNames('').experiments)}`.execute(db);
    total = rows[0]?.n ? Number(rows[0].n) : undefined;

    /** Events folded since the last bulk write. */
    let unsent = 0;
    /** Bulk-loads every event after `position` up to `target` (inclusive); how many there were. */
    const load = async (target: Position): Promise<number> => {
      if (target <= position) return 0;
      let loaded = 0;
      for await (const events of readAhead(log, position, target, pageSize, readAheadPages)) {
        // each write (a transaction) holds the effects of at most batchSize events
        for (let i = 0; i < events.length; ) {
          const chunk = Math.min(events.length - i, batchSize - unsent);
          await loader.add(chunk === events.length ? events : events.slice(i, i + chunk));
          i += chunk;
          unsent += chunk;
          if (unsent >= batchSize) {
            await loader.flush();
            unsent = 0;
          }
        }
        loaded += events.length;
        applied += events.length;
        position = events[events.length - 1]!.position;
        report('replaying');
      }
      position = target;
      return loaded;
    };

    /** Applies every event after `position` up to `target` (inclusive) in transactions of batchSize. */
    const catchUp = async (target: Position): Promise<void> => {
      if (target <= position) return;
      let next = log.readAll({ after: position, limit: batchSize });
      for (;;) {
        const page = await next;
        const last = page[page.length - 1];
        const complete = page.length === batchSize && last !== undefined && last.position <= target;
        // read the next page while this one is written
        if (complete) next = log.readAll({ after: last.position, limit: batchSize });
        const eligible = complete ? page : page.filter((e) => e.position <= target);
        const upTo = complete ? last.position : target;
        position = await applyBatch(db, handler, REBUILD_CHECKPOINT, position, eligible, {
          mode: 'rebuild',
          upTo,
        });
        applied += eligible.length;
        report('replaying');
        if (!complete) return;
      }
    };

    enter('replaying');
    // Worker threads (see RebuildOptions.workers): N of them, or with 'auto' one per core for a log
    // big enough to repay starting them (a second or so each, more from the sources).
    const asked = options.workers ?? 'auto';
    const workers =
      asked === 'auto'
        ? (total ?? 0) >= PARALLEL_FROM_EVENTS
          ? Math.min(availableParallelism(), 4)
          : 0
        : asked;
    if (workers > 0 && log.parallel) {
      // Slices of streams on worker threads, up to where the live projection is now; the catch-up
      // below applies what it does meanwhile, once the tables are indexed.
      const upTo = await ensureCheckpoint(db, READ_MODELS);
      const counts = await loadInParallel({
        url: log.parallel.url,
        suffix: NEXT_SUFFIX,
        upTo,
        pageSize,
        batchSize,
        workers,
        onEvents: (events) => {
          applied += events;
          report('replaying');
        },
      });
      await writeCountChanges(db, NEXT_SUFFIX, counts);
      position = upTo;
    } else {
      // Chase the live checkpoint until a pass has little left to do.
      for (;;) {
        const loaded = await load(await ensureCheckpoint(db, READ_MODELS));
        if (loaded < batchSize) break;
      }
      await loader.finish();
    }
    unsent = 0;
    await writeCheckpoint(db, REBUILD_CHECKPOINT, position);
    report('indexing', true);
    enter('indexing');
    await indexReadModels(
      db,
      NEXT_SUFFIX,
      database.kind === 'pglite' ? 1 : Math.max(options.indexConcurrency ?? 3, 1),
    );
    await options.beforeSwap?.();
    enter(options.verify ? 'verifying' : 'swapping');

    const differences: TableDifference[] = [];
    let done = false;
    let compared = false;
    for (let attempt = 1; !done && attempt <= SWAP_ATTEMPTS; attempt++) {
      await catchUp(await readCheckpoint(db, READ_MODELS));
      report(options.verify ? 'verifying' : 'swapping', true);
      try {
        await db.transaction().execute(async (tx) => {
          const { rows: locked } = await sql<{ position: string }>`
            select position from projection_checkpoints where name = ${READ_MODELS} for update`.execute(tx);
          const live = locked[0]?.position;
          if (live === undefined) throw new Error(`the live checkpoint '${READ_MODELS}' is missing`);
          if (live !== position) {
            // The live runner moved meanwhile. PostgreSQL: it now waits for this row, so finish
            // here, reading the log on other connections. PGlite has one connection: try again.
            if (database.kind === 'pglite' || live < position) throw new Rollback();
            await catchUpInside(tx, live);
          }
          if (options.verify) {
            differences.push(...(await compareReadModels(tx)));
            compared = true;
            throw new Rollback(); // compare only: the live set stays
          }
          await sql`select phoenix_swap_read_models(${NEXT_SUFFIX})`.execute(tx);
          await sql`delete from projection_checkpoints where name = ${REBUILD_CHECKPOINT}`.execute(tx);
        });
        done = true;
      } catch (err) {
        if (!(err instanceof Rollback)) throw err;
        done = compared;
      }
      if (!done) logger?.debug({ attempt }, 'the live projection moved during the swap; catching up again');
    }
    if (!done) throw new Error(`could not catch up with the live projection in ${SWAP_ATTEMPTS} attempts`);

    /** Inside the swap transaction (PostgreSQL only): the live runner is held at `live`. */
    async function catchUpInside(tx: Tx, live: Position): Promise<void> {
      for (;;) {
        const page: StoredEvent<ExperimentEvent>[] = await log.readAll({
          after: position,
          limit: batchSize,
        });
        const eligible = page.filter((e) => e.position <= live);
        if (eligible.length > 0)
          await handler.apply(tx, eligible, { mode: 'rebuild', checkpoint: REBUILD_CHECKPOINT });
        applied += eligible.length;
        position =
          eligible.length === page.length && page.length === batchSize
            ? page[page.length - 1]!.position
            : live;
        if (position === live) return;
      }
    }

    let streams: StreamCheck | undefined;
    if (options.verify) {
      streams = await checkStreams(db, store, NEXT_SUFFIX);
      await sql`select phoenix_drop_read_models(${NEXT_SUFFIX})`.execute(db);
    }
    report(options.verify ? 'verifying' : 'swapping', true);
    enter('done');
    return {
      events: applied,
      seconds: (performance.now() - started) / 1000,
      position,
      swapped: !options.verify,
      differences,
      ...(streams ? { streams } : {}),
      phases,
    };
  } catch (err) {
    await sql`select phoenix_drop_read_models(${NEXT_SUFFIX})`.execute(db).catch(() => undefined);
    throw err;
  } finally {
    await lock.release();
  }
}

/** Streams read back at once by checkStreams (the PostgreSQL store reads them in batches). */
const STREAM_CHECK_CONCURRENCY = 32;
const STREAM_CHECK_PAGE = 1_000;
const STREAM_CHECK_SAMPLES = 10;

/**
 * What is wrong with a stream read back as `events`: each event must have the version after the one
 * before, from 1, and there must be at least `count` (exactly `count` when `exact`).
 */
export function streamReadProblem(
  events: readonly Pick<StoredEvent, 'version'>[],
  count: number,
  exact: boolean,
): string | undefined {
  for (let i = 1; i < events.length; i++) {
    const [previous, version] = [events[i - 1]!.version, events[i]!.version];
    if (version <= previous)
      return `version ${version} came after version ${previous} (out of version order)`;
  }
  for (let i = 0; i < events.length; i++) {
    const version = events[i]!.version;
    if (version === i + 1) continue;
    const previous = i === 0 ? 0 : events[i - 1]!.version;
    const missing = version - 1 > previous + 1 ? `${previous + 1}..${version - 1}` : `${previous + 1}`;
    return `version ${version} came after version ${previous} (a gap: ${missing} missing)`;
  }
  if (events.length < count) return `${events.length} events, but the log has ${count}`;
  if (exact && events.length > count) return `${events.length} events up to version ${count}`;
  return undefined;
}

/**
 * Reads every experiment stream of read-model set `suffix` back through `store`, as the command path
 * reads it (whole) and as GET …/events, `phoenix events` and time travel read it (up to a version),
 * and says which came back out of version order, with a gap, or with fewer events than the set says
 * the log holds (its `version`, folded from the log in log order). The rebuild itself reads the log
 * in log order, so a store whose stream reads are wrong would rebuild equal read models: this is what
 * notices it. A stream may have grown since the set was built: a whole read may hold more events, but
 * still in order from 1.
 */
export async function checkStreams(
  db: Db,
  store: Pick<EventStore<ExperimentEvent>, 'readStream'>,
  suffix: string,
): Promise<StreamCheck> {
  const table = sql.table(tableNames(suffix).experiments);
  let checked = 0;
  let bad = 0;
  const samples: string[] = [];
  const check = async (streamId: string, count: number) => {
    const [whole, upTo] = await Promise.all([
      store.readStream(streamId),
      store.readStream(streamId, { toVersion: count }),
    ]);
    const problems = [
      ['whole', streamReadProblem(whole, count, false)],
      [`up to version ${count}`, streamReadProblem(upTo, count, true)],
    ].filter((p): p is [string, string] => p[1] !== undefined);
    checked++;
    if (problems.length === 0) return;
    bad++;
    for (const [read, problem] of problems) {
      if (samples.length < STREAM_CHECK_SAMPLES) samples.push(`${streamId}, read ${read}: ${problem}`);
    }
  };
  let after: string | null = null;
  for (;;) {
    const { rows } = await sql<{ id: string; version: number }>`
      select id::text as id, version from ${table} where (${after}::uuid is null or id > ${after}::uuid)
      order by ${table}.id limit ${STREAM_CHECK_PAGE}`.execute(db);
    for (let i = 0; i < rows.length; i += STREAM_CHECK_CONCURRENCY) {
      await Promise.all(
        rows.slice(i, i + STREAM_CHECK_CONCURRENCY).map((r) => check(streamIdOf(r.id), Number(r.version))),
      );
    }
    if (rows.length < STREAM_CHECK_PAGE) break;
    after = rows[rows.length - 1]!.id;
  }
  return { checked, bad, samples };
}

/** Every row of each live table against its rebuilt twin, both ways (EXCEPT ALL keeps duplicates). */
export async function compareReadModels(tx: Tx, suffix = NEXT_SUFFIX): Promise<TableDifference[]> {
  const live = tableNames('');
  const next = tableNames(suffix);
  const differences: TableDifference[] = [];
  for (const key of Object.keys(live) as (keyof typeof live)[]) {
    const a = sql.table(live[key]);
    const b = sql.table(next[key]);
    const { rows } = await sql<{ side: 'live' | 'rebuilt'; n: string; samples: string[] | null }>`
      with only_live as (select * from (table ${a} except all table ${b}) d),
           only_rebuilt as (select * from (table ${b} except all table ${a}) d)
      select 'live' as side, (select count(*) from only_live)::text as n,
             (select array_agg(s) from (select row_to_json(o)::text as s from only_live o limit 3) x) as samples
      union all
      select 'rebuilt', (select count(*) from only_rebuilt)::text,
             (select array_agg(s) from (select row_to_json(o)::text as s from only_rebuilt o limit 3) x)`.execute(
      tx,
    );
    const onlyLive = Number(rows.find((r) => r.side === 'live')?.n ?? 0);
    const onlyRebuilt = Number(rows.find((r) => r.side === 'rebuilt')?.n ?? 0);
    if (onlyLive + onlyRebuilt > 0) {
      differences.push({
        table: live[key],
        onlyLive,
        onlyRebuilt,
        samples: rows.flatMap((r) => (r.samples ?? []).map((s) => `${r.side}: ${s}`)),
      });
    }
  }
  return differences;
}

/**
 * The columns a rebuilt set's ANALYZE gathers statistics of: the ones the read models' queries filter
 * and sort on (read-models.ts, migrations/050); empty: the whole table. The JSON payloads and free
 * text cost most of an ANALYZE (on 300,000 events: 3.6 s for the three tables, 0.8 s for these
 * columns) and no query filters on them. ANALYZE with a column list leaves a table's count of changes as it
 * was, so autovacuum analyzes the whole tables (partitions) soon after the swap, off this path.
 */
const ANALYZED_COLUMNS: Record<keyof ReturnType<typeof tableNames>, readonly string[]> = {
  experiments: ['id', 'state', 'created_at'],
  states: ['experiment_id', 'version', 'created_at'],
  transitions: ['experiment_id', 'version', 'created_at', 'actor', 'from_state', 'to_state'],
  counts: [],
};

/**
 * Builds the indexes of read-model set `suffix` (phoenix_read_model_index_ddl, migrations/051), then
 * analyzes its tables, `concurrency` statements at a time on as many connections: a table's primary key
 * first, then its other indexes, then ANALYZE (which waits for a table's index builds anyway).
 */
export async function indexReadModels(db: Db, suffix: string, concurrency: number): Promise<void> {
  const { rows } = await sql<{ table_name: string; is_primary_key: boolean; ddl: string }>`
    select table_name, is_primary_key, ddl from phoenix_read_model_index_ddl(${suffix})`.execute(db);
  let running = 0;
  const waiting: (() => void)[] = [];
  const run = async (statement: (tx: Tx) => Promise<unknown>) => {
    while (running >= concurrency) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      await db.transaction().execute(async (tx) => {
        // one sort per index over the whole table: give it room (the session default is 64 MB); the
        // builds run side by side already, so without parallel workers of their own
        await sql`select set_config('maintenance_work_mem', '192MB', true),
                         set_config('max_parallel_maintenance_workers', '0', true)`.execute(tx);
        await statement(tx);
      });
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
  const primaryKeys = new Map<string, Promise<void>>();
  const byTable = new Map<string, Promise<void>[]>(
    Object.values(tableNames(suffix)).map((table) => [table, []]),
  );
  for (const r of rows) {
    const pk = primaryKeys.get(r.table_name);
    const build = pk
      ? pk.then(() => run((tx) => sql.raw(r.ddl).execute(tx)))
      : run((tx) => sql.raw(r.ddl).execute(tx));
    if (r.is_primary_key) primaryKeys.set(r.table_name, build);
    const builds = byTable.get(r.table_name);
    if (builds) builds.push(build);
    else byTable.set(r.table_name, [build]);
  }
  const names = tableNames(suffix);
  const analyzed = new Map<string, readonly string[]>(
    (Object.keys(ANALYZED_COLUMNS) as (keyof typeof names)[]).map((key) => [
      names[key],
      ANALYZED_COLUMNS[key],
    ]),
  );
  const all: Promise<unknown>[] = [];
  for (const [table, builds] of byTable) {
    const columns = analyzed.get(table) ?? [];
    const analyze =
      columns.length > 0
        ? sql`analyze ${sql.table(table)} (${sql.join(columns.map((c) => sql.ref(c)))})`
        : sql`analyze ${sql.table(table)}`;
    all.push(...builds);
    all.push(Promise.all(builds).then(() => run((tx) => analyze.execute(tx))));
  }
  const results = await Promise.allSettled(all);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

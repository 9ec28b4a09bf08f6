import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { sql } from 'kysely';
import pLimit from 'p-limit';
import type { Logger } from 'pino';
import { handleMeasuredCommand } from '../application/command-service.js';
import {
  experimentIdOf,
  type KnownStreams,
  STREAM_PREFIX,
  streamIdOf,
} from '../application/experiment-commands.js';
import {
  type AnalyzeExperiment,
  type Bus,
  type BusCommandInput,
  type BusResult,
  type CommitPromotion,
  type Consumer,
  type DeploymentsHeldResult,
  type DeploymentVerifiedResult,
  deriveCommandId,
} from '../application/ports/bus.js';
import type { Db } from '../application/ports/database.js';
import type { EventStore, StoredEvent } from '../application/ports/event-store.js';
import type { CommandMetrics } from '../application/ports/metrics.js';
import {
  DomainError,
  type Experiment,
  type ExperimentCommand,
  type ExperimentEvent,
  fold,
  InvalidTransitionError,
  RunNotFinishedError,
} from '../domain/experiment.js';
import type { ExperimentSpec } from '../domain/experiment-spec.js';
import {
  DEFAULT_SAGA_TIMEOUTS,
  type Reaction,
  react,
  SAGA_ACTOR,
  type SagaCommand,
  type SagaExperiment,
  type SagaTimeouts,
  sagaIgnoresEvent,
  sagaNeedsExperiment,
  type TimerChange,
  type TimerKind,
  type WorkerCommand,
  type WorkerOrder,
} from '../domain/lifecycle-saga.js';

// main.ts and the saga's tests take the timeouts from here, with the handler they configure.
export { DEFAULT_SAGA_TIMEOUTS, type SagaTimeouts } from '../domain/lifecycle-saga.js';

/**
 * The lifecycle saga's adapter: its decisions are `react` (src/domain/lifecycle-saga.ts, pure);
 * here is where they are kept and carried out — every step an event, every decision durable.
 *
 * Two halves:
 * - `applySagaEvents` feeds events to `react`. It runs inside the checkpointed subscriber's
 *   transaction, so what the saga decides (commands in the outbox, deadlines in the timers table, what
 *   it knows of each experiment) commits with the checkpoint: a crash neither loses nor repeats a
 *   decision. Command ids derive from the causing event, so the bus drops a command sent twice.
 * - `SagaEffects` carries the decisions out: relays the outbox to the bus, feeds due timers and
 *   workers' results to `react` and runs the domain commands it answers with (idempotent: their ids
 *   derive from the timer's cause or the result's command id, and the decider ignores repeated answers).
 */

interface SagaExperimentRow {
  experiment_id: string;
  spec: ExperimentSpec;
  started: boolean;
  run_started_at: Date | string | null;
  ended: boolean;
}

/** What the saga keeps of an experiment, from its row. */
const sagaStateOf = (row: SagaExperimentRow): SagaExperiment => ({
  spec: row.spec,
  started: row.started,
  runStartedAt: row.run_started_at === null ? null : new Date(row.run_started_at).toISOString(),
  ended: row.ended,
});

type Tx = Db;

type OutboxCommand = BusCommandInput & { commandId: string; experimentId: string };

/** A saga command as the bus takes it: its id derives from its cause and purpose. */
const busCommandOf = (c: WorkerCommand): OutboxCommand => {
  const commandId = deriveCommandId(c.causationId, c.purpose);
  const ids = { commandId, experimentId: c.experimentId };
  const trace = { causationId: c.causationId, correlationId: c.correlationId };
  switch (c.type) {
    case 'DeployVariant':
      return {
        type: c.type,
        ...ids,
        variant: c.variant,
        template: c.template,
        params: { ...c.params },
        criticalProcesses: [...c.criticalProcesses],
        hosts: c.hosts,
        namespace: c.namespace,
        nodeSelector: { ...c.nodeSelector },
        ...trace,
      };
    case 'TeardownExperiment':
      return { type: c.type, ...ids, namespace: c.namespace, ...trace };
    case 'AnalyzeExperiment':
      return {
        type: c.type,
        ...ids,
        spec: c.spec as unknown as AnalyzeExperiment['spec'],
        window: { ...c.window },
        ...trace,
      };
    case 'CommitPromotion':
      return {
        type: c.type,
        ...ids,
        actor: c.actor,
        spec: c.spec as unknown as AnalyzeExperiment['spec'],
        analysis: c.analysis as unknown as CommitPromotion['analysis'],
        candidate: { ...c.candidate },
        requestedAt: c.requestedAt,
        ...trace,
      };
    case 'RevertPromotion':
      return {
        type: c.type,
        ...ids,
        step: c.step,
        commit: c.commit,
        actor: c.actor,
        ...(c.cause !== undefined ? { cause: c.cause } : {}),
        ...trace,
      };
    case 'RolloutTarget':
      return {
        type: c.type,
        ...ids,
        step: c.step,
        rollout: { ...c.rollout },
        criticalProcesses: [...c.criticalProcesses],
        hosts: c.hosts,
        namespace: c.namespace,
        nodeSelector: { ...c.nodeSelector },
        commit: c.commit,
        ...trace,
      };
    case 'ProbeExperiment':
      return {
        type: c.type,
        ...ids,
        spec: c.spec as unknown as AnalyzeExperiment['spec'],
        runStartedAt: c.runStartedAt,
        ...trace,
      };
    default: {
      const _never: never = c;
      return _never;
    }
  }
};

interface TimerRow {
  readonly experiment_id: string;
  readonly kind: TimerKind;
  readonly due_at: string;
  readonly cause_id: string;
}

/**
 * What one batch of events decides, gathered in memory and written at the end with a few statements:
 * one read of the experiments the batch touches, then one write per table. Row by row, a batch of
 * a hundred starts took five hundred round trips inside the subscriber's transaction.
 */
class SagaBatch {
  readonly #states = new Map<string, SagaExperiment>();
  readonly #dirty = new Set<string>();
  readonly #outbox = new Map<string, OutboxCommand>();
  /** The last word on each timer: set (a row) or cleared (null). */
  readonly #timers = new Map<string, { experimentId: string; kind: TimerKind; row: TimerRow | null }>();

  constructor(private readonly tx: Tx) {}

  async load(experimentIds: readonly string[]): Promise<void> {
    const { rows } = await sql<SagaExperimentRow>`
      select experiment_id, spec, started, run_started_at, ended
      from phoenix_saga_experiments where experiment_id = any(${[...new Set(experimentIds)]}::text[])`.execute(
      this.tx,
    );
    for (const row of rows) this.#states.set(row.experiment_id, sagaStateOf(row));
  }

  state(experimentId: string): SagaExperiment | undefined {
    return this.#states.get(experimentId);
  }

  /** Keeps what the saga decided on one event of the experiment, to be written with the batch. */
  record(experimentId: string, before: SagaExperiment | undefined, reaction: Reaction<WorkerOrder>): void {
    if (reaction.state !== before && reaction.state) {
      this.#states.set(experimentId, reaction.state);
      this.#dirty.add(experimentId);
    }
    for (const c of reaction.commands) {
      const command = busCommandOf(c.command);
      if (!this.#outbox.has(command.commandId)) this.#outbox.set(command.commandId, command);
    }
    for (const t of reaction.timers) this.#timer(experimentId, t);
  }

  #timer(experimentId: string, t: TimerChange): void {
    this.#timers.set(`${experimentId}\u0000${t.kind}`, {
      experimentId,
      kind: t.kind,
      row:
        t.action === 'set'
          ? { experiment_id: experimentId, kind: t.kind, due_at: t.dueAt, cause_id: t.causeId }
          : null,
    });
  }

  async write(): Promise<void> {
    const { tx } = this;
    if (this.#dirty.size > 0) {
      const rows = [...this.#dirty].map((id) => {
        const s = this.#states.get(id)!;
        return {
          experiment_id: id,
          spec: s.spec,
          started: s.started,
          run_started_at: s.runStartedAt,
          ended: s.ended,
        };
      });
      await sql`
        insert into phoenix_saga_experiments as e (experiment_id, spec, started, run_started_at, ended)
        select r.experiment_id, r.spec, r.started, r.run_started_at, r.ended
          from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
            as r(experiment_id text, spec jsonb, started boolean, run_started_at timestamptz, ended boolean)
        on conflict (experiment_id) do update
          set started = excluded.started, run_started_at = excluded.run_started_at, ended = excluded.ended,
              updated_at = now()`.execute(tx);
    }
    if (this.#outbox.size > 0) {
      const rows = [...this.#outbox.values()].map((c) => ({
        command_id: c.commandId,
        experiment_id: c.experimentId,
        command: c,
      }));
      // jsonb_to_recordset yields rows in array order: the outbox keeps the order they were decided in.
      await sql`
        insert into phoenix_saga_outbox (command_id, experiment_id, command)
        select r.command_id, r.experiment_id, r.command
          from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as r(command_id text, experiment_id text, command jsonb)
        on conflict (command_id) do nothing`.execute(tx);
    }
    const cleared = [...this.#timers.values()].filter((t) => t.row === null);
    if (cleared.length > 0) {
      await sql`
        delete from phoenix_saga_timers t
         using jsonb_to_recordset(${JSON.stringify(cleared.map((c) => ({ experiment_id: c.experimentId, kind: c.kind })))}::jsonb)
            as r(experiment_id text, kind text)
         where t.experiment_id = r.experiment_id and t.kind = r.kind`.execute(tx);
    }
    const set = [...this.#timers.values()].flatMap((t) => (t.row ? [t.row] : []));
    if (set.length > 0) {
      await sql`
        insert into phoenix_saga_timers (experiment_id, kind, due_at, cause_id)
        select r.experiment_id, r.kind, r.due_at, r.cause_id
          from jsonb_to_recordset(${JSON.stringify(set)}::jsonb)
            as r(experiment_id text, kind text, due_at timestamptz, cause_id text)
        on conflict (experiment_id, kind) do update
          set due_at = excluded.due_at, cause_id = excluded.cause_id, leased_until = null`.execute(tx);
    }
  }
}

/** Where the saga finds the spec of an experiment it has not recorded yet: its creation event. */
export type SpecSource = (experimentId: string) => Promise<ExperimentSpec | undefined>;

/** The spec from the experiment's stream in the event store. */
export const specFromStore =
  (store: EventStore<ExperimentEvent>): SpecSource =>
  async (experimentId) => {
    for (const event of await store.readStream(streamIdOf(experimentId))) {
      if (event.type === 'ExperimentCreated') return event.data.spec;
    }
    return undefined;
  };

/**
 * The specs of the experiments that start in `events` but were created before them: read before the
 * batch's transaction opens (see lifecycleSagaHandler), never inside it.
 */
export async function specsOfStarts(
  events: readonly StoredEvent<ExperimentEvent>[],
  specOf: SpecSource,
): Promise<Map<string, ExperimentSpec>> {
  const createdHere = new Set<string>();
  const wanted = new Set<string>();
  for (const e of events) {
    const id = experimentIdOf(e.streamId);
    if (e.type === 'ExperimentCreated') createdHere.add(id);
    else if (e.type === 'ExperimentStarted' && !createdHere.has(id)) wanted.add(id);
  }
  const ids = [...wanted];
  const specs = await Promise.all(ids.map((id) => specOf(id)));
  const found = new Map<string, ExperimentSpec>();
  for (const [i, id] of ids.entries()) if (specs[i]) found.set(id, specs[i]!);
  return found;
}

/**
 * The aggregate after each event of `events` whose reaction needs it (the promotion's steps), by
 * event id: each experiment's stream is read once and folded up to each such event's version. Read
 * before the batch's transaction opens, as the specs are.
 */
export async function experimentsOfSteps(
  events: readonly StoredEvent<ExperimentEvent>[],
  store: EventStore<ExperimentEvent>,
): Promise<Map<string, Experiment>> {
  const wanted = new Map<string, StoredEvent<ExperimentEvent>[]>();
  for (const e of events) {
    if (!sagaNeedsExperiment(e.type)) continue;
    const list = wanted.get(e.streamId) ?? [];
    list.push(e);
    wanted.set(e.streamId, list);
  }
  const found = new Map<string, Experiment>();
  await Promise.all(
    [...wanted].map(async ([streamId, steps]) => {
      const stream = await store.readStream(streamId);
      for (const step of steps)
        found.set(step.metadata.eventId, fold(stream.filter((e) => e.version <= step.version)));
    }),
  );
  return found;
}

/**
 * The saga as a projection runner's handler. Before each batch's transaction it reads the specs its
 * starts need from the event store: inside the transaction that read could wait for a connection the
 * transaction holds (the embedded database has one).
 */
export function lifecycleSagaHandler(store: EventStore<ExperimentEvent>, timeouts = DEFAULT_SAGA_TIMEOUTS) {
  const specOf = specFromStore(store);
  let specs = new Map<string, ExperimentSpec>();
  let experiments = new Map<string, Experiment>();
  return {
    name: 'lifecycle-saga',
    sideEffects: true,
    streamPrefix: STREAM_PREFIX,
    ignores: sagaIgnores,
    async prepare(events: readonly StoredEvent<ExperimentEvent>[]): Promise<void> {
      specs = await specsOfStarts(events, specOf);
      experiments = await experimentsOfSteps(events, store);
    },
    apply: (tx: Tx, events: readonly StoredEvent<ExperimentEvent>[]) =>
      applySagaEvents(tx, events, { timeouts, specs, experiments }),
  };
}

/** The events the saga does nothing with: a batch of only these just moves its checkpoint. */
export const sagaIgnores = (event: StoredEvent<ExperimentEvent>): boolean => sagaIgnoresEvent(event.type);

/**
 * Reacts to a batch of events, in the subscriber's transaction. Safe to run twice over one event.
 *
 * The saga records an experiment when it starts, not when it is created: most experiments are
 * created long before they start (or never start), and a creation recorded at once cost every create
 * a write of its spec. A start finds the spec in the same batch's creation event, or in `specs`
 * (specsOfStarts, read before the transaction).
 */
export async function applySagaEvents(
  tx: Tx,
  events: readonly StoredEvent<ExperimentEvent>[],
  options: {
    readonly timeouts?: SagaTimeouts;
    readonly specs: ReadonlyMap<string, ExperimentSpec>;
    /** The aggregate after each promotion step, by event id (experimentsOfSteps). */
    readonly experiments?: ReadonlyMap<string, Experiment>;
  },
): Promise<void> {
  const timeouts = options.timeouts ?? DEFAULT_SAGA_TIMEOUTS;
  const batch = new SagaBatch(tx);
  const createdHere = new Map<string, ExperimentSpec>();
  const touched: string[] = [];
  for (const e of events) {
    const id = experimentIdOf(e.streamId);
    if (e.type === 'ExperimentCreated') createdHere.set(id, e.data.spec);
    else if (!sagaIgnores(e)) touched.push(id);
  }
  if (touched.length > 0) await batch.load(touched);
  for (const stored of events) {
    const event: ExperimentEvent = stored;
    const experimentId = experimentIdOf(stored.streamId);
    const before = batch.state(experimentId);
    const reaction = react(
      before,
      {
        type: 'event',
        experimentId,
        event,
        eventId: stored.metadata.eventId,
        correlationId: stored.metadata.correlationId,
        spec:
          event.type === 'ExperimentStarted'
            ? (createdHere.get(experimentId) ?? options.specs.get(experimentId))
            : undefined,
        experiment: options.experiments?.get(stored.metadata.eventId),
      },
      timeouts,
    );
    batch.record(experimentId, before, reaction);
  }
  await batch.write();
}

export interface SagaEffectsDependencies {
  readonly db: Db;
  readonly store: EventStore<ExperimentEvent>;
  readonly bus: Bus;
  readonly logger: Logger;
  readonly clock?: () => Date;
  readonly timeouts?: SagaTimeouts;
  /**
   * Observes the transitions the saga drives and its version conflicts, as the command service does
   * (phoenix_state_transition_duration_seconds, phoenix_state_lock_contention_total).
   */
  readonly metrics?: CommandMetrics;
  /** Longest sleep between looks at the outbox and the timers when nothing wakes the loops. */
  readonly idleMs?: number;
  /** Streams this process decided on lately: commands on them skip the read (see KnownStreams). */
  readonly known?: KnownStreams;
  /**
   * How long start-up reconciliation waits for the deployer's answers before the timers and the
   * outbox run anyway (a deployer that is not up yet must not hold the saga back); default 30 s.
   */
  readonly reconcileWaitMs?: number;
  /**
   * How often each running experiment is probed for early abort (analyzer's `probe`); default 30 s,
   * 0 turns probing off.
   */
  readonly probeIntervalMs?: number;
  /**
   * How often the sweep runs again after the one at start (what ended experiments left on the data
   * plane, torn down); default 10 min, 0: at start only.
   */
  readonly sweepIntervalMs?: number;
}

/**
 * Carries out what the saga decided: outbox → bus, due timers → commands, results → commands.
 *
 * On start it first reconciles: every experiment the saga knows as started and not ended is checked
 * with its deployer (a VerifyDeployment command per experiment), and `reconcile` decides what the
 * answer means. The timers and the outbox wait for those answers (up to `reconcileWaitMs`), so a run
 * whose end passed while the process was down is not analysed on variants that are no longer there.
 * Every process that starts reconciles under its own run id: two at once, or a restart halfway, send
 * the question again, and the answers' commands are idempotent (a second fail no longer applies, a
 * second deploy converges and its answer is ignored).
 *
 * Beside it, without holding anything back, it sweeps: each namespace the saga's experiments ran in is
 * listed by the deployer (a SweepDeployments command), and what an experiment that ended left there
 * (its teardown kept failing, or the data plane was out of reach) is torn down; see `react`'s `held`.
 * It sweeps again every `sweepIntervalMs`, so that a teardown that dead-lettered while the process
 * runs does not wait for its next start.
 */
export class SagaEffects {
  readonly #deps: SagaEffectsDependencies;
  readonly #clock: () => Date;
  readonly #timeouts: SagaTimeouts;
  readonly #wake = new EventEmitter();
  readonly #abort = new AbortController();
  #loops: Promise<void>[] = [];
  #results: Consumer | undefined;
  /** Experiments of no record that a sweep of this process found already (their warning is said). */
  readonly #unknownSeen = new Set<string>();
  /** Verifications this process waits on at start, by command id. */
  readonly #verifying = new Map<string, () => void>();

  constructor(deps: SagaEffectsDependencies) {
    this.#deps = deps;
    this.#clock = deps.clock ?? (() => new Date());
    this.#timeouts = deps.timeouts ?? DEFAULT_SAGA_TIMEOUTS;
    this.#wake.setMaxListeners(0);
  }

  async start(): Promise<void> {
    this.#results = await this.#deps.bus.handleResults((result) => this.#onResult(result), {
      concurrency: 16,
    });
    this.#loops = [
      this.#sweeps(),
      this.#reconcileOnStart().then(() =>
        Promise.all([
          this.#loop('outbox', () => this.#relayOutbox()),
          this.#loop('timers', () => this.#fireTimers()),
          ...((this.#deps.probeIntervalMs ?? 30_000) > 0 ? [this.#loop('probes', () => this.#probe())] : []),
        ]).then(() => undefined),
      ),
    ];
  }

  /** Asks the deployer about every experiment in flight, and waits (bounded) for the answers. */
  async #reconcileOnStart(): Promise<void> {
    const { db, store, bus, logger } = this.#deps;
    const run = randomUUID();
    const answered: Promise<void>[] = [];
    try {
      const { rows } = await sql<{ experiment_id: string }>`
        select experiment_id from phoenix_saga_experiments where started and not ended`.execute(db);
      const limit = pLimit(8);
      await Promise.all(
        rows.map((row) =>
          limit(async () => {
            if (this.#abort.signal.aborted) return;
            const experimentId = row.experiment_id;
            const state = fold(await store.readStream(streamIdOf(experimentId)));
            if (state.status !== 'initializing' && state.status !== 'running' && state.status !== 'analyzing')
              return;
            const commandId = deriveCommandId(`reconcile:${run}`, experimentId);
            answered.push(new Promise<void>((resolve) => this.#verifying.set(commandId, resolve)));
            await bus.send({
              type: 'VerifyDeployment',
              commandId,
              experimentId,
              namespace: state.spec.target.namespace,
              correlationId: experimentId,
            });
          }),
        ),
      );
    } catch (err) {
      logger.warn({ err }, 'could not reconcile the experiments in flight; the saga carries on without');
    }
    if (answered.length === 0) return;
    logger.info({ experiments: answered.length }, 'reconciling the experiments in flight with the deployer');
    const waitMs = this.#deps.reconcileWaitMs ?? 30_000;
    // The wait ends at waitMs or when the saga stops; once everything answered, the timer is dropped.
    const answeredAll = new AbortController();
    const gaveUp = delay(waitMs, 'gave up' as const, {
      signal: AbortSignal.any([this.#abort.signal, answeredAll.signal]),
    }).catch(() => 'gave up' as const);
    const outcome = await Promise.race([Promise.all(answered), gaveUp]);
    answeredAll.abort();
    this.#verifying.clear();
    if (outcome === 'gave up' && !this.#abort.signal.aborted)
      logger.warn({ waitMs }, 'the deployer has not answered every reconciliation yet; the saga carries on');
  }

  /**
   * The sweep at start, then every `sweepIntervalMs` (give or take a tenth, so that replicas started
   * together drift apart) until the saga stops.
   */
  async #sweeps(): Promise<void> {
    const interval = this.#deps.sweepIntervalMs ?? 600_000;
    await this.#sweep();
    while (interval > 0 && !this.#abort.signal.aborted) {
      const wait = interval * (0.9 + Math.random() * 0.2);
      const stopped = await delay(wait, false, { signal: this.#abort.signal }).catch(() => true);
      if (stopped) return;
      await this.#sweep();
    }
  }

  /**
   * Asks the deployer which experiments have objects in each namespace the saga's experiments ran in;
   * the answers come to `#swept`. Each sweep has an id of its own: two processes sweeping at once each
   * send their teardowns, which the deployer and the decider take twice without harm.
   */
  async #sweep(): Promise<void> {
    const { db, bus, logger } = this.#deps;
    const sweep = `sweep:${randomUUID()}`;
    try {
      const { rows } = await sql<{ namespace: string | null }>`
        select distinct spec->'target'->>'namespace' as namespace from phoenix_saga_experiments`.execute(db);
      for (const { namespace } of rows) {
        if (this.#abort.signal.aborted) return;
        if (!namespace) continue;
        await bus.send({
          type: 'SweepDeployments',
          commandId: deriveCommandId(sweep, namespace),
          namespace,
          correlationId: sweep,
        });
      }
    } catch (err) {
      logger.warn(
        { err },
        'could not sweep the data plane for ended experiments; the saga carries on without',
      );
    }
  }

  /** Tears down what the sweep found of experiments that ended; leaves the rest (see `react`'s `held`). */
  async #swept(result: DeploymentsHeldResult): Promise<void> {
    const { db, logger } = this.#deps;
    const ids = [...new Set(result.experimentIds)];
    if (ids.length === 0) return;
    const { rows } = await sql<SagaExperimentRow>`
      select experiment_id, spec, started, run_started_at, ended
      from phoenix_saga_experiments where experiment_id = any(${ids}::text[])`.execute(db);
    const states = new Map(rows.map((row) => [row.experiment_id, sagaStateOf(row)]));
    const sweep = result.correlationId ?? `sweep:${result.commandId}`;
    const unknown: string[] = [];
    const swept: string[] = [];
    for (const experimentId of ids) {
      const state = states.get(experimentId);
      const reaction = react(
        undefined,
        { type: 'held', experimentId, namespace: result.namespace, state, sweep },
        this.#timeouts,
      );
      if (state === undefined) unknown.push(experimentId);
      if (reaction.commands.length > 0) swept.push(experimentId);
      await this.#carryOut(reaction.commands);
    }
    // Said once per experiment and process at warn (every sweep finds them again), later at debug.
    const fresh = unknown.filter((id) => !this.#unknownSeen.has(id));
    if (this.#unknownSeen.size > 10_000) this.#unknownSeen.clear();
    for (const id of fresh) this.#unknownSeen.add(id);
    if (unknown.length > 0)
      logger[fresh.length > 0 ? 'warn' : 'debug'](
        { namespace: result.namespace, count: unknown.length, experimentIds: unknown.slice(0, 50) },
        'the data plane holds objects of experiments this saga has no record of; left alone',
      );
    if (swept.length > 0)
      logger.info(
        { namespace: result.namespace, count: swept.length, experimentIds: swept.slice(0, 50) },
        'tearing down what experiments that ended left on the data plane',
      );
  }

  /** Carries out reconciliation's decision on one experiment, with the reconciler as the actor. */
  async #reconciled(result: DeploymentVerifiedResult): Promise<void> {
    const id = result.experimentId;
    const experiment = fold(await this.#deps.store.readStream(streamIdOf(id)));
    const reaction = react(undefined, { type: 'reconciliation', result, experiment }, this.#timeouts);
    if (reaction.commands.some((c) => c.kind === 'experiment'))
      this.#deps.logger.warn(
        { experimentId: id, reason: reaction.why },
        'reconciliation fails the experiment',
      );
    else if (reaction.commands.length > 0)
      this.#deps.logger.info(
        {
          experimentId: id,
          variants: reaction.commands.flatMap((c) =>
            c.kind === 'worker' && c.command.type === 'DeployVariant' ? [c.command.variant] : [],
          ),
          reason: reaction.why,
        },
        'reconciliation deploys again',
      );
    await this.#carryOut(reaction.commands);
  }

  /** Runs what `react` answered to a timer or a result, in order: workers are sent, commands run. */
  async #carryOut(commands: readonly SagaCommand[]): Promise<void> {
    for (const c of commands) {
      if (c.kind === 'worker') await this.#deps.bus.send(busCommandOf(c.command));
      else
        await this.#command(c.experimentId, c.command, c.commandId, c.causationId, c.correlationId, c.actor);
    }
  }

  /** Call after the saga's subscriber commits: there may be new outbox rows or timers. */
  wake(): void {
    this.#wake.emit('wake');
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    this.#wake.emit('wake');
    await this.#results?.stop();
    await Promise.all(this.#loops);
  }

  async #loop(name: string, step: () => Promise<number | undefined>): Promise<void> {
    const idle = this.#deps.idleMs ?? 1000;
    let backoff = 100;
    while (!this.#abort.signal.aborted) {
      let waitMs = idle;
      try {
        const next = await step();
        waitMs = next === undefined ? idle : Math.max(0, Math.min(idle, next));
        backoff = 100;
      } catch (err) {
        this.#deps.logger.warn({ err, loop: name }, 'saga loop failed; retrying');
        waitMs = backoff;
        backoff = Math.min(backoff * 2, 5000);
      }
      if (waitMs === 0) continue;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#wake.off('wake', done);
          resolve();
        };
        const timer = setTimeout(done, waitMs);
        this.#wake.once('wake', done);
      });
    }
  }

  /** Sends leased outbox rows; returns 0 to run again at once when there may be more. */
  async #relayOutbox(): Promise<number | undefined> {
    const { db, bus } = this.#deps;
    const { rows } = await sql<{ id: string; command: BusCommandInput }>`
      update phoenix_saga_outbox set leased_until = now() + interval '30 seconds', attempts = attempts + 1
      where id in (
        select id from phoenix_saga_outbox
        where leased_until is null or leased_until < now()
        order by id limit 100 for update skip locked)
      returning id::text as id, command`.execute(db);
    if (rows.length === 0) return undefined;
    const sent: string[] = [];
    await Promise.all(
      rows.map(async (row) => {
        try {
          await bus.send(row.command);
          sent.push(row.id);
        } catch (err) {
          this.#deps.logger.warn(
            { err, commandId: row.command.commandId },
            'could not send a saga command; will retry',
          );
          await sql`update phoenix_saga_outbox set leased_until = now() + interval '2 seconds' where id = ${row.id}::int8`
            .execute(db)
            .catch(() => undefined);
        }
      }),
    );
    // One statement for every row sent; if it fails, their leases run out and they are sent again,
    // which the bus's de-duplication by command id and the idempotent workers absorb.
    if (sent.length > 0)
      await sql`delete from phoenix_saga_outbox where id = any(${sent}::int8[])`.execute(db);
    return rows.length === 100 ? 0 : undefined;
  }

  /** Fires due timers; returns the milliseconds until the next one is due. */
  async #fireTimers(): Promise<number | undefined> {
    const { db } = this.#deps;
    const now = this.#clock();
    const { rows } = await sql<{ experiment_id: string; kind: TimerKind; cause_id: string; due_at: Date }>`
      update phoenix_saga_timers set leased_until = ${new Date(now.getTime() + 30_000)}
      where (experiment_id, kind) in (
        select experiment_id, kind from phoenix_saga_timers
        where due_at <= ${now} and (leased_until is null or leased_until < ${now})
        order by due_at limit 50 for update skip locked)
      returning experiment_id, kind, cause_id, due_at`.execute(db);
    await Promise.all(
      rows.map(async (timer) => {
        try {
          await this.#fire(timer.experiment_id, timer.kind, timer.cause_id);
          await sql`delete from phoenix_saga_timers
                    where experiment_id = ${timer.experiment_id} and kind = ${timer.kind} and cause_id = ${timer.cause_id}`.execute(
            db,
          );
        } catch (err) {
          this.#deps.logger.warn({ err, timer }, 'saga timer failed; will retry');
          await sql`update phoenix_saga_timers set leased_until = ${new Date(this.#clock().getTime() + 1000)}
                    where experiment_id = ${timer.experiment_id} and kind = ${timer.kind}`
            .execute(db)
            .catch(() => undefined);
        }
      }),
    );
    const next = await sql<{ due_at: Date | null }>`
      select min(coalesce(greatest(due_at, leased_until), due_at)) as due_at from phoenix_saga_timers`.execute(
      db,
    );
    const due = next.rows[0]?.due_at;
    return due ? due.getTime() - this.#clock().getTime() : undefined;
  }

  /**
   * Asks for a probe of every experiment whose run has started and not ended, once per probe interval;
   * returns the milliseconds to the next interval. The probe's id derives from the experiment and the
   * interval's number, so saga processes probing side by side send one probe (the bus drops the copy).
   */
  async #probe(): Promise<number> {
    const interval = this.#deps.probeIntervalMs ?? 30_000;
    const now = this.#clock().getTime();
    const slot = Math.floor(now / interval);
    if (slot !== this.#probedSlot) {
      const { rows } = await sql<SagaExperimentRow>`
        select experiment_id, spec, started, run_started_at, ended
        from phoenix_saga_experiments where started and not ended and run_started_at is not null`.execute(
        this.#deps.db,
      );
      const commands = rows.flatMap(
        (row) =>
          react(
            undefined,
            {
              type: 'probe-due',
              experimentId: row.experiment_id,
              slot,
              state: sagaStateOf(row),
            },
            this.#timeouts,
          ).commands,
      );
      const limit = pLimit(16);
      await Promise.all(commands.map((c) => limit(() => this.#carryOut([c]))));
      this.#probedSlot = slot;
    }
    return (slot + 1) * interval - this.#clock().getTime();
  }

  #probedSlot = -1;

  async #fire(experimentId: string, kind: TimerKind, causeId: string): Promise<void> {
    const experiment = fold(await this.#deps.store.readStream(streamIdOf(experimentId)));
    const reaction = react(
      undefined,
      { type: 'timer', experimentId, kind, causeId, now: this.#clock().toISOString(), experiment },
      this.#timeouts,
    );
    await this.#carryOut(reaction.commands);
  }

  async #onResult(result: BusResult): Promise<void> {
    if (result.type === 'DeploymentsHeld') return this.#swept(result);
    if (result.type === 'DeploymentVerified') {
      try {
        return await this.#reconciled(result);
      } finally {
        this.#verifying.get(result.commandId)?.();
      }
    }
    if (result.type === 'ProbeCompleted') {
      const experiment = fold(await this.#deps.store.readStream(streamIdOf(result.experimentId)));
      const reaction = react(undefined, { type: 'probe', result, experiment }, this.#timeouts);
      if (reaction.why)
        this.#deps.logger.warn({ experimentId: result.experimentId, reason: reaction.why }, 'early abort');
      return this.#carryOut(reaction.commands);
    }
    await this.#carryOut(react(undefined, { type: 'result', result }, this.#timeouts).commands);
  }

  /** Runs a domain command for the saga. A command the experiment has moved past is dropped, not retried. */
  async #command(
    experimentId: string,
    command: ExperimentCommand,
    commandId: string,
    causationId: string,
    correlationId: string,
    actor = SAGA_ACTOR,
  ): Promise<void> {
    try {
      // Not the command service's execute: the saga's commands carry their own time and command id
      // (from the outbox), and need no idempotency key; the metrics are taken the same way.
      await handleMeasuredCommand(
        this.#deps.store,
        experimentId,
        command,
        { actor, correlationId, causationId, commandId },
        this.#deps.metrics,
        { ...(this.#deps.known ? { known: this.#deps.known } : {}), expectedRefusal: noLongerApplies },
      );
    } catch (err) {
      if (noLongerApplies(err)) {
        this.#deps.logger.info(
          { experimentId, command: command.type, reason: err.message },
          'saga command no longer applies',
        );
        return;
      }
      throw err; // store unavailable and the like: the bus redelivers, the timer retries
    }
  }
}

/**
 * A saga command the experiment has moved past: a redelivery, or one overtaken by a user's command.
 * RunNotFinished: the run was extended, and the extension set a new run-end timer.
 */
const noLongerApplies = (err: unknown): err is Error =>
  err instanceof InvalidTransitionError || err instanceof RunNotFinishedError || err instanceof DomainError;

import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { type Kysely, sql } from 'kysely';
import pLimit from 'p-limit';
import type { Logger } from 'pino';
import {
  DomainError,
  type ExistingExperiment,
  type Experiment,
  type ExperimentCommand,
  type ExperimentEvent,
  InvalidTransitionError,
  RunNotFinishedError,
} from '../domain/experiment.js';
import { type ExperimentSpec, VARIANTS, type Variant } from '../domain/experiment-spec.js';
import {
  experimentIdOf,
  foldStream,
  handleExperimentCommand,
  type KnownStreams,
  STREAM_PREFIX,
  streamIdOf,
} from './experiment-commands.js';
import type { Metrics } from './metrics.js';
import {
  type AnalyzeExperiment,
  type Bus,
  type BusCommandInput,
  type BusResult,
  type Consumer,
  type DeploymentVerifiedResult,
  deriveCommandId,
} from './ports/bus.js';
import type { EventStore, StoredEvent } from './ports/event-store.js';

/**
 * The lifecycle saga: once an experiment is started it deploys both variants, waits out the run,
 * has it analyzed, records the verdict, and tears down whatever it deployed when the experiment ends
 * — every step an event, every decision durable.
 *
 * Two halves:
 * - `applySagaEvents` reacts to events. It runs inside the checkpointed subscriber's transaction, so
 *   what it decides (commands in the outbox, deadlines in the timers table, what it knows of each
 *   experiment) commits with the checkpoint: a crash neither loses nor repeats a decision. Command ids
 *   derive from the causing event, so the bus drops a command sent twice.
 * - `SagaEffects` carries the decisions out: relays the outbox to the bus, fires due timers as domain
 *   commands, and turns workers' results into domain commands (idempotent: their event ids derive from
 *   the result's command id, and the decider ignores repeated answers).
 */
export const SAGA_ACTOR = 'phoenix-saga';

export interface SagaTimeouts {
  /** Both variants must be deployed within this. */
  readonly deployTimeoutMs: number;
  /** An analysis must be recorded within this after the run ends. */
  readonly analysisTimeoutMs: number;
  /** Analysis attempts before the experiment fails. */
  readonly maxAnalysisAttempts: number;
}

export const DEFAULT_SAGA_TIMEOUTS: SagaTimeouts = {
  deployTimeoutMs: 5 * 60_000,
  analysisTimeoutMs: 2 * 60_000,
  maxAnalysisAttempts: 3,
};

type TimerKind = 'deploy-timeout' | 'run-end' | 'analysis-timeout';

interface SagaExperimentRow {
  experiment_id: string;
  spec: ExperimentSpec;
  started: boolean;
  run_started_at: Date | null;
  ended: boolean;
}

// biome-ignore lint/suspicious/noExplicitAny: raw SQL only
type Tx = Kysely<any>;

const at = (iso: string, plusMs = 0) => new Date(Date.parse(iso) + plusMs);

type OutboxCommand = BusCommandInput & { commandId: string; experimentId: string };

interface TimerRow {
  readonly experiment_id: string;
  readonly kind: TimerKind;
  readonly due_at: Date;
  readonly cause_id: string;
}

/**
 * What one batch of events decides, gathered in memory and written at the end with a few statements:
 * one read of the experiments the batch touches, then one write per table. Row by row, a batch of
 * a hundred starts took five hundred round trips inside the subscriber's transaction.
 */
class SagaBatch {
  readonly #rows = new Map<string, SagaExperimentRow>();
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
    for (const row of rows) this.#rows.set(row.experiment_id, row);
  }

  row(experimentId: string): SagaExperimentRow | undefined {
    return this.#rows.get(experimentId);
  }

  create(experimentId: string, spec: ExperimentSpec): void {
    if (this.#rows.has(experimentId)) return;
    this.#rows.set(experimentId, {
      experiment_id: experimentId,
      spec,
      started: false,
      run_started_at: null,
      ended: false,
    });
    this.#dirty.add(experimentId);
  }

  update(
    experimentId: string,
    change: Partial<Pick<SagaExperimentRow, 'started' | 'run_started_at' | 'ended'>>,
  ): void {
    const row = this.#rows.get(experimentId);
    if (!row) return;
    this.#rows.set(experimentId, { ...row, ...change });
    this.#dirty.add(experimentId);
  }

  enqueue(command: OutboxCommand): void {
    if (!this.#outbox.has(command.commandId)) this.#outbox.set(command.commandId, command);
  }

  setTimer(experimentId: string, kind: TimerKind, dueAt: Date, causeId: string): void {
    this.#timers.set(`${experimentId}\u0000${kind}`, {
      experimentId,
      kind,
      row: { experiment_id: experimentId, kind, due_at: dueAt, cause_id: causeId },
    });
  }

  clearTimers(experimentId: string, kinds: readonly TimerKind[]): void {
    for (const kind of kinds)
      this.#timers.set(`${experimentId}\u0000${kind}`, { experimentId, kind, row: null });
  }

  async write(): Promise<void> {
    const { tx } = this;
    if (this.#dirty.size > 0) {
      const rows = [...this.#dirty].map((id) => this.#rows.get(id)!);
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

/** The command that deploys one variant of an experiment, as its spec describes it. */
export const deployCommand = (
  spec: ExperimentSpec,
  experimentId: string,
  variant: Variant,
  ids: { readonly commandId: string; readonly causationId: string; readonly correlationId: string },
): OutboxCommand => {
  const v = spec[variant];
  return {
    type: 'DeployVariant',
    commandId: ids.commandId,
    experimentId,
    variant,
    template: v.template,
    params: { ...v.params },
    criticalProcesses: [...spec.criticalProcesses],
    hosts: spec.target.hosts,
    namespace: spec.target.namespace,
    nodeSelector: { ...spec.target.nodeSelector },
    causationId: ids.causationId,
    correlationId: ids.correlationId,
  };
};

/** The actor of the commands reconciliation issues (history and audit show it). */
export const RECONCILER_ACTOR = 'system:reconciler';

/** What reconciliation does about one experiment, given the variants its deployer holds. */
export type Reconciliation =
  | { readonly action: 'none' }
  | { readonly action: 'redeploy'; readonly variants: readonly Variant[]; readonly reason: string }
  | { readonly action: 'fail'; readonly reason: string };

const listed = (variants: readonly Variant[]) =>
  `the ${variants.join(' and ')} variant${variants.length > 1 ? 's' : ''}`;

/**
 * Reconciliation's decision (pure): the experiment as its events say, against what the deployer
 * holds after a restart.
 * - initializing: nothing has been measured yet, so whatever is not both recorded and held is
 *   deployed again (deploying is idempotent: a variant still there is adopted, and a repeated
 *   answer changes nothing).
 * - running, analyzing: a deployed variant that is gone took the run's data with it; the experiment
 *   fails, saying which variants were lost, instead of being analysed on data that is not there.
 * - pending and the terminal states: nothing to reconcile (the saga tears down what ended).
 */
export const reconcile = (state: Experiment, present: readonly Variant[]): Reconciliation => {
  if (state.status === 'empty') return { action: 'none' };
  const s = state as ExistingExperiment;
  switch (s.status) {
    case 'initializing': {
      const variants = VARIANTS.filter(
        (v) => s.deployments[v]?.status !== 'deployed' || !present.includes(v),
      );
      if (variants.length === 0) return { action: 'none' };
      const lost = variants.filter((v) => s.deployments[v]?.status === 'deployed');
      return {
        action: 'redeploy',
        variants,
        reason:
          lost.length > 0
            ? `the data plane no longer holds ${listed(lost)}; deploying again before the run starts`
            : `no answer recorded for ${listed(variants)}; deploying again`,
      };
    }
    case 'running':
    case 'analyzing': {
      const lost = VARIANTS.filter((v) => s.deployments[v]?.status === 'deployed' && !present.includes(v));
      if (lost.length === 0) return { action: 'none' };
      return {
        action: 'fail',
        reason: `reconciled after a restart: the data plane no longer holds ${listed(lost)}; the run's data since ${s.runStartedAt ?? s.startedAt ?? 'its start'} is lost`,
      };
    }
    case 'pending':
    case 'completed':
    case 'failed':
    case 'cancelled':
      return { action: 'none' };
    default: {
      const _never: never = s.status;
      return _never;
    }
  }
};

/** Where the saga finds the spec of an experiment it has not recorded yet: its creation event. */
export type SpecSource = (experimentId: string) => Promise<ExperimentSpec | undefined>;

/** The spec from the experiment's stream in the event store. */
export const specFromStore =
  (store: EventStore<ExperimentEvent>): SpecSource =>
  async (experimentId) => {
    for (const stored of await store.readStream(streamIdOf(experimentId))) {
      const event = { type: stored.type, data: stored.data } as ExperimentEvent;
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
 * The saga as a projection runner's handler. Before each batch's transaction it reads the specs its
 * starts need from the event store: inside the transaction that read could wait for a connection the
 * transaction holds (the embedded database has one).
 */
export function lifecycleSagaHandler(store: EventStore<ExperimentEvent>, timeouts = DEFAULT_SAGA_TIMEOUTS) {
  const specOf = specFromStore(store);
  let specs = new Map<string, ExperimentSpec>();
  return {
    name: 'lifecycle-saga',
    sideEffects: true,
    streamPrefix: STREAM_PREFIX,
    ignores: sagaIgnores,
    async prepare(events: readonly StoredEvent<ExperimentEvent>[]): Promise<void> {
      specs = await specsOfStarts(events, specOf);
    },
    apply: (tx: Tx, events: readonly StoredEvent<ExperimentEvent>[]) =>
      applySagaEvents(tx, events, { timeouts, specs }),
  };
}

/** The events the saga does nothing with: a batch of only these just moves its checkpoint. */
export const sagaIgnores = (event: StoredEvent<ExperimentEvent>): boolean =>
  event.type === 'ExperimentCreated' ||
  event.type === 'VariantDeploymentFailed' ||
  event.type === 'VariantTornDown';

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
  options: { readonly timeouts?: SagaTimeouts; readonly specs: ReadonlyMap<string, ExperimentSpec> },
): Promise<void> {
  const timeouts = options.timeouts ?? DEFAULT_SAGA_TIMEOUTS;
  const batch = new SagaBatch(tx);
  const createdHere = new Map<string, ExperimentSpec>();
  const touched: string[] = [];
  for (const e of events) {
    const id = experimentIdOf(e.streamId);
    const event = { type: e.type, data: e.data } as ExperimentEvent;
    if (event.type === 'ExperimentCreated') createdHere.set(id, event.data.spec);
    else if (!sagaIgnores(e)) touched.push(id);
  }
  if (touched.length > 0) await batch.load(touched);
  for (const stored of events) {
    const event = { type: stored.type, data: stored.data } as ExperimentEvent;
    const experimentId = experimentIdOf(stored.streamId);
    const eventId = stored.metadata.eventId;
    const correlationId = stored.metadata.correlationId;
    const teardown = (purpose: string) => {
      const row = batch.row(experimentId);
      if (!row?.started) return;
      batch.enqueue({
        type: 'TeardownExperiment',
        commandId: deriveCommandId(eventId, purpose),
        experimentId,
        namespace: row.spec.target.namespace,
        causationId: eventId,
        correlationId,
      });
    };

    switch (event.type) {
      case 'ExperimentCreated':
        break; // recorded when it starts
      case 'ExperimentStarted': {
        if (!batch.row(experimentId)) {
          const spec = createdHere.get(experimentId) ?? options.specs.get(experimentId);
          // A start without a creation before it: the stream is not one the saga can act on.
          if (!spec)
            throw new Error(`experiment ${experimentId} started, but its stream has no creation event`);
          batch.create(experimentId, spec);
        }
        batch.update(experimentId, { started: true });
        const row = batch.row(experimentId);
        if (!row) break;
        for (const variant of VARIANTS) {
          batch.enqueue(
            deployCommand(row.spec, experimentId, variant, {
              commandId: deriveCommandId(eventId, `deploy:${variant}`),
              causationId: eventId,
              correlationId,
            }),
          );
        }
        batch.setTimer(experimentId, 'deploy-timeout', at(event.data.at, timeouts.deployTimeoutMs), eventId);
        break;
      }
      case 'ExperimentRunStarted':
        batch.update(experimentId, { run_started_at: at(event.data.at) });
        batch.clearTimers(experimentId, ['deploy-timeout']);
        batch.setTimer(experimentId, 'run-end', at(event.data.runEndsAt), eventId);
        break;
      case 'ExperimentRuntimeExtended':
        batch.clearTimers(experimentId, ['analysis-timeout']);
        batch.setTimer(experimentId, 'run-end', at(event.data.runEndsAt), eventId);
        break;
      case 'ExperimentRunCompleted':
      case 'AnalysisRetried': {
        const row = batch.row(experimentId);
        if (!row) break;
        const runStartedAt = row.run_started_at === null ? null : new Date(row.run_started_at);
        batch.enqueue({
          type: 'AnalyzeExperiment',
          commandId: deriveCommandId(eventId, 'analyze'),
          experimentId,
          spec: row.spec as unknown as AnalyzeExperiment['spec'],
          window: {
            start: (runStartedAt ?? at(event.data.at, -row.spec.durationSeconds * 1000)).toISOString(),
            end:
              event.type === 'ExperimentRunCompleted'
                ? event.data.at
                : new Date(
                    Math.max(Date.parse(event.data.at), (runStartedAt?.getTime() ?? 0) + 1000),
                  ).toISOString(),
          },
          causationId: eventId,
          correlationId,
        });
        batch.setTimer(
          experimentId,
          'analysis-timeout',
          at(event.data.at, timeouts.analysisTimeoutMs),
          eventId,
        );
        break;
      }
      case 'AnalysisRecorded':
        batch.clearTimers(experimentId, ['analysis-timeout']);
        break;
      case 'ExperimentCompleted':
      case 'ExperimentFailed':
      case 'ExperimentCancelled':
        batch.clearTimers(experimentId, ['deploy-timeout', 'run-end', 'analysis-timeout']);
        batch.update(experimentId, { ended: true });
        teardown('teardown');
        break;
      case 'VariantDeployed': {
        // A deployment that finished after the experiment ended: take it away again.
        if (batch.row(experimentId)?.ended) teardown(`teardown-late:${event.data.variant}`);
        break;
      }
      case 'VariantDeploymentFailed':
      case 'VariantTornDown':
        break;
      default: {
        const _never: never = event;
        return _never;
      }
    }
  }
  await batch.write();
}

export interface SagaEffectsDependencies {
  // biome-ignore lint/suspicious/noExplicitAny: raw SQL only
  readonly db: Kysely<any>;
  readonly store: EventStore<ExperimentEvent>;
  readonly bus: Bus;
  readonly logger: Logger;
  readonly clock?: () => Date;
  readonly timeouts?: SagaTimeouts;
  /** Observes the transitions the saga drives (phoenix_state_transition_duration_seconds). */
  readonly metrics?: Pick<Metrics, 'stateTransitionDuration' | 'lockContention'>;
  /** Longest sleep between looks at the outbox and the timers when nothing wakes the loops. */
  readonly idleMs?: number;
  /** Streams this process decided on lately: commands on them skip the read (see KnownStreams). */
  readonly known?: KnownStreams;
  /**
   * How long start-up reconciliation waits for the deployer's answers before the timers and the
   * outbox run anyway (a deployer that is not up yet must not hold the saga back); default 30 s.
   */
  readonly reconcileWaitMs?: number;
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
 */
export class SagaEffects {
  readonly #deps: SagaEffectsDependencies;
  readonly #clock: () => Date;
  readonly #timeouts: SagaTimeouts;
  readonly #wake = new EventEmitter();
  readonly #abort = new AbortController();
  #loops: Promise<void>[] = [];
  #results: Consumer | undefined;
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
      this.#reconcileOnStart().then(() =>
        Promise.all([
          this.#loop('outbox', () => this.#relayOutbox()),
          this.#loop('timers', () => this.#fireTimers()),
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
            const state = foldStream(await store.readStream(streamIdOf(experimentId)));
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
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<'gave up'>((resolve) => {
      timer = setTimeout(() => resolve('gave up'), waitMs);
      this.#abort.signal.addEventListener('abort', () => resolve('gave up'), { once: true });
    });
    const outcome = await Promise.race([Promise.all(answered), gaveUp]);
    clearTimeout(timer);
    this.#verifying.clear();
    if (outcome === 'gave up' && !this.#abort.signal.aborted)
      logger.warn({ waitMs }, 'the deployer has not answered every reconciliation yet; the saga carries on');
  }

  /** Carries out reconciliation's decision on one experiment, with the reconciler as the actor. */
  async #reconciled(result: DeploymentVerifiedResult): Promise<void> {
    const id = result.experimentId;
    const state = foldStream(await this.#deps.store.readStream(streamIdOf(id)));
    const decision = reconcile(state, result.present);
    const correlation = result.correlationId ?? result.commandId;
    switch (decision.action) {
      case 'none':
        return;
      case 'fail':
        this.#deps.logger.warn(
          { experimentId: id, reason: decision.reason },
          'reconciliation fails the experiment',
        );
        return this.#command(
          id,
          { type: 'FailExperiment', reason: decision.reason, at: result.at },
          `result:${result.commandId}`,
          result.commandId,
          correlation,
          RECONCILER_ACTOR,
        );
      case 'redeploy': {
        if (state.status === 'empty') return;
        const s = state as ExistingExperiment;
        this.#deps.logger.info(
          { experimentId: id, variants: decision.variants, reason: decision.reason },
          'reconciliation deploys again',
        );
        for (const variant of decision.variants) {
          await this.#deps.bus.send(
            deployCommand(s.spec, id, variant, {
              commandId: deriveCommandId(result.commandId, `redeploy:${variant}`),
              causationId: result.commandId,
              correlationId: correlation,
            }),
          );
        }
        return;
      }
      default: {
        const _never: never = decision;
        return _never;
      }
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

  async #fire(experimentId: string, kind: TimerKind, causeId: string): Promise<void> {
    const state = foldStream(await this.#deps.store.readStream(streamIdOf(experimentId)));
    if (state.status === 'empty') return;
    const s = state as ExistingExperiment;
    const now = this.#clock().toISOString();
    let command: ExperimentCommand | undefined;
    if (kind === 'run-end' && s.status === 'running') {
      command = { type: 'CompleteRun', at: now };
    } else if (kind === 'deploy-timeout' && s.status === 'initializing') {
      const ready =
        s.deployments.baseline?.status === 'deployed' && s.deployments.candidate?.status === 'deployed';
      command = ready
        ? {
            type: 'MarkExperimentRunning',
            reason: 'both variants found deployed at the deploy deadline',
            at: now,
          }
        : {
            type: 'FailExperiment',
            reason: `deployment did not finish within ${Math.round(this.#timeouts.deployTimeoutMs / 1000)} s`,
            at: now,
          };
    } else if (kind === 'analysis-timeout' && s.status === 'analyzing') {
      command =
        s.analysisAttempts + 1 < this.#timeouts.maxAnalysisAttempts
          ? { type: 'RetryAnalysis', reason: 'the analysis did not answer in time', at: now }
          : {
              type: 'FailExperiment',
              reason: `no analysis after ${this.#timeouts.maxAnalysisAttempts} attempts`,
              at: now,
            };
    }
    if (!command) return; // the experiment moved on: the deadline no longer applies
    await this.#command(experimentId, command, `timer:${kind}:${causeId}`, causeId, experimentId);
  }

  async #onResult(result: BusResult): Promise<void> {
    const id = result.experimentId;
    const commandId = `result:${result.commandId}`;
    const correlation = result.correlationId ?? result.commandId;
    switch (result.type) {
      case 'VariantDeployed':
        return this.#command(
          id,
          { type: 'RecordVariantDeployed', variant: result.variant, detail: result.detail, at: result.at },
          commandId,
          result.commandId,
          correlation,
        );
      case 'VariantDeployFailed':
        return this.#command(
          id,
          {
            type: 'RecordVariantDeploymentFailed',
            variant: result.variant,
            reason: result.reason,
            at: result.at,
          },
          commandId,
          result.commandId,
          correlation,
        );
      case 'ExperimentTornDown':
        for (const variant of result.variants) {
          await this.#command(
            id,
            { type: 'RecordVariantTornDown', variant, at: result.at },
            `${commandId}:${variant}`,
            result.commandId,
            correlation,
          );
        }
        return;
      case 'DeploymentVerified':
        try {
          return await this.#reconciled(result);
        } finally {
          this.#verifying.get(result.commandId)?.();
        }
      case 'AnalysisCompleted':
        return this.#command(
          id,
          { type: 'RecordAnalysis', analysis: result.analysis, at: result.at },
          commandId,
          result.commandId,
          correlation,
        );
      case 'AnalysisFailed':
        return this.#command(
          id,
          { type: 'FailExperiment', reason: `analysis failed: ${result.reason}`, at: result.at },
          commandId,
          result.commandId,
          correlation,
        );
      default: {
        const _never: never = result;
        return _never;
      }
    }
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
    const started = performance.now();
    const metrics = this.#deps.metrics;
    try {
      const result = await handleExperimentCommand(
        this.#deps.store,
        experimentId,
        command,
        { actor, correlationId, causationId, commandId },
        {
          onConflict: () => metrics?.lockContention.labels('experiment').inc(),
          ...(this.#deps.known ? { known: this.#deps.known } : {}),
        },
      );
      if (metrics && result.written.length > 0 && result.state.status !== result.previousStatus) {
        metrics.stateTransitionDuration
          .labels(result.previousStatus, result.state.status, 'true')
          .observe((performance.now() - started) / 1000);
      }
    } catch (err) {
      // RunNotFinished: the run was extended, and the extension set a new run-end timer.
      if (
        err instanceof InvalidTransitionError ||
        err instanceof RunNotFinishedError ||
        err instanceof DomainError
      ) {
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

import { type FormEvent, lazy, Suspense, useCallback, useEffect, useRef, useState } from 'react';
import { Link, useLocation, useParams } from 'react-router';
import { ApiError, download, getJson, getText, postJson, query } from '../api';
import { roleAtLeast } from '../auth';
import { HostReductionChart, SummaryCharts, TimelineCharts, TopExecutablesChart } from '../components/Charts';
import { checksOf, ErrorBox, OutcomeBadge, StateBadge, TableWrap, VerdictBadge } from '../components/common';
import { criterionLabel, fmtBytes, fmtDuration, fmtNum, fmtPct, fmtTime, thresholdText } from '../format';
import { useLiveFeed } from '../live';
import { useSession } from '../session';
import type { Analysis, CommandResult, Experiment, HistoryEntry, LiveEvent, State } from '../types';

// The diff view (with its syntax highlighter) loads when the configs section renders.
const ConfigDiff = lazy(() => import('../components/ConfigDiff'));

const ACTIVE: State[] = ['pending', 'initializing', 'running', 'analyzing'];
const STEPS: State[] = ['pending', 'initializing', 'running', 'analyzing'];

/**
 * One experiment: what happened (the stepper, live), what was measured and judged (verdict, criteria,
 * charts, evidence) and what ran (the two configs). Kept current by the experiment's live feed: each
 * event reloads the experiment and its history as of that event.
 */
export default function ReportPage() {
  const { id = '' } = useParams();
  const location = useLocation();
  const { session, signOut } = useSession();
  const [experiment, setExperiment] = useState<Experiment>();
  const [history, setHistory] = useState<HistoryEntry[]>([]);
  const [events, setEvents] = useState<LiveEvent[]>([]);
  const [error, setError] = useState<unknown>();
  const [commandError, setCommandError] = useState<unknown>();
  const [busy, setBusy] = useState<string>();
  const position = useRef<string | undefined>((location.state as { position?: string } | null)?.position);
  const pending = useRef<ReturnType<typeof setTimeout>>();
  const request = useRef(0);

  const load = useCallback(async () => {
    const n = ++request.current;
    const q = query({ minPosition: position.current });
    try {
      const [x, h] = await Promise.all([
        getJson<Experiment>(`/api/v1/experiments/${id}${q}`),
        getJson<{ items: HistoryEntry[] }>(`/api/v1/experiments/${id}/history${q}`),
      ]);
      if (n !== request.current) return;
      setExperiment(x);
      setHistory(h.items);
      setError(undefined);
    } catch (err) {
      if (n === request.current) setError(err);
    }
  }, [id]);

  const feed = useLiveFeed(
    id,
    {
      onLive: (p) => {
        if (position.current === undefined) position.current = p;
        void load();
      },
      onEvent: (event) => {
        position.current = event.position;
        setEvents((es) => [...es, event].slice(-50));
        clearTimeout(pending.current);
        pending.current = setTimeout(() => void load(), 100);
      },
    },
    () => signOut('Your token was refused (expired or invalid): sign in again.'),
  );

  const command = async (name: string, path: string, body: unknown = {}) => {
    setBusy(name);
    setCommandError(undefined);
    try {
      const result = await postJson<CommandResult>(`/api/v1/experiments/${id}/${path}`, body);
      position.current = result.position;
      await load();
    } catch (err) {
      setCommandError(err);
    } finally {
      setBusy(undefined);
    }
  };

  if (!experiment) {
    return (
      <section>
        <h1>Experiment</h1>
        {error ? <ErrorBox error={error} /> : <p aria-live="polite">Loading…</p>}
        <p>
          <Link to="/experiments">Back to the experiments</Link>
        </p>
      </section>
    );
  }

  const x = experiment;
  const isOperator = roleAtLeast(session.role, 'operator');
  const analysis = x.analysis;

  return (
    <article className="report" aria-labelledby="report-title">
      <div className="page-head">
        <h1 id="report-title">{x.name}</h1>
        <StateBadge state={x.state} />
        <span className={`feed feed-${feed}`} role="status">
          {feed === 'live' ? 'Live' : feed === 'connecting' ? 'Connecting…' : 'Reconnecting…'}
        </span>
      </div>
      <p className="subtitle">
        <code>{x.baseline.template}</code> → <code>{x.candidate.template}</code> on {x.target.hosts} host
        {x.target.hosts === 1 ? '' : 's'} for {fmtDuration(x.durationSeconds * 1000)} · created{' '}
        {fmtTime(x.createdAt)} · <span className="muted">id {x.id}</span>
      </p>
      {x.description && <p>{x.description}</p>}

      {isOperator && <Commands experiment={x} busy={busy} onCommand={command} />}
      <ErrorBox error={commandError} />
      {error !== undefined && <ErrorBox error={error} />}

      <Stepper state={x.state} history={history} />
      {events.length > 0 && (
        <details className="events">
          <summary>Live events ({events.length})</summary>
          <ol>
            {events.map((e) => (
              <li key={e.position}>
                <time dateTime={e.metadata.occurredAt}>{fmtTime(e.metadata.occurredAt)}</time>{' '}
                <code>{e.type}</code> by {e.metadata.actor ?? 'system'}
              </li>
            ))}
          </ol>
        </details>
      )}

      {analysis ? <AnalysisReport experiment={x} analysis={analysis} /> : <NoAnalysisYet state={x.state} />}

      {x.promotion && <Promotion promotion={x.promotion} />}
      {x.rejudgements && x.rejudgements.length > 0 && <Rejudgements items={x.rejudgements} />}

      <Configs experiment={x} />
    </article>
  );
}

function Commands({
  experiment: x,
  busy,
  onCommand,
}: {
  experiment: Experiment;
  busy: string | undefined;
  onCommand: (name: string, path: string, body?: unknown) => Promise<void>;
}) {
  const [cancelling, setCancelling] = useState(false);
  const [reason, setReason] = useState('');
  const canPromote = x.state === 'completed' && x.analysis?.verdict === 'pass';
  const promoted = x.promotion && ['committed', 'rolled_out', 'rollback_failed'].includes(x.promotion.status);
  const submitCancel = async (e: FormEvent) => {
    e.preventDefault();
    await onCommand('cancel', 'cancel', reason.trim() ? { reason: reason.trim() } : {});
    setCancelling(false);
  };
  return (
    <div className="commands">
      {x.state === 'pending' && (
        <button
          type="button"
          className="primary"
          disabled={busy !== undefined}
          onClick={() => onCommand('start', 'start')}
        >
          {busy === 'start' ? 'Starting…' : 'Start experiment'}
        </button>
      )}
      {ACTIVE.includes(x.state) && !cancelling && (
        <button
          type="button"
          className="danger"
          disabled={busy !== undefined}
          onClick={() => setCancelling(true)}
        >
          Cancel experiment
        </button>
      )}
      {cancelling && (
        <form className="inline" onSubmit={submitCancel}>
          <label htmlFor="cancel-reason">Reason (optional)</label>
          <input
            id="cancel-reason"
            type="text"
            value={reason}
            maxLength={1000}
            onChange={(e) => setReason(e.target.value)}
          />
          <button type="submit" className="danger" disabled={busy !== undefined}>
            {busy === 'cancel' ? 'Cancelling…' : 'Confirm cancel'}
          </button>
          <button type="button" className="secondary" onClick={() => setCancelling(false)}>
            Keep running
          </button>
        </form>
      )}
      {canPromote && !promoted && (
        <button
          type="button"
          className="primary"
          disabled={busy !== undefined}
          onClick={() => onCommand('promote', 'promote')}
        >
          {busy === 'promote' ? 'Promoting…' : 'Promote candidate'}
        </button>
      )}
      {canPromote && promoted && (
        <button
          type="button"
          className="danger"
          disabled={busy !== undefined}
          onClick={() => onCommand('rollback', 'rollback')}
        >
          {busy === 'rollback' ? 'Rolling back…' : 'Roll back promotion'}
        </button>
      )}
    </div>
  );
}

/** The lifecycle as steps, each with who moved it there and when (from the history). */
function Stepper({ state, history }: { state: State; history: HistoryEntry[] }) {
  const last = (s: State) => [...history].reverse().find((h) => h.to === s);
  const terminal: State = state === 'failed' ? 'failed' : state === 'cancelled' ? 'cancelled' : 'completed';
  const steps = [...STEPS, terminal];
  const reached = new Set(history.map((h) => h.to));
  const currentIndex = steps.indexOf(state);
  return (
    <section aria-labelledby="progress-title" className="stepper-section">
      <h2 id="progress-title">Progress</h2>
      <ol className="stepper">
        {steps.map((s, i) => {
          const entry = last(s);
          const status =
            s === state
              ? 'current'
              : reached.has(s) || (currentIndex !== -1 && i < currentIndex)
                ? 'done'
                : 'upcoming';
          // A cancelled run skips the steps it never reached.
          const skipped = state === 'cancelled' && !reached.has(s) && s !== 'cancelled';
          return (
            <li
              key={s}
              className={`step step-${skipped ? 'skipped' : status} step-${s}`}
              aria-current={s === state ? 'step' : undefined}
              data-state={s}
            >
              <span className="step-name">{s}</span>
              {entry ? (
                <span className="step-meta">
                  <time dateTime={entry.at}>{fmtTime(entry.at)}</time>
                  <span>by {entry.actor}</span>
                  {entry.reason && <span className="reason">{entry.reason}</span>}
                </span>
              ) : (
                <span className="step-meta muted">{skipped ? 'skipped' : 'not yet'}</span>
              )}
            </li>
          );
        })}
      </ol>
    </section>
  );
}

function NoAnalysisYet({ state }: { state: State }) {
  const text =
    state === 'cancelled'
      ? 'The experiment was cancelled before it was analysed.'
      : state === 'failed'
        ? 'The experiment failed before an analysis was recorded; the progress above says why.'
        : 'The verdict appears here when the analysis is done.';
  return (
    <section aria-labelledby="verdict-title">
      <h2 id="verdict-title">Verdict</h2>
      <p className="muted">{text}</p>
    </section>
  );
}

function AnalysisReport({ experiment: x, analysis }: { experiment: Experiment; analysis: Analysis }) {
  const checks = checksOf(analysis);
  const criteria = x.successCriteria as unknown as Record<string, number>;
  const evidence = analysis.evidence ?? {};
  const figures = evidence.figures as
    | { baseline?: { collectorCpuCores?: number | null }; candidate?: { collectorCpuCores?: number | null } }
    | undefined;
  const cpu = figures
    ? {
        baseline: figures.baseline?.collectorCpuCores ?? null,
        candidate: figures.candidate?.collectorCpuCores ?? null,
      }
    : undefined;
  return (
    <>
      <section aria-labelledby="verdict-title" className={`verdict-section verdict-${analysis.verdict}`}>
        <h2 id="verdict-title">
          Verdict: <VerdictBadge verdict={analysis.verdict} />
        </h2>
        <ul className="reasons">
          {analysis.reasons.map((r) => (
            <li key={r}>{r}</li>
          ))}
        </ul>
        <dl className="figures">
          <div>
            <dt>Series reduction</dt>
            <dd data-figure="cardinalityReductionPct">{fmtPct(analysis.cardinalityReductionPct)}</dd>
          </div>
          <div>
            <dt>Datapoint reduction</dt>
            <dd data-figure="datapointReductionPct">{fmtPct(analysis.datapointReductionPct)}</dd>
          </div>
          <div>
            <dt>Critical process loss</dt>
            <dd data-figure="criticalProcessLossPct">{fmtPct(analysis.criticalProcessLossPct)}</dd>
          </div>
          {analysis.cost && (
            <div>
              <dt>Monthly saving (target)</dt>
              <dd>
                {fmtNum(analysis.cost.monthly.target.saving)} {analysis.cost.currency}
              </dd>
            </div>
          )}
        </dl>
      </section>

      <section aria-labelledby="criteria-title">
        <h2 id="criteria-title">Criteria</h2>
        <TableWrap label="Criteria">
          <table className="criteria">
            <thead>
              <tr>
                <th scope="col">Criterion</th>
                <th scope="col" className="num">
                  Threshold
                </th>
                <th scope="col" className="num">
                  Measured
                </th>
                <th scope="col">Outcome</th>
                <th scope="col">Reason</th>
              </tr>
            </thead>
            <tbody>
              {checks.map((c) => (
                <tr key={c.criterion} data-criterion={c.criterion}>
                  <th scope="row">
                    {criterionLabel(c.criterion)}
                    {c.dryRun && <span className="badge dry-run">dry run</span>}
                  </th>
                  <td className="num">{thresholdText(c.criterion, c.threshold)}</td>
                  <td className="num" data-value={c.value ?? ''}>
                    {c.criterion.endsWith('Pct') ? fmtPct(c.value) : fmtNum(c.value)}
                    {c.interval && (
                      <span className="interval">
                        {' '}
                        ({Math.round(c.interval.confidence * 100)}% CI {fmtNum(c.interval.low)}–
                        {fmtNum(c.interval.high)})
                      </span>
                    )}
                  </td>
                  <td>
                    <OutcomeBadge outcome={c.outcome} />
                  </td>
                  <td>{c.reason}</td>
                </tr>
              ))}
              {checks.length === 0 && (
                <tr>
                  <td colSpan={5} className="empty">
                    This analysis records no per-criterion checks; its reasons are above.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </TableWrap>
      </section>

      <section aria-labelledby="charts-title">
        <h2 id="charts-title">Baseline against candidate</h2>
        <SummaryCharts analysis={analysis} cpu={cpu} criteria={criteria} />
        {analysis.timeline && analysis.timeline.length > 0 && (
          <>
            <h3>Over the run</h3>
            <TimelineCharts analysis={analysis} criteria={criteria} />
          </>
        )}
        <div className="charts">
          {analysis.topExecutables && analysis.topExecutables.length > 0 && (
            <TopExecutablesChart items={analysis.topExecutables} />
          )}
          {analysis.hosts && analysis.hosts.length > 0 && (
            <HostReductionChart hosts={analysis.hosts} minPct={criteria.minCardinalityReductionPct} />
          )}
        </div>
        <h3>Missing critical processes</h3>
        {analysis.missingCriticalProcesses.length === 0 ? (
          <p data-testid="missing-critical">
            None: every critical process of the baseline is in the candidate.
          </p>
        ) : (
          <ul data-testid="missing-critical" className="missing">
            {analysis.missingCriticalProcesses.map((p) => (
              <li key={p}>
                <code>{p}</code>
              </li>
            ))}
          </ul>
        )}
      </section>

      <Evidence experiment={x} analysis={analysis} />
    </>
  );
}

function Evidence({ experiment: x, analysis }: { experiment: Experiment; analysis: Analysis }) {
  const evidence = analysis.evidence ?? {};
  const window = evidence.window as { start?: string; end?: string } | undefined;
  const queries = Array.isArray(evidence.queries) ? (evidence.queries as Record<string, unknown>[]) : [];
  const measuredAt = evidence.measuredAt as Record<string, { scrapes?: number } | undefined> | undefined;
  const statistics = Object.entries(analysis.statistics ?? {});
  return (
    <section aria-labelledby="evidence-title">
      <div className="page-head">
        <h2 id="evidence-title">Evidence</h2>
        <button
          type="button"
          className="secondary"
          onClick={() =>
            download(
              new Blob([JSON.stringify(analysis, null, 2)], { type: 'application/json' }),
              `${x.name.replace(/[^\w.-]+/g, '-')}-${x.id.slice(0, 8)}-analysis.json`,
            )
          }
        >
          Download the analysis (JSON)
        </button>
      </div>
      <dl className="figures">
        {typeof evidence.source === 'string' && (
          <div>
            <dt>Source</dt>
            <dd>{evidence.source}</dd>
          </div>
        )}
        {window && (
          <div>
            <dt>Window</dt>
            <dd>
              <time dateTime={window.start}>{fmtTime(window.start)}</time> –{' '}
              <time dateTime={window.end}>{fmtTime(window.end)}</time>
            </dd>
          </div>
        )}
        {measuredAt &&
          Object.entries(measuredAt).map(([v, m]) =>
            m?.scrapes !== undefined ? (
              <div key={v}>
                <dt>{v} scrapes</dt>
                <dd>{fmtNum(m.scrapes)}</dd>
              </div>
            ) : null,
          )}
        {analysis.parity && (
          <div>
            <dt>Input parity</dt>
            <dd>
              {analysis.parity.reason} ({fmtPct(analysis.parity.mismatchPct)} apart, at most{' '}
              {fmtPct(analysis.parity.maxMismatchPct)})
            </dd>
          </div>
        )}
      </dl>
      {queries.length > 0 && (
        <TableWrap label="Queries">
          <table className="queries">
            <caption>Queries behind each figure</caption>
            <thead>
              <tr>
                <th scope="col">Figure</th>
                <th scope="col">Variant</th>
                <th scope="col">Query</th>
                <th scope="col" className="num">
                  Samples
                </th>
              </tr>
            </thead>
            <tbody>
              {queries.map((q, i) => (
                // biome-ignore lint/suspicious/noArrayIndexKey: the evidence's own order
                <tr key={i}>
                  <td>{String(q.figure ?? '')}</td>
                  <td>{String(q.variant ?? '')}</td>
                  <td>
                    <code>{String(q.query ?? '')}</code>
                  </td>
                  <td className="num">{q.samples === undefined ? '—' : fmtNum(Number(q.samples))}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      )}
      {statistics.length > 0 && (
        <TableWrap label="Paired comparisons">
          <table className="statistics">
            <caption>Paired comparisons per host</caption>
            <thead>
              <tr>
                <th scope="col">Figure</th>
                <th scope="col" className="num">
                  Hosts
                </th>
                <th scope="col" className="num">
                  Samples
                </th>
                <th scope="col" className="num">
                  Baseline mean
                </th>
                <th scope="col" className="num">
                  Candidate mean
                </th>
                <th scope="col" className="num">
                  Change
                </th>
                <th scope="col">Interval</th>
                <th scope="col">Test</th>
              </tr>
            </thead>
            <tbody>
              {statistics.map(([figure, s]) =>
                s ? (
                  <tr key={figure}>
                    <th scope="row">{figure}</th>
                    <td className="num">{s.hosts}</td>
                    <td className="num">{s.samples}</td>
                    <td className="num">
                      {figure === 'collectorMemoryBytes' ? fmtBytes(s.baselineMean) : fmtNum(s.baselineMean)}
                    </td>
                    <td className="num">
                      {figure === 'collectorMemoryBytes'
                        ? fmtBytes(s.candidateMean)
                        : fmtNum(s.candidateMean)}
                    </td>
                    <td className="num">{fmtPct(s.relativeChangePct, true)}</td>
                    <td>
                      {s.interval
                        ? `${Math.round(s.interval.confidence * 100)}%: ${fmtPct(s.interval.low, true)} to ${fmtPct(s.interval.high, true)}`
                        : '—'}
                    </td>
                    <td>
                      {s.test
                        ? `${s.test.name}, p = ${s.test.pValue === null ? '—' : s.test.pValue.toPrecision(3)}${
                            s.test.effectSize
                              ? `, ${s.test.effectSize.name} ${fmtNum(s.test.effectSize.value)}`
                              : ''
                          }`
                        : '—'}
                    </td>
                  </tr>
                ) : null,
              )}
            </tbody>
          </table>
        </TableWrap>
      )}
      <details>
        <summary>All evidence as recorded</summary>
        <section className="code" aria-label="Evidence JSON">
          {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable by keyboard */}
          <pre tabIndex={0} className="json">
            {JSON.stringify(evidence, null, 2)}
          </pre>
        </section>
      </details>
    </section>
  );
}

function Promotion({ promotion }: { promotion: NonNullable<Experiment['promotion']> }) {
  return (
    <section aria-labelledby="promotion-title">
      <h2 id="promotion-title">Promotion</h2>
      <dl className="figures">
        <div>
          <dt>Status</dt>
          <dd>
            <span className={`badge promotion-${promotion.status}`}>
              {promotion.status.replace(/_/g, ' ')}
            </span>
          </dd>
        </div>
        <div>
          <dt>Requested by</dt>
          <dd>
            {promotion.requestedBy}, <time dateTime={promotion.at}>{fmtTime(promotion.at)}</time>
          </dd>
        </div>
        {promotion.repository && (
          <div>
            <dt>Repository</dt>
            <dd>
              <code>{promotion.repository}</code>
              {promotion.path && (
                <>
                  {' '}
                  at <code>{promotion.path}</code>
                </>
              )}
            </dd>
          </div>
        )}
        {promotion.commit && (
          <div>
            <dt>Commit</dt>
            <dd>
              <code>{promotion.commit}</code>
            </dd>
          </div>
        )}
        {promotion.reason && (
          <div>
            <dt>Reason</dt>
            <dd>{promotion.reason}</dd>
          </div>
        )}
      </dl>
    </section>
  );
}

function Rejudgements({ items }: { items: NonNullable<Experiment['rejudgements']> }) {
  return (
    <section aria-labelledby="rejudgements-title">
      <h2 id="rejudgements-title">Re-judgements</h2>
      <p className="help">
        The verdict above is the original; these re-applied other criteria to the same measurements.
      </p>
      <TableWrap label="Re-judgements">
        <table>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">By</th>
              <th scope="col">Criteria</th>
              <th scope="col">Verdict</th>
            </tr>
          </thead>
          <tbody>
            {items.map((r) => (
              <tr key={r.at + r.actor}>
                <td>
                  <time dateTime={r.at}>{fmtTime(r.at)}</time>
                </td>
                <td>{r.actor}</td>
                <td>
                  {Object.entries(r.criteria)
                    .filter(([, v]) => typeof v === 'number')
                    .map(([k, v]) => `${criterionLabel(k)} ${thresholdText(k, v as number)}`)
                    .join(', ')}
                </td>
                <td>
                  <VerdictBadge verdict={r.analysis.verdict} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </TableWrap>
    </section>
  );
}

function Configs({ experiment: x }: { experiment: Experiment }) {
  const [configs, setConfigs] = useState<{ baseline: string; candidate: string }>();
  const [error, setError] = useState<unknown>();
  // biome-ignore lint/correctness/useExhaustiveDependencies: the candidate's config changes once tuning has the baseline's data (top-k, adaptive): read again when the state moves
  useEffect(() => {
    let live = true;
    Promise.all([
      getText(`/api/v1/experiments/${x.id}/config/baseline`),
      getText(`/api/v1/experiments/${x.id}/config/candidate`),
    ]).then(
      ([baseline, candidate]) => live && setConfigs({ baseline, candidate }),
      (err) => live && setError(err),
    );
    return () => {
      live = false;
    };
  }, [x.id, x.state]);
  return (
    <section aria-labelledby="configs-title">
      <h2 id="configs-title">Collector configs</h2>
      {error instanceof ApiError || error ? <ErrorBox error={error} /> : null}
      {configs ? (
        <Suspense fallback={<p aria-live="polite">Loading the diff view…</p>}>
          <ConfigDiff
            baseline={configs.baseline}
            candidate={configs.candidate}
            titles={[`baseline: ${x.baseline.template}`, `candidate: ${x.candidate.template}`]}
          />
        </Suspense>
      ) : (
        !error && <p aria-live="polite">Loading…</p>
      )}
    </section>
  );
}

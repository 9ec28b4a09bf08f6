import { useCallback, useEffect, useRef, useState } from 'react';
import { Link, useSearchParams } from 'react-router';
import { getJson, query } from '../api';
import { roleAtLeast } from '../auth';
import { cpuOverheadOf, ErrorBox, StateBadge, TableWrap, VerdictBadge } from '../components/common';
import { fmtAge, fmtPct, fmtTime } from '../format';
import { useLiveFeed } from '../live';
import { useSession } from '../session';
import { type Experiment, type Page, STATES, type State } from '../types';

const PAGE_SIZE = 20;

/**
 * Every experiment, newest first, kept current by the live feed: the feed opens first, the page is
 * read as of the feed's head (`minPosition`), and every event after it reloads the page as of that
 * event. Filter and paging live in the address, so a link or a reload shows the same page.
 */
export function ExperimentsPage() {
  const { session, signOut } = useSession();
  const [params, setParams] = useSearchParams();
  const state = (params.get('state') ?? '') as State | '';
  const cursor = params.get('cursor') ?? undefined;
  const [page, setPage] = useState<Page<Experiment>>();
  const [error, setError] = useState<unknown>();
  const [prevCursors, setPrevCursors] = useState<(string | undefined)[]>([]);
  const [now, setNow] = useState(Date.now());
  const position = useRef<string>();
  const pending = useRef<ReturnType<typeof setTimeout>>();
  const request = useRef(0);

  const load = useCallback(async () => {
    const n = ++request.current;
    try {
      const result = await getJson<Page<Experiment>>(
        `/api/v1/experiments${query({ state, cursor, limit: PAGE_SIZE, minPosition: position.current })}`,
      );
      if (n === request.current) {
        setPage(result);
        setError(undefined);
      }
    } catch (err) {
      if (n === request.current) setError(err);
    }
  }, [state, cursor]);

  const feed = useLiveFeed(
    undefined,
    {
      onLive: (p) => {
        position.current ??= p;
        void load();
      },
      onEvent: (event) => {
        position.current = event.position;
        clearTimeout(pending.current);
        pending.current = setTimeout(() => void load(), 100);
      },
    },
    () => signOut('Your token was refused (expired or invalid): sign in again.'),
  );

  useEffect(() => {
    // Filter or page changed: read again (as of the last event seen).
    if (position.current !== undefined) void load();
  }, [load]);

  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 5000);
    return () => clearInterval(t);
  }, []);

  const go = (next: { state?: string; cursor?: string }) => {
    const p = new URLSearchParams();
    const s = next.state ?? state;
    if (s) p.set('state', s);
    if (next.cursor) p.set('cursor', next.cursor);
    setParams(p);
  };

  return (
    <section aria-labelledby="experiments-title">
      <div className="page-head">
        <h1 id="experiments-title">Experiments</h1>
        <span className={`feed feed-${feed}`} role="status">
          {feed === 'live' ? 'Live' : feed === 'connecting' ? 'Connecting…' : 'Reconnecting…'}
        </span>
        {roleAtLeast(session.role, 'operator') && (
          <Link className="button primary" to="/experiments/new">
            New experiment
          </Link>
        )}
      </div>
      <div className="toolbar">
        <label htmlFor="state-filter">State</label>
        <select
          id="state-filter"
          value={state}
          onChange={(e) => {
            setPrevCursors([]);
            go({ state: e.target.value, cursor: '' });
          }}
        >
          <option value="">All states</option>
          {STATES.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </div>
      <ErrorBox error={error} />
      <TableWrap label="Experiments">
        <table className="experiments">
          <caption className="visually-hidden">
            Experiments{state ? ` in state ${state}` : ''}, newest first
          </caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">State</th>
              <th scope="col">Baseline → candidate</th>
              <th scope="col" className="num">
                Hosts
              </th>
              <th scope="col" className="num">
                Age
              </th>
              <th scope="col" className="num">
                Series reduction
              </th>
              <th scope="col" className="num">
                CPU overhead
              </th>
              <th scope="col">Verdict</th>
            </tr>
          </thead>
          <tbody>
            {page?.items.map((x) => (
              <tr key={x.id} data-experiment-id={x.id}>
                <th scope="row">
                  <Link to={`/experiments/${x.id}`}>{x.name}</Link>
                </th>
                <td>
                  <StateBadge state={x.state} />
                </td>
                <td className="templates">
                  {x.baseline.template} → {x.candidate.template}
                </td>
                <td className="num">{x.target.hosts}</td>
                <td className="num">
                  <time dateTime={x.createdAt} title={fmtTime(x.createdAt)}>
                    {fmtAge(x.createdAt, now)}
                  </time>
                </td>
                <td className="num">{fmtPct(x.analysis?.cardinalityReductionPct)}</td>
                <td className="num">{fmtPct(cpuOverheadOf(x.analysis), true)}</td>
                <td>
                  <VerdictBadge verdict={x.analysis?.verdict} />
                </td>
              </tr>
            ))}
            {page && page.items.length === 0 && (
              <tr>
                <td colSpan={8} className="empty">
                  No experiments{state ? ` in state ${state}` : ''} yet.
                </td>
              </tr>
            )}
            {!page && !error && (
              <tr>
                <td colSpan={8} className="empty">
                  Loading…
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </TableWrap>
      <nav className="pager" aria-label="Pages">
        <button
          type="button"
          disabled={prevCursors.length === 0}
          onClick={() => {
            const prev = prevCursors.slice(0, -1);
            const target = prevCursors[prevCursors.length - 1];
            setPrevCursors(prev);
            go(target ? { cursor: target } : { cursor: '' });
          }}
        >
          Previous page
        </button>
        <button
          type="button"
          disabled={!page?.nextCursor}
          onClick={() => {
            setPrevCursors([...prevCursors, cursor]);
            go({ cursor: page!.nextCursor! });
          }}
        >
          Next page
        </button>
      </nav>
    </section>
  );
}

import { type FormEvent, useCallback, useEffect, useState } from 'react';
import { Link } from 'react-router';
import { download, getBlob, getJson, query } from '../api';
import { ErrorBox, StateBadge, TableWrap } from '../components/common';
import { Field } from '../components/Field';
import { fmtDuration, fmtTime } from '../format';
import { useSession } from '../session';
import { type AuditEntry, type Page, STATES } from '../types';

interface Filters {
  experimentId: string;
  actor: string;
  fromState: string;
  toState: string;
  since: string;
  until: string;
}
const EMPTY: Filters = { experimentId: '', actor: '', fromState: '', toState: '', since: '', until: '' };
const PAGE_SIZE = 50;

/** `datetime-local` (the browser's zone) → ISO, as the API takes times. */
const iso = (local: string): string | undefined => (local ? new Date(local).toISOString() : undefined);

/** The transition log (admin): who moved which experiment when, filtered, and as CSV. */
export function AuditPage() {
  const { session } = useSession();
  const [draft, setDraft] = useState<Filters>(EMPTY);
  const [filters, setFilters] = useState<Filters>(EMPTY);
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [page, setPage] = useState<Page<AuditEntry>>();
  const [error, setError] = useState<unknown>();
  const cursor = cursors[cursors.length - 1];

  const params = useCallback(
    (f: Filters) => ({
      experimentId: f.experimentId.trim() || undefined,
      actor: f.actor.trim() || undefined,
      fromState: f.fromState || undefined,
      toState: f.toState || undefined,
      since: iso(f.since),
      until: iso(f.until),
    }),
    [],
  );

  useEffect(() => {
    if (session.role !== 'admin') return;
    setError(undefined);
    getJson<Page<AuditEntry>>(`/api/v1/audit${query({ ...params(filters), limit: PAGE_SIZE, cursor })}`).then(
      setPage,
      setError,
    );
  }, [filters, cursor, params, session.role]);

  if (session.role !== 'admin') {
    return (
      <section>
        <h1>Audit</h1>
        <p>The audit trail needs the admin role; your token has {session.role}.</p>
      </section>
    );
  }

  const apply = (e: FormEvent) => {
    e.preventDefault();
    setCursors([undefined]);
    setFilters(draft);
  };
  const exportCsv = async () => {
    try {
      const blob = await getBlob(`/api/v1/audit${query(params(filters))}`, 'text/csv');
      download(blob, 'phoenix-audit.csv');
    } catch (err) {
      setError(err);
    }
  };
  const set = (k: keyof Filters) => (e: { target: { value: string } }) =>
    setDraft({ ...draft, [k]: e.target.value });

  return (
    <section aria-labelledby="audit-title">
      <div className="page-head">
        <h1 id="audit-title">Audit</h1>
        <button type="button" className="secondary" onClick={exportCsv}>
          Export CSV
        </button>
      </div>
      <form className="filters" onSubmit={apply}>
        <Field id="f-experiment" label="Experiment id">
          <input type="text" value={draft.experimentId} onChange={set('experimentId')} spellCheck={false} />
        </Field>
        <Field id="f-actor" label="Actor">
          <input type="text" value={draft.actor} onChange={set('actor')} />
        </Field>
        <Field id="f-from" label="From state">
          <select value={draft.fromState} onChange={set('fromState')}>
            <option value="">any</option>
            {STATES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </Field>
        <Field id="f-to" label="To state">
          <select value={draft.toState} onChange={set('toState')}>
            <option value="">any</option>
            {STATES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </Field>
        <Field id="f-since" label="Since">
          <input type="datetime-local" value={draft.since} onChange={set('since')} />
        </Field>
        <Field id="f-until" label="Until">
          <input type="datetime-local" value={draft.until} onChange={set('until')} />
        </Field>
        <div className="actions">
          <button type="submit" className="primary">
            Apply filters
          </button>
          <button
            type="button"
            className="secondary"
            onClick={() => {
              setDraft(EMPTY);
              setCursors([undefined]);
              setFilters(EMPTY);
            }}
          >
            Clear
          </button>
        </div>
      </form>
      <ErrorBox error={error} />
      <TableWrap label="Transitions">
        <table className="audit">
          <caption className="visually-hidden">State transitions, oldest first</caption>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Experiment</th>
              <th scope="col">From</th>
              <th scope="col">To</th>
              <th scope="col">Actor</th>
              <th scope="col">Reason</th>
              <th scope="col" className="num">
                Time in from
              </th>
            </tr>
          </thead>
          <tbody>
            {page?.items.map((a) => (
              <tr key={`${a.experimentId}-${a.at}-${a.to}`}>
                <td>
                  <time dateTime={a.at}>{fmtTime(a.at)}</time>
                </td>
                <td>
                  <Link to={`/experiments/${a.experimentId}`}>{a.experimentName}</Link>
                </td>
                <td>{a.from ? <StateBadge state={a.from} /> : <span className="muted">created</span>}</td>
                <td>
                  <StateBadge state={a.to} />
                </td>
                <td>{a.actor}</td>
                <td>{a.reason ?? ''}</td>
                <td className="num">{fmtDuration(a.durationMs)}</td>
              </tr>
            ))}
            {page && page.items.length === 0 && (
              <tr>
                <td colSpan={7} className="empty">
                  No transitions match.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </TableWrap>
      <nav className="pager" aria-label="Pages">
        <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
          Previous page
        </button>
        <button
          type="button"
          disabled={!page?.nextCursor}
          onClick={() => setCursors([...cursors, page!.nextCursor!])}
        >
          Next page
        </button>
      </nav>
    </section>
  );
}

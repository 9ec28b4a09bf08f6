import { lazy, Suspense, useCallback, useEffect, useMemo, useState } from 'react';
import { Navigate, NavLink, Route, Routes, useLocation, useNavigate } from 'react-router';
import { setUnauthenticatedHandler } from './api';
import { clearSession, loadSession, type Session } from './auth';
import { AuditPage } from './pages/Audit';
import { ExperimentsPage } from './pages/Experiments';
import { NewExperimentPage } from './pages/NewExperiment';
import { SignInPage } from './pages/SignIn';
import { TemplatesPage } from './pages/Templates';
import { SessionCtx } from './session';

// The report carries the charts and the diff view: loaded when a report is opened.
const ReportPage = lazy(() => import('./pages/Report'));

export function App() {
  const [session, setSession] = useState<Session | undefined>(() => loadSession());
  // Why the session ended, for the sign-in page (kept here: the redirect that follows a sign-out may
  // replace the navigation that carried it).
  const [signedOutBecause, setSignedOutBecause] = useState<string>();
  const navigate = useNavigate();
  const location = useLocation();

  const signOut = useCallback(
    (reason?: string) => {
      clearSession();
      setSignedOutBecause(reason);
      setSession(undefined);
      navigate('/signin', {
        replace: true,
        state: { from: location.pathname + location.search, ...(reason ? { reason } : {}) },
      });
    },
    [navigate, location.pathname, location.search],
  );

  useEffect(() => {
    setUnauthenticatedHandler(() => signOut('Your token was refused (expired or invalid): sign in again.'));
  }, [signOut]);

  const ctx = useMemo(() => (session ? { session, signOut } : undefined), [session, signOut]);

  useEffect(() => {
    const title = TITLES.find(([re]) => re.test(location.pathname))?.[1];
    document.title = title ? `${title} · Phoenix` : 'Phoenix';
  }, [location.pathname]);

  if (!ctx) {
    return (
      <Routes>
        <Route
          path="/signin"
          element={
            <SignInPage
              reason={signedOutBecause}
              onSignedIn={(s) => {
                setSignedOutBecause(undefined);
                setSession(s);
              }}
            />
          }
        />
        <Route
          path="*"
          element={<Navigate to="/signin" replace state={{ from: location.pathname + location.search }} />}
        />
      </Routes>
    );
  }

  return (
    <SessionCtx.Provider value={ctx}>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <NavLink to="/experiments" className="brand">
          Phoenix
        </NavLink>
        <nav aria-label="Main">
          <ul>
            <li>
              <NavLink to="/experiments" end>
                Experiments
              </NavLink>
            </li>
            <li>
              <NavLink to="/templates">Templates</NavLink>
            </li>
            {ctx.session.role === 'admin' && (
              <li>
                <NavLink to="/audit">Audit</NavLink>
              </li>
            )}
          </ul>
        </nav>
        <div className="who">
          <span>
            {ctx.session.sub} <span className="role">({ctx.session.role})</span>
          </span>
          <button type="button" className="link" onClick={() => signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<p aria-live="polite">Loading…</p>}>
          <Routes>
            <Route path="/" element={<Navigate to="/experiments" replace />} />
            <Route path="/signin" element={<Navigate to="/experiments" replace />} />
            <Route path="/experiments" element={<ExperimentsPage />} />
            <Route path="/experiments/new" element={<NewExperimentPage />} />
            <Route path="/experiments/:id" element={<ReportPage />} />
            <Route path="/templates" element={<TemplatesPage />} />
            <Route path="/templates/:name" element={<TemplatesPage />} />
            <Route path="/audit" element={<AuditPage />} />
            <Route path="*" element={<NotFound />} />
          </Routes>
        </Suspense>
      </main>
    </SessionCtx.Provider>
  );
}

const TITLES: [RegExp, string][] = [
  [/^\/experiments\/new$/, 'New experiment'],
  [/^\/experiments\/[^/]+$/, 'Experiment report'],
  [/^\/experiments/, 'Experiments'],
  [/^\/templates/, 'Templates'],
  [/^\/audit/, 'Audit'],
  [/^\/signin/, 'Sign in'],
];

function NotFound() {
  return (
    <section>
      <h1>Not found</h1>
      <p>
        No page here. <NavLink to="/experiments">Back to the experiments</NavLink>.
      </p>
    </section>
  );
}

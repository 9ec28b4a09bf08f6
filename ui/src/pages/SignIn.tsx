import { type FormEvent, useId, useState } from 'react';
import { useLocation, useNavigate } from 'react-router';
import { ApiError, getJson } from '../api';
import { decodeToken, type Session, saveSession } from '../auth';

/** Paste a token (the start-up banner's admin token, or `npx phoenix token --role … --sub …`). */
export function SignInPage({
  onSignedIn,
  reason,
}: {
  onSignedIn: (session: Session) => void;
  /** Why the last session ended, if it did. */
  reason?: string | undefined;
}) {
  const navigate = useNavigate();
  const location = useLocation();
  const state = (location.state ?? {}) as { from?: string };
  const [token, setToken] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const id = useId();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const pasted = token.trim().replace(/^Bearer\s+/i, '');
    const session = decodeToken(pasted);
    if (!session) {
      setError(
        'This is not a Phoenix token: it needs a subject (sub) and a role (viewer, operator or admin).',
      );
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      // The server has the last word on the token: one read with it before it is kept.
      await getJson('/api/v1/templates', { token: pasted });
      saveSession(pasted);
      onSignedIn(session);
      const from = state.from && state.from !== '/signin' ? state.from : '/experiments';
      navigate(from, { replace: true });
    } catch (err) {
      setError(err instanceof ApiError ? `The server refused the token: ${err.message}` : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" className="signin">
      <h1>Sign in to Phoenix</h1>
      {reason && (
        <p className="notice" role="status">
          {reason}
        </p>
      )}
      <form onSubmit={submit} noValidate>
        <label htmlFor={`${id}-token`}>Access token</label>
        <textarea
          id={`${id}-token`}
          name="token"
          rows={5}
          value={token}
          onChange={(e) => setToken(e.target.value)}
          aria-describedby={`${id}-help${error ? ` ${id}-error` : ''}`}
          aria-invalid={error ? true : undefined}
          spellCheck={false}
          autoComplete="off"
          required
        />
        <p id={`${id}-help`} className="help">
          Paste the admin token <code>npm start</code> printed, or one from{' '}
          <code>npx phoenix token --role operator --sub you</code>. It is kept for this browser tab only.
        </p>
        {error && (
          <p id={`${id}-error`} className="field-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy || token.trim() === ''}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

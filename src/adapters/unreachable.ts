import { StoreUnavailableError } from '../application/ports/event-store.js';

/**
 * Whether an error of the PostgreSQL driver (pg, or PGlite behind its pool) says the database cannot be
 * reached (connection refused or lost, PostgreSQL shutting down or not accepting connections, a pool
 * that could not connect in time, an embedded database already closed) rather than that the statement
 * was wrong. The adapters' business: what the rest of Phoenix sees is a StoreUnavailableError.
 */
export const isUnreachableError = (error: unknown): boolean => {
  if (error instanceof StoreUnavailableError) return true;
  const code = String((error as { code?: unknown } | null)?.code ?? '');
  const message = error instanceof Error ? error.message : String(error);
  return (
    UNREACHABLE_CODES.has(code) ||
    code.startsWith('08') || // SQLSTATE class 08: connection exception
    /timeout exceeded when trying to connect|Connection terminated|Client has encountered a connection error|connection is closed|embedded database is closed/i.test(
      message,
    )
  );
};
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
]);

/** Connection-level failures become StoreUnavailableError (a 503 at the API); others pass through. */
export const unavailableOr = (err: unknown): unknown =>
  err instanceof StoreUnavailableError || !isUnreachableError(err)
    ? err
    : new StoreUnavailableError(`database unavailable: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });

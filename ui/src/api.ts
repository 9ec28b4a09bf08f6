import { clearSession, loadSession } from './auth';
import type { Problem } from './types';

/** An answer that was not 2xx: its problem details as the server sent them. */
export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail || problem.title);
  }
  get status(): number {
    return this.problem.status;
  }
}

/** Called when the server says the token is not (or no longer) good: the app goes back to sign-in. */
let onUnauthenticated: () => void = () => undefined;
export const setUnauthenticatedHandler = (handler: () => void): void => {
  onUnauthenticated = handler;
};

export interface RequestOptions {
  method?: 'GET' | 'POST';
  body?: unknown;
  accept?: string;
  signal?: AbortSignal;
  /** The session's token is used unless one is given (sign-in checks a pasted one). */
  token?: string;
}

async function send(path: string, options: RequestOptions = {}): Promise<Response> {
  const token = options.token ?? loadSession()?.token;
  const headers: Record<string, string> = { accept: options.accept ?? 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method: options.method ?? 'GET',
    headers,
    ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  if (res.ok) return res;
  let problem: Problem;
  try {
    problem = (await res.json()) as Problem;
  } catch {
    problem = { type: 'about:blank', title: res.statusText, status: res.status, detail: res.statusText };
  }
  if (res.status === 401 && options.token === undefined) {
    clearSession();
    onUnauthenticated();
  }
  throw new ApiError(problem);
}

export const getJson = async <T>(path: string, options: RequestOptions = {}): Promise<T> =>
  (await send(path, options)).json() as Promise<T>;

export const getText = async (path: string, options: RequestOptions = {}): Promise<string> =>
  (await send(path, { accept: 'text/yaml, text/plain, */*', ...options })).text();

export const postJson = async <T>(path: string, body: unknown, options: RequestOptions = {}): Promise<T> =>
  (await send(path, { ...options, method: 'POST', body })).json() as Promise<T>;

export const postForText = async (
  path: string,
  body: unknown,
  options: RequestOptions = {},
): Promise<string> =>
  (await send(path, { accept: 'text/yaml, */*', ...options, method: 'POST', body })).text();

export const getBlob = async (path: string, accept: string): Promise<Blob> =>
  (await send(path, { accept })).blob();

/** `?a=1&b=2` from the defined entries. */
export const query = (params: Record<string, string | number | undefined>): string => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
};

/** The problem's message for a field (`body.criticalProcesses.0`), or for anything under it. */
export const fieldErrors = (error: unknown): Map<string, string> => {
  const map = new Map<string, string>();
  if (error instanceof ApiError)
    for (const e of error.problem.errors ?? []) if (!map.has(e.path)) map.set(e.path, e.message);
  return map;
};

/** Saves a blob as a file (the analysis JSON, the audit CSV). */
export function download(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

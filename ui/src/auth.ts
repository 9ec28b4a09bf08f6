import type { Role } from './types';

/**
 * The pasted token, kept for this browser tab's session only (sessionStorage): closing the tab signs
 * out. Its claims are read here only to decide which buttons to show; the server checks the token on
 * every call and decides.
 */
const KEY = 'phoenix.token';

export interface Session {
  readonly token: string;
  readonly sub: string;
  readonly role: Role;
  /** Seconds since the epoch, when the token says. */
  readonly exp?: number;
}

export function decodeToken(token: string): Session | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const json = atob(
      part
        .replace(/-/g, '+')
        .replace(/_/g, '/')
        .padEnd(Math.ceil(part.length / 4) * 4, '='),
    );
    const claims = JSON.parse(
      new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))),
    ) as Record<string, unknown>;
    const role = claims.role;
    if (typeof claims.sub !== 'string' || (role !== 'viewer' && role !== 'operator' && role !== 'admin')) {
      return undefined;
    }
    return {
      token,
      sub: claims.sub,
      role,
      ...(typeof claims.exp === 'number' ? { exp: claims.exp } : {}),
    };
  } catch {
    return undefined;
  }
}

export function loadSession(): Session | undefined {
  const token = sessionStorage.getItem(KEY);
  return token ? decodeToken(token) : undefined;
}

export function saveSession(token: string): void {
  sessionStorage.setItem(KEY, token);
}

export function clearSession(): void {
  sessionStorage.removeItem(KEY);
}

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };
export const roleAtLeast = (role: Role, least: Role): boolean => RANK[role] >= RANK[least];

import { createContext, useContext } from 'react';
import type { Session } from './auth';

export interface SessionContext {
  readonly session: Session;
  /** The token is no longer good (a 401): back to sign-in, then back here. */
  readonly signOut: (reason?: string) => void;
}

export const SessionCtx = createContext<SessionContext | undefined>(undefined);

export function useSession(): SessionContext {
  const ctx = useContext(SessionCtx);
  if (!ctx) throw new Error('useSession outside a signed-in page');
  return ctx;
}

import { useEffect, useRef, useState } from 'react';
import { getJson, setUnauthenticatedHandler } from './api';
import { clearSession, loadSession } from './auth';
import type { LiveEvent, LiveMessage } from './types';

export type FeedStatus = 'connecting' | 'live' | 'reconnecting';

interface FeedOptions {
  readonly experimentId?: string | undefined;
  /** The feed's head when it went live (first connection) or again after a reconnect. */
  readonly onLive: (position: string) => void;
  readonly onEvent: (event: LiveEvent) => void;
  readonly onStatus: (status: FeedStatus) => void;
  readonly onUnauthenticated: () => void;
}

/**
 * The live feed (`/api/v1/live`, token in `access_token` as browsers cannot set headers on a
 * WebSocket). After a drop it reconnects with `from` = the last position it saw, so no event is missed
 * or repeated; a close for an expired token (4401) or a refused upgrade whose token the API also
 * refuses ends the session. Returns a function that closes it.
 */
export function openLiveFeed(options: FeedOptions): () => void {
  let last: string | undefined;
  let socket: WebSocket | undefined;
  let stopped = false;
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const connect = () => {
    const session = loadSession();
    if (!session) return options.onUnauthenticated();
    const params = new URLSearchParams({ access_token: session.token });
    if (options.experimentId) params.set('experimentId', options.experimentId);
    if (last !== undefined) params.set('from', last);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/api/v1/live?${params}`);
    socket = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (message) => {
      const msg = JSON.parse(String(message.data)) as LiveMessage;
      if (msg.kind === 'live') {
        attempt = 0;
        if (last === undefined) last = msg.position;
        options.onStatus('live');
        options.onLive(msg.position);
        return;
      }
      last = msg.position;
      options.onEvent(msg);
    };
    ws.onclose = (event) => {
      if (stopped || socket !== ws) return;
      if (event.code === 4401) {
        clearSession();
        return options.onUnauthenticated();
      }
      options.onStatus('reconnecting');
      // A refused upgrade looks like any drop to a browser: ask the API whether the token still holds
      // (a 401 there signs out through the API's handler), then come back.
      const check = opened ? Promise.resolve() : getJson('/api/v1/experiments?limit=1').then(() => undefined);
      check
        .catch(() => undefined)
        .finally(() => {
          if (stopped || !loadSession()) return;
          const delay = Math.min(10_000, 500 * 2 ** attempt++);
          timer = setTimeout(connect, delay);
        });
    };
  };
  options.onStatus('connecting');
  connect();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    socket?.close(1000, 'page closed');
  };
}

/**
 * The feed for a page: `onLive` and `onEvent` are called with the latest callbacks the page gave
 * (no reconnect when they change); a page loads its REST snapshot with `minPosition` = the position
 * `onLive` gives, then refreshes on each event.
 */
export function useLiveFeed(
  experimentId: string | undefined,
  handlers: { onLive: (position: string) => void; onEvent: (event: LiveEvent) => void },
  onUnauthenticated: () => void,
): FeedStatus {
  const [status, setStatus] = useState<FeedStatus>('connecting');
  const ref = useRef({ ...handlers, onUnauthenticated });
  ref.current = { ...handlers, onUnauthenticated };
  useEffect(
    () =>
      openLiveFeed({
        experimentId,
        onLive: (p) => ref.current.onLive(p),
        onEvent: (e) => ref.current.onEvent(e),
        onStatus: setStatus,
        onUnauthenticated: () => ref.current.onUnauthenticated(),
      }),
    [experimentId],
  );
  return status;
}

export { setUnauthenticatedHandler };

import type { WebSocket } from 'ws';
import { z } from 'zod';
import { experimentIdOf, STREAM_PREFIX, streamIdOf } from '../../application/experiment-commands.js';
import { isPosition, type StoredEvent } from '../../application/ports/event-store.js';
import type { ExperimentEvent } from '../../domain/experiment.js';
import type { LiveHub } from '../live-hub.js';
import type { TypedApp } from './typed-app.js';
import { messageSink, textMessage } from './ws-frames.js';

export interface LiveRoutesDependencies {
  readonly hub: LiveHub;
  /** Bytes a connection may have unsent before it is closed with 4008. */
  readonly maxBufferedBytes?: number;
  readonly heartbeatMs?: number;
}

/**
 * The message of an event, encoded once however many connections it goes to (the hub hands every
 * listener the same event objects), and the messages of a batch, gathered once for all the
 * connections that get that batch (the hub hands listeners with the same filter the same array).
 */
const messages = new WeakMap<StoredEvent<ExperimentEvent>, Buffer>();
const messageOf = (e: StoredEvent<ExperimentEvent>): Buffer => {
  let message = messages.get(e);
  if (message === undefined) {
    message = textMessage(
      JSON.stringify({
        kind: 'event',
        position: e.position,
        experimentId: experimentIdOf(e.streamId),
        version: e.version,
        type: e.type,
        data: e.data,
        metadata: e.metadata,
      }),
    );
    messages.set(e, message);
  }
  return message;
};
const batches = new WeakMap<readonly StoredEvent<ExperimentEvent>[], readonly Buffer[]>();
const messagesOf = (events: readonly StoredEvent<ExperimentEvent>[]): readonly Buffer[] => {
  let batch = batches.get(events);
  if (batch === undefined) {
    batch = events.map(messageOf);
    batches.set(events, batch);
  }
  return batch;
};

/** Close code for a consumer that fell too far behind; it reconnects with `from`. */
export const CLOSE_TOO_SLOW = 4008;
/** Close code for a connection whose token expired; it reconnects with a fresh token and `from`. */
export const CLOSE_TOKEN_EXPIRED = 4401;
/** The longest delay a Node timer takes; a later expiry is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const liveQuery = z.strictObject({
  experimentId: z.uuid({ message: 'must be a UUID' }).optional(),
  from: z.string().max(64).refine(isPosition, 'must be a position returned by this service').optional(),
  // Documented here; the app takes it out of the URL before routing (so that no log holds it) and
  // authenticates with it.
  access_token: z.string().max(4096).optional(),
});

/**
 * `GET /api/v1/live`: the event log over WebSocket, in global order, each event once per connection;
 * `from` resumes after a position, and `{kind:'live'}` says when the backlog is done.
 */
export async function liveRoutes(app: TypedApp, deps: LiveRoutesDependencies): Promise<void> {
  const maxBuffered = deps.maxBufferedBytes ?? 4 * 1024 * 1024;
  const sockets = new Set<WebSocket>();
  let shuttingDown = false;

  const heartbeat = setInterval(() => {
    for (const socket of sockets) {
      const alive = (socket as WebSocket & { phoenixAlive?: boolean }).phoenixAlive;
      if (alive === false) {
        socket.terminate();
        continue;
      }
      (socket as WebSocket & { phoenixAlive?: boolean }).phoenixAlive = false;
      socket.ping();
    }
  }, deps.heartbeatMs ?? 30_000);
  heartbeat.unref();

  // preClose: before the websocket server itself shuts (which would drop the sockets without a code).
  app.addHook('preClose', async () => {
    shuttingDown = true;
    clearInterval(heartbeat);
    // Close frames go out before the process exits.
    await Promise.all(
      [...sockets].map(
        (socket) =>
          new Promise<void>((resolve) => {
            socket.once('close', () => resolve());
            socket.close(1001, 'server shutting down');
            setTimeout(() => {
              socket.terminate();
              resolve();
            }, 2000).unref();
          }),
      ),
    );
  });

  app.get(
    '/api/v1/live',
    {
      websocket: true,
      config: { role: 'viewer', queryToken: true },
      schema: { tags: ['live'], summary: 'The event log, live, over WebSocket', querystring: liveQuery },
    },
    (socket, request) => {
      const { experimentId, from } = request.query as z.infer<typeof liveQuery>;
      if (shuttingDown) {
        // The upgrade finished after shutdown began: say so at once, or the server would wait on it.
        socket.close(1001, 'server shutting down');
        return;
      }
      const controller = new AbortController();
      sockets.add(socket);
      (socket as WebSocket & { phoenixAlive?: boolean }).phoenixAlive = true;
      socket.on('pong', () => {
        (socket as WebSocket & { phoenixAlive?: boolean }).phoenixAlive = true;
      });
      let detach: (() => void) | undefined;
      // The token's exp ends the connection: nothing is delivered on a token that has expired.
      const exp = request.principal?.exp;
      const expiresAt = exp === undefined ? undefined : exp * 1000;
      const expired = () => expiresAt !== undefined && Date.now() >= expiresAt;
      let expiry: NodeJS.Timeout | undefined;
      const expire = () => {
        controller.abort();
        socket.close(CLOSE_TOKEN_EXPIRED, 'token expired; reconnect with a fresh token and from');
      };
      const watchExpiry = () => {
        if (expiresAt === undefined || controller.signal.aborted) return;
        const left = expiresAt - Date.now();
        if (left <= 0) return expire();
        expiry = setTimeout(watchExpiry, Math.min(left, MAX_TIMER_MS));
        expiry.unref();
      };
      const finish = () => {
        controller.abort();
        clearTimeout(expiry);
        detach?.();
        sockets.delete(socket);
      };
      socket.on('close', finish);
      socket.on('error', finish);
      // Incoming messages are not part of the protocol; ignore them rather than buffer them.
      socket.on('message', () => undefined);

      // A batch goes out as its frames in one write (see ws-frames.ts).
      const send = messageSink(socket, request.raw.socket);
      const deliver = (events: readonly StoredEvent<ExperimentEvent>[]) => {
        if (controller.signal.aborted) return;
        // A timer may fire late; a batch that arrives first still finds the token expired.
        if (expired()) return expire();
        send(messagesOf(events));
        if (socket.bufferedAmount > maxBuffered) {
          controller.abort();
          socket.close(CLOSE_TOO_SLOW, 'consumer too slow; reconnect with from');
        }
      };

      watchExpiry();
      void (async () => {
        try {
          const start = from ?? (await deps.hub.head());
          const prefix = experimentId ? streamIdOf(experimentId) : STREAM_PREFIX;
          const attached = await deps.hub.attach(start, prefix, deliver, controller.signal);
          detach = attached.detach;
          if (controller.signal.aborted) {
            detach();
            return;
          }
          const live = JSON.stringify({ kind: 'live', position: attached.position });
          socket.send(live);
        } catch (err) {
          request.log.warn({ err }, 'live feed failed');
          if (!controller.signal.aborted) socket.close(1011, 'feed failed; reconnect with from');
          finish();
        }
      })();
    },
  );
}

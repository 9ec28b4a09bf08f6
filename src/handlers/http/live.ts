import type { WebSocket } from 'ws';
import { z } from 'zod';
import type { ExperimentEvent } from '../../domain/experiment.js';
import { experimentIdOf, STREAM_PREFIX, streamIdOf } from '../experiment-commands.js';
import type { LiveHub } from '../live-hub.js';
import { isPosition, type StoredEvent } from '../ports/event-store.js';
import type { TypedApp } from './app.js';

export interface LiveRoutesDependencies {
  readonly hub: LiveHub;
  /** Bytes a connection may have unsent before it is closed with 4008. */
  readonly maxBufferedBytes?: number;
  readonly heartbeatMs?: number;
}

/**
 * The frame of an event, serialised once however many connections it goes to: the hub hands every
 * listener the same event objects.
 */
const frames = new WeakMap<StoredEvent<ExperimentEvent>, string>();
const frameOf = (e: StoredEvent<ExperimentEvent>): string => {
  let frame = frames.get(e);
  if (frame === undefined) {
    frame = JSON.stringify({
      kind: 'event',
      position: e.position,
      experimentId: experimentIdOf(e.streamId),
      version: e.version,
      type: e.type,
      data: e.data,
      metadata: e.metadata,
    });
    frames.set(e, frame);
  }
  return frame;
};

/** Close code for a consumer that fell too far behind; it reconnects with `from`. */
export const CLOSE_TOO_SLOW = 4008;

const liveQuery = z.strictObject({
  experimentId: z.uuid({ message: 'must be a UUID' }).optional(),
  from: z.string().max(64).refine(isPosition, 'must be a position returned by this service').optional(),
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
      const finish = () => {
        controller.abort();
        detach?.();
        sockets.delete(socket);
      };
      socket.on('close', finish);
      socket.on('error', finish);
      // Incoming messages are not part of the protocol; ignore them rather than buffer them.
      socket.on('message', () => undefined);

      const deliver = (events: readonly StoredEvent<ExperimentEvent>[]) => {
        if (controller.signal.aborted) return;
        for (const e of events) socket.send(frameOf(e));
        if (socket.bufferedAmount > maxBuffered) {
          controller.abort();
          socket.close(CLOSE_TOO_SLOW, 'consumer too slow; reconnect with from');
        }
      };

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
          socket.send(JSON.stringify({ kind: 'live', position: attached.position }));
        } catch (err) {
          request.log.warn({ err }, 'live feed failed');
          if (!controller.signal.aborted) socket.close(1011, 'feed failed; reconnect with from');
          finish();
        }
      })();
    },
  );
}

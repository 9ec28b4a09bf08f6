import { type handleServerStreamingCall, type ServerWritableStream, status } from '@grpc/grpc-js';
import { z } from 'zod';
import { STREAM_PREFIX, streamIdOf } from '../../application/experiment-commands.js';
import { isPosition, type StoredEvent } from '../../application/ports/event-store.js';
import type { ExperimentEvent } from '../../domain/experiment.js';
import type { LiveHub } from '../live-hub.js';
import { type CallDependencies, serverStreaming, statusFor } from './calls.js';
import { GrpcRefusal } from './errors.js';
import { eventMessage, parse } from './experiments.js';
import type { WatchRequest, WatchResponse } from './gen/phoenix/v1/experiments.js';

export interface WatcherOptions {
  /** Watch streams open at once, in all; one more is RESOURCE_EXHAUSTED. */
  readonly maxStreams?: number;
  /** Watch streams open at once per token subject (one client cannot take them all). */
  readonly maxStreamsPerSubject?: number;
  /** Messages a stream may have unsent before it is ended with RESOURCE_EXHAUSTED (resume with `from`). */
  readonly maxQueuedMessages?: number;
}

/** The longest delay a Node timer takes; a later expiry is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const watchRequest = z.object({
  experimentId: z.uuid({ message: 'must be a UUID' }).optional(),
  from: z.string().max(64).refine(isPosition, 'must be a position returned by this service').optional(),
});

/**
 * `ExperimentService.Watch`: the live feed of /api/v1/live over a server stream, through the same hub,
 * so the same resume semantics hold: the backlog after `from`, `live`, then new events, each once.
 * A stream ends, freeing its place in the hub, when its call does (cancel, deadline), when its token
 * expires (UNAUTHENTICATED), when it falls behind (RESOURCE_EXHAUSTED) or at shutdown (UNAVAILABLE).
 */
export class Watcher {
  readonly handler: handleServerStreamingCall<WatchRequest, WatchResponse>;
  readonly #hub: LiveHub;
  readonly #maxStreams: number;
  readonly #maxPerSubject: number;
  readonly #maxQueued: number;
  readonly #streams = new Map<ServerWritableStream<WatchRequest, WatchResponse>, string>();
  readonly #closing = new AbortController();

  constructor(deps: CallDependencies & { readonly hub: LiveHub }, options: WatcherOptions = {}) {
    this.#hub = deps.hub;
    this.#maxStreams = options.maxStreams ?? 1000;
    this.#maxPerSubject = options.maxStreamsPerSubject ?? 100;
    this.#maxQueued = options.maxQueuedMessages ?? 10_000;
    this.handler = serverStreaming(deps, 'Watch', 'viewer', async (call, ctx) => {
      const request = parse(watchRequest, {
        ...(call.request.experimentId !== undefined ? { experimentId: call.request.experimentId } : {}),
        ...(call.request.from !== undefined ? { from: call.request.from } : {}),
      });
      const subject = ctx.principal.sub;
      if (this.#closing.signal.aborted) {
        throw new GrpcRefusal(status.UNAVAILABLE, 'SHUTTING_DOWN', 'the server is shutting down', {
          retryAfterSeconds: 1,
        });
      }
      if (this.#streams.size >= this.#maxStreams) {
        throw new GrpcRefusal(
          status.RESOURCE_EXHAUSTED,
          'TOO_MANY_STREAMS',
          `this server holds ${this.#maxStreams} Watch streams already; retry later`,
          { retryAfterSeconds: 5 },
        );
      }
      if ([...this.#streams.values()].filter((s) => s === subject).length >= this.#maxPerSubject) {
        throw new GrpcRefusal(
          status.RESOURCE_EXHAUSTED,
          'TOO_MANY_STREAMS',
          `${subject} has ${this.#maxPerSubject} Watch streams open already`,
        );
      }
      this.#streams.set(call, subject);
      const controller = new AbortController();
      const end = (error?: unknown) => {
        if (controller.signal.aborted) return;
        controller.abort();
        if (call.writableEnded) return;
        if (error === undefined) call.end();
        else call.emit('error', statusFor(deps, error, 'Watch'));
      };
      const onCallEnd = () => end();
      ctx.signal.addEventListener('abort', onCallEnd, { once: true });
      const onClosing = () =>
        end(
          new GrpcRefusal(
            status.UNAVAILABLE,
            'SHUTTING_DOWN',
            'the server is shutting down; resume with from',
          ),
        );
      this.#closing.signal.addEventListener('abort', onClosing, { once: true });

      // The token's exp ends the stream: nothing is delivered on a token that has expired.
      const expiresAt = ctx.principal.exp === undefined ? undefined : ctx.principal.exp * 1000;
      const expire = () =>
        end(
          new GrpcRefusal(
            status.UNAUTHENTICATED,
            'TOKEN_EXPIRED',
            'token expired; reconnect with a fresh token and from',
          ),
        );
      let expiry: NodeJS.Timeout | undefined;
      const watchExpiry = () => {
        if (expiresAt === undefined || controller.signal.aborted) return;
        const left = expiresAt - Date.now();
        if (left <= 0) return expire();
        expiry = setTimeout(watchExpiry, Math.min(left, MAX_TIMER_MS));
        expiry.unref();
      };

      const deliver = (events: readonly StoredEvent<ExperimentEvent>[]) => {
        if (controller.signal.aborted) return;
        if (expiresAt !== undefined && Date.now() >= expiresAt) return expire();
        for (const e of events) call.write({ kind: { $case: 'event', value: eventMessage(e) } });
        if (call.writableLength > this.#maxQueued) {
          end(
            new GrpcRefusal(
              status.RESOURCE_EXHAUSTED,
              'TOO_SLOW',
              'consumer too slow; reconnect with from (the position of the last event received)',
            ),
          );
        }
      };

      let detach: (() => void) | undefined;
      try {
        watchExpiry();
        const start = request.from ?? (await this.#hub.head());
        const prefix = request.experimentId ? streamIdOf(request.experimentId) : STREAM_PREFIX;
        const attached = await this.#hub.attach(start, prefix, deliver, controller.signal);
        detach = attached.detach;
        if (!controller.signal.aborted) {
          call.write({ kind: { $case: 'live', value: { position: attached.position } } });
          // Streams until one of the ends above.
          await new Promise<void>((resolve) => {
            if (controller.signal.aborted) resolve();
            else controller.signal.addEventListener('abort', () => resolve(), { once: true });
          });
        }
      } catch (err) {
        end(err);
      } finally {
        clearTimeout(expiry);
        detach?.();
        ctx.signal.removeEventListener('abort', onCallEnd);
        this.#closing.signal.removeEventListener('abort', onClosing);
        this.#streams.delete(call);
      }
    });
  }

  /** Watch streams open now. */
  get streams(): number {
    return this.#streams.size;
  }

  /** Ends every stream with UNAVAILABLE (clients resume with `from` elsewhere) and refuses new ones. */
  close(): void {
    this.#closing.abort();
  }
}

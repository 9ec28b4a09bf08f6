import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';

/**
 * The fastify instance the routes register on, typed by the zod schemas. Apart from app.ts so that a
 * route module can name it without importing the app that imports the routes' documentation.
 */
export type App = FastifyInstance;
export type TypedApp = FastifyInstance<
  FastifyInstance['server'],
  FastifyInstance['server'] extends never ? never : IncomingMessage,
  ServerResponse,
  Logger,
  ZodTypeProvider
>;

import { existsSync } from 'node:fs';
import { join, sep } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * The dashboard (ui/, built by Vite) served at `/`: its files as they are, and its own routes
 * (/experiments/…, /templates, /audit) answered with index.html so that a reload or a shared link opens
 * the page the address names. The server's own paths keep their routes and their 404s: a missing
 * `/api/…` is a problem+json, never the dashboard's HTML.
 */
export interface DashboardOptions {
  /** The folder Vite wrote (index.html and assets/). */
  readonly root: string;
}

/** Paths that belong to the server, not to the dashboard. */
const SERVER_PREFIXES = ['/api/', '/api', '/docs', '/metrics', '/healthz', '/readyz'];

const isServerPath = (path: string): boolean =>
  SERVER_PREFIXES.some((p) => path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`));

/** A page address of the single-page app: not a server path, and no file extension (assets have one). */
export const isDashboardPage = (path: string): boolean => !isServerPath(path) && !/\.[a-z0-9]+$/i.test(path);

/**
 * The page's policy: scripts and styles from this origin only (the charts and the diff view set
 * inline styles, so styles may be inline), calls to this origin only (REST and the live feed).
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "object-src 'none'",
].join('; ');

const NOT_BUILT_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Phoenix: dashboard not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>The dashboard is not built</h1>
<p>The API is up (<a href="/docs">/docs</a>), but the dashboard's files are missing. Build them with
<code>npm run build</code> (or <code>npm run build:ui</code>) and reload; <code>npm install</code> and
<code>npm start</code> do it for you.</p>
</body></html>
`;

/**
 * Registers the dashboard's routes on the root app and returns what its 404 handler calls first: the
 * app's page for one of the app's own addresses (a GET or HEAD the routes did not answer), or
 * undefined to let the 404 handler answer as usual.
 */
export async function registerDashboard(
  app: FastifyInstance,
  options: DashboardOptions,
): Promise<(request: FastifyRequest, reply: FastifyReply) => FastifyReply | undefined> {
  const built = existsSync(join(options.root, 'index.html'));
  const wantsPage = (request: FastifyRequest) =>
    (request.method === 'GET' || request.method === 'HEAD') &&
    isDashboardPage(request.url.split('?')[0] ?? '/');

  if (!built) {
    app.log.warn({ root: options.root }, 'dashboard assets not built; / explains how to build them');
    const notBuilt = (reply: FastifyReply) =>
      reply.code(503).header('retry-after', '60').type('text/html; charset=utf-8').send(NOT_BUILT_PAGE);
    app.get('/', { schema: { hide: true } }, async (_request, reply) => notBuilt(reply));
    return (request, reply) => (wantsPage(request) ? notBuilt(reply) : undefined);
  }

  // fastify-static is a fastify-plugin: its route and `reply.sendFile` belong to the root app.
  await app.register(fastifyStatic, {
    root: options.root,
    prefix: '/',
    wildcard: true,
    index: false,
    // Vite names assets by content hash: a name never changes meaning, so they may be kept for good.
    // index.html names the current ones, so it is revalidated every time.
    cacheControl: false,
    setHeaders: (reply, path) => {
      reply.header(
        'cache-control',
        path.includes(`${sep}assets${sep}`) ? 'public, max-age=31536000, immutable' : 'no-cache',
      );
      if (path.endsWith('.html')) reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
    },
    schemaHide: true,
  });
  app.get('/', { schema: { hide: true } }, (_request, reply) => reply.sendFile('index.html'));
  return (request, reply) => (wantsPage(request) ? reply.sendFile('index.html') : undefined);
}

/**
 * `phoenix experiments list|get|history|create|start|cancel|promote|rollback|rejudge|watch` and `phoenix templates`: the API at
 * PHOENIX_URL, driven with PHOENIX_TOKEN, for people (tables) and scripts (`--json`, exit codes).
 * The CLI is a client like any other: it only speaks the public contract (shared/api.md).
 */
import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import WebSocket from 'ws';
import { parseTtl } from './auth.js';
import { CliError } from './cli-error.js';
import { collect, keyValues, parseParamFlags } from './cli-pipelines.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

/** What `watch` exits with, by how the experiment ended; 1 and 2 keep their meaning (failure, bad usage). */
export const WATCH_EXIT_CODES = { pass: 0, fail: 3, inconclusive: 4, cancelled: 5, failed: 6 } as const;
type Outcome = keyof typeof WATCH_EXIT_CODES;

const EXIT_HELP = `
Environment:
  PHOENIX_URL    the server (default ${DEFAULT_URL})
  PHOENIX_TOKEN  a JWT, e.g. $(npx phoenix token --role operator --sub you)

Exit codes:
  0  done
  1  failure: the server could not be reached or answered 5xx
  2  bad usage, or the server refused the request (4xx); the message is one line on stderr`;

const WATCH_HELP = `${EXIT_HELP}
  watch exits, once the experiment has ended, with:
  ${WATCH_EXIT_CODES.pass}  verdict pass (completed)
  ${WATCH_EXIT_CODES.fail}  verdict fail
  ${WATCH_EXIT_CODES.inconclusive}  verdict inconclusive
  ${WATCH_EXIT_CODES.cancelled}  cancelled
  ${WATCH_EXIT_CODES.failed}  failed without a verdict (e.g. a deployment failed)`;

interface Problem {
  readonly status?: number;
  readonly title?: string;
  readonly detail?: string;
  readonly errors?: readonly { path?: string; message?: string }[];
}

/** A refused or failed request as one line: `400 body.name: must not be empty`. */
export const problemLine = (status: number, body: unknown): string => {
  const problem = (typeof body === 'object' && body !== null ? body : {}) as Problem;
  const fields = (problem.errors ?? []).map((e) => (e.path ? `${e.path}: ${e.message}` : String(e.message)));
  const text =
    fields.length > 0
      ? fields.join('; ')
      : (problem.detail ?? problem.title ?? (typeof body === 'string' && body ? body : 'request failed'));
  return `${status} ${text.replace(/\s*\n\s*/g, ' ')}`;
};

const failureOf = (status: number, body: unknown): CliError =>
  new CliError(problemLine(status, body), status >= 400 && status < 500 ? 2 : 1);

interface Connection {
  readonly base: URL;
  readonly token: string;
}

/** PHOENIX_URL and PHOENIX_TOKEN, checked before anything is sent. */
const connection = (): Connection => {
  const raw = process.env.PHOENIX_URL || DEFAULT_URL;
  let base: URL;
  try {
    base = new URL(raw.endsWith('/') ? raw : `${raw}/`);
  } catch {
    throw new CliError(`PHOENIX_URL: '${raw}' is not a URL`, 2);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:')
    throw new CliError(`PHOENIX_URL: must be an http:// or https:// URL, not '${raw}'`, 2);
  const token = process.env.PHOENIX_TOKEN?.trim();
  if (!token)
    throw new CliError(
      'PHOENIX_TOKEN is not set; export PHOENIX_TOKEN=$(npx phoenix token --role operator --sub <you>)',
      2,
    );
  return { base, token };
};

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: unknown;
}

async function call(
  conn: Connection,
  method: 'GET' | 'POST',
  path: string,
  options: {
    query?: Record<string, string | number | undefined>;
    body?: unknown;
    headers?: Record<string, string>;
  } = {},
): Promise<Answer> {
  const url = new URL(path, conn.base);
  for (const [k, v] of Object.entries(options.query ?? {}))
    if (v !== undefined) url.searchParams.set(k, String(v));
  const headers: Record<string, string> = {
    authorization: `Bearer ${conn.token}`,
    accept: 'application/json, application/problem+json',
    ...options.headers,
  };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      headers,
      ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
      signal: AbortSignal.timeout(60_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new CliError(`cannot reach ${conn.base.origin} (${why}); is the server running? (PHOENIX_URL)`, 1);
  }
  const text = await response.text();
  let body: unknown = text;
  if (/json/.test(response.headers.get('content-type') ?? '')) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  if (!response.ok) throw failureOf(response.status, body);
  return { status: response.status, headers: response.headers, body };
}

const experimentPath = (id: string) => `api/v1/experiments/${encodeURIComponent(id)}`;

const out = (text: string): void => {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
};
const json = (value: unknown): void => out(JSON.stringify(value, null, 2));

/** Columns padded to their widest cell; the last column is not padded. */
export const table = (rows: readonly (readonly string[])[]): string => {
  const widths: number[] = [];
  for (const row of rows)
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
};

interface Experiment {
  id: string;
  name: string;
  state: string;
  version: number;
  createdAt: string;
  updatedAt: string;
  startedAt?: string;
  endedAt?: string;
  statusReason?: string;
  durationSeconds: number;
  baseline: { template: string; params?: Record<string, unknown> };
  candidate: { template: string; params?: Record<string, unknown> };
  target: { namespace: string; hosts: number; nodeSelector?: Record<string, string> };
  analysis?: Analysis;
}

interface Analysis {
  verdict: 'pass' | 'fail' | 'inconclusive';
  reasons: string[];
  baseline: { series: number; datapointsPerMinute: number };
  candidate: { series: number; datapointsPerMinute: number };
  cardinalityReductionPct: number | null;
  datapointReductionPct: number | null;
  criticalProcessLossPct: number | null;
  missingCriticalProcesses: string[];
  cost?: {
    profile: string;
    currency: string;
    monthly: Record<'target' | 'fleet', { saving: number; low: number | null; high: number | null }>;
  };
}

interface Preview {
  hosts: number;
  sampledHosts: number;
  baseline: { series: number; datapointsPerMinute: number };
  candidate: { series: number; datapointsPerMinute: number };
  removedSeries: number;
  removedSeriesPct: number | null;
  criticalInBaseline: number;
  droppedCriticalProcesses: string[];
}

const pct = (v: number | null | undefined) => (v === null || v === undefined ? 'n/a' : `${v.toFixed(1)} %`);
const count = (v: number) => Math.round(v).toLocaleString('en-US');

const analysisLines = (a: Analysis): string[] => [
  `verdict: ${a.verdict}`,
  `series: ${count(a.baseline.series)} → ${count(a.candidate.series)} (reduction ${pct(a.cardinalityReductionPct)})`,
  `data points/min: ${count(a.baseline.datapointsPerMinute)} → ${count(a.candidate.datapointsPerMinute)} (reduction ${pct(a.datapointReductionPct)})`,
  `critical processes lost: ${pct(a.criticalProcessLossPct)}${a.missingCriticalProcesses.length ? ` (${a.missingCriticalProcesses.join(', ')})` : ''}`,
  ...(a.cost ? [costLine(a.cost)] : []),
  ...a.reasons.map((r) => `  - ${r}`),
];

const money = (v: number, currency: string) =>
  v.toLocaleString('en-US', { style: 'currency', currency, maximumFractionDigits: 0 });

const costLine = (c: NonNullable<Analysis['cost']>): string => {
  const part = (p: { saving: number; low: number | null; high: number | null }) =>
    `${money(p.saving, c.currency)}${p.low !== null && p.high !== null ? ` (${money(p.low, c.currency)} to ${money(p.high, c.currency)})` : ''}`;
  return `saving per month: ${part(c.monthly.target)} on the target, ${part(c.monthly.fleet)} on the fleet (profile ${c.profile})`;
};

const previewLines = (p: Preview): string => {
  const sampled = p.sampledHosts < p.hosts ? ` (${p.sampledHosts} sampled, scaled up)` : '';
  return [
    `hosts: ${p.hosts}${sampled}`,
    `series: ${count(p.baseline.series)} → ${count(p.candidate.series)} (removes ${count(p.removedSeries)}, ${pct(p.removedSeriesPct)})`,
    `data points/min: ${count(p.baseline.datapointsPerMinute)} → ${count(p.candidate.datapointsPerMinute)}`,
    `critical processes in the baseline: ${count(p.criticalInBaseline)}`,
    `critical processes dropped: ${p.droppedCriticalProcesses.length ? p.droppedCriticalProcesses.join(', ') : 'none'}`,
  ].join('\n');
};

const experimentDetail = (e: Experiment): string => {
  const variant = (v: { template: string; params?: Record<string, unknown> }) =>
    `${v.template}${v.params && Object.keys(v.params).length ? ` ${JSON.stringify(v.params)}` : ''}`;
  const rows: [string, string | undefined][] = [
    ['id', e.id],
    ['name', e.name],
    ['state', e.state],
    ['version', String(e.version)],
    ['baseline', variant(e.baseline)],
    ['candidate', variant(e.candidate)],
    ['target', `${e.target.hosts} hosts in ${e.target.namespace}`],
    ['duration', `${e.durationSeconds} s`],
    ['created', e.createdAt],
    ['started', e.startedAt],
    ['ended', e.endedAt],
    ['reason', e.statusReason],
  ];
  const lines = table(
    rows.filter((r): r is [string, string] => r[1] !== undefined).map(([k, v]) => [`${k}:`, v]),
  );
  return e.analysis ? `${lines}\n${analysisLines(e.analysis).join('\n')}` : lines;
};

const positiveInt = (value: string): number => {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError('expected a positive integer.');
  return n;
};

const percent = (value: string): number => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('expected a number.');
  return n;
};

const seconds = (value: string): number => {
  try {
    return parseTtl(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

interface CreateOptions {
  file?: string;
  name?: string;
  description?: string;
  baseline?: string;
  baselineParam: string[];
  candidate?: string;
  param: string[];
  hosts?: number;
  duration?: number;
  critical?: string[];
  namespace?: string;
  nodeSelector: string[];
  minReduction?: number;
  maxCriticalLoss?: number;
  maxCpuOverhead?: number;
  compatQuery: string[];
  criticalGrace?: number;
  idempotencyKey?: string;
  quiet?: boolean;
  json?: boolean;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

const readBody = (file: string): Json => {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new CliError(`-f ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 2);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new CliError(`-f ${file}: not JSON (${(err as Error).message})`, 2);
  }
  if (!isObject(body)) throw new CliError(`-f ${file}: must hold a JSON object (the experiment)`, 2);
  return body;
};

/** The create body: the file's (if any), with each flag given overriding its field. */
export const createBody = (options: CreateOptions): Json => {
  const body: Json = options.file ? readBody(options.file) : {};
  const section = (key: string): Json => {
    const current = body[key];
    const copy = isObject(current) ? { ...current } : {};
    body[key] = copy;
    return copy;
  };
  const variant = (key: 'baseline' | 'candidate', template: string | undefined, params: string[]) => {
    if (template === undefined && params.length === 0 && body[key] !== undefined) return;
    const v = section(key);
    if (template !== undefined) v.template = template;
    else if (v.template === undefined && key === 'baseline') v.template = 'process-baseline-v1';
    if (params.length > 0) {
      const name = typeof v.template === 'string' ? v.template : '';
      v.params = { ...(isObject(v.params) ? v.params : {}), ...parseParamFlags(name, params) };
    }
  };
  if (options.name !== undefined) body.name = options.name;
  if (options.description !== undefined) body.description = options.description;
  variant('baseline', options.baseline, options.baselineParam);
  variant('candidate', options.candidate, options.param);
  if (options.hosts !== undefined) section('target').hosts = options.hosts;
  if (options.namespace !== undefined) section('target').namespace = options.namespace;
  if (options.nodeSelector.length > 0)
    section('target').nodeSelector = keyValues(options.nodeSelector, '--node-selector');
  if (options.duration !== undefined) body.durationSeconds = options.duration;
  if (options.critical !== undefined) body.criticalProcesses = options.critical;
  if (options.minReduction !== undefined)
    section('successCriteria').minCardinalityReductionPct = options.minReduction;
  if (options.maxCriticalLoss !== undefined)
    section('successCriteria').maxCriticalProcessLossPct = options.maxCriticalLoss;
  if (options.maxCpuOverhead !== undefined)
    section('successCriteria').maxCollectorCpuOverheadPct = options.maxCpuOverhead;
  if (options.criticalGrace !== undefined)
    section('successCriteria').criticalGraceSeconds = options.criticalGrace;
  if (options.compatQuery.length > 0)
    // The server checks the PromQL and the names; here only the flag's shape.
    body.compatibilityQueries = options.compatQuery.map((flag) => {
      const eq = flag.indexOf('=');
      if (eq <= 0) throw new CliError(`--compat-query expects name=promql, got "${flag}"`, 2);
      return { name: flag.slice(0, eq), query: flag.slice(eq + 1) };
    });
  return body;
};

interface RejudgeOptions {
  minReduction?: number;
  maxCriticalLoss?: number;
  maxCpuOverhead?: number;
  minHosts?: number;
  minSamplesPerHost?: number;
  confidence?: number;
  maxInputMismatch?: number;
  dryRun?: string[];
  ifMatch?: number;
  idempotencyKey?: string;
  json?: boolean;
}

/** The re-judge body's criteria: only the flags given (the server keeps the experiment's own for the rest). */
const rejudgeCriteria = (o: RejudgeOptions): Record<string, unknown> => {
  const fields: [string, unknown][] = [
    ['minCardinalityReductionPct', o.minReduction],
    ['maxCriticalProcessLossPct', o.maxCriticalLoss],
    ['maxCollectorCpuOverheadPct', o.maxCpuOverhead],
    ['minHosts', o.minHosts],
    ['minSamplesPerHost', o.minSamplesPerHost],
    ['confidence', o.confidence],
    ['maxInputMismatchPct', o.maxInputMismatch],
    ['dryRun', o.dryRun],
  ];
  const criteria = Object.fromEntries(fields.filter(([, v]) => v !== undefined));
  if (Object.keys(criteria).length === 0)
    throw new CliError('rejudge: give at least one criterion, e.g. --min-reduction 40', 2);
  return criteria;
};

interface CommandAnswer {
  id: string;
  state: string;
  version: number;
  position: string;
}

const commandHeaders = (options: { idempotencyKey?: string; ifMatch?: number }) => ({
  ...(options.idempotencyKey !== undefined ? { 'idempotency-key': options.idempotencyKey } : {}),
  ...(options.ifMatch !== undefined ? { 'if-match': `"${options.ifMatch}"` } : {}),
});

const printCommandAnswer = (answer: CommandAnswer, options: { json?: boolean; quiet?: boolean }) => {
  if (options.json) json(answer);
  else if (options.quiet) out(answer.id);
  else out(table([[answer.id, answer.state, `version ${answer.version}`]]));
};

/** One event of an experiment, as the events endpoint and the live feed both give it. */
interface FeedEvent {
  readonly kind: 'event';
  readonly position: string;
  readonly experimentId: string;
  readonly version: number;
  readonly type: string;
  readonly data: Json;
  readonly metadata: Json;
}

const TERMINAL: Record<string, string> = {
  ExperimentCompleted: 'completed',
  ExperimentFailed: 'failed',
  ExperimentCancelled: 'cancelled',
};

const eventLine = (e: FeedEvent): string => {
  const at = String(e.data.at ?? e.metadata.occurredAt ?? '');
  const d = e.data;
  const detail =
    e.type === 'AnalysisRecorded' && isObject(d.analysis)
      ? `verdict ${String(d.analysis.verdict)}`
      : [d.variant, d.reason].filter((x) => typeof x === 'string' && x !== '').join(': ');
  return `${at}  v${e.version}  ${e.type}${detail ? `  ${detail}` : ''}`;
};

/** Why a feed connection ended, when it did not end with the experiment. */
class FeedDropped extends Error {}

/**
 * Follows one experiment to its end: its events so far from the event store, then the live feed
 * from the last position seen, reconnecting with `from` after a drop, so nothing is lost or repeated.
 */
async function watch(conn: Connection, id: string, options: { json?: boolean }): Promise<number> {
  let lastVersion = 0;
  let lastPosition: string | undefined;
  let analysis: Analysis | undefined;
  let ended: { state: string; position: string } | undefined;
  const take = (e: FeedEvent) => {
    if (ended || e.version <= lastVersion) return;
    lastVersion = e.version;
    lastPosition = e.position;
    if (options.json) out(JSON.stringify(e));
    else out(eventLine(e));
    if (e.type === 'AnalysisRecorded' && isObject(e.data.analysis))
      analysis = e.data.analysis as unknown as Analysis;
    const state = TERMINAL[e.type];
    if (state) ended = { state, position: e.position };
  };

  // The backlog through REST, page by page; the feed then resumes after its last position.
  for (;;) {
    const page = (await call(conn, 'GET', `${experimentPath(id)}/events`, {
      query: { fromVersion: lastVersion + 1, limit: 1000 },
    })) as { body: { items: Omit<FeedEvent, 'kind' | 'experimentId'>[] } };
    for (const item of page.body.items) take({ kind: 'event', experimentId: id, ...item });
    if (ended || page.body.items.length < 1000) break;
  }

  let failures = 0;
  while (!ended) {
    try {
      await follow(
        conn,
        id,
        lastPosition!,
        take,
        () => ended !== undefined,
        () => {
          failures = 0;
        },
      );
    } catch (err) {
      if (!(err instanceof FeedDropped)) throw err;
      failures++;
      if (failures > 20)
        throw new CliError(
          `the live feed kept failing (${err.message}); giving up after ${failures - 1} retries`,
          1,
        );
      process.stderr.write(`phoenix: live feed ${err.message}; reconnecting from ${lastPosition}\n`);
      await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** (failures - 1), 5_000)));
    }
  }

  const outcome: Outcome =
    ended.state === 'cancelled'
      ? 'cancelled'
      : analysis
        ? analysis.verdict
        : ended.state === 'completed'
          ? 'pass'
          : 'failed';
  // Reading the experiment at the verdict's position also means later reads (get, list) show it.
  let experiment: Experiment | undefined;
  try {
    experiment = (await call(conn, 'GET', experimentPath(id), { query: { minPosition: ended.position } }))
      .body as Experiment;
  } catch (err) {
    process.stderr.write(`phoenix: could not read the experiment after its end: ${(err as Error).message}\n`);
  }
  if (options.json) {
    out(
      JSON.stringify({
        kind: 'end',
        experimentId: id,
        state: ended.state,
        verdict: analysis?.verdict ?? null,
        ...(experiment ? { experiment } : {}),
      }),
    );
  } else {
    out(`${ended.state}${experiment?.statusReason ? `: ${experiment.statusReason}` : ''}`);
    if (analysis) out(analysisLines(analysis).join('\n'));
  }
  return WATCH_EXIT_CODES[outcome];
}

/**
 * One connection of the live feed, from `from`. Resolves when `done()` says the experiment has
 * ended; throws FeedDropped when the connection goes away first (the caller reconnects), and a
 * CliError when the server refuses the connection for good (4xx at the upgrade, an expired token).
 */
function follow(
  conn: Connection,
  id: string,
  from: string,
  take: (e: FeedEvent) => void,
  done: () => boolean,
  connected: () => void,
): Promise<void> {
  const url = new URL('api/v1/live', conn.base);
  url.protocol = conn.base.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('experimentId', id);
  url.searchParams.set('from', from);
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve();
    };
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${conn.token}` },
      handshakeTimeout: 30_000,
    });
    let error: Error | undefined;
    ws.on('open', connected);
    ws.on('message', (data) => {
      if (settled) return;
      let message: { kind?: string; experimentId?: string };
      try {
        message = JSON.parse(String(data));
      } catch {
        return;
      }
      if (message.kind === 'event' && message.experimentId === id) take(message as FeedEvent);
      if (done()) {
        settle();
        ws.close(1000);
      }
    });
    ws.on('unexpected-response', (request, response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: the text itself says what went wrong
        }
        const status = response.statusCode ?? 0;
        if (status >= 400 && status < 500) settle(failureOf(status, body));
        else settle(new FeedDropped(`refused (${problemLine(status, body)})`));
        request.destroy();
      });
    });
    ws.on('error', (err) => {
      error = err;
    });
    ws.on('close', (code, reason) => {
      if (code === 4401)
        settle(
          new CliError(
            'the token expired while watching (4401); set a fresh PHOENIX_TOKEN and watch again',
            2,
          ),
        );
      const why = reason.length > 0 ? ` ${String(reason)}` : '';
      settle(
        new FeedDropped(
          error
            ? `failed (${(error as NodeJS.ErrnoException).code ?? error.message})`
            : `closed (${code}${why})`,
        ),
      );
    });
  });
}

const jsonOption = (command: Command) => command.option('--json', 'print the API answer as JSON');

/** Wraps an action so it builds the connection first and reports errors the CLI's way. */
const withConnection =
  <A extends unknown[]>(action: (conn: Connection, ...args: A) => Promise<void>) =>
  async (...args: A): Promise<void> =>
    action(connection(), ...args);

/** Adds `experiments …` and `templates` to the CLI program. */
export function registerApiCommands(program: Command): void {
  const experiments = program
    .command('experiments')
    .description(
      'drive the API at PHOENIX_URL: list, get, history, create, start, cancel, promote, rollback, rejudge, watch',
    )
    .addHelpText('after', EXIT_HELP);

  jsonOption(
    experiments
      .command('list')
      .description('experiments, newest first')
      .option('--state <state>', 'only experiments in this state')
      .option('--limit <n>', 'at most this many (1..500; default 50)', positiveInt)
      .option('--cursor <cursor>', 'the next page, as a previous list said')
      .addHelpText('after', EXIT_HELP),
  ).action(
    withConnection(
      async (conn, options: { state?: string; limit?: number; cursor?: string; json?: boolean }) => {
        const { body } = await call(conn, 'GET', 'api/v1/experiments', {
          query: { state: options.state, limit: options.limit, cursor: options.cursor },
        });
        const page = body as { items: Experiment[]; nextCursor: string | null };
        if (options.json) return json(page);
        out(
          table([
            ['ID', 'NAME', 'STATE', 'CANDIDATE', 'VERDICT', 'CREATED'],
            ...page.items.map((e) => [
              e.id,
              e.name,
              e.state,
              e.candidate.template,
              e.analysis?.verdict ?? '-',
              e.createdAt,
            ]),
          ]),
        );
        if (page.nextCursor)
          process.stderr.write(`more: phoenix experiments list --cursor ${page.nextCursor}\n`);
      },
    ),
  );

  jsonOption(
    experiments
      .command('get')
      .description('one experiment, with its analysis once there is one')
      .argument('<id>', 'experiment id')
      .option('--min-position <position>', 'wait until the read models have applied this position')
      .addHelpText('after', EXIT_HELP),
  ).action(
    withConnection(async (conn, id: string, options: { minPosition?: string; json?: boolean }) => {
      const { body } = await call(conn, 'GET', experimentPath(id), {
        query: { minPosition: options.minPosition },
      });
      if (options.json) return json(body);
      out(experimentDetail(body as Experiment));
    }),
  );

  jsonOption(
    experiments
      .command('history')
      .description("the experiment's state transitions, in order")
      .argument('<id>', 'experiment id')
      .addHelpText('after', EXIT_HELP),
  ).action(
    withConnection(async (conn, id: string, options: { json?: boolean }) => {
      const { body } = await call(conn, 'GET', `${experimentPath(id)}/history`);
      if (options.json) return json(body);
      const { items } = body as {
        items: { from: string | null; to: string; reason: string; actor: string; at: string }[];
      };
      out(
        table([
          ['AT', 'FROM', 'TO', 'ACTOR', 'REASON'],
          ...items.map((h) => [h.at, h.from ?? '-', h.to, h.actor, h.reason]),
        ]),
      );
    }),
  );

  jsonOption(
    experiments
      .command('create')
      .description('create an experiment (state pending) from a JSON body and/or flags; prints its id')
      .option('-f, --file <path>', 'the JSON body (as in POST /api/v1/experiments), or - for stdin')
      .option('--name <name>', 'name')
      .option('--description <text>', 'description')
      .option(
        '--baseline <template>',
        'baseline template (default process-baseline-v1 when the body has none)',
      )
      .option('--baseline-param <key=value>', 'baseline template parameter (repeatable)', collect, [])
      .option('--candidate <template>', 'candidate template, e.g. process-topk-v1')
      .option('--param <key=value>', 'candidate template parameter (repeatable)', collect, [])
      .option(
        '--hosts <n>',
        'target.hosts: nodes (the simulated data plane simulates this many)',
        positiveInt,
      )
      .option('--namespace <ns>', 'target.namespace')
      .option('--node-selector <key=value>', 'target.nodeSelector entry (repeatable)', collect, [])
      .option('--duration <duration>', 'durationSeconds: seconds, or 90s, 10m, 1h', seconds)
      .option('--critical <regex>', 'criticalProcesses entry (repeatable)', collect)
      .option('--min-reduction <pct>', 'successCriteria.minCardinalityReductionPct', percent)
      .option('--max-critical-loss <pct>', 'successCriteria.maxCriticalProcessLossPct', percent)
      .option('--max-cpu-overhead <pct>', 'successCriteria.maxCollectorCpuOverheadPct', percent)
      .option(
        '--critical-grace <duration>',
        'successCriteria.criticalGraceSeconds: how long a critical process may be missing while it runs',
        seconds,
      )
      .option(
        '--compat-query <name=promql>',
        'compatibilityQueries entry, checked on both variants by the Prometheus analyzer (repeatable)',
        collect,
        [],
      )
      .option('--idempotency-key <key>', 'a retry with the same key and body creates nothing new')
      .option('-q, --quiet', 'print only the id')
      .addHelpText(
        'after',
        `\nFlags override the body's fields. Example:\n  phoenix experiments create --name try --candidate process-topk-v1 --param k=20 --hosts 10 --duration 60 -q\n${EXIT_HELP}`,
      ),
  ).action(
    withConnection(async (conn, options: CreateOptions) => {
      const { body } = await call(conn, 'POST', 'api/v1/experiments', {
        body: createBody(options),
        headers: commandHeaders(options),
      });
      printCommandAnswer(body as CommandAnswer, options);
    }),
  );

  for (const [name, description, hasReason] of [
    ['start', 'start a pending experiment (state initializing; the sagas take it from there)', false],
    ['cancel', 'cancel an experiment that has not ended', true],
    [
      'promote',
      'promote a passing candidate: its configs and evidence committed to Git, then rolled out over the target',
      false,
    ],
    ['rollback', 'roll a promotion back: its commit reverted, the baseline rolled out again', true],
  ] as const) {
    const command = experiments
      .command(name)
      .description(description)
      .argument('<id>', 'experiment id')
      .option('--if-match <version>', 'only if the experiment is at this version (else 412)', positiveInt)
      .option('--idempotency-key <key>', 'a retry with the same key does nothing new')
      .addHelpText('after', EXIT_HELP);
    if (hasReason) command.option('--reason <text>', 'why (kept in the history and the audit)');
    jsonOption(command).action(
      withConnection(
        async (
          conn,
          id: string,
          options: { ifMatch?: number; idempotencyKey?: string; reason?: string; json?: boolean },
        ) => {
          const { body } = await call(conn, 'POST', `${experimentPath(id)}/${name}`, {
            body: options.reason !== undefined ? { reason: options.reason } : {},
            headers: commandHeaders(options),
          });
          printCommandAnswer(body as CommandAnswer, options);
        },
      ),
    );
  }

  jsonOption(
    experiments
      .command('preview')
      .description(
        'before a run: one sample of the fleet through both pipelines; the series the candidate removes and the critical processes it drops',
      )
      .argument('[id]', 'a created experiment (else give -f)')
      .option('-f, --file <path>', 'a create body (as in POST /api/v1/experiments), or - for stdin')
      .option(
        '--idempotency-key <key>',
        'the key the create will use: the sample is then the fleet the run gets',
      )
      .addHelpText(
        'after',
        `\nExamples:\n  phoenix experiments preview -f spec.json\n  phoenix experiments preview <id>\n${EXIT_HELP}`,
      ),
  ).action(
    withConnection(
      async (
        conn,
        id: string | undefined,
        options: { file?: string; idempotencyKey?: string; json?: boolean },
      ) => {
        if ((id === undefined) === (options.file === undefined))
          throw new CliError('give an experiment id or -f <spec.json>, not both', 2);
        const { body } =
          id !== undefined
            ? await call(conn, 'GET', `${experimentPath(id)}/preview`)
            : await call(conn, 'POST', 'api/v1/experiments/preview', {
                body: readBody(options.file as string),
                ...(options.idempotencyKey ? { headers: { 'idempotency-key': options.idempotencyKey } } : {}),
              });
        if (options.json) return json(body);
        out(previewLines(body as Preview));
      },
    ),
  );

  jsonOption(
    experiments
      .command('rejudge')
      .description(
        'judge a finished experiment again under other success criteria, from its stored evidence (nothing is measured again; the original verdict stays)',
      )
      .argument('<id>', 'experiment id')
      .option('--min-reduction <pct>', 'successCriteria.minCardinalityReductionPct', percent)
      .option('--max-critical-loss <pct>', 'successCriteria.maxCriticalProcessLossPct', percent)
      .option('--max-cpu-overhead <pct>', 'successCriteria.maxCollectorCpuOverheadPct', percent)
      .option('--min-hosts <n>', 'successCriteria.minHosts', positiveInt)
      .option('--min-samples-per-host <n>', 'successCriteria.minSamplesPerHost', positiveInt)
      .option('--confidence <c>', 'successCriteria.confidence, between 0.5 and 1 (e.g. 0.9)', percent)
      .option('--max-input-mismatch <pct>', 'successCriteria.maxInputMismatchPct', percent)
      .option(
        '--dry-run <criterion>',
        'successCriteria.dryRun entry, e.g. inputParity or query:<name> (repeatable)',
        collect,
      )
      .option('--if-match <version>', 'only if the experiment is at this version (else 412)', positiveInt)
      .option('--idempotency-key <key>', 'a retry with the same key does nothing new')
      .addHelpText(
        'after',
        `\nCriteria not given stay as the experiment has them. The result is under rejudgements in\n\`phoenix experiments get <id>\`. Example:\n  phoenix experiments rejudge <id> --min-reduction 40 --dry-run inputParity\n${EXIT_HELP}`,
      ),
  ).action(
    withConnection(async (conn, id: string, options: RejudgeOptions) => {
      const { body } = await call(conn, 'POST', `${experimentPath(id)}/rejudge`, {
        body: { successCriteria: rejudgeCriteria(options) },
        headers: commandHeaders(options),
      });
      printCommandAnswer(body as CommandAnswer, options);
    }),
  );

  experiments
    .command('watch')
    .description(
      'follow an experiment over the live feed until it ends: its events, then the verdict (exit code below)',
    )
    .argument('<id>', 'experiment id')
    .option('--json', 'each event as one JSON line, then {"kind":"end", state, verdict, experiment}')
    .addHelpText('after', WATCH_HELP)
    .action(
      withConnection(async (conn, id: string, options: { json?: boolean }) => {
        const code = await watch(conn, id, options);
        // Not an error: the outcome, already printed, as the exit code.
        if (code !== 0) throw new CliError('', code);
      }),
    );

  jsonOption(
    program
      .command('templates')
      .description('the pipeline templates the API at PHOENIX_URL offers, with their parameters')
      .addHelpText('after', EXIT_HELP),
  ).action(
    withConnection(async (conn, options: { json?: boolean }) => {
      const { body } = await call(conn, 'GET', 'api/v1/templates');
      if (options.json) return json(body);
      const { items } = body as {
        items: { name: string; description: string; params: { name: string }[] }[];
      };
      out(
        table([
          ['NAME', 'PARAMS', 'DESCRIPTION'],
          ...items.map((t) => [t.name, t.params.map((p) => p.name).join(', ') || '-', t.description]),
        ]),
      );
    }),
  );
}

/**
 * `phoenix render` and `phoenix simulate`: the generator and the local data plane from a terminal, through
 * the same code the API and the deployer use. Bad input is one line on stderr and exit code 2.
 */
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import {
  buildKubernetesObjects,
  type CollectorConfig,
  computeTuning,
  listTemplates,
  type ProcessUsageTable,
  parseTemplateParams,
  renderVariant,
  type ValidationIssue,
  type Variant,
} from '../domain/pipelines/index.js';
import { CliError } from './cli-error.js';

/** What `simulate` reads of a simulated variant once deployed. */
export interface SimulatedVariant {
  readonly series: number;
  readonly datapointsPerMinute: number;
  readonly criticalSeen: readonly { readonly node: string; readonly executableName: string }[];
  readonly collector: { readonly cpuCoresPerNode: number; readonly memoryRssBytesPerNode: number };
}

/** The simulated fleet `simulate` deploys rendered configs to (the local data plane, from src/main.ts). */
export interface FleetSimulator {
  deploy(input: {
    readonly experimentId: string;
    readonly variant: Variant;
    readonly config: CollectorConfig | string;
    readonly hosts: number;
    readonly processesPerHost: number;
    readonly seed: number;
    readonly criticalProcesses: readonly string[];
  }): SimulatedVariant;
  /** The baseline's process usage, for templates tuned from it. */
  usage(experimentId: string, variant: Variant): ProcessUsageTable | undefined;
  snapshot(experimentId: string, variant: Variant): SimulatedVariant | undefined;
  close(): Promise<void>;
}

/** What `render` and `simulate` are given by the entry (src/cli.ts), which takes them from src/main.ts. */
export interface PipelineCommandDeps {
  readonly openSimulator: () => FleetSimulator;
  /** Whether an error is the simulator refusing what it was given (bad input, exit code 2). */
  readonly isSimulatorRefusal: (err: unknown) => err is Error;
}

/** Bad input: one line on stderr and exit code 2 (see `main` in src/cli.ts). */
const usage = (message: string) => new CliError(message, 2);

const DEFAULT_HOSTS = 10;
const DEFAULT_PROCESSES = 500;
const DEFAULT_CRITICAL = ['^postgres$', '^nginx$', '^kubelet$', '^containerd$', '^sshd$'];

export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/**
 * `--param k=v` flags → a params object. Values are JSON when they parse as JSON (numbers, booleans,
 * lists), strings otherwise; repeating an array parameter appends to it.
 */
export const parseParamFlags = (template: string, flags: readonly string[]): Record<string, unknown> => {
  const arrays = new Set(
    listTemplates()
      .find((t) => t.name === template)
      ?.params.filter((p) => p.type === 'array')
      .map((p) => p.name),
  );
  const params: Record<string, unknown> = {};
  for (const flag of flags) {
    const eq = flag.indexOf('=');
    if (eq <= 0) throw usage(`--param expects key=value, got "${flag}"`);
    const key = flag.slice(0, eq);
    const raw = flag.slice(eq + 1);
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      value = raw;
    }
    if (arrays.has(key)) {
      const items = Array.isArray(value) ? value : [typeof value === 'string' ? value : raw];
      params[key] = [...((params[key] as unknown[] | undefined) ?? []), ...items];
    } else params[key] = value;
  }
  return params;
};

const describeErrors = (errors: readonly ValidationIssue[]): string =>
  errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join('; ');

/** Commander reports an InvalidArgumentError as "option '--hosts <n>' argument '0' is invalid"; main() exits 2. */
const positiveInt = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer.');
  return n;
};

export const keyValues = (flags: readonly string[], what: string): Record<string, string> =>
  Object.fromEntries(
    flags.map((f) => {
      const eq = f.indexOf('=');
      if (eq <= 0) throw usage(`${what} expects key=value, got "${f}"`);
      return [f.slice(0, eq), f.slice(eq + 1)];
    }),
  );

/** Runs an action; a data plane refusal is bad input like any other. */
const guarded =
  <A extends unknown[]>(deps: PipelineCommandDeps, action: (...args: A) => Promise<void> | void) =>
  async (...args: A): Promise<void> => {
    try {
      await action(...args);
    } catch (err) {
      if (deps.isSimulatorRefusal(err)) throw usage(err.message);
      throw err;
    }
  };

interface RenderOptions {
  param: string[];
  variant: Variant;
  experimentId: string;
  critical: string[];
  keep?: string[];
  kubernetes?: boolean;
  mode: 'operator' | 'daemonset';
  namespace?: string;
  nodeSelector: string[];
}

interface SimulateOptions {
  template: string;
  baseline: string;
  param: string[];
  baselineParam: string[];
  hosts: number;
  processes: number;
  seed: number;
  critical?: string[];
  json?: boolean;
}

/** Adds `render` and `simulate` to the CLI program. */
export const registerPipelineCommands = (program: Command, deps: PipelineCommandDeps): void => {
  program
    .command('render')
    .description('print the OpenTelemetry Collector config (or Kubernetes objects) a template renders')
    .argument('<template>', 'template name, e.g. process-topk-v1')
    .option('--param <key=value>', 'template parameter (repeatable)', collect, [])
    .addOption(
      new Option('--variant <variant>', 'variant to render')
        .choices(['baseline', 'candidate'])
        .default('candidate'),
    )
    .option('--experiment-id <id>', 'experiment id stamped on the data', 'local')
    .option('--critical <regex>', 'critical process pattern (repeatable)', collect, [])
    .option('--keep <name>', 'keep-list entry for top-k / intelligent (repeatable)', collect)
    .option('--kubernetes', 'print the Kubernetes objects instead of the bare config')
    .addOption(
      new Option('--mode <mode>', 'Kubernetes objects to build')
        .choices(['operator', 'daemonset'])
        .default('operator'),
    )
    .option('--namespace <ns>', 'namespace of the Kubernetes objects')
    .option('--node-selector <key=value>', 'node selector of the target (repeatable)', collect, [])
    .action(
      guarded(deps, (template: string, options: RenderOptions) => {
        const rendered = renderVariant({
          experimentId: options.experimentId,
          variant: options.variant,
          template,
          params: parseParamFlags(template, options.param),
          criticalProcesses: options.critical,
          ...(options.keep ? { keepList: options.keep } : {}),
        });
        if (!rendered.ok) throw usage(describeErrors(rendered.errors));
        if (rendered.pendingTuning) {
          process.stderr.write(
            'phoenix: note: this template is completed from baseline data; without --keep this is its bootstrap config\n',
          );
        }
        if (!options.kubernetes) {
          process.stdout.write(rendered.yaml);
          return;
        }
        const objects = buildKubernetesObjects({
          experimentId: options.experimentId,
          variant: options.variant,
          template: rendered.template,
          config: rendered.config,
          mode: options.mode,
          nodeSelector: keyValues(options.nodeSelector, '--node-selector'),
          ...(options.namespace ? { namespace: options.namespace } : {}),
        });
        if (objects.errors.length > 0) throw usage(describeErrors(objects.errors));
        process.stdout.write(objects.yaml);
      }),
    );

  program
    .command('simulate')
    .description(
      'run baseline and candidate over a simulated fleet and print series, data points per minute and the reduction',
    )
    .requiredOption('--template <template>', 'candidate template (required)')
    .option('--baseline <template>', 'baseline template', 'process-baseline-v1')
    .option('--param <key=value>', 'candidate template parameter (repeatable)', collect, [])
    .option('--baseline-param <key=value>', 'baseline template parameter (repeatable)', collect, [])
    .option('--hosts <n>', 'simulated nodes', positiveInt, DEFAULT_HOSTS)
    .option('--processes <n>', 'processes per node', positiveInt, DEFAULT_PROCESSES)
    .option('--seed <n>', 'fleet seed', positiveInt, 1)
    .option(
      '--critical <regex>',
      `critical process pattern (repeatable; default ${DEFAULT_CRITICAL.join(' ')})`,
      collect,
    )
    .option('--json', 'print the result as JSON')
    .action(guarded(deps, async (options: SimulateOptions) => simulate(options, deps)));
};

const pct = (before: number, after: number): number => (before === 0 ? 0 : (100 * (before - after)) / before);

const simulate = async (options: SimulateOptions, deps: PipelineCommandDeps): Promise<void> => {
  if (options.hosts * options.processes > 2_000_000)
    throw usage('--hosts × --processes must be at most 2,000,000');
  const critical = options.critical ?? DEFAULT_CRITICAL;
  const experimentId = 'simulate';
  const candidateParams = parseTemplateParams(
    options.template,
    parseParamFlags(options.template, options.param),
  );
  if (!candidateParams.ok) throw usage(`candidate: ${describeErrors(candidateParams.errors)}`);
  const plane = deps.openSimulator();
  try {
    const render = (variant: Variant, template: string, params: unknown, tuning = {}) => {
      const rendered = renderVariant({
        experimentId,
        variant,
        template,
        params,
        criticalProcesses: critical,
        ...tuning,
      });
      if (!rendered.ok) throw usage(`${variant}: ${describeErrors(rendered.errors)}`);
      return rendered;
    };
    const deploy = (variant: Variant, config: ReturnType<typeof render>['config']) =>
      plane.deploy({
        experimentId,
        variant,
        config,
        hosts: options.hosts,
        processesPerHost: options.processes,
        seed: options.seed,
        criticalProcesses: critical,
      });
    const baselineRendered = render(
      'baseline',
      options.baseline,
      parseParamFlags(options.baseline, options.baselineParam),
    );
    let baseline = deploy('baseline', baselineRendered.config);
    let candidateRendered = render('candidate', options.template, candidateParams.value.params);
    // As the deployer does: templates completed from the baseline's data are re-rendered once it has reported.
    if (candidateRendered.pendingTuning) {
      const usage = plane.usage(experimentId, 'baseline');
      const tuning = usage ? computeTuning(candidateParams.value, usage, critical) : undefined;
      candidateRendered = render('candidate', options.template, candidateParams.value.params, tuning ?? {});
    }
    const candidate = deploy('candidate', candidateRendered.config);
    baseline = plane.snapshot(experimentId, 'baseline') ?? baseline;
    const seen = new Set(candidate.criticalSeen.map((c) => `${c.node}\u0000${c.executableName}`));
    const lost = baseline.criticalSeen.filter((c) => !seen.has(`${c.node}\u0000${c.executableName}`));
    const result = {
      fleet: {
        hosts: options.hosts,
        processesPerHost: options.processes,
        seed: options.seed,
        criticalProcesses: critical,
      },
      baseline: {
        template: options.baseline,
        series: baseline.series,
        datapointsPerMinute: baseline.datapointsPerMinute,
        collectorCpuCoresPerNode: baseline.collector.cpuCoresPerNode,
        collectorRssBytesPerNode: baseline.collector.memoryRssBytesPerNode,
      },
      candidate: {
        template: options.template,
        params: candidateRendered.params,
        series: candidate.series,
        datapointsPerMinute: candidate.datapointsPerMinute,
        collectorCpuCoresPerNode: candidate.collector.cpuCoresPerNode,
        collectorRssBytesPerNode: candidate.collector.memoryRssBytesPerNode,
      },
      cardinalityReductionPct: pct(baseline.series, candidate.series),
      datapointReductionPct: pct(baseline.datapointsPerMinute, candidate.datapointsPerMinute),
      criticalProcessesInBaseline: baseline.criticalSeen.length,
      criticalProcessLossPct:
        baseline.criticalSeen.length === 0 ? 0 : (100 * lost.length) / baseline.criticalSeen.length,
      missingCriticalProcesses: lost.map((c) => `${c.node}/${c.executableName}`),
    };
    if (options.json) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      return;
    }
    const n = (v: number) => Math.round(v).toLocaleString('en-US');
    const row = (name: string, template: string, s: { series: number; datapointsPerMinute: number }) =>
      `${name.padEnd(10)} ${template.padEnd(28)} ${n(s.series).padStart(12)} ${n(s.datapointsPerMinute).padStart(16)}`;
    const lines = [
      `fleet: ${options.hosts} hosts × ${options.processes} processes, seed ${options.seed}; critical: ${critical.join(' ')}`,
      `${'variant'.padEnd(10)} ${'template'.padEnd(28)} ${'series'.padStart(12)} ${'datapoints/min'.padStart(16)}`,
      row('baseline', options.baseline, baseline),
      row('candidate', options.template, candidate),
      `reduction: series ${result.cardinalityReductionPct.toFixed(1)}%, data points ${result.datapointReductionPct.toFixed(1)}%`,
      `critical processes kept: ${baseline.criticalSeen.length - lost.length}/${baseline.criticalSeen.length} (loss ${result.criticalProcessLossPct.toFixed(1)}%)`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await plane.close();
  }
};

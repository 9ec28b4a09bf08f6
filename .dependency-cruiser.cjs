/**
 * The import rules of src/ (issue 16, /work/shared/STYLE.md "The shape of the code"): no cycles, and
 * arrows point inward — domain ← handlers/projections ← the composition root (src/main.ts, with the
 * entry src/bin.ts → src/cli.ts), adapters implementing the ports. `npm run lint` fails on any
 * violation. Type-only imports count (tsPreCompilationDeps): a type is a dependency too.
 *
 * Where today's code does not hold a rule yet, the exception names the files that break it, so that
 * nothing new can join them; remove an entry once its file is fixed.
 */

/**
 * Files besides the root that may import src/adapters. A worker thread is an entry of its own: the
 * rebuild's (src/projections/parallel-load-worker.ts) opens its own PostgreSQL connection and reads its
 * slice of the log with the PostgreSQL log reader's readSlice, as nothing can be passed to it but data.
 */
const ENTRIES_IMPORTING_ADAPTERS = ['^src/projections/parallel-load-worker\\.ts$'];

/** The npm packages the domain may use: pure libraries, no I/O. */
const DOMAIN_LIBRARIES = [
  'zod',
  'yaml',
  're2js',
  'kubernetes-models',
  'lru-cache',
  '@stdlib/stats-wilcoxon',
  '@stdlib/random-base-mt19937',
];

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'An import cycle, type-only imports included: modules that cannot be understood, loaded or tested apart. No exceptions.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'domain-imports-only-domain',
      severity: 'error',
      comment: 'src/domain is the core: it imports nothing from the rest of src/.',
      from: { path: '^src/domain/' },
      to: { path: '^src/', pathNot: '^src/domain/' },
    },
    {
      name: 'domain-uses-only-pure-libraries',
      severity: 'error',
      comment: `src/domain does no I/O: of npm and Node it may import only ${DOMAIN_LIBRARIES.join(', ')}.`,
      from: { path: '^src/domain/' },
      to: {
        dependencyTypesNot: ['local'],
        pathNot: `(^|/)node_modules/(${DOMAIN_LIBRARIES.join('|')})/`,
      },
    },
    {
      name: 'application-imports-only-domain',
      severity: 'error',
      comment: 'src/application (the use cases and their ports) imports src/domain and itself, nothing else of src/.',
      from: { path: '^src/application/' },
      to: { path: '^src/', pathNot: '^src/(domain|application)/' },
    },
    {
      name: 'projections-do-not-import-the-edges',
      severity: 'error',
      comment:
        'src/projections (the read side) uses the application and its ports; the edges (src/handlers) use it, never the other way round.',
      from: { path: '^src/projections/' },
      to: { path: '^src/handlers/' },
    },
    {
      name: 'grpc-generated-code-is-self-contained',
      severity: 'error',
      comment: 'src/handlers/grpc/gen is generated from proto/ (npm run proto:gen): it imports itself and npm packages only.',
      from: { path: '^src/handlers/grpc/gen/' },
      to: { path: '^src/', pathNot: '^src/handlers/grpc/gen/' },
    },
    {
      name: 'adapters-import-only-application-and-domain',
      severity: 'error',
      comment:
        'An adapter implements a port of src/application; of src/ it imports src/application, src/domain and other adapters, never the edges.',
      from: { path: '^src/adapters/' },
      to: { path: '^src/', pathNot: '^src/(application|domain|adapters)/' },
    },
    {
      name: 'only-the-entry-imports-the-root',
      severity: 'error',
      comment:
        'src/main.ts is the composition root: it imports the rest, never the other way round. Commands receive what they need from src/cli.ts as arguments.',
      from: { path: '^src/', pathNot: '^src/(bin|cli|main)\\.ts$' },
      to: { path: '^src/main\\.ts$' },
    },
    {
      name: 'only-the-root-imports-adapters',
      severity: 'error',
      comment:
        'Adapters are built in src/main.ts (and src/cli.ts, the entry) and passed down as ports; nothing else knows the technology.',
      from: {
        path: '^src/',
        pathNot: ['^src/(bin|cli|main)\\.ts$', '^src/adapters/', ...ENTRIES_IMPORTING_ADAPTERS],
      },
      to: { path: '^src/adapters/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};

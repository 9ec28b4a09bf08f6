/**
 * A deterministic simulation of the processes on a fleet of Kubernetes nodes, standing in for real hosts
 * in the local data plane. Heavy-tailed CPU and memory (log-normal per process around per-executable
 * medians spanning four orders of magnitude), pods that bring pause + shim processes, a few workload
 * families per node with many workers, a long tail of bespoke service binaries, and churn: short-lived
 * tools and recycled workers get new pids. Column-wise typed arrays keep 1,000 × 500 processes cheap.
 */

/** mulberry32: a small, fast, well-mixed 32-bit PRNG; one stream per host keeps hosts independent. */
export const mulberry32Next = (state: Uint32Array, i: number): number => {
  let t = ((state[i] as number) + 0x6d2b79f5) >>> 0;
  state[i] = t;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

/** Seeds host h's stream from the fleet seed (splitmix-style mixing, so nearby seeds diverge). */
const seedFor = (seed: number, host: number): number => {
  let z = (Math.imul(seed >>> 0, 0x9e3779b1) + Math.imul(host + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x7feb352d) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x846ca68b) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
};

type ProcessClass = 'system' | 'pod' | 'workload' | 'transient' | 'tail';

interface CatalogEntry {
  readonly name: string;
  readonly path: string;
  readonly owner: string;
  readonly cls: ProcessClass;
  /** Median CPU in cores and log-normal spread. */
  readonly cpu: number;
  readonly cpuSigma: number;
  /** Median resident memory in MiB and log-normal spread. */
  readonly memMiB: number;
  readonly memSigma: number;
  /** Chance per simulated minute that a process is replaced by a new pid. */
  readonly churnPerMinute: number;
  readonly threads: number;
  /** Virtual / resident memory ratio. */
  readonly virtual: number;
  /** For workloads: instances per node [min, max] and how often a node runs it. */
  readonly instances?: readonly [number, number];
  readonly popularity?: number;
}

const entry = (
  name: string,
  cls: ProcessClass,
  cpu: number,
  memMiB: number,
  opts: Partial<Omit<CatalogEntry, 'name' | 'cls' | 'cpu' | 'memMiB'>> = {},
): CatalogEntry => ({
  name,
  cls,
  cpu,
  memMiB,
  path: opts.path ?? `/usr/${cls === 'system' ? 'sbin' : 'bin'}/${name}`,
  owner: opts.owner ?? (cls === 'system' || cls === 'pod' ? 'root' : 'app'),
  cpuSigma: opts.cpuSigma ?? 1.0,
  memSigma: opts.memSigma ?? 0.6,
  churnPerMinute: opts.churnPerMinute ?? 0,
  threads: opts.threads ?? 4,
  virtual: opts.virtual ?? 3,
  ...(opts.instances ? { instances: opts.instances } : {}),
  ...(opts.popularity !== undefined ? { popularity: opts.popularity } : {}),
});

/** Node agents every host runs, one instance each unless noted by repetition. */
const SYSTEM: readonly CatalogEntry[] = [
  entry('systemd', 'system', 0.002, 12, { path: '/usr/lib/systemd/systemd' }),
  entry('systemd-journald', 'system', 0.004, 40, { path: '/usr/lib/systemd/systemd-journald' }),
  entry('systemd-udevd', 'system', 0.0005, 8),
  entry('systemd-logind', 'system', 0.0003, 6),
  entry('systemd-resolved', 'system', 0.0008, 10),
  entry('systemd-networkd', 'system', 0.0004, 8),
  entry('dbus-daemon', 'system', 0.0006, 5, { path: '/usr/bin/dbus-daemon', owner: 'messagebus' }),
  entry('chronyd', 'system', 0.0002, 3, { owner: '_chrony' }),
  entry('rsyslogd', 'system', 0.001, 9, { owner: 'syslog' }),
  entry('cron', 'system', 0.0001, 3),
  entry('agetty', 'system', 0.00005, 2),
  entry('sshd', 'system', 0.0005, 7),
  entry('sshd', 'system', 0.0005, 7),
  entry('kubelet', 'system', 0.06, 140, {
    path: '/usr/bin/kubelet',
    threads: 40,
    virtual: 12,
    cpuSigma: 0.5,
  }),
  entry('containerd', 'system', 0.03, 90, {
    path: '/usr/bin/containerd',
    threads: 30,
    virtual: 15,
    cpuSigma: 0.5,
  }),
  entry('kube-proxy', 'system', 0.008, 45, { path: '/usr/local/bin/kube-proxy', threads: 12, virtual: 16 }),
  entry('node_exporter', 'system', 0.01, 25, { path: '/bin/node_exporter', owner: 'nobody', threads: 8 }),
  entry('fluent-bit', 'system', 0.02, 35, { path: '/fluent-bit/bin/fluent-bit', threads: 6 }),
  entry('otelcol-contrib', 'system', 0.03, 120, { path: '/otelcol-contrib', threads: 14, virtual: 10 }),
  entry('cilium-agent', 'system', 0.05, 220, { path: '/usr/bin/cilium-agent', threads: 40, virtual: 8 }),
  entry('multipathd', 'system', 0.0003, 20),
  entry('polkitd', 'system', 0.0001, 8, { owner: 'polkitd' }),
];

const POD: readonly CatalogEntry[] = [
  entry('pause', 'pod', 0.00001, 0.5, {
    path: '/pause',
    owner: '65535',
    churnPerMinute: 0.002,
    memSigma: 0.2,
    threads: 1,
  }),
  entry('containerd-shim-runc-v2', 'pod', 0.0008, 9, {
    path: '/usr/bin/containerd-shim-runc-v2',
    churnPerMinute: 0.002,
    threads: 11,
    virtual: 80,
  }),
];

const WORKLOADS: readonly CatalogEntry[] = [
  entry('postgres', 'workload', 0.01, 60, {
    path: '/usr/lib/postgresql/16/bin/postgres',
    owner: 'postgres',
    instances: [6, 40],
    popularity: 0.25,
    cpuSigma: 1.6,
    memSigma: 0.9,
    churnPerMinute: 0.05,
    threads: 1,
    virtual: 4,
  }),
  entry('nginx', 'workload', 0.01, 14, {
    owner: 'www-data',
    instances: [2, 17],
    popularity: 0.3,
    churnPerMinute: 0.001,
  }),
  entry('java', 'workload', 0.35, 1400, {
    path: '/usr/lib/jvm/java-21/bin/java',
    instances: [1, 4],
    popularity: 0.35,
    cpuSigma: 1.2,
    threads: 120,
    virtual: 3,
  }),
  entry('python3', 'workload', 0.03, 90, {
    path: '/usr/local/bin/python3.12',
    instances: [1, 24],
    popularity: 0.45,
    cpuSigma: 1.5,
    churnPerMinute: 0.02,
  }),
  entry('node', 'workload', 0.08, 180, {
    path: '/usr/local/bin/node',
    instances: [1, 10],
    popularity: 0.35,
    threads: 11,
    virtual: 6,
  }),
  entry('gunicorn', 'workload', 0.04, 110, { instances: [3, 17], popularity: 0.15, churnPerMinute: 0.03 }),
  entry('php-fpm8.2', 'workload', 0.02, 45, {
    path: '/usr/sbin/php-fpm8.2',
    owner: 'www-data',
    instances: [5, 32],
    popularity: 0.12,
    churnPerMinute: 0.08,
  }),
  entry('redis-server', 'workload', 0.03, 300, {
    owner: 'redis',
    instances: [1, 3],
    popularity: 0.2,
    threads: 5,
  }),
  entry('mysqld', 'workload', 0.15, 900, {
    owner: 'mysql',
    instances: [1, 1],
    popularity: 0.08,
    threads: 40,
  }),
  entry('mongod', 'workload', 0.12, 1200, {
    owner: 'mongodb',
    instances: [1, 1],
    popularity: 0.06,
    threads: 60,
  }),
  entry('envoy', 'workload', 0.05, 70, { instances: [1, 6], popularity: 0.25, threads: 16 }),
  entry('haproxy', 'workload', 0.02, 40, { owner: 'haproxy', instances: [1, 4], popularity: 0.06 }),
  entry('celery', 'workload', 0.05, 150, { instances: [2, 16], popularity: 0.1, churnPerMinute: 0.02 }),
  entry('sidekiq', 'workload', 0.06, 250, { instances: [1, 8], popularity: 0.05 }),
  entry('ruby', 'workload', 0.05, 200, { instances: [1, 6], popularity: 0.08 }),
  entry('dotnet', 'workload', 0.1, 350, { instances: [1, 4], popularity: 0.08, threads: 30 }),
  entry('kafka', 'workload', 0.4, 2500, {
    path: '/usr/lib/jvm/java-17/bin/java',
    instances: [1, 1],
    popularity: 0.04,
    threads: 150,
  }),
  entry('elasticsearch', 'workload', 0.6, 4000, { instances: [1, 1], popularity: 0.03, threads: 200 }),
  entry('etcd', 'workload', 0.04, 150, { instances: [1, 1], popularity: 0.03, threads: 20 }),
  entry('memcached', 'workload', 0.01, 120, { owner: 'memcache', instances: [1, 2], popularity: 0.05 }),
  entry('coredns', 'workload', 0.005, 30, { path: '/coredns', instances: [1, 2], popularity: 0.2 }),
  entry('prometheus', 'workload', 0.2, 1800, {
    path: '/bin/prometheus',
    instances: [1, 1],
    popularity: 0.03,
  }),
  entry('rabbitmq-server', 'workload', 0.08, 400, { instances: [1, 1], popularity: 0.03 }),
  entry('traefik', 'workload', 0.02, 60, { instances: [1, 2], popularity: 0.04 }),
  entry('uwsgi', 'workload', 0.03, 80, { instances: [2, 12], popularity: 0.06, churnPerMinute: 0.03 }),
];

const TRANSIENT: readonly CatalogEntry[] = [
  'sh',
  'bash',
  'sleep',
  'curl',
  'grep',
  'awk',
  'sed',
  'find',
  'tar',
  'gzip',
  'logrotate',
  'run-parts',
  'timeout',
  'jq',
  'ps',
  'du',
  'wget',
  'iptables',
  'conntrack',
  'runc',
].map((name) =>
  entry(name, 'transient', 0.02, 4, {
    path: `/usr/bin/${name}`,
    churnPerMinute: 0.9,
    cpuSigma: 1.5,
    threads: 1,
  }),
);

const TAIL_WORDS_A = [
  'billing',
  'checkout',
  'search',
  'ledger',
  'media',
  'auth',
  'events',
  'catalog',
  'quota',
  'report',
];
const TAIL_WORDS_B = [
  'api',
  'worker',
  'sync',
  'gateway',
  'indexer',
  'cron',
  'proxy',
  'exporter',
  'agent',
  'scheduler',
];

/** Bespoke service binaries: many names, each on few nodes (Zipf popularity by rank). */
const TAIL: readonly CatalogEntry[] = Array.from({ length: 2000 }, (_, i) => {
  const name = `${TAIL_WORDS_A[i % 10]}-${TAIL_WORDS_B[Math.floor(i / 10) % 10]}${i >= 100 ? `-${Math.floor(i / 100)}` : ''}`;
  return entry(name, 'tail', 0.01, 60, {
    path: `/app/${name}`,
    cpuSigma: 1.8,
    memSigma: 1.0,
    churnPerMinute: 0.004,
    threads: 8,
  });
});

/** Every executable name the simulator can produce, interned: a process's name is an index here. */
/** FNV-1a of the experiment id: each experiment gets its own reproducible fleet. */
export const fleetSeedOf = (experimentId: string): number => {
  let h = 0x811c9dc5;
  for (let i = 0; i < experimentId.length; i++) {
    h ^= experimentId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h || 1;
};

export const CATALOG: readonly CatalogEntry[] = [
  ...SYSTEM.filter((e, i) => SYSTEM.findIndex((o) => o.name === e.name) === i),
  ...POD,
  ...WORKLOADS,
  ...TRANSIENT,
  ...TAIL,
];
const INDEX = new Map(CATALOG.map((e, i) => [e.name, i]));
const idOf = (name: string): number => INDEX.get(name) as number;
const SYSTEM_IDS = SYSTEM.map((e) => idOf(e.name));
const TRANSIENT_IDS = TRANSIENT.map((e) => idOf(e.name));
const WORKLOAD_IDS = WORKLOADS.map((e) => idOf(e.name));
const TAIL_IDS = TAIL.map((e) => idOf(e.name));
const TAIL_CUMULATIVE = (() => {
  const weights = TAIL.map((_, rank) => 1 / (rank + 1) ** 1.1);
  const total = weights.reduce((a, b) => a + b, 0);
  let acc = 0;
  return Float64Array.from(weights, (w) => (acc += w / total));
})();

/** Names of the catalog, index-aligned with a fleet's `name` column. */
export const CATALOG_NAMES: readonly string[] = CATALOG.map((e) => e.name);
export const catalogEntry = (id: number): CatalogEntry => CATALOG[id] as CatalogEntry;

export interface FleetOptions {
  readonly hosts: number;
  readonly processesPerHost: number;
  readonly seed: number;
}

const MIB = 1024 * 1024;
/** CPU split of a process: user share, system share; the rest is I/O wait. */
const WAIT_SHARE = 0.03;

export class ProcessFleet {
  readonly hosts: number;
  readonly perHost: number;
  readonly size: number;
  readonly seed: number;
  readonly hostNames: readonly string[];
  readonly hostCpus: Uint16Array;
  readonly hostMemoryBytes: Float64Array;
  /** Catalog index of each process. */
  readonly name: Uint16Array;
  readonly pid: Int32Array;
  readonly ppid: Int32Array;
  /** Which of a few command lines the process was started with. */
  readonly argv: Uint8Array;
  readonly startTime: Float64Array;
  /** Long-run CPU (cores) and memory (bytes) of each process; the current values wander around them. */
  readonly cpuBase: Float32Array;
  readonly memBase: Float32Array;
  readonly cpuNow: Float32Array;
  readonly memNow: Float32Array;
  readonly userShare: Float32Array;
  readonly diskRate: Float32Array;
  /** Cumulative CPU seconds per state (user, system, wait), index 3i + state. */
  readonly cpuTime: Float64Array;
  /** Cumulative disk bytes (read, write), index 2i + direction. */
  readonly diskBytes: Float64Array;
  readonly threads: Uint16Array;
  private readonly rng: Uint32Array;
  private readonly nextPid: Int32Array;
  /** Simulated seconds since the fleet was created. */
  time = 0;
  /** Processes replaced by a new pid in the last advance. */
  lastChurn = 0;

  constructor(options: FleetOptions) {
    if (!Number.isInteger(options.hosts) || options.hosts < 1)
      throw new RangeError('hosts must be a positive integer');
    if (!Number.isInteger(options.processesPerHost) || options.processesPerHost < 1) {
      throw new RangeError('processesPerHost must be a positive integer');
    }
    this.hosts = options.hosts;
    this.perHost = options.processesPerHost;
    this.seed = options.seed >>> 0;
    this.size = this.hosts * this.perHost;
    const n = this.size;
    this.hostNames = Array.from({ length: this.hosts }, (_, h) => `node-${String(h + 1).padStart(4, '0')}`);
    this.hostCpus = new Uint16Array(this.hosts);
    this.hostMemoryBytes = new Float64Array(this.hosts);
    this.name = new Uint16Array(n);
    this.pid = new Int32Array(n);
    this.ppid = new Int32Array(n);
    this.argv = new Uint8Array(n);
    this.startTime = new Float64Array(n);
    this.cpuBase = new Float32Array(n);
    this.memBase = new Float32Array(n);
    this.cpuNow = new Float32Array(n);
    this.memNow = new Float32Array(n);
    this.userShare = new Float32Array(n);
    this.diskRate = new Float32Array(n);
    this.cpuTime = new Float64Array(n * 3);
    this.diskBytes = new Float64Array(n * 2);
    this.threads = new Uint16Array(n);
    this.rng = new Uint32Array(this.hosts);
    this.nextPid = new Int32Array(this.hosts);
    for (let h = 0; h < this.hosts; h++) {
      this.rng[h] = seedFor(this.seed, h);
      this.populateHost(h);
    }
  }

  private random(h: number): number {
    return mulberry32Next(this.rng, h);
  }

  /** Standard normal by Box–Muller; one draw per call keeps the stream simple to reason about. */
  private normal(h: number): number {
    const u = 1 - this.random(h);
    const v = this.random(h);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  private int(h: number, min: number, max: number): number {
    return min + Math.floor(this.random(h) * (max - min + 1));
  }

  private populateHost(h: number): void {
    this.hostCpus[h] = [4, 8, 8, 16, 16, 32, 64][this.int(h, 0, 6)] as number;
    this.hostMemoryBytes[h] = (this.hostCpus[h] as number) * 4 * 1024 * MIB;
    this.nextPid[h] = 300 + this.int(h, 0, 2000);
    const plan: number[] = [...SYSTEM_IDS];
    const pods = this.int(h, 10, 60);
    for (let p = 0; p < pods; p++) plan.push(idOf('pause'), idOf('containerd-shim-runc-v2'));
    for (const id of WORKLOAD_IDS) {
      const w = catalogEntry(id);
      if (this.random(h) < (w.popularity ?? 0)) {
        const [min, max] = w.instances ?? [1, 1];
        for (let k = this.int(h, min, max); k > 0; k--) plan.push(id);
      }
    }
    const transients = Math.max(1, Math.round(this.perHost * 0.03));
    for (let t = 0; t < transients; t++) plan.push(this.pickTransient(h));
    while (plan.length < this.perHost) {
      const id = this.pickTail(h);
      for (let k = this.int(h, 1, 4); k > 0 && plan.length < this.perHost * 1.2; k--) plan.push(id);
    }
    const base = h * this.perHost;
    for (let j = 0; j < this.perHost; j++)
      this.spawn(h, base + j, plan[j] as number, -this.random(h) * 86_400 * 30);
  }

  private pickTransient(h: number): number {
    return TRANSIENT_IDS[this.int(h, 0, TRANSIENT_IDS.length - 1)] as number;
  }

  private pickTail(h: number): number {
    const u = this.random(h);
    let lo = 0;
    let hi = TAIL_CUMULATIVE.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((TAIL_CUMULATIVE[mid] as number) < u) lo = mid + 1;
      else hi = mid;
    }
    return TAIL_IDS[lo] as number;
  }

  /** Starts a process with a fresh pid in slot i. */
  private spawn(h: number, i: number, id: number, startTime: number): void {
    const e = catalogEntry(id);
    this.name[i] = id;
    let pid = this.nextPid[h] as number;
    pid = pid >= 4_194_304 ? 300 : pid + 1 + this.int(h, 0, 3);
    this.nextPid[h] = pid;
    this.pid[i] = pid;
    this.ppid[i] = e.cls === 'system' ? 1 : 1000 + ((i * 7919) % 30_000);
    this.argv[i] = this.int(h, 0, 3);
    this.startTime[i] = startTime;
    const cpu = Math.min((this.hostCpus[h] as number) * 0.9, e.cpu * Math.exp(e.cpuSigma * this.normal(h)));
    this.cpuBase[i] = cpu;
    this.cpuNow[i] = cpu;
    const mem = e.memMiB * MIB * Math.exp(e.memSigma * this.normal(h));
    this.memBase[i] = mem;
    this.memNow[i] = mem;
    this.userShare[i] = 0.55 + 0.4 * this.random(h);
    this.diskRate[i] = 2048 * Math.exp(1.5 * this.normal(h));
    this.threads[i] = Math.max(1, Math.round(e.threads * (0.5 + this.random(h))));
    this.cpuTime[3 * i] = 0;
    this.cpuTime[3 * i + 1] = 0;
    this.cpuTime[3 * i + 2] = 0;
    this.diskBytes[2 * i] = 0;
    this.diskBytes[2 * i + 1] = 0;
    if (startTime < this.time) {
      // A process that was already running has accumulated CPU and I/O since it started.
      const age = this.time - startTime;
      this.accumulate(i, age);
    }
  }

  private accumulate(i: number, dt: number): void {
    const cpu = (this.cpuNow[i] as number) * dt;
    const user = this.userShare[i] as number;
    this.cpuTime[3 * i] = (this.cpuTime[3 * i] as number) + cpu * user;
    this.cpuTime[3 * i + 1] = (this.cpuTime[3 * i + 1] as number) + cpu * (1 - user - WAIT_SHARE);
    this.cpuTime[3 * i + 2] = (this.cpuTime[3 * i + 2] as number) + cpu * WAIT_SHARE;
    const io = (this.diskRate[i] as number) * dt;
    this.diskBytes[2 * i] = (this.diskBytes[2 * i] as number) + io * 0.6;
    this.diskBytes[2 * i + 1] = (this.diskBytes[2 * i + 1] as number) + io * 0.4;
  }

  /**
   * Moves simulated time forward: counters integrate, CPU and memory wander around each process's base,
   * and processes exit and are replaced (transients by another tool, everything else by a new instance
   * of the same executable), each with a new pid.
   */
  advance(dtSeconds: number): void {
    if (!(dtSeconds > 0)) return;
    this.time += dtSeconds;
    let churned = 0;
    const minutes = dtSeconds / 60;
    for (let h = 0; h < this.hosts; h++) {
      const base = h * this.perHost;
      const cpus = (this.hostCpus[h] as number) * 0.95;
      for (let i = base; i < base + this.perHost; i++) {
        const e = catalogEntry(this.name[i] as number);
        if (e.churnPerMinute > 0 && this.random(h) < 1 - (1 - e.churnPerMinute) ** minutes) {
          const id = e.cls === 'transient' ? this.pickTransient(h) : (this.name[i] as number);
          this.spawn(h, i, id, this.time - this.random(h) * dtSeconds);
          churned++;
          continue;
        }
        this.cpuNow[i] = Math.min(cpus, (this.cpuBase[i] as number) * Math.exp(0.35 * this.normal(h)));
        this.memNow[i] = (this.memBase[i] as number) * (1 + 0.04 * this.normal(h));
        this.accumulate(i, dtSeconds);
      }
    }
    this.lastChurn = churned;
  }

  /** The command line a process was started with: stable for its lifetime, a few variants per executable. */
  commandLine(i: number): string {
    return commandLineOf(this.name[i] as number, this.argv[i] as number);
  }
}

/** Command line of catalog entry `id` started with argument variant `argv` (0–3). */
export const commandLineOf = (id: number, argv: number): string => {
  const e = catalogEntry(id);
  return argv === 0
    ? e.path
    : `${e.path} --config=/etc/${e.name}/${['main', 'worker', 'replica'][argv - 1]}.conf`;
};

import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

/**
 * The real test cluster (scripts/cluster.sh: etcd, kube-apiserver, controller manager, scheduler, KWOK
 * nodes, the OpenTelemetry Operator) for the Kubernetes suites.
 *
 * A cluster that is already up (`npm run cluster:up`, or .ci/run) is used as it is and left running;
 * otherwise the suite starts one and stops it when it ends. Without built binaries (no Go on the
 * machine) the suite skips and says why: `clusterSkipReason()`.
 */

const run = promisify(execFile);
export const ROOT = join(import.meta.dirname, '..', '..');
export const CLUSTER_DIR = process.env.PHOENIX_CLUSTER_DIR ?? join(ROOT, '.phoenix-cluster');
const SCRIPT = join(ROOT, 'scripts', 'cluster.sh');
export const KUBECONFIG = join(CLUSTER_DIR, 'kubeconfig');
export const API_SERVER = 'https://127.0.0.1:16443';

const BINARIES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'kwok'];

/** Why the Kubernetes suites cannot run here, or undefined when they can. */
export const clusterSkipReason = (): string | undefined => {
  const missing = BINARIES.filter((b) => !existsSync(join(CLUSTER_DIR, 'bin', b)));
  if (missing.length === 0) return undefined;
  return `the test cluster's binaries are not built (${missing.join(', ')} missing in ${join(CLUSTER_DIR, 'bin')}): run npm run cluster:build, which needs Go (a cold build takes about 45 min)`;
};

export const operatorAvailable = (): boolean =>
  existsSync(join(CLUSTER_DIR, 'bin', 'opentelemetry-operator')) &&
  process.env.PHOENIX_CLUSTER_OPERATOR !== '0';

const script = async (args: string[], timeoutMs = 600_000): Promise<string> => {
  try {
    const { stdout } = await run('bash', [SCRIPT, ...args], {
      cwd: ROOT,
      timeout: timeoutMs,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`scripts/cluster.sh ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`);
  }
};

export const apiServerReady = async (): Promise<boolean> => {
  try {
    await run('curl', ['-fsk', '--max-time', '2', `${API_SERVER}/readyz`]);
    return true;
  } catch {
    return false;
  }
};

export interface TestCluster {
  readonly kubeconfig: string;
  /** Whether this suite started the cluster (and stops it in `release`). */
  readonly owned: boolean;
  /** The built kubectl (v1.37.2) against the cluster; stdout. */
  kubectl(args: readonly string[], input?: string): Promise<string>;
  /** Makes the fake nodes exactly kwok-node-0 … kwok-node-<n-1>, all Ready. */
  nodes(n: number): Promise<void>;
  /** Stops the API server and starts it again with the same flags. */
  restartApiServer(): Promise<void>;
  /** The API server's own metrics (Prometheus text), read with the admin's credentials. */
  apiServerMetrics(): Promise<string>;
  release(): Promise<void>;
}

export async function useCluster(
  nodes = Number(process.env.PHOENIX_CLUSTER_NODES ?? 10),
): Promise<TestCluster> {
  const reason = clusterSkipReason();
  if (reason) throw new Error(reason);
  let owned = false;
  if (!(existsSync(KUBECONFIG) && (await apiServerReady()))) {
    await script(['up'], 900_000);
    owned = true;
  }
  const kubectl = async (args: readonly string[], input?: string): Promise<string> => {
    const child = run(join(CLUSTER_DIR, 'bin', 'kubectl'), ['--kubeconfig', KUBECONFIG, ...args], {
      maxBuffer: 64 * 1024 * 1024,
      timeout: 600_000,
    });
    if (input !== undefined) {
      child.child.stdin?.end(input);
    }
    try {
      return (await child).stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`kubectl ${args.join(' ')}: ${e.stderr || e.message}`);
    }
  };
  const cluster: TestCluster = {
    kubeconfig: KUBECONFIG,
    owned,
    kubectl,
    nodes: async (n) => {
      await script(['nodes', String(n)]);
    },
    restartApiServer: async () => {
      await script(['restart-apiserver']);
    },
    apiServerMetrics: () => kubectl(['get', '--raw', '/metrics']),
    release: async () => {
      if (owned) await script(['down']);
    },
  };
  await cluster.nodes(nodes);
  return cluster;
}

/** The admin kubeconfig's text (for a client built from a string). */
export const kubeconfigText = (): string => readFileSync(KUBECONFIG, 'utf8');

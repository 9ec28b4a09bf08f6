/**
 * Processes Phoenix starts on this machine and may find again after a restart (collectors, the managed
 * Prometheus): a pid alone is not proof, since pids are reused, so a process counts as ours only while
 * its command line still carries the marker it was started with (its config file's path).
 */
import { readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** The argv of a live process, or undefined when it is gone, a zombie, or unreadable (no /proc). */
const argvOf = async (pid: number): Promise<string[] | undefined> => {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The state follows the parenthesised command name; a zombie has exited and only waits to be reaped.
    if (/\)\s+Z\s/.test(stat)) return undefined;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.split('\0').filter((a) => a !== '');
  } catch {
    return undefined;
  }
};

/** Whether `pid` runs and its command line has an argument equal to `marker`. */
export const isOurProcess = async (pid: number, marker: string): Promise<boolean> => {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  return (await argvOf(pid))?.includes(marker) ?? false;
};

/** Pids of the running processes with an argument starting with `prefix` (/proc; none elsewhere). */
export const processesWithArgument = async (prefix: string): Promise<{ pid: number; argv: string[] }[]> => {
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return [];
  }
  const found: { pid: number; argv: string[] }[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const argv = await argvOf(pid);
    if (argv?.some((a) => a.startsWith(prefix))) found.push({ pid, argv });
  }
  return found;
};

/**
 * Stops a process of ours: SIGTERM, then SIGKILL after `graceMs`; resolves once it is gone (or was
 * never ours). Returns how it ended.
 */
export const stopProcess = async (
  pid: number,
  marker: string,
  graceMs = 10_000,
): Promise<'not running' | 'terminated' | 'killed'> => {
  if (!(await isOurProcess(pid, marker))) return 'not running';
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(pid, s);
    } catch {
      // Already gone.
    }
  };
  signal('SIGTERM');
  const until = async (ms: number) => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (!(await isOurProcess(pid, marker))) return true;
      await sleep(100);
    }
    return !(await isOurProcess(pid, marker));
  };
  if (await until(graceMs)) return 'terminated';
  signal('SIGKILL');
  await until(5_000);
  return 'killed';
};

/** A port nobody listens on right now on `host` (the kernel's pick). */
export const freePort = (host = '127.0.0.1'): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });

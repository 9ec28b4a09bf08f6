import { execFile } from 'node:child_process';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import pLimit from 'p-limit';
import {
  type CommitOutcome,
  type FolderCommit,
  GitopsRefusedError,
  type GitopsRepository,
  IDEMPOTENCY_TRAILER,
  type RevertCommit,
  type Trailers,
} from '../application/ports/gitops.js';

const run = promisify(execFile);

/**
 * The GitOps repository through the real git CLI (run with argument arrays, never a shell string):
 * a working clone of its own (`workDir`), synced to the remote branch before every change.
 *
 * Pushing: fetch, commit on the remote branch's tip, push; a push refused because the branch moved
 * (someone else pushed in between) is rebased on the new tip and pushed again, up to
 * `maxPushAttempts` times. Never forced. A rebase or revert that conflicts is a GitopsRefusedError.
 *
 * Credentials (for HTTPS remotes) reach git through a credential helper configured in the child's
 * environment (GIT_CONFIG_COUNT), the values in environment variables of that child only: they are
 * never in an argument list (visible to `ps`), a file, or a log line.
 */
export interface GitCliOptions {
  /** A URL (https://, ssh://, file://, git@host:…) or a local path of the repository. */
  readonly url: string;
  /** Default `main`. */
  readonly branch?: string;
  /** The working clone (created when missing). */
  readonly workDir: string;
  readonly username?: string | undefined;
  readonly token?: string | undefined;
  readonly authorName?: string;
  readonly authorEmail?: string;
  /** Push attempts before giving up on a branch that keeps moving; default 5. */
  readonly maxPushAttempts?: number;
  /** Per git invocation; default 120 s. */
  readonly timeoutMs?: number;
  /** Called before each push attempt (tests use it to move the remote between fetch and push). */
  readonly beforePush?: (attempt: number) => Promise<void>;
}

interface GitFailure extends Error {
  readonly stderr?: string;
  readonly stdout?: string;
  readonly code?: number | string;
}

/** A URL's password or token, shown nowhere. */
export const redactUrl = (url: string): string => url.replace(/\/\/[^/@\s]*@/g, '//***@');

const trailerBlock = (trailers: Trailers): string =>
  Object.entries(trailers)
    .map(([k, v]) => `${k}: ${v.replace(/\s+/g, ' ')}`)
    .join('\n');

const messageOf = (change: { subject: string; body: string; trailers: Trailers }): string =>
  `${change.subject.replace(/\s+/g, ' ').trim()}\n\n${change.body.trim() ? `${change.body.trim()}\n\n` : ''}${trailerBlock(change.trailers)}\n`;

export class GitCliRepository implements GitopsRepository {
  readonly repository: string;
  readonly branch: string;
  readonly #o: GitCliOptions;
  /** One change at a time: they share the working clone. */
  readonly #lock = pLimit(1);
  readonly #remoteUrl: string;

  constructor(options: GitCliOptions) {
    this.#o = options;
    this.branch = options.branch ?? 'main';
    this.repository = redactUrl(options.url);
    // A local path is made absolute (git resolves it against the clone otherwise).
    this.#remoteUrl =
      /^[a-z][a-z0-9+.-]*:\/\//i.test(options.url) || /^[^/]+@[^:]+:/.test(options.url)
        ? options.url
        : resolve(options.url);
  }

  commitFolder(change: FolderCommit): Promise<CommitOutcome> {
    return this.#lock(async () => {
      const key = this.#key(change.trailers);
      await this.#sync();
      const existing = await this.#find(key);
      if (existing) return { commit: existing, created: false, pushAttempts: 0 };
      const folder = this.#inside(change.path);
      await rm(folder, { recursive: true, force: true });
      for (const [name, content] of Object.entries(change.files)) {
        const file = this.#inside(join(change.path, name));
        await mkdir(dirname(file), { recursive: true });
        await writeFile(file, content);
      }
      await this.#git(['add', '--all', '--', normalize(change.path)]);
      await this.#git(['commit', '--allow-empty', '--quiet', '--file', '-'], messageOf(change));
      return this.#push();
    });
  }

  revert(change: RevertCommit): Promise<CommitOutcome> {
    return this.#lock(async () => {
      const key = this.#key(change.trailers);
      await this.#sync();
      const existing = await this.#find(key);
      if (existing) return { commit: existing, created: false, pushAttempts: 0 };
      if (!/^[0-9a-f]{7,64}$/.test(change.commit))
        throw new GitopsRefusedError(`${change.commit} is not a commit id`);
      const onBranch = await this.#git(['merge-base', '--is-ancestor', change.commit, 'HEAD']).then(
        () => true,
        () => false,
      );
      if (!onBranch)
        throw new GitopsRefusedError(`commit ${change.commit} is not on ${this.repository} ${this.branch}`);
      try {
        await this.#git(['revert', '--no-commit', change.commit]);
      } catch (err) {
        await this.#git(['revert', '--abort']).catch(() => undefined);
        throw new GitopsRefusedError(
          `reverting ${change.commit.slice(0, 12)} conflicts with later changes to the branch: ${describe(err)}`,
        );
      }
      await this.#git(['commit', '--allow-empty', '--quiet', '--file', '-'], messageOf(change));
      return this.#push();
    });
  }

  #key(trailers: Trailers): string {
    const value = trailers[IDEMPOTENCY_TRAILER];
    if (!value) throw new Error(`a change needs its ${IDEMPOTENCY_TRAILER} trailer`);
    return `${IDEMPOTENCY_TRAILER}: ${value}`;
  }

  /** A path of the clone for `relative`, which must stay inside it. */
  #inside(relative: string): string {
    const root = resolve(this.#o.workDir);
    const full = resolve(root, relative);
    if (isAbsolute(relative) || !full.startsWith(root + sep) || full.split(sep).includes('.git'))
      throw new GitopsRefusedError(`path ${relative} is outside the repository`);
    return full;
  }

  /** The clone at the remote branch's tip (or an empty branch when the remote has none yet), clean. */
  async #sync(): Promise<void> {
    const dir = this.#o.workDir;
    const exists = await stat(join(dir, '.git')).then(
      () => true,
      () => false,
    );
    if (!exists) {
      await mkdir(dir, { recursive: true });
      await this.#git(['init', '--quiet']);
      await this.#git(['remote', 'add', 'origin', this.#remoteUrl]);
    } else {
      await this.#git(['remote', 'set-url', 'origin', this.#remoteUrl]);
    }
    await this.#git(['rebase', '--abort']).catch(() => undefined);
    await this.#git(['revert', '--abort']).catch(() => undefined);
    await this.#fetch();
    if (await this.#remoteHasBranch()) {
      await this.#git([
        'checkout',
        '--quiet',
        '--force',
        '-B',
        this.branch,
        `refs/remotes/origin/${this.branch}`,
      ]);
      await this.#git(['reset', '--quiet', '--hard', `refs/remotes/origin/${this.branch}`]);
    } else {
      // An empty repository: the first commit starts the branch.
      await this.#git(['symbolic-ref', 'HEAD', `refs/heads/${this.branch}`]);
      await this.#git(['update-ref', '-d', `refs/heads/${this.branch}`]).catch(() => undefined);
      await this.#git(['read-tree', '--empty']);
    }
    await this.#git(['clean', '--quiet', '-fdx']);
  }

  async #fetch(): Promise<void> {
    await this.#git([
      'fetch',
      '--quiet',
      '--prune',
      'origin',
      `+refs/heads/${this.branch}:refs/remotes/origin/${this.branch}`,
    ]).catch(async (err: GitFailure) => {
      // A remote without the branch (a new repository) answers "couldn't find remote ref".
      if (/couldn't find remote ref/i.test(err.stderr ?? '')) {
        await this.#git(['update-ref', '-d', `refs/remotes/origin/${this.branch}`]).catch(() => undefined);
        return;
      }
      throw err;
    });
  }

  async #remoteHasBranch(): Promise<boolean> {
    return this.#git([
      'rev-parse',
      '--verify',
      '--quiet',
      `refs/remotes/origin/${this.branch}^{commit}`,
    ]).then(
      () => true,
      () => false,
    );
  }

  /** The commit on the remote branch whose message carries this trailer line, if any. */
  async #find(trailerLine: string): Promise<string | undefined> {
    if (!(await this.#remoteHasBranch())) return undefined;
    const out = await this.#git([
      'log',
      '--format=%H',
      '--fixed-strings',
      `--grep=${trailerLine}`,
      `refs/remotes/origin/${this.branch}`,
    ]);
    return out
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim();
  }

  /** Pushes HEAD to the branch; a refusal because the branch moved is rebased and pushed again. */
  async #push(): Promise<CommitOutcome> {
    const max = this.#o.maxPushAttempts ?? 5;
    for (let attempt = 1; ; attempt++) {
      await this.#o.beforePush?.(attempt);
      try {
        await this.#git(['push', '--quiet', '--porcelain', 'origin', `HEAD:refs/heads/${this.branch}`]);
        const commit = (await this.#git(['rev-parse', 'HEAD'])).trim();
        return { commit, created: true, pushAttempts: attempt };
      } catch (err) {
        const text = `${(err as GitFailure).stdout ?? ''}\n${(err as GitFailure).stderr ?? ''}`;
        const moved = /non-fast-forward|fetch first|\[rejected\]|stale info|cannot lock ref/i.test(text);
        if (!moved) {
          if (/\[remote rejected\]|pre-receive hook declined|protected branch/i.test(text))
            throw new GitopsRefusedError(`the push was refused: ${describe(err)}`);
          throw err;
        }
        if (attempt >= max)
          throw new Error(`the branch ${this.branch} kept moving: ${max} pushes were refused`);
        await this.#fetch();
        try {
          await this.#git(['rebase', '--quiet', `refs/remotes/origin/${this.branch}`]);
        } catch (rebaseError) {
          await this.#git(['rebase', '--abort']).catch(() => undefined);
          throw new GitopsRefusedError(
            `the branch ${this.branch} moved and the change does not rebase on it: ${describe(rebaseError)}`,
          );
        }
      }
    }
  }

  async #git(args: readonly string[], stdin?: string): Promise<string> {
    const o = this.#o;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GIT_TERMINAL_PROMPT: '0',
      GIT_AUTHOR_NAME: o.authorName ?? 'Phoenix',
      GIT_AUTHOR_EMAIL: o.authorEmail ?? 'phoenix@localhost',
      GIT_COMMITTER_NAME: o.authorName ?? 'Phoenix',
      GIT_COMMITTER_EMAIL: o.authorEmail ?? 'phoenix@localhost',
    };
    if (o.token !== undefined) {
      // A helper that answers from this child's environment; an empty helper first drops any other.
      env.GIT_CONFIG_COUNT = '2';
      env.GIT_CONFIG_KEY_0 = 'credential.helper';
      env.GIT_CONFIG_VALUE_0 = '';
      env.GIT_CONFIG_KEY_1 = 'credential.helper';
      env.GIT_CONFIG_VALUE_1 =
        '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" "$PHOENIX_GIT_USERNAME" "$PHOENIX_GIT_PASSWORD"; }; f';
      env.PHOENIX_GIT_USERNAME = o.username ?? 'x-access-token';
      env.PHOENIX_GIT_PASSWORD = o.token;
    }
    try {
      const child = run('git', [...args], {
        cwd: o.workDir,
        env,
        timeout: o.timeoutMs ?? 120_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      // A git that exits before reading its input (a refusal) closes the pipe: not an error of ours.
      child.child.stdin?.on('error', () => undefined);
      if (stdin !== undefined) child.child.stdin?.end(stdin);
      else child.child.stdin?.end();
      const { stdout } = await child;
      return stdout;
    } catch (err) {
      const e = err as GitFailure;
      const failure = new Error(
        `git ${args[0]}: ${redactUrl((e.stderr || e.message || '').trim())}`,
      ) as GitFailure;
      Object.assign(failure, {
        stderr: redactUrl(e.stderr ?? ''),
        stdout: redactUrl(e.stdout ?? ''),
        code: e.code,
      });
      throw failure;
    }
  }
}

const describe = (err: unknown): string =>
  (err instanceof Error ? err.message : String(err)).split('\n').slice(0, 3).join(' ').slice(0, 500);

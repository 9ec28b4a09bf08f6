import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { GitCliRepository, redactUrl } from '../src/adapters/git-gitops.js';
import { GitopsRefusedError, IDEMPOTENCY_TRAILER } from '../src/application/ports/gitops.js';

/**
 * The GitOps repository against real git repositories: a bare repository as the remote, a clone of
 * its own for Phoenix, and another clone standing for a colleague (or ArgoCD's image updater) who
 * pushes in between.
 */
const run = promisify(execFile);
const git = async (cwd: string, ...args: string[]) =>
  (
    await run('git', args, {
      cwd,
      env: {
        ...process.env,
        GIT_AUTHOR_NAME: 'Colleague',
        GIT_AUTHOR_EMAIL: 'c@example.com',
        GIT_COMMITTER_NAME: 'Colleague',
        GIT_COMMITTER_EMAIL: 'c@example.com',
      },
    })
  ).stdout.trim();

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'phoenix-gitops-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let n = 0;
/** A fresh bare remote with one commit on main, and a colleague's clone of it. */
async function remote(): Promise<{ bare: string; colleague: string }> {
  n++;
  const bare = join(root, `remote-${n}.git`);
  await run('git', ['init', '--quiet', '--bare', '--initial-branch=main', bare]);
  const colleague = join(root, `colleague-${n}`);
  await run('git', ['clone', '--quiet', bare, colleague]);
  await git(colleague, 'checkout', '--quiet', '-B', 'main');
  await writeFile(join(colleague, 'README.md'), '# fleet config\n');
  await git(colleague, 'add', '.');
  await git(colleague, 'commit', '--quiet', '-m', 'initial');
  await git(colleague, 'push', '--quiet', 'origin', 'main');
  return { bare, colleague };
}

const change = (command: string, files: Record<string, string>, path = 'targets/ns/pool=a') => ({
  path,
  files,
  subject: 'Promote topk',
  body: 'evidence',
  trailers: { 'Phoenix-Experiment': 'e1', 'Phoenix-Step': 'promote', [IDEMPOTENCY_TRAILER]: command },
});

const log = (bare: string) => git(bare, 'log', '--format=%s', 'main');

describe('GitCliRepository', () => {
  it('commits a folder, pushes it, and finds it again instead of committing twice', async () => {
    const { bare } = await remote();
    const repo = new GitCliRepository({ url: bare, workDir: join(root, `work-${n}`) });
    const first = await repo.commitFolder(change('c-1', { 'collector.yaml': 'a: 1\n', 'README.md': 'x\n' }));
    assert.equal(first.created, true);
    assert.equal(await git(bare, 'rev-parse', 'main'), first.commit);
    const message = await git(bare, 'log', '-1', '--format=%B', 'main');
    assert.match(message, /^Phoenix-Command: c-1$/m);
    assert.match(message, /^Phoenix-Experiment: e1$/m);
    assert.equal(await git(bare, 'show', 'main:targets/ns/pool=a/collector.yaml'), 'a: 1');
    // A redelivered command: the same commit, nothing new on the branch.
    const again = await repo.commitFolder(change('c-1', { 'collector.yaml': 'a: 1\n' }));
    assert.deepEqual([again.commit, again.created], [first.commit, false]);
    assert.deepEqual((await log(bare)).split('\n'), ['Promote topk', 'initial']);
  });

  it('a concurrent push between fetch and push: rebased and pushed again, never forced', async () => {
    const { bare, colleague } = await remote();
    let moved = false;
    const repo = new GitCliRepository({
      url: bare,
      workDir: join(root, `work-${n}`),
      beforePush: async (attempt) => {
        if (attempt !== 1 || moved) return;
        moved = true;
        await writeFile(join(colleague, 'other.txt'), 'someone else\n');
        await git(colleague, 'add', '.');
        await git(colleague, 'commit', '--quiet', '-m', 'a concurrent change');
        await git(colleague, 'push', '--quiet', 'origin', 'main');
      },
    });
    const outcome = await repo.commitFolder(change('c-2', { 'collector.yaml': 'b: 2\n' }));
    assert.equal(outcome.pushAttempts, 2);
    // Both changes are on the branch, the colleague's first: nothing was overwritten.
    assert.deepEqual((await log(bare)).split('\n'), ['Promote topk', 'a concurrent change', 'initial']);
    assert.equal(await git(bare, 'rev-parse', 'main'), outcome.commit);
    assert.equal(await git(bare, 'show', 'main:other.txt'), 'someone else');
  });

  it('a concurrent change that conflicts is refused, and the remote keeps it', async () => {
    const { bare, colleague } = await remote();
    const repo = new GitCliRepository({
      url: bare,
      workDir: join(root, `work-${n}`),
      beforePush: async (attempt) => {
        if (attempt !== 1) return;
        await mkdir(join(colleague, 'targets/ns/pool=a'), { recursive: true });
        await writeFile(join(colleague, 'targets/ns/pool=a/README.md'), '# written by a colleague\n');
        await git(colleague, 'add', '.');
        await git(colleague, 'commit', '--quiet', '-m', 'conflicting');
        await git(colleague, 'push', '--quiet', 'origin', 'main');
      },
    });
    await assert.rejects(
      repo.commitFolder(change('c-3', { 'README.md': '# phoenix\n' })),
      GitopsRefusedError,
    );
    assert.equal((await log(bare)).split('\n')[0], 'conflicting');
  });

  it('reverts a commit (idempotently) and refuses one that is not on the branch', async () => {
    const { bare } = await remote();
    const repo = new GitCliRepository({ url: bare, workDir: join(root, `work-${n}`) });
    const promoted = await repo.commitFolder(change('c-4', { 'collector.yaml': 'c: 3\n' }));
    const revert = {
      commit: promoted.commit,
      subject: 'Revert the promotion',
      body: `This reverts commit ${promoted.commit}.`,
      trailers: { 'Phoenix-Step': 'rollback', [IDEMPOTENCY_TRAILER]: 'r-4' },
    };
    const reverted = await repo.revert(revert);
    assert.equal(reverted.created, true);
    assert.equal(await git(bare, 'rev-parse', 'main'), reverted.commit);
    await assert.rejects(git(bare, 'show', 'main:targets/ns/pool=a/collector.yaml'));
    const again = await repo.revert(revert);
    assert.deepEqual([again.commit, again.created], [reverted.commit, false]);
    await assert.rejects(
      repo.revert({ ...revert, commit: 'deadbeefdeadbeef', trailers: { [IDEMPOTENCY_TRAILER]: 'r-5' } }),
      GitopsRefusedError,
    );
  });

  it('starts the branch in an empty repository', async () => {
    const bare = join(root, 'empty.git');
    await run('git', ['init', '--quiet', '--bare', bare]);
    const repo = new GitCliRepository({ url: bare, workDir: join(root, 'work-empty'), branch: 'gitops' });
    const outcome = await repo.commitFolder(change('c-6', { 'a.yaml': 'a\n' }));
    assert.equal(await git(bare, 'rev-parse', 'gitops'), outcome.commit);
  });

  it('keeps paths inside the clone, and credentials out of what it shows', async () => {
    const { bare } = await remote();
    const repo = new GitCliRepository({ url: bare, workDir: join(root, `work-${n}`) });
    await assert.rejects(
      repo.commitFolder(change('c-7', { 'a.yaml': 'a\n' }, '../escape')),
      GitopsRefusedError,
    );
    assert.equal(
      redactUrl('https://bob:s3cret@git.example.com/fleet.git'),
      'https://***@git.example.com/fleet.git',
    );
    const withToken = new GitCliRepository({
      url: 'https://bob:s3cret@127.0.0.1:9/fleet.git',
      workDir: join(root, 'work-token'),
      token: 'tok3n',
      timeoutMs: 20_000,
    });
    assert.equal(withToken.repository, 'https://***@127.0.0.1:9/fleet.git');
    const err = await withToken.commitFolder(change('c-8', { 'a.yaml': 'a\n' })).catch((e: Error) => e);
    assert.ok(err instanceof Error);
    assert.doesNotMatch(err.message, /s3cret|tok3n/);
    // The token given apart from the URL is written nowhere.
    assert.doesNotMatch(await readFile(join(root, 'work-token', '.git', 'config'), 'utf8'), /tok3n/);
  });
});

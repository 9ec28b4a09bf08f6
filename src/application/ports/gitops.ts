/**
 * The GitOps repository promotions commit to (PHOENIX_GITOPS_REPO): a Git repository that ArgoCD or
 * Flux watches. Every change is a commit pushed to one branch (fetch, rebase, push; retried on a
 * concurrent change, never forced), and carries an idempotency trailer: a change asked for again (a
 * redelivered command) finds its commit on the branch instead of committing twice.
 */

/** Trailer lines (`Key: value`) at the end of a commit message. */
export type Trailers = Readonly<Record<string, string>>;

export interface FolderCommit {
  /** The folder (relative to the repository root) whose content is replaced by `files`. */
  readonly path: string;
  /** File name (relative to `path`) → content. */
  readonly files: Readonly<Record<string, string>>;
  readonly subject: string;
  readonly body: string;
  /** Must include IDEMPOTENCY_TRAILER: the change's identity on the branch. */
  readonly trailers: Trailers;
}

export interface RevertCommit {
  /** The commit to revert (it must be on the branch). */
  readonly commit: string;
  readonly subject: string;
  readonly body: string;
  readonly trailers: Trailers;
}

export interface CommitOutcome {
  /** The commit on the branch (pushed). */
  readonly commit: string;
  /** False when the commit was found on the branch already (a repeated request). */
  readonly created: boolean;
  /** Push attempts it took (a concurrent change to the branch costs one more). */
  readonly pushAttempts: number;
}

export interface GitopsRepository {
  /** The repository as shown to users (a URL without credentials, or a path). */
  readonly repository: string;
  readonly branch: string;
  /** Replaces the folder's content with `files`, commits and pushes; idempotent by the trailer. */
  commitFolder(change: FolderCommit): Promise<CommitOutcome>;
  /** Reverts a commit of the branch, commits and pushes the revert; idempotent by the trailer. */
  revert(change: RevertCommit): Promise<CommitOutcome>;
}

/** The trailer that identifies a change: the id of the command that asked for it. */
export const IDEMPOTENCY_TRAILER = 'Phoenix-Command';

/**
 * A change the repository refuses for a reason trying again will not change: a conflict the rebase or
 * the revert cannot resolve, a commit that is not on the branch, a push refused by a hook. The worker
 * answers it at once instead of retrying.
 */
export class GitopsRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GitopsRefusedError';
  }
}

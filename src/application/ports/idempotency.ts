/**
 * Idempotency keys, shared by every transport: a key names one command of one actor. A request claims
 * its key with the hash of its command before the command runs (atomically: of racing requests one
 * claims, the others see its hash), then completes the claim with the command's outcome, or releases
 * it when the command failed, so that the key serves the next request as if never sent.
 */
export interface IdempotencyStore {
  claim(actor: string, key: string, requestHash: string): Promise<IdempotencyClaim>;
  /**
   * Stores the outcome of the key's command. The first outcome stays: a concurrent run of the same
   * command that finishes later changes nothing, and another request's claim is never overwritten.
   */
  complete(actor: string, key: string, requestHash: string, outcome: StoredOutcome): Promise<void>;
  /** Gives up a claim (still unanswered, with this hash) whose command failed. */
  release(actor: string, key: string, requestHash: string): Promise<void>;
}

/**
 * What claiming a key found. `claimed`: this request now holds the key and runs the command, then
 * completes or releases it. `held`: the key already belongs to the command with `requestHash`; with
 * `outcome` when that command has finished, without while it runs (or when it died before finishing).
 */
export type IdempotencyClaim =
  | { readonly kind: 'claimed' }
  | { readonly kind: 'held'; readonly requestHash: string; readonly outcome?: StoredOutcome };

/** The answer to a command, as kept for its key: what a transport needs to answer a retry. */
export interface StoredOutcome {
  readonly experimentId: string;
  /** The experiment's status after the command (`unknown` when there is none). */
  readonly state: string;
  readonly version: number;
  readonly position: string;
}

import { classify, exponential, type Backoff, type RetryBudgetPolicy } from 'keel';
import type { Clock } from 'keel';
import type { ClaimRef, QueueRow, QueueStore } from '@keel/store';
import type { CompletionCommitter } from './completions.js';
import { endsAsDeadLetter } from './failure-decision.js';
import { DEFAULT_RECONNECT, isStoreUnavailable, type StoreHealth } from './store-health.js';

/** What became of a handled item: completed, failed (retried or dead), dead-lettered, or refused as stale. */
export type Outcome = 'completed' | 'failed' | 'dead' | 'stale';

/** How failed items are retried, and how writes wait out an unavailable store. */
export interface RetrySettings {
  /** Delays between attempts of a failing item. */
  backoff: Backoff;
  /** Spent budget: failed items wait `maxDelayMs` instead of their backoff delay. */
  budget: RetryBudgetPolicy | undefined;
  maxDelayMs: number;
  /** Waits between writes while the store is unavailable. */
  reconnect: Backoff;
}

/** Defaults of `ProcessOptions`: exponential from 100 ms to 30 s with full jitter, no budget. */
export const DEFAULT_RETRY: RetrySettings = {
  backoff: exponential({ initialMs: 100, maxMs: 30_000 }),
  budget: undefined,
  maxDelayMs: 30_000,
  reconnect: DEFAULT_RECONNECT,
};

/** The delay before attempt `attempt + 1` of a backoff (walks it `attempt` steps). */
function delayAfter(backoff: Backoff, attempt: number): number {
  let b = backoff;
  let delayMs = 0;
  for (let i = 0; i < Math.max(1, attempt); i++) ({ delayMs, next: b } = b.next());
  return delayMs;
}

/**
 * Writes what became of each handled item: a completion (group-committed), or a failure that is
 * rescheduled after its backoff (or `maxDelayMs` when the retry budget is spent) or dead-lettered.
 * Writes retry while the store is unavailable, until the close deadline; one refused because the
 * lease was lost counts as stale.
 */
export class OutcomeWriter {
  /** Counters of this instance since it opened, for `Queue.stats`. */
  readonly totals = { completed: 0, failed: 0, dead: 0, stale: 0 };
  /** Told of each counted outcome (metrics). */
  onOutcome: ((outcome: Outcome) => void) | undefined;
  /** Set when workers start. */
  settings: RetrySettings = DEFAULT_RETRY;
  /** Writes stop retrying an unavailable store after this (Date.now() ms); set when the queue closes. */
  closeDeadline = Number.POSITIVE_INFINITY;

  constructor(
    private readonly store: QueueStore,
    private readonly clock: Clock,
    private readonly health: StoreHealth,
    private readonly completions: CompletionCommitter,
  ) {}

  /** A handler is about to run the item's first attempt: it earns the retry budget a deposit. */
  started(row: QueueRow): void {
    if (row.attempts === 1) this.settings.budget?.deposit();
  }

  /** The handler resolved: completes the item. */
  async succeeded(row: QueueRow, ref: ClaimRef): Promise<void> {
    const done = await this.persist(() => this.completions.complete(ref));
    if (done === true) {
      this.count('completed');
      if (row.attempts > 1) this.settings.budget?.refund();
    } else if (done === false) this.count('stale');
  }

  /**
   * The handler threw `error`: reschedules the item, or dead-letters it when its attempts are used
   * up or the error is a KeelError that is not retryable.
   */
  async failed(row: QueueRow, ref: ClaimRef, error: unknown): Promise<void> {
    const { backoff, budget, maxDelayMs } = this.settings;
    this.count('failed');
    const e = classify(error);
    const dead = endsAsDeadLetter(e, row.attempts, row.maxAttempts);
    const now = this.clock.now();
    let runAt: number | null = null;
    if (!dead)
      runAt = now + (budget && !budget.tryWithdraw(e) ? maxDelayMs : delayAfter(backoff, row.attempts));
    const failed = await this.persist(() =>
      this.store.fail(ref, { code: e.code, message: e.message, attempt: row.attempts, at: now }, runAt, now),
    );
    if (failed === true && dead) this.count('dead');
    if (failed === false) this.count('stale');
  }

  private count(outcome: Outcome): void {
    this.totals[outcome]++;
    this.onOutcome?.(outcome);
  }

  /**
   * Runs a store write for a claimed item, retrying while the store is unavailable (until the
   * close deadline). Resolves with the write's answer, or undefined when it gave up: the lease
   * then expires and the item is claimed again.
   */
  private async persist(write: () => Promise<boolean>): Promise<boolean | undefined> {
    let reconnect = this.settings.reconnect;
    for (;;) {
      try {
        const answer = await write();
        this.health.observe();
        return answer;
      } catch (err) {
        this.health.observe(err);
        if (!isStoreUnavailable(err) || Date.now() > this.closeDeadline) return undefined;
        const step = reconnect.next();
        reconnect = step.next;
        await this.clock.sleep(step.delayMs);
      }
    }
  }
}

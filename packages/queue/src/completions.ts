import type { Clock } from 'keel';
import type { ClaimRef, QueueRow, QueueStore } from '@keel/store';

interface PendingCompletion {
  ref: ClaimRef;
  resolve: (done: boolean) => void;
  reject: (err: unknown) => void;
}

/**
 * Completions of a queue's workers, committed in groups: those that arrive while one commit runs
 * go together in the next, and on a store that can complete and claim in one transaction they
 * ride along with the workers' next claim instead of a commit of their own.
 */
export class CompletionCommitter {
  private waiting: PendingCompletion[] = [];
  private scheduled = false;

  constructor(
    private readonly store: QueueStore,
    private readonly name: string,
    private readonly clock: Clock,
    /** True while the worker loop claims: completions then wait one more turn for its next claim. */
    private readonly claimsRunning: () => boolean,
  ) {}

  /**
   * Completes `ref` together with the other completions of this tick (one transaction); resolves
   * with false when the lease had been lost.
   */
  complete(ref: ClaimRef): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.waiting.push({ ref, resolve, reject });
      this.schedule();
    });
  }

  /** Claims up to `capacity` items, committing the completions waiting so far in the same transaction. */
  claim(capacity: number, leaseMs: number): Promise<QueueRow[]> {
    const batch = this.waiting;
    if (!this.store.completeAndClaim || batch.length === 0)
      return this.store.claim(this.name, capacity, leaseMs, this.clock.now());
    this.waiting = [];
    return this.store
      .completeAndClaim(
        batch.map((c) => c.ref),
        this.name,
        capacity,
        leaseMs,
        this.clock.now(),
      )
      .then(
        ({ completed, claimed }) => {
          for (const c of batch) c.resolve(completed.has(c.ref.id));
          return claimed;
        },
        (err: unknown) => {
          for (const c of batch) c.reject(err);
          throw err;
        },
      );
  }

  /** One completion commit at a time (group commit, as for enqueues). */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // While workers run on a store that can complete and claim at once, wait one more turn: the
    // worker loop's next claim usually takes these completions into its own commit.
    const later = (fn: () => void): void => {
      if (this.claimsRunning() && this.store.completeAndClaim) setImmediate(() => setImmediate(fn));
      else setImmediate(fn);
    };
    later(() => {
      const batch = this.waiting;
      this.waiting = [];
      if (batch.length === 0) {
        // A claim took them into its transaction.
        this.scheduled = false;
        return;
      }
      this.store
        .complete(
          batch.map((c) => c.ref),
          this.clock.now(),
        )
        .then(
          (done) => {
            for (const c of batch) c.resolve(done.has(c.ref.id));
          },
          (err: unknown) => {
            for (const c of batch) c.reject(err);
          },
        )
        .finally(() => {
          this.scheduled = false;
          if (this.waiting.length > 0) this.schedule();
        });
    });
  }
}

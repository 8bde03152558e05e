import type {
  KeelError,
  AnyPolicy,
  BreakerState,
  CircuitBreakerPolicy,
  PolicyContext,
  Clock,
  TimerHandle,
} from 'keel';
import { decideFailure, endsAsDeadLetter } from './failure-decision.js';
import type { PartitionBacklog } from './partition-backlog.js';

/** A queued item as the replayer sees it (what {@link Queue.process} hands a handler). */
export interface ReplayJob<P> {
  id: number | string;
  payload: P;
  attempt: number;
  partitionKey: string | null;
  signal: AbortSignal;
}

/**
 * The part of a queue outage mode uses: a keel `Queue` (SQLite or PostgreSQL) fits. Methods may
 * answer synchronously or with a promise.
 */
export interface ReplayQueue<P> {
  enqueue(
    payload: P,
    options?: { idempotencyKey?: string; partitionKey?: string; maxAttempts?: number },
  ): Promise<{ id: number | string; duplicate: boolean }>;
  process(
    handler: (job: ReplayJob<P>) => Promise<void>,
    options?: { concurrency?: number; leaseMs?: number },
  ): unknown;
  pause(): unknown;
  resume(): unknown;
  stats(): { pending: number; active: number } | Promise<{ pending: number; active: number }>;
}

/** What a {@link Replayer} is given by its outage queue, with defaults already applied. */
export interface ReplayerSettings<P, R> {
  queue: ReplayQueue<P>;
  policy: AnyPolicy;
  operation: (payload: P, ctx: PolicyContext) => Promise<R>;
  /** The breaker whose state gates replay; undefined: the first circuit breaker found in `policy`. */
  breaker: CircuitBreakerPolicy | undefined;
  shouldQueue: (error: KeelError) => boolean;
  backlog: PartitionBacklog;
  clock: Clock;
  concurrency: number;
  leaseMs: number;
  maxAttempts: number;
  retryEveryMs: number;
  checkEveryMs: number;
  /** Told how each replay attempt ended (metrics). */
  onReplay?: (outcome: 'replayed' | 'waited' | 'failed') => void;
}

function findBreaker(policy: AnyPolicy): CircuitBreakerPolicy | undefined {
  if (policy.kind === 'circuitBreaker') return policy as unknown as CircuitBreakerPolicy;
  const inner = (policy as { policies?: readonly AnyPolicy[] }).policies;
  for (const p of inner ?? []) {
    const found = findBreaker(p);
    if (found) return found;
  }
  return undefined;
}

const blocked = (state: BreakerState): boolean => state === 'open' || state === 'isolated';

/**
 * Drains an outage queue: processes its items through the operation and pipeline, pauses the
 * queue while the breaker is open or isolated and resumes it on half-open (so the first replay is
 * the probe), holds an item whose replay finds the dependency still unavailable, and checks
 * periodically for an expired open breaker and an emptied queue.
 */
export class Replayer<P, R> {
  private readonly settings: ReplayerSettings<P, R>;
  private readonly breaker: CircuitBreakerPolicy | undefined;
  private readonly changeWaiters = new Set<() => void>();
  private paused = false;
  private closed = false;
  private checkTimer: TimerHandle | undefined;
  private disposeListener: (() => void) | undefined;
  private readonly counters = { replayed: 0, replayWaits: 0 };

  constructor(settings: ReplayerSettings<P, R>) {
    this.settings = settings;
    this.breaker = settings.breaker ?? findBreaker(settings.policy);
  }

  /** Reads what the queue held at start, follows the breaker and starts processing and checking. */
  async start(): Promise<void> {
    const { queue, backlog } = this.settings;
    backlog.observeStart(await queue.stats());
    if (this.breaker) {
      this.disposeListener = this.breaker.on('stateChange', ({ to }) => {
        this.follow(to);
      });
      this.follow(this.breaker.state);
    }
    await queue.process((job) => this.replay(job), {
      concurrency: Math.max(1, this.settings.concurrency),
      leaseMs: this.settings.leaseMs,
    });
    this.scheduleCheck();
  }

  /** Replays that succeeded (`replayed`) and that found the dependency still unavailable (`replayWaits`). */
  stats(): { replayed: number; replayWaits: number } {
    return { ...this.counters };
  }

  /** Stops following the breaker and checking, and wakes replays waiting for a change. */
  close(): void {
    this.closed = true;
    this.checkTimer?.cancel();
    this.disposeListener?.();
    for (const wake of [...this.changeWaiters]) wake();
  }

  /** The queue's handler: replays one item, holding it while the dependency is still unavailable. */
  private async replay(job: ReplayJob<P>): Promise<void> {
    const { policy, operation, backlog } = this.settings;
    for (;;) {
      while (this.breaker && blocked(this.breaker.state) && !job.signal.aborted)
        await this.nextChange(job.signal);
      try {
        await policy.execute((ctx) => operation(job.payload, ctx), { signal: job.signal });
        this.counters.replayed++;
        this.settings.onReplay?.('replayed');
        backlog.settled(job.partitionKey, job.id);
        return;
      } catch (err) {
        const decision = decideFailure(err, job.signal, this.settings.shouldQueue);
        if (decision.action === 'throw') {
          // An answer, not an outage: the queue retries it with backoff or dead-letters it, as it
          // would any failing item. A dead item no longer holds its partition back.
          this.settings.onReplay?.('failed');
          const dead = endsAsDeadLetter(decision.error, job.attempt, this.settings.maxAttempts);
          if (dead && !job.signal.aborted) backlog.settled(job.partitionKey, job.id);
          throw err;
        }
        // Still unavailable: keep the item claimed (its partition waits behind it, no attempt is
        // spent) and try again on the breaker's next state change or after retryEveryMs.
        this.counters.replayWaits++;
        this.settings.onReplay?.('waited');
        await this.nextChange(job.signal, this.settings.retryEveryMs);
      }
    }
  }

  private follow(state: BreakerState): void {
    for (const wake of [...this.changeWaiters]) wake();
    const shouldPause = blocked(state);
    if (shouldPause === this.paused) return;
    this.paused = shouldPause;
    if (shouldPause) void this.settings.queue.pause();
    else void this.settings.queue.resume();
  }

  /** Resolves on the breaker's next state change, after `ms` (default: the check period), or on abort. */
  private nextChange(signal: AbortSignal, ms = this.settings.checkEveryMs): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        timer.cancel();
        this.changeWaiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = this.settings.clock.setTimer(ms, done);
      this.changeWaiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  private scheduleCheck(): void {
    if (this.closed) return;
    this.checkTimer = this.settings.clock.setTimer(this.settings.checkEveryMs, () => {
      void this.check().finally(() => {
        this.scheduleCheck();
      });
    });
  }

  /** Moves an expired open breaker to half-open (reading `state` does) and notices an emptied queue. */
  private async check(): Promise<void> {
    if (this.breaker) this.follow(this.breaker.state);
    try {
      await this.settings.backlog.forgetIfDrained(() => this.settings.queue.stats());
    } catch {
      // The store is unreachable: keep queuing partitioned calls until it answers again.
    }
  }
}

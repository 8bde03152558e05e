import { classify, keelError, type KeelError } from '../errors/index.js';
import {
  countsAsFailure,
  type AnyPolicy,
  type BreakerState,
  type CircuitBreakerPolicy,
  type PolicyContext,
} from '../policy/index.js';
import { systemClock, type Clock, type TimerHandle } from '../time/index.js';

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

/** What a call of {@link OutageQueue.runOrQueue} resolves with. */
export type RunOutcome<R> =
  | { status: 'done'; value: R }
  | {
      status: 'queued';
      /** The queue item; with an idempotency key seen before, the first item's id. */
      id: number | string;
      duplicate: boolean;
      /** `unavailable`: this call failed as below; `backlog`: its partition still had queued items. */
      reason: 'unavailable' | 'backlog';
      /** The failure that made the dependency count as unavailable (reason `unavailable`). */
      error?: KeelError;
    };

/** Options of one call of {@link OutageQueue.runOrQueue}. */
export interface RunOrQueueOptions {
  /** Stored with the item: a second queued call with the same key is the same item. */
  idempotencyKey?: string;
  /** Calls with the same key run, queue and replay in call order, one at a time. */
  partitionKey?: string;
  signal?: AbortSignal;
}

/** Options of {@link createOutageQueue}. */
export interface OutageQueueOptions<P, R> {
  /** Where unavailable calls wait; it is not closed by {@link OutageQueue.close}. */
  queue: ReplayQueue<P>;
  /** Runs every call and every replay: typically `pipeline(retry(…), circuitBreaker(…), timeout(…))`. */
  policy: AnyPolicy;
  /** The call to the dependency. It must be idempotent: a replay can repeat a call whose answer was lost. */
  operation: (payload: P, ctx: PolicyContext) => Promise<R>;
  /** The breaker whose state gates replay (default: the first circuit breaker found in `policy`). */
  breaker?: CircuitBreakerPolicy;
  /**
   * Whether a failure means "unavailable, queue it" (default {@link isUnavailable}: an open breaker,
   * retries exhausted on a transient error, a transient error); other failures are thrown to the caller.
   */
  shouldQueue?: (error: KeelError) => boolean;
  /** Replays running at once, at most one per partition (default 4). */
  concurrency?: number;
  /** Lease of a claimed item while it is replayed (default 30 000). */
  leaseMs?: number;
  /** Attempts of a queued item that fails for a reason other than unavailability (default 5). */
  maxAttempts?: number;
  /** While the dependency is still unavailable, wait this long (or until the breaker changes state) before replaying again (default 1 000). */
  retryEveryMs?: number;
  /** Period of the check that moves an expired open breaker to half-open and notices an emptied queue (default 1 000). */
  checkEveryMs?: number;
  clock?: Clock;
}

/** Counters of an {@link OutageQueue}. */
export interface OutageQueueStats {
  /** Calls answered by the dependency directly. */
  done: number;
  /** Calls queued because the dependency was unavailable. */
  queuedUnavailable: number;
  /** Calls queued behind earlier queued calls of their partition. */
  queuedBacklog: number;
  /** Queued items replayed successfully. */
  replayed: number;
  /** Replays that found the dependency still unavailable and waited. */
  replayWaits: number;
  /** Partitions with queued items this process knows of. */
  partitionsWithBacklog: number;
  /** True until the queue was seen empty when it held items at start. */
  startupBacklog: boolean;
}

const LOCAL_UNAVAILABLE = new Set(['CIRCUIT_OPEN', 'BULKHEAD_FULL', 'THROTTLED']);

/**
 * The default of `shouldQueue`: an open or isolated breaker, a full bulkhead or a throttle, retries
 * (or the retry budget) exhausted on a transient error, or a transient error itself. A caller's
 * abort and answers such as a 404 or a constraint violation are not.
 */
export function isUnavailable(error: KeelError): boolean {
  return LOCAL_UNAVAILABLE.has(error.code) || countsAsFailure(error);
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

function validate<P, R>(options: OutageQueueOptions<P, R>): void {
  for (const key of ['queue', 'policy', 'operation'] as const) {
    if (!options[key]) throw keelError('INVALID_CONFIG', `createOutageQueue: option ${key} is required`);
  }
  for (const key of ['concurrency', 'leaseMs', 'maxAttempts', 'retryEveryMs', 'checkEveryMs'] as const) {
    const v = options[key];
    if (v !== undefined && !(Number.isFinite(v) && v > 0))
      throw keelError(
        'INVALID_CONFIG',
        `createOutageQueue: ${key} must be a positive number, got ${String(v)}`,
      );
  }
}

const blocked = (state: BreakerState): boolean => state === 'open' || state === 'isolated';

/**
 * Outage mode: {@link OutageQueue.runOrQueue} runs an operation through a policy pipeline; when
 * the dependency is unavailable the payload is queued durably and the caller told so. A replayer
 * drains the queue through the same operation and pipeline once the breaker lets calls through,
 * in order per partition, and never while the breaker is open.
 */
export class OutageQueue<P, R> {
  private readonly queue: ReplayQueue<P>;
  private readonly policy: AnyPolicy;
  private readonly operation: (payload: P, ctx: PolicyContext) => Promise<R>;
  private readonly breaker: CircuitBreakerPolicy | undefined;
  private readonly shouldQueue: (error: KeelError) => boolean;
  private readonly clock: Clock;
  private readonly options: OutageQueueOptions<P, R>;
  /** Per partition: ids of items this instance queued that are not yet replayed or dead. */
  private readonly backlog = new Map<string, Set<string>>();
  /** Per partition: the last call's settlement, so calls of a partition run in call order. */
  private readonly tails = new Map<string, Promise<unknown>>();
  private readonly changeWaiters = new Set<() => void>();
  private startupBacklog = false;
  private enqueuesInFlight = 0;
  private enqueueGeneration = 0;
  private paused = false;
  private starting: Promise<void> | undefined;
  private closed = false;
  private checkTimer: TimerHandle | undefined;
  private disposeListener: (() => void) | undefined;
  private readonly counters = {
    done: 0,
    queuedUnavailable: 0,
    queuedBacklog: 0,
    replayed: 0,
    replayWaits: 0,
  };

  /** @throws KeelError `INVALID_CONFIG` naming the option that is missing or out of range. */
  constructor(options: OutageQueueOptions<P, R>) {
    validate(options);
    this.options = options;
    this.queue = options.queue;
    this.policy = options.policy;
    this.operation = options.operation;
    this.breaker = options.breaker ?? findBreaker(options.policy);
    this.shouldQueue = options.shouldQueue ?? isUnavailable;
    this.clock = options.clock ?? systemClock;
  }

  /**
   * Starts the replayer: reads whether the queue holds items from before (then every partitioned
   * call queues until it has drained), follows the breaker and starts processing. The first
   * `runOrQueue` starts it too; call it at start-up so a backlog left by a previous run replays
   * before any new call.
   */
  start(): Promise<void> {
    this.starting ??= this.begin();
    return this.starting;
  }

  private async begin(): Promise<void> {
    const s = await this.queue.stats();
    this.startupBacklog = s.pending + s.active > 0;
    if (this.breaker) {
      this.disposeListener = this.breaker.on('stateChange', ({ to }) => {
        this.follow(to);
      });
      this.follow(this.breaker.state);
    }
    await this.queue.process((job) => this.replay(job), {
      concurrency: Math.max(1, this.options.concurrency ?? 4),
      leaseMs: this.options.leaseMs ?? 30_000,
    });
    this.scheduleCheck();
  }

  /**
   * Runs `operation(payload)` through the policy. Resolves `{ status: 'done', value }`, or
   * `{ status: 'queued', id }` once the payload is durable when the dependency is unavailable or
   * the partition has queued items. Throws what the operation threw when it is not an
   * unavailability (see `shouldQueue`), and the queue's error when queuing fails too.
   */
  runOrQueue(payload: P, options: RunOrQueueOptions = {}): Promise<RunOutcome<R>> {
    const key = options.partitionKey;
    if (key === undefined) return this.runOne(payload, options);
    const previous = this.tails.get(key) ?? Promise.resolve();
    const call = previous.then(() => this.runOne(payload, options));
    const tail = call.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return call;
  }

  /** Counters for metrics and health. */
  stats(): OutageQueueStats {
    return {
      ...this.counters,
      partitionsWithBacklog: this.backlog.size,
      startupBacklog: this.startupBacklog,
    };
  }

  /** Stops following the breaker and checking; the queue itself is closed by its owner (after this). */
  close(): void {
    this.closed = true;
    this.checkTimer?.cancel();
    this.disposeListener?.();
    for (const wake of [...this.changeWaiters]) wake();
  }

  private async runOne(payload: P, options: RunOrQueueOptions): Promise<RunOutcome<R>> {
    await this.start();
    const key = options.partitionKey;
    if (key !== undefined && (this.startupBacklog || this.backlog.has(key))) {
      this.counters.queuedBacklog++;
      return this.enqueue(payload, options, 'backlog', undefined);
    }
    try {
      const value = await this.policy.execute((ctx) => this.operation(payload, ctx), {
        signal: options.signal,
      });
      this.counters.done++;
      return { status: 'done', value: value as R };
    } catch (err) {
      const error = classify(err);
      if (options.signal?.aborted || !this.shouldQueue(error)) throw err;
      this.counters.queuedUnavailable++;
      return this.enqueue(payload, options, 'unavailable', error);
    }
  }

  private async enqueue(
    payload: P,
    options: RunOrQueueOptions,
    reason: 'unavailable' | 'backlog',
    error: KeelError | undefined,
  ): Promise<RunOutcome<R>> {
    this.enqueuesInFlight++;
    this.enqueueGeneration++;
    try {
      const item = await this.queue.enqueue(payload, {
        ...(options.idempotencyKey === undefined ? {} : { idempotencyKey: options.idempotencyKey }),
        ...(options.partitionKey === undefined ? {} : { partitionKey: options.partitionKey }),
        maxAttempts: this.options.maxAttempts ?? 5,
      });
      const key = options.partitionKey;
      if (key !== undefined) {
        const ids = this.backlog.get(key) ?? new Set<string>();
        // A duplicate's first item may be done already; it holds the partition only if still queued here.
        if (!item.duplicate) ids.add(String(item.id));
        if (ids.size > 0) this.backlog.set(key, ids);
      }
      return {
        status: 'queued',
        id: item.id,
        duplicate: item.duplicate,
        reason,
        ...(error ? { error } : {}),
      };
    } finally {
      this.enqueuesInFlight--;
    }
  }

  /** The queue's handler: replays one item, holding it while the dependency is still unavailable. */
  private async replay(job: ReplayJob<P>): Promise<void> {
    for (;;) {
      while (this.breaker && blocked(this.breaker.state) && !job.signal.aborted)
        await this.nextChange(job.signal);
      try {
        await this.policy.execute((ctx) => this.operation(job.payload, ctx), { signal: job.signal });
        this.counters.replayed++;
        this.settled(job);
        return;
      } catch (err) {
        const error = classify(err);
        if (job.signal.aborted || !this.shouldQueue(error)) {
          // An answer, not an outage: the queue retries it with backoff or dead-letters it, as it
          // would any failing item. A dead item no longer holds its partition back.
          const dead =
            job.attempt >= (this.options.maxAttempts ?? 5) || (!error.retryable && error.code !== 'UNKNOWN');
          if (dead && !job.signal.aborted) this.settled(job);
          throw err;
        }
        // Still unavailable: keep the item claimed (its partition waits behind it, no attempt is
        // spent) and try again on the breaker's next state change or after retryEveryMs.
        this.counters.replayWaits++;
        await this.nextChange(job.signal, this.options.retryEveryMs ?? 1_000);
      }
    }
  }

  private settled(job: ReplayJob<P>): void {
    if (job.partitionKey === null) return;
    const ids = this.backlog.get(job.partitionKey);
    if (!ids) return;
    ids.delete(String(job.id));
    if (ids.size === 0) this.backlog.delete(job.partitionKey);
  }

  private follow(state: BreakerState): void {
    for (const wake of [...this.changeWaiters]) wake();
    const shouldPause = blocked(state);
    if (shouldPause === this.paused) return;
    this.paused = shouldPause;
    if (shouldPause) void this.queue.pause();
    else void this.queue.resume();
  }

  /** Resolves on the breaker's next state change, after `ms` (default: the check period), or on abort. */
  private nextChange(signal: AbortSignal, ms = this.options.checkEveryMs ?? 1_000): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        timer.cancel();
        this.changeWaiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = this.clock.setTimer(ms, done);
      this.changeWaiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  private scheduleCheck(): void {
    if (this.closed) return;
    this.checkTimer = this.clock.setTimer(this.options.checkEveryMs ?? 1_000, () => {
      void this.check().finally(() => {
        this.scheduleCheck();
      });
    });
  }

  /** Moves an expired open breaker to half-open (reading `state` does) and notices an emptied queue. */
  private async check(): Promise<void> {
    if (this.breaker) this.follow(this.breaker.state);
    if (!this.startupBacklog && this.backlog.size === 0) return;
    const generation = this.enqueueGeneration;
    try {
      const s = await this.queue.stats();
      // Forget the backlog only if no enqueue ran meanwhile: a count taken before a commit is stale.
      if (
        s.pending + s.active === 0 &&
        this.enqueuesInFlight === 0 &&
        generation === this.enqueueGeneration
      ) {
        this.startupBacklog = false;
        this.backlog.clear();
      }
    } catch {
      // The store is unreachable: keep queuing partitioned calls until it answers again.
    }
  }
}

/** Creates an {@link OutageQueue}; `await outage.start()` replays what a previous run left queued. */
export function createOutageQueue<P, R>(options: OutageQueueOptions<P, R>): OutageQueue<P, R> {
  return new OutageQueue(options);
}

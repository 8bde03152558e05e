import {
  classify,
  keelError,
  type KeelError,
  bulkhead,
  circuitBreaker,
  consecutive,
  exponential,
  retry,
  retryBudget,
  type BulkheadPolicy,
  type CircuitBreakerPolicy,
  type RetryBudgetPolicy,
  type RetryPolicy,
} from 'keel';
import type { Clock } from 'keel';
import type { OriginResponse } from './origin-client.js';

/** Options of {@link OriginGuard}. */
export interface OriginGuardOptions {
  /** Consecutive failures that open a bucket's breaker (default 5). */
  breakerFailures?: number;
  /** How long a breaker stays open before a probe (default 10 s). */
  breakerHalfOpenAfterMs?: number;
  /** Attempts per origin call, the first included (default 3). */
  retryAttempts?: number;
  /** Retries earned per call (default 0.1), see retryBudget. */
  retryBudgetRatio?: number;
  /** Origin calls in flight at once (default 256); more wait in a queue of the same size. */
  maxConcurrent?: number;
  clock?: Clock;
}

/**
 * Every origin call goes through here: a bulkhead, then the bucket's circuit breaker. Retries
 * (with backoff and a shared budget) wrap the breaker, so an open breaker stops them at once.
 * 5xx and 429 answers count as failures; other statuses are answers.
 */
export class OriginGuard {
  readonly budget: RetryBudgetPolicy;
  readonly retry: RetryPolicy;
  private readonly breakers = new Map<string, CircuitBreakerPolicy>();
  private readonly bulk: BulkheadPolicy;
  private readonly options: OriginGuardOptions;
  budgetExhausted = 0;

  constructor(options: OriginGuardOptions = {}) {
    this.options = options;
    const clock = options.clock ? { clock: options.clock } : {};
    this.budget = retryBudget({ ratio: options.retryBudgetRatio ?? 0.1, ...clock });
    this.retry = retry({
      maxAttempts: options.retryAttempts ?? 3,
      backoff: exponential({ initialMs: 50, maxMs: 1_000 }),
      budget: this.budget,
      onGiveUp: (e) => {
        if (e.reason === 'budget') this.budgetExhausted++;
      },
      ...clock,
    });
    const max = options.maxConcurrent ?? 256;
    this.bulk = bulkhead({ maxConcurrent: max, maxQueue: max, ...clock });
  }

  /** The breaker of `bucket` (created on first use). */
  breaker(bucket: string): CircuitBreakerPolicy {
    let b = this.breakers.get(bucket);
    if (!b) {
      b = circuitBreaker({
        window: consecutive(this.options.breakerFailures ?? 5),
        halfOpenAfterMs: this.options.breakerHalfOpenAfterMs ?? 10_000,
        ...(this.options.clock ? { clock: this.options.clock } : {}),
      });
      this.breakers.set(bucket, b);
    }
    return b;
  }

  /** Breaker states, for metrics and status. */
  breakerStates(): Record<string, string> {
    return Object.fromEntries([...this.breakers].map(([k, b]) => [k, b.state]));
  }

  /**
   * One origin call (no retry): bulkhead, breaker; 5xx/429 thrown as their KeelError. `fn` gets
   * an abort signal only when the caller gave one: nothing else aborts an origin call (its
   * timeouts are the connection pool's), and a signal costs every call several listeners.
   */
  async once(
    bucket: string,
    fn: (signal: AbortSignal | undefined) => Promise<OriginResponse>,
    signal?: AbortSignal,
  ): Promise<OriginResponse> {
    const breaker = this.breaker(bucket);
    return this.bulk.execute(
      () =>
        breaker.execute(async (ctx) => {
          const res = await fn(signal === undefined ? undefined : ctx.signal);
          if (res.status >= 500 || res.status === 429) {
            res.body.on('error', () => undefined);
            res.body.resume();
            throw classify({
              status: res.status,
              headers: res.headers,
              message: `origin answered HTTP ${res.status}`,
            });
          }
          return res;
        }),
      signal ? { signal } : undefined,
    );
  }

  /** One origin call with retries under the budget (`fn`'s signal: see {@link OriginGuard.once}). */
  async call(
    bucket: string,
    fn: (signal: AbortSignal | undefined) => Promise<OriginResponse>,
    signal?: AbortSignal,
  ): Promise<OriginResponse> {
    if (signal === undefined) return this.retry.execute(() => this.once(bucket, fn));
    return this.retry.execute((ctx) => this.once(bucket, fn, ctx.signal), { signal });
  }
}

/** Seconds a client should wait before retrying after `err` (Retry-After, breaker, default 1). */
export function retryAfterSeconds(err: KeelError): number {
  const ms = err.details.retryAfterMs;
  if (typeof ms === 'number' && ms > 0) return Math.max(1, Math.ceil(ms / 1000));
  return 1;
}

/** True when the origin told us to slow down (429/SlowDown/throttled). */
export function isThrottle(err: KeelError): boolean {
  return err.code === 'THROTTLED' || err.code === 'RATE_LIMITED' || err.details.s3Code === 'SlowDown';
}

export { keelError };

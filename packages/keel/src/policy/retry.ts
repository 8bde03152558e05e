import { classify, keelError, type KeelError } from '../errors/index.js';
import { systemClock, type Clock } from '../time/index.js';
import { exponential, type Backoff } from './backoff.js';
import { PolicyBase, type BaseOptions } from './base.js';
import { abortedError, CallContext } from './context.js';
import { PASS, type Next } from './engine.js';
import type { GiveUpReason, RetryEvents } from './events.js';
import type { RetryStats } from './policy.js';
import type { RetryBudgetPolicy } from './retry-budget.js';

/** Options of {@link retry}. */
export interface RetryOptions extends BaseOptions {
  /** Attempts in all, the first included (default 3). Pass `Infinity` explicitly to retry without a count limit. */
  maxAttempts?: number;
  /** Delays between attempts (default exponential 100 ms → 10 s, ×2, ±20 % jitter). */
  backoff?: Backoff;
  /** No retry starts if its wait would end later than this many ms after the first attempt began. */
  maxElapsedMs?: number;
  /** No retry starts if its wait would end after this clock time (epoch ms). */
  deadline?: number;
  /** Which failures to retry (default: `error.retryable`, from classify()). */
  shouldRetry?: (error: KeelError, attempt: number) => boolean;
  /** Upper bound of a server's Retry-After (default 30 s); longer requests are clamped to it. */
  maxRetryAfterMs?: number;
  /** A budget shared with other retry policies; when spent, retrying stops with RETRY_BUDGET_EXHAUSTED. */
  budget?: RetryBudgetPolicy;
  clock?: Clock;
  /** Called before each retry's wait (as the `retry` event). */
  onRetry?: (event: RetryEvents['retry']) => void;
  /** Called when retrying stops although the failure was retryable (as the `giveUp` event). */
  onGiveUp?: (event: RetryEvents['giveUp']) => void;
}

/** One failed attempt, as listed in a RETRIES_EXHAUSTED error's `details.attempts`. */
export interface AttemptRecord {
  attempt: number;
  code: string;
  message: string;
  /** Wait before the next attempt (absent on the last). */
  delayMs?: number;
}

/** Ready-made retry settings. */
export const retryPresets = {
  /** 3 attempts, 100 ms → 10 s, ×2, ±20 % jitter. */
  default: {
    maxAttempts: 3,
    backoff: exponential({ initialMs: 100, maxMs: 10_000, multiplier: 2, jitter: 0.2 }),
  },
  /** 5 attempts, 50 ms → 30 s, ×2, ±20 % jitter. */
  aggressive: {
    maxAttempts: 5,
    backoff: exponential({ initialMs: 50, maxMs: 30_000, multiplier: 2, jitter: 0.2 }),
  },
  /** 2 attempts, 500 ms → 5 s, ×2, ±20 % jitter. */
  conservative: {
    maxAttempts: 2,
    backoff: exponential({ initialMs: 500, maxMs: 5_000, multiplier: 2, jitter: 0.2 }),
  },
} as const satisfies Record<string, RetryOptions>;

const defaultShouldRetry = (error: KeelError): boolean => error.retryable;

/** A context that remembers when the call began (only made when `maxElapsedMs` is set). */
class TimedContext extends CallContext {
  beganAt = 0;
}

/**
 * Runs a function again when it fails with a retryable error, waiting a backoff between attempts.
 * The first attempt costs nothing beyond a counter; everything else happens only on failure.
 */
export class RetryPolicy extends PolicyBase<RetryEvents, RetryStats> {
  readonly kind = 'retry' as const;
  private readonly maxAttempts: number;
  private readonly backoff: Backoff;
  private readonly maxElapsedMs: number | undefined;
  private readonly deadline: number | undefined;
  private readonly shouldRetry: (error: KeelError, attempt: number) => boolean;
  private readonly maxRetryAfterMs: number;
  private readonly budget: RetryBudgetPolicy | undefined;
  private readonly clock: Clock;
  private retries = 0;
  private retrySuccesses = 0;
  private givenUp = 0;

  constructor(options: RetryOptions = {}) {
    super(options);
    const maxAttempts = options.maxAttempts ?? retryPresets.default.maxAttempts;
    if (!(maxAttempts >= 1) || (Number.isFinite(maxAttempts) && !Number.isInteger(maxAttempts))) {
      throw keelError(
        'INVALID_CONFIG',
        `retry: maxAttempts must be an integer >= 1, got ${String(maxAttempts)}`,
      );
    }
    this.maxAttempts = maxAttempts;
    this.backoff = options.backoff ?? retryPresets.default.backoff;
    this.maxElapsedMs = options.maxElapsedMs;
    this.deadline = options.deadline;
    this.shouldRetry = options.shouldRetry ?? defaultShouldRetry;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 30_000;
    this.budget = options.budget;
    this.clock = options.clock ?? systemClock;
    if (options.onRetry) this.events.on('retry', options.onRetry);
    if (options.onGiveUp) this.events.on('giveUp', options.onGiveUp);
  }

  enter(ctx: CallContext, level: number): CallContext {
    this.calls++;
    this.budget?.deposit();
    if (this.maxElapsedMs === undefined) return ctx;
    const timed = new TimedContext(ctx, undefined, level, ctx.attempt);
    timed.startedAt = ctx.startedAt;
    timed.beganAt = this.clock.now();
    return timed;
  }

  onSuccess(ctx: CallContext): void {
    this.succeeded(ctx);
  }

  onFailure(ctx: CallContext, error: unknown, next: Next, level: number): unknown {
    const k = classify(error);
    // A failure not worth retrying leaves synchronously: no promise, no async frame.
    if (!this.shouldRetry(k, 1)) {
      this.failed(ctx, error);
      return PASS;
    }
    return this.retryLoop(ctx, error, k, next, level);
  }

  private async retryLoop(
    ctx: CallContext,
    error: unknown,
    first: KeelError,
    next: Next,
    level: number,
  ): Promise<unknown> {
    const beganAt = ctx instanceof TimedContext ? ctx.beganAt : undefined;
    const records: AttemptRecord[] = [];
    let backoff = this.backoff;
    let err = error;
    for (let attempt = 1; ; attempt++) {
      const k = attempt === 1 ? first : classify(err);
      const record: AttemptRecord = { attempt, code: k.code, message: k.message };
      records.push(record);
      if (attempt > 1 && !this.shouldRetry(k, attempt)) {
        this.failed(ctx, err);
        throw err;
      }
      if (attempt >= this.maxAttempts) {
        throw this.giveUp(ctx, 'attempts', err, records, this.exhausted(err, k, records, 'no attempts left'));
      }
      const step = backoff.next();
      backoff = step.next;
      let delayMs = step.delayMs;
      const retryAfterMs = k.details.retryAfterMs;
      if (typeof retryAfterMs === 'number' && retryAfterMs > delayMs) {
        delayMs = Math.min(retryAfterMs, this.maxRetryAfterMs);
      }
      const resumeAt = this.clock.now() + delayMs;
      if (
        (beganAt !== undefined &&
          this.maxElapsedMs !== undefined &&
          resumeAt - beganAt > this.maxElapsedMs) ||
        (this.deadline !== undefined && resumeAt > this.deadline)
      ) {
        throw this.giveUp(
          ctx,
          'elapsed',
          err,
          records,
          this.exhausted(err, k, records, 'the time allowed would run out'),
        );
      }
      if (this.budget !== undefined && !this.budget.tryWithdraw(k)) {
        throw this.giveUp(ctx, 'budget', err, records, this.budget.exhausted(err, attempt));
      }
      record.delayMs = delayMs;
      this.retries++;
      if (this.events.has('retry')) this.events.emit('retry', { attempt: attempt + 1, delayMs, error: err });
      if (ctx.aborted || delayMs > 0) {
        try {
          await this.clock.sleep(delayMs, ctx.signal);
        } catch (reason) {
          throw this.giveUp(ctx, 'aborted', err, records, abortedError(reason, this.label('retry')));
        }
      }
      const attemptCtx = ctx.child(level, attempt + 1);
      try {
        const value = await next(attemptCtx);
        this.retrySuccesses++;
        this.budget?.refund();
        this.succeeded(ctx);
        return value;
      } catch (e) {
        err = e;
      } finally {
        attemptCtx.dispose();
      }
    }
  }

  stats(): RetryStats {
    return {
      ...this.commonStats(),
      retries: this.retries,
      retrySuccesses: this.retrySuccesses,
      givenUp: this.givenUp,
    };
  }

  private exhausted(cause: unknown, last: KeelError, records: AttemptRecord[], why: string): KeelError {
    return keelError(
      'RETRIES_EXHAUSTED',
      `${this.label('retry')} gave up after ${records.length} attempt${records.length === 1 ? '' : 's'} ` +
        `(${why}); last error ${last.code}: ${last.message}`,
      { attempts: records },
      { cause },
    );
  }

  private giveUp(
    ctx: CallContext,
    reason: GiveUpReason,
    lastError: unknown,
    records: AttemptRecord[],
    thrown: KeelError,
  ): KeelError {
    this.givenUp++;
    if (this.events.has('giveUp'))
      this.events.emit('giveUp', { attempts: records.length, error: lastError, reason });
    this.failed(ctx, thrown);
    return thrown;
  }
}

/**
 * Creates a {@link RetryPolicy}. Defaults: 3 attempts, exponential backoff 100 ms → 10 s with
 * ±20 % jitter, only retryable errors, Retry-After honoured up to 30 s.
 * Gives up with RETRIES_EXHAUSTED (cause: the last error, details.attempts: every attempt).
 */
export function retry(options?: RetryOptions): RetryPolicy {
  return new RetryPolicy(options);
}

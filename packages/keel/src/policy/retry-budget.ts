import { keelError, type KeelError } from '../errors/index.js';
import { systemClock, type Clock } from '../time/index.js';
import { PolicyBase, type BaseOptions } from './base.js';
import type { CallContext } from './context.js';
import { PASS } from './engine.js';
import type { RetryBudgetEvents } from './events.js';
import type { RetryBudgetStats } from './policy.js';

/** Options of {@link retryBudget}. */
export interface RetryBudgetOptions extends BaseOptions {
  /** Retries earned per call: 0.1 lets one call in ten be retried (default 0.1). */
  ratio?: number;
  /** Retries allowed per second whatever the traffic, so quiet clients can still retry (default 10). */
  minPerSecond?: number;
  /** Bucket size in tokens; the bucket starts full (default 500, as the AWS SDK retry quota). */
  maxTokens?: number;
  /** Tokens a retry costs (default 5). */
  retryCost?: number;
  /** Tokens a retry after a timeout costs (default 10): timeouts signal overload more than other errors. */
  timeoutCost?: number;
  /** Give the cost of a retry back when the retry succeeds (default true, as the AWS SDK). */
  refundOnSuccess?: boolean;
  clock?: Clock;
}

/**
 * A token bucket that limits retries to a share of calls, shared by any number of retry policies.
 * Every call earns `ratio · retryCost` tokens, time earns `minPerSecond · retryCost` tokens per
 * second, a retry spends `retryCost` (`timeoutCost` after a timeout) and a successful retry gives
 * its cost back. Pass it to {@link retry} as `budget`, or put it inside a retry in a pipeline,
 * where it turns away attempts after the first with RETRY_BUDGET_EXHAUSTED when it is spent.
 */
export class RetryBudgetPolicy extends PolicyBase<RetryBudgetEvents, RetryBudgetStats> {
  readonly kind = 'retryBudget' as const;
  private readonly ratio: number;
  private readonly perSecond: number;
  private readonly maxTokens: number;
  private readonly retryCost: number;
  private readonly timeoutCost: number;
  private readonly refundOnSuccess: boolean;
  private readonly clock: Clock;
  private tokens: number;
  /** Tokens moved by calls, retries and refunds since the last takeChange() (refills excluded). */
  private change = 0;
  private refilledAt: number;
  private allowed = 0;
  private refused = 0;

  constructor(options: RetryBudgetOptions = {}) {
    super(options);
    this.ratio = nonNegative('ratio', options.ratio ?? 0.1);
    this.perSecond = nonNegative('minPerSecond', options.minPerSecond ?? 10);
    this.maxTokens = nonNegative('maxTokens', options.maxTokens ?? 500);
    this.retryCost = nonNegative('retryCost', options.retryCost ?? 5);
    this.timeoutCost = nonNegative('timeoutCost', options.timeoutCost ?? 10);
    this.refundOnSuccess = options.refundOnSuccess ?? true;
    this.clock = options.clock ?? systemClock;
    this.tokens = this.maxTokens;
    this.refilledAt = this.clock.now();
  }

  /** Records a first attempt: earns `ratio · retryCost` tokens. */
  deposit(): void {
    const t = this.tokens + this.ratio * this.retryCost;
    const next = t > this.maxTokens ? this.maxTokens : t;
    this.change += next - this.tokens;
    this.tokens = next;
  }

  /** Takes the cost of one retry after `error` if the budget has it; false when it is spent. */
  tryWithdraw(error?: KeelError): boolean {
    this.refill();
    const cost = error?.code === 'TIMEOUT' ? this.timeoutCost : this.retryCost;
    if (this.tokens >= cost) {
      this.tokens -= cost;
      this.change -= cost;
      this.allowed++;
      return true;
    }
    this.refused++;
    return false;
  }

  /** A retry succeeded: give its cost back (when `refundOnSuccess`). */
  refund(): void {
    if (!this.refundOnSuccess) return;
    const t = this.tokens + this.retryCost;
    const next = t > this.maxTokens ? this.maxTokens : t;
    this.change += next - this.tokens;
    this.tokens = next;
  }

  /**
   * The net tokens this budget's own calls, retries and refunds moved since the last call
   * (positive: earned more than spent), then starts counting again from zero. Time refills and
   * {@link applyChange} are not counted. With {@link applyChange} it lets several processes
   * keep copies of one budget: each publishes its change, the others apply it.
   */
  takeChange(): number {
    const c = this.change;
    this.change = 0;
    return c;
  }

  /**
   * Adds `tokens` (negative: removes) made or spent elsewhere, such as another process's
   * {@link takeChange}, within 0 … `maxTokens`. Throws INVALID_CONFIG when `tokens` is not a
   * finite number.
   */
  applyChange(tokens: number): void {
    if (!Number.isFinite(tokens)) {
      throw keelError(
        'INVALID_CONFIG',
        `retryBudget: a change must be a finite number, got ${String(tokens)}`,
      );
    }
    // No refill first: the change was made a while ago, before the time not yet refilled here.
    const t = this.tokens + tokens;
    this.tokens = t > this.maxTokens ? this.maxTokens : t < 0 ? 0 : t;
  }

  /** The error a retry policy throws when this budget refuses a retry. */
  exhausted(cause: unknown, attempts: number): KeelError {
    return keelError(
      'RETRY_BUDGET_EXHAUSTED',
      `${this.label('the retry budget')} refused a retry after attempt ${attempts}: too many retries lately ` +
        `(${this.tokens.toFixed(1)} of ${this.maxTokens} tokens left); the dependency is failing, not flaking`,
      { attempts, tokens: this.tokens, maxTokens: this.maxTokens },
      { cause, stack: false },
    );
  }

  enter(ctx: CallContext): CallContext | KeelError {
    this.calls++;
    if (ctx.attempt <= 1) {
      this.deposit();
      return ctx;
    }
    if (this.tryWithdraw()) return ctx;
    return this.rejected('budgetExhausted', this.exhausted(undefined, ctx.attempt - 1));
  }

  onSuccess(ctx: CallContext): void {
    if (ctx.attempt > 1) this.refund();
    this.succeeded(ctx);
  }

  onFailure(ctx: CallContext, error: unknown): typeof PASS {
    this.failed(ctx, error);
    return PASS;
  }

  stats(): RetryBudgetStats {
    this.refill();
    return {
      ...this.commonStats(),
      tokens: this.tokens,
      maxTokens: this.maxTokens,
      retriesAllowed: this.allowed,
      retriesRefused: this.refused,
    };
  }

  private refill(): void {
    const now = this.clock.now();
    const elapsed = now - this.refilledAt;
    if (elapsed <= 0) return;
    this.refilledAt = now;
    const t = this.tokens + (elapsed / 1000) * this.perSecond * this.retryCost;
    this.tokens = t > this.maxTokens ? this.maxTokens : t;
  }
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw keelError(
      'INVALID_CONFIG',
      `retryBudget: ${name} must be a finite number >= 0, got ${String(value)}`,
    );
  }
  return value;
}

/** Creates a {@link RetryBudgetPolicy} (defaults: 10 % of calls, 10 retries/s minimum, 500 tokens, cost 5, timeout 10). */
export function retryBudget(options?: RetryBudgetOptions): RetryBudgetPolicy {
  return new RetryBudgetPolicy(options);
}

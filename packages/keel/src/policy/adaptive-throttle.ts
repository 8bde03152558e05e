import { classify, keelError, type KeelError } from '../errors/index.js';
import { systemClock, type Clock } from '../time/index.js';
import type { RandomSource } from './backoff.js';
import { PolicyBase, type BaseOptions } from './base.js';
import type { CallContext } from './context.js';
import { PASS } from './engine.js';
import type { AdaptiveThrottleEvents } from './events.js';
import { derivedError } from './fast-reject.js';
import type { AdaptiveThrottleStats } from './policy.js';

/** Options of {@link adaptiveThrottle}. */
export interface AdaptiveThrottleOptions extends BaseOptions {
  /** Multiplier of accepts: 2 lets requests reach twice what the backend accepts (default 2). */
  k?: number;
  /** Length of the window the counts cover (default 2 minutes). */
  windowMs?: number;
  /** Buckets the window is cut into (default 12). */
  buckets?: number;
  /** Which failures mean the backend turned the request away (default: retryable ones, e.g. 429, 503, timeouts). */
  isRejection?: (error: KeelError) => boolean;
  /** Random source (default Math.random). */
  random?: RandomSource;
  clock?: Clock;
}

const STRIDE = 3; // bucket index, requests, accepts

/**
 * Client-side adaptive throttling (Google SRE book, "Handling Overload"): over a sliding window
 * the client counts its requests and the backend's accepts, and rejects locally with probability
 * max(0, (requests − k·accepts) / (requests + 1)) with a THROTTLED error. When the backend
 * accepts everything, nothing is rejected; as it starts turning requests away, the client sheds
 * the excess itself instead of sending it.
 */
export class AdaptiveThrottlePolicy extends PolicyBase<AdaptiveThrottleEvents, AdaptiveThrottleStats> {
  readonly kind = 'adaptiveThrottle' as const;
  private readonly k: number;
  private readonly bucketMs: number;
  private readonly buckets: number;
  private readonly isRejection: (error: KeelError) => boolean;
  private readonly random: RandomSource;
  private readonly clock: Clock;
  private readonly data: Float64Array;
  private requests = 0;
  private accepts = 0;
  private template: KeelError | undefined;

  constructor(options: AdaptiveThrottleOptions = {}) {
    super(options);
    this.k = options.k ?? 2;
    const windowMs = options.windowMs ?? 120_000;
    this.buckets = options.buckets ?? 12;
    if (!(this.k > 0) || !Number.isInteger(this.buckets) || this.buckets < 1 || !(windowMs >= this.buckets)) {
      throw keelError(
        'INVALID_CONFIG',
        'adaptiveThrottle: k must be > 0, buckets an integer >= 1 and windowMs >= buckets',
      );
    }
    this.bucketMs = windowMs / this.buckets;
    this.isRejection = options.isRejection ?? ((e) => e.retryable);
    this.random = options.random ?? Math.random;
    this.clock = options.clock ?? systemClock;
    this.data = new Float64Array(this.buckets * STRIDE).fill(-1);
  }

  /** The current probability of rejecting a call locally. */
  get rejectProbability(): number {
    this.roll(this.clock.now());
    return Math.max(0, (this.requests - this.k * this.accepts) / (this.requests + 1));
  }

  enter(ctx: CallContext): CallContext | KeelError {
    this.calls++;
    const slot = this.roll(this.clock.now());
    const p = Math.max(0, (this.requests - this.k * this.accepts) / (this.requests + 1));
    this.requests++;
    this.data[slot + 1] = (this.data[slot + 1] as number) + 1;
    if (p > 0 && this.random() < p) {
      this.template ??= keelError(
        'THROTTLED',
        `${this.label('the adaptive throttle')} rejected the call locally: the backend has been turning requests away`,
        {},
        { stack: false },
      );
      return this.rejected('throttled', derivedError(this.template, { rejectProbability: p }));
    }
    return ctx;
  }

  onSuccess(ctx: CallContext): void {
    this.accept();
    this.succeeded(ctx);
  }

  onFailure(ctx: CallContext, error: unknown): typeof PASS {
    if (!this.isRejection(classify(error))) this.accept();
    this.failed(ctx, error);
    return PASS;
  }

  stats(): AdaptiveThrottleStats {
    const rejectProbability = this.rejectProbability;
    return { ...this.commonStats(), requests: this.requests, accepts: this.accepts, rejectProbability };
  }

  private accept(): void {
    const slot = this.roll(this.clock.now());
    this.accepts++;
    this.data[slot + 2] = (this.data[slot + 2] as number) + 1;
  }

  /** Drops buckets that left the window; returns the slot of the current bucket. */
  private roll(now: number): number {
    const index = Math.floor(now / this.bucketMs);
    const slot = (index % this.buckets) * STRIDE;
    const d = this.data;
    if (d[slot] === index) return slot;
    for (let b = 0; b < this.buckets; b++) {
      const s = b * STRIDE;
      const at = d[s] as number;
      if (at >= 0 && at <= index - this.buckets) {
        this.requests -= d[s + 1] as number;
        this.accepts -= d[s + 2] as number;
        d[s] = -1;
        d[s + 1] = 0;
        d[s + 2] = 0;
      }
    }
    d[slot] = index;
    d[slot + 1] = 0;
    d[slot + 2] = 0;
    return slot;
  }
}

/** Creates an {@link AdaptiveThrottlePolicy} (defaults: k = 2, a 2-minute window in 12 buckets). */
export function adaptiveThrottle(options?: AdaptiveThrottleOptions): AdaptiveThrottlePolicy {
  return new AdaptiveThrottlePolicy(options);
}

import type { BreakerState, CommonEvents, Listener } from './events.js';

/** The kinds of policy keel has; every policy's `kind` is one of these. */
export type PolicyKind =
  | 'retry'
  | 'circuitBreaker'
  | 'timeout'
  | 'bulkhead'
  | 'fallback'
  | 'retryBudget'
  | 'adaptiveThrottle'
  | 'hedge'
  | 'pipeline';

/**
 * What a policy passes to the function it runs. `signal` is created lazily: reading it is what
 * makes an AbortController exist, so functions that ignore it cost nothing.
 */
export interface PolicyContext {
  /** Aborted when the caller's signal aborts, a timeout expires or a hedge loses. */
  readonly signal: AbortSignal;
  /** 1 for the first attempt, 2 for the first retry or hedge, … */
  readonly attempt: number;
}

/** A function run by a policy. */
export type PolicyFn<T> = (ctx: PolicyContext) => Promise<T> | T;

/** Per-call options of {@link Policy.execute}. */
export interface ExecuteOptions {
  /** Cancels the call: waits (backoff, queue) end at once and `ctx.signal` aborts. */
  signal?: AbortSignal | undefined;
}

/** Counters every policy keeps. */
export interface CommonStats {
  /** Calls made to `execute`. */
  calls: number;
  successes: number;
  failures: number;
  /** Calls the policy turned away itself (included in `failures`). */
  rejections: number;
}

/** {@link retry} counters. */
export interface RetryStats extends CommonStats {
  /** Retries started. */
  retries: number;
  /** Calls that succeeded after at least one retry. */
  retrySuccesses: number;
  /** Calls on which retrying stopped although the failure was retryable. */
  givenUp: number;
}

/** {@link circuitBreaker} counters and state. */
export interface BreakerStats extends CommonStats {
  state: BreakerState;
  /** Times the breaker opened (from closed or half-open). */
  trips: number;
  /** Half-open probes admitted. */
  probes: number;
  /** Milliseconds spent in each state since creation (the current state included up to now). */
  timeInStateMs: Record<BreakerState, number>;
}

/** {@link timeout} counters. */
export interface TimeoutStats extends CommonStats {
  timeouts: number;
  /** Calls running now. */
  inFlight: number;
}

/** {@link bulkhead} counters and occupancy. */
export interface BulkheadStats extends CommonStats {
  active: number;
  queued: number;
  maxConcurrent: number;
  maxQueue: number;
}

/** {@link fallback} counters. */
export interface FallbackStats extends CommonStats {
  fallbacks: number;
}

/** {@link retryBudget} counters and balance. */
export interface RetryBudgetStats extends CommonStats {
  tokens: number;
  maxTokens: number;
  /** Retries the budget allowed. */
  retriesAllowed: number;
  /** Retries the budget refused. */
  retriesRefused: number;
}

/** {@link adaptiveThrottle} counters over its window. */
export interface AdaptiveThrottleStats extends CommonStats {
  /** Requests in the window (locally rejected ones included). */
  requests: number;
  /** Requests the backend accepted in the window. */
  accepts: number;
  /** Current probability of rejecting a call locally. */
  rejectProbability: number;
}

/** {@link hedge} counters. */
export interface HedgeStats extends CommonStats {
  /** Extra attempts started. */
  hedges: number;
  /** Calls won by an extra attempt. */
  hedgeWins: number;
}

/** {@link pipeline} counters plus each member's snapshot, outermost first. */
export interface PipelineStats extends CommonStats {
  policies: CommonStats[];
}

/** Type-level marker of the value a policy may substitute for a failure (fallback). @internal */
export const SUBSTITUTE: unique symbol = Symbol('keel.substitute');

/**
 * The type of what a policy may substitute, boxed: the marker is an optional property that no
 * object really has, and reading an optional property's type adds `undefined` (unless the
 * consumer's tsconfig sets exactOptionalPropertyTypes). Inferring `R` from inside the box keeps
 * that `undefined` out, while a fallback whose value really is `undefined` keeps it. @internal
 */
export interface Substitutes<R> {
  readonly value: R;
}

/**
 * The type of the value policy `P` may substitute for a failure: `never` for a policy without a
 * fallback, `R` for a fallback (or a pipeline holding fallbacks) of `R`, `unknown` for a policy
 * that does not say.
 */
export type SubstituteValue<P> = P extends { readonly [SUBSTITUTE]?: Substitutes<infer R> } ? R : never;

/**
 * What every keel policy offers: `execute`, a `stats()` snapshot and typed events.
 * `E` is the policy's event map; `R` the type of any value it substitutes (fallback).
 */
export interface Policy<E extends object = CommonEvents, S extends CommonStats = CommonStats, R = never> {
  readonly kind: PolicyKind;
  /** Carries `R` in the type only: no policy object has this property. @internal */
  readonly [SUBSTITUTE]?: Substitutes<R>;
  /** A label for logs and metrics. */
  readonly name?: string | undefined;
  /** Runs `fn` under the policy. Rejects with what `fn` threw or a KeelError the policy made. */
  execute<T>(fn: PolicyFn<T>, opts?: ExecuteOptions): Promise<T | R>;
  /** A plain-object snapshot of the counters (safe to serialise). */
  stats(): S;
  /** Registers a listener; the returned function removes it. */
  on<K extends keyof E>(event: K, listener: Listener<E[K]>): () => void;
}

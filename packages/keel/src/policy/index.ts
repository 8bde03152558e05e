/**
 * Policies for calling unreliable dependencies: backoff, retry, circuit breakers, timeout,
 * bulkhead, fallback, retry budget, adaptive throttle, hedge, pipelines and keyed registries.
 * Every policy has `execute(fn, { signal })`, `stats()` and typed events.
 * @packageDocumentation
 */
export type {
  PolicyKind,
  PolicyContext,
  PolicyFn,
  ExecuteOptions,
  Policy,
  CommonStats,
  RetryStats,
  BreakerStats,
  TimeoutStats,
  BulkheadStats,
  FallbackStats,
  RetryBudgetStats,
  AdaptiveThrottleStats,
  HedgeStats,
  PipelineStats,
} from './policy.js';
export {
  Emitter,
  type Listener,
  type RejectionReason,
  type SuccessEvent,
  type FailureEvent,
  type RejectedEvent,
  type CommonEvents,
  type GiveUpReason,
  type RetryEvents,
  type BreakerState,
  type OpenReason,
  type BreakerEvents,
  type TimeoutEvents,
  type BulkheadEvents,
  type FallbackEvents,
  type RetryBudgetEvents,
  type AdaptiveThrottleEvents,
  type HedgeEvents,
  type PipelineEvents,
} from './events.js';
export {
  constant,
  linear,
  exponential,
  delays,
  type Backoff,
  type BackoffStep,
  type Jitter,
  type RandomSource,
  type LinearBackoffOptions,
  type ExponentialBackoffOptions,
} from './backoff.js';
export type { BaseOptions } from './base.js';
export { retry, retryPresets, RetryPolicy, type RetryOptions, type AttemptRecord } from './retry.js';
export { retryBudget, RetryBudgetPolicy, type RetryBudgetOptions } from './retry-budget.js';
export { pipeline, PipelinePolicy, type AnyPolicy, type SubstituteOf } from './pipeline.js';
export {
  circuitBreaker,
  countsAsFailure,
  CircuitBreakerPolicy,
  type CircuitBreakerOptions,
  type BreakerSnapshot,
} from './circuit-breaker.js';
export { consecutive } from './breaker/consecutive.js';
export { countWindow, type CountWindowOptions } from './breaker/count-window.js';
export { timeWindow, type TimeWindowOptions } from './breaker/time-window.js';
export type { WindowSpec, WindowState } from './breaker/window.js';
export {
  timeout,
  TimeoutPolicy,
  type TimeoutConfig,
  type TimeoutOptions,
  type TimeoutStrategy,
} from './timeout.js';
export { bulkhead, BulkheadPolicy, type BulkheadOptions } from './bulkhead.js';
export { fallback, FallbackPolicy, type FallbackOptions, type FallbackSource } from './fallback.js';
export { keyed, KeyedRegistry, type KeyedOptions } from './keyed.js';
export {
  adaptiveThrottle,
  AdaptiveThrottlePolicy,
  type AdaptiveThrottleOptions,
} from './adaptive-throttle.js';
export { hedge, HedgePolicy, type HedgeOptions } from './hedge.js';
export type { KeelPolicy } from './keel-policy.js';

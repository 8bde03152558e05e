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

import type { AdaptiveThrottlePolicy } from './adaptive-throttle.js';
import type { BulkheadPolicy } from './bulkhead.js';
import type { CircuitBreakerPolicy } from './circuit-breaker.js';
import type { FallbackPolicy } from './fallback.js';
import type { HedgePolicy } from './hedge.js';
import type { PipelinePolicy } from './pipeline.js';
import type { RetryBudgetPolicy } from './retry-budget.js';
import type { RetryPolicy } from './retry.js';
import type { TimeoutPolicy } from './timeout.js';

/**
 * Every keel policy, discriminated by `kind`: `switch (p.kind)` narrows to the policy's own
 * events and stats (what metrics bindings need).
 */
export type KeelPolicy =
  | RetryPolicy
  | CircuitBreakerPolicy
  | TimeoutPolicy
  | BulkheadPolicy
  | FallbackPolicy<unknown>
  | RetryBudgetPolicy
  | AdaptiveThrottlePolicy
  | HedgePolicy
  | PipelinePolicy<unknown>;

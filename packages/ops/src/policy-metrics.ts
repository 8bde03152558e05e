import type { BreakerState, KeelPolicy, Policy } from 'keel';
import type { Metrics } from './metrics.js';

/** Numeric value of each breaker state in `keel_breaker_state`. */
export const BREAKER_STATE_VALUE: Record<BreakerState, number> = {
  closed: 0,
  open: 1,
  halfOpen: 2,
  isolated: 3,
};

/** Options of {@link bindPolicyMetrics}. */
export interface PolicyMetricsOptions {
  /** The `policy` label; default the policy's `name`, else its kind. Keep it a fixed, small set. */
  name?: string;
}

const LABEL = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * Binds a keel policy's events to metrics in `metrics`' registry:
 * `keel_policy_calls_total{policy,kind,outcome}` (success | failure | rejected),
 * `keel_policy_call_duration_seconds{policy}`, `keel_policy_rejections_total{policy,reason}`,
 * and by kind `keel_retry_attempts_total{policy}`, `keel_retry_give_ups_total{policy,reason}`,
 * `keel_breaker_state{breaker}` (0 closed, 1 open, 2 half-open, 3 isolated),
 * `keel_breaker_transitions_total{breaker,to}`, `keel_timeouts_total{policy}`,
 * `keel_fallbacks_total{policy}`. Returns a function that unbinds. Throws when the label value is
 * not a short identifier (labels must stay bounded: never a key, id or path).
 */
export function bindPolicyMetrics(
  metrics: Metrics,
  policy: KeelPolicy,
  options: PolicyMetricsOptions = {},
): () => void {
  const name = options.name ?? policy.name ?? policy.kind;
  if (!LABEL.test(name)) throw new Error(`policy metrics name "${name}": must match ${String(LABEL)}`);
  const calls = metrics.counter('keel_policy_calls_total', 'Calls through keel policies by outcome.', [
    'policy',
    'kind',
    'outcome',
  ]);
  const duration = metrics.histogram(
    'keel_policy_call_duration_seconds',
    'Duration of calls through keel policies.',
    ['policy'],
  );
  const rejections = metrics.counter(
    'keel_policy_rejections_total',
    'Calls a keel policy turned away, by reason.',
    ['policy', 'reason'],
  );
  const kind = policy.kind;
  // Every policy emits the common events; the union of their `on` signatures is not callable as is.
  const common = policy as unknown as Policy;
  const disposers: (() => void)[] = [
    common.on('success', (e) => {
      calls.inc({ policy: name, kind, outcome: 'success' });
      if (e.durationMs !== undefined) duration.observe({ policy: name }, e.durationMs / 1000);
    }),
    common.on('failure', (e) => {
      calls.inc({ policy: name, kind, outcome: 'failure' });
      if (e.durationMs !== undefined) duration.observe({ policy: name }, e.durationMs / 1000);
    }),
    common.on('rejected', (e) => {
      calls.inc({ policy: name, kind, outcome: 'rejected' });
      rejections.inc({ policy: name, reason: e.reason });
    }),
  ];
  switch (policy.kind) {
    case 'retry': {
      const attempts = metrics.counter(
        'keel_retry_attempts_total',
        'Retries scheduled by keel retry policies.',
        ['policy'],
      );
      const giveUps = metrics.counter(
        'keel_retry_give_ups_total',
        'Retryable failures a retry policy stopped retrying.',
        ['policy', 'reason'],
      );
      disposers.push(
        policy.on('retry', () => attempts.inc({ policy: name })),
        policy.on('giveUp', (e) => giveUps.inc({ policy: name, reason: e.reason })),
      );
      break;
    }
    case 'circuitBreaker': {
      const state = metrics.gauge(
        'keel_breaker_state',
        'Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 isolated.',
        ['breaker'],
      );
      const transitions = metrics.counter(
        'keel_breaker_transitions_total',
        'Circuit breaker state changes.',
        ['breaker', 'to'],
      );
      state.set({ breaker: name }, BREAKER_STATE_VALUE[policy.state]);
      disposers.push(
        policy.on('stateChange', (e) => {
          state.set({ breaker: name }, BREAKER_STATE_VALUE[e.to]);
          transitions.inc({ breaker: name, to: e.to });
        }),
      );
      break;
    }
    case 'timeout': {
      const timeouts = metrics.counter('keel_timeouts_total', 'Calls a keel timeout policy cut off.', [
        'policy',
      ]);
      disposers.push(policy.on('timeout', () => timeouts.inc({ policy: name })));
      break;
    }
    case 'fallback': {
      const fallbacks = metrics.counter(
        'keel_fallbacks_total',
        'Failures a keel fallback policy substituted.',
        ['policy'],
      );
      disposers.push(policy.on('fallback', () => fallbacks.inc({ policy: name })));
      break;
    }
    default:
      break;
  }
  return () => {
    for (const d of disposers) d();
  };
}

import { classify, type KeelError, countsAsFailure } from 'keel';

const LOCAL_UNAVAILABLE = new Set(['CIRCUIT_OPEN', 'BULKHEAD_FULL', 'THROTTLED']);

/**
 * The default of `shouldQueue`: an open or isolated breaker, a full bulkhead or a throttle, retries
 * (or the retry budget) exhausted on a transient error, or a transient error itself. A caller's
 * abort and answers such as a 404 or a constraint violation are not.
 */
export function isUnavailable(error: KeelError): boolean {
  return LOCAL_UNAVAILABLE.has(error.code) || countsAsFailure(error);
}

/**
 * What outage mode does with a failed call or replay: `queue` when the dependency counts as
 * unavailable (a call is queued, a replay keeps its item claimed and waits), `throw` when the
 * failure is an answer or the caller gave up (it goes to the caller, or to the queue's retries).
 */
export type FailureDecision = { action: 'queue'; error: KeelError } | { action: 'throw'; error: KeelError };

/**
 * Classifies `err` and decides: an aborted `signal` always throws (an abort is not an outage);
 * otherwise `shouldQueue` of the classified error says whether to queue.
 */
export function decideFailure(
  err: unknown,
  signal: AbortSignal | undefined,
  shouldQueue: (error: KeelError) => boolean,
): FailureDecision {
  const error = classify(err);
  if (signal?.aborted || !shouldQueue(error)) return { action: 'throw', error };
  return { action: 'queue', error };
}

/**
 * Whether a replay failure that was thrown ends its item as a dead letter: its last attempt, or an
 * error `classify()` knows is not retryable. The queue retries anything else with backoff.
 */
export function endsAsDeadLetter(error: KeelError, attempt: number, maxAttempts: number): boolean {
  return attempt >= maxAttempts || (!error.retryable && error.code !== 'UNKNOWN');
}

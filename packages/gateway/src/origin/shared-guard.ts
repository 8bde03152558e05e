import type { CircuitBreakerPolicy, Clock, TimerHandle } from 'keel';
import { systemClock } from 'keel';
import type { Coordinator, SharedBreakerState } from '../coord/coordinator.js';
import type { OriginGuard } from './origin-guard.js';

/** How often a process publishes what its calls and retries did to the retry budget (default). */
export const BUDGET_PUBLISH_MS = 100;

/** The name of the origin guard's retry budget among the coordinated processes. */
export const ORIGIN_BUDGET = 'origin';

/** Longest breaker name taken from another process (an S3 bucket name has at most 63 characters). */
const MAX_BREAKER_NAME = 255;

/** Options of {@link shareOriginGuard}. */
export interface ShareOriginGuardOptions {
  /** How often the budget's change is published (default {@link BUDGET_PUBLISH_MS}). */
  budgetPublishMs?: number;
  clock?: Clock;
}

/**
 * Makes the origin guard of this process one of several that guard one origin together through
 * `coord`:
 * - a breaker (a bucket's, or the service breaker `''`) that opens or closes here is published,
 *   and one another process published is restored here, so every process stops calling the origin
 *   for that bucket until the same `openUntil`; a remote state for a bucket this process has no
 *   breaker for gives it one when it is open (bounded by the guard's `maxBuckets`; a closed one
 *   for an unknown bucket is dropped);
 * - a half-open breaker's probe runs only in the process that holds the lease on
 *   `breaker:<bucket>`: one probe at a time across processes; its success closes the breaker
 *   everywhere, its failure opens it everywhere;
 * - the retry budget is one across processes: each publishes the tokens its calls and retries
 *   moved every `budgetPublishMs` and applies the others' changes, so a copy is late by at most
 *   that period plus the message's way.
 * Returns a function that stops the sharing (its last budget change is published first).
 */
export function shareOriginGuard(
  guard: OriginGuard,
  coord: Coordinator,
  options: ShareOriginGuardOptions = {},
): () => void {
  const clock = options.clock ?? systemClock;
  const every = options.budgetPublishMs ?? BUDGET_PUBLISH_MS;
  /** True while a remote state is restored: its own stateChange must not be published back. */
  let restoring = false;
  const watched = new Map<CircuitBreakerPolicy, () => void>();

  const stopBreakers = guard.onBreaker(
    (bucket, breaker) => {
      if (watched.has(breaker)) return;
      watched.set(
        breaker,
        breaker.on('stateChange', ({ to }) => {
          if (restoring) return;
          if (to === 'open')
            coord.publishBreaker(bucket, {
              state: 'open',
              openUntil: breaker.toJSON().openUntil ?? clock.now(),
            });
          else if (to === 'closed') coord.publishBreaker(bucket, { state: 'closed' });
        }),
      );
    },
    (_bucket, breaker) => {
      watched.get(breaker)?.();
      watched.delete(breaker);
    },
  );

  const stopRemote = coord.onBreaker((name, state) => {
    if (typeof name !== 'string' || name.length > MAX_BREAKER_NAME) return;
    const breaker = state.state === 'open' ? guard.adoptBucket(name) : guard.ownBreakerOf(name);
    if (breaker === undefined) return;
    restore(breaker, state);
  });

  function restore(breaker: CircuitBreakerPolicy, shared: SharedBreakerState): void {
    const now = breaker.toJSON();
    if (shared.state === 'half-open') return; // each process moves to half-open on its own
    if (shared.state === 'closed' && now.state === 'closed') return;
    restoring = true;
    try {
      // Closed as a probe's success closes it: with an empty window.
      if (shared.state === 'closed') breaker.reset();
      else
        breaker.restore({
          state: 'open',
          openUntil: shared.openUntil ?? clock.now(),
          reopenCount: now.reopenCount,
          window: now.window,
        });
    } finally {
      restoring = false;
    }
  }

  guard.gateProbes(async (bucket) => {
    const lease = await coord.lease(`breaker:${bucket}`);
    return lease.role === 'leader' ? (ok) => lease.done(ok) : undefined;
  });

  const publishBudget = (): void => {
    const change = guard.budget.takeChange();
    if (change !== 0) coord.publishBudget(ORIGIN_BUDGET, change);
  };
  let timer: TimerHandle | undefined;
  const tick = (): void => {
    publishBudget();
    timer = clock.setTimer(every, tick);
  };
  timer = clock.setTimer(every, tick);
  const stopBudget = coord.onBudget((name, tokens) => {
    if (name !== ORIGIN_BUDGET || !Number.isFinite(tokens)) return;
    guard.budget.applyChange(tokens);
  });

  return () => {
    timer?.cancel();
    timer = undefined;
    publishBudget();
    stopBudget();
    guard.gateProbes(undefined);
    stopRemote();
    stopBreakers();
    for (const stop of watched.values()) stop();
    watched.clear();
  };
}

import type { KeelError } from '../errors/index.js';

/** A listener for one event; its return value is ignored. */
export type Listener<E> = (event: E) => void;

/** Why a policy turned a call away without running it. */
export type RejectionReason =
  'circuitOpen' | 'isolated' | 'bulkheadFull' | 'queueTimeout' | 'budgetExhausted' | 'throttled' | 'aborted';

/** A call completed. `durationMs` is measured only when a listener was registered when the call started. */
export interface SuccessEvent {
  durationMs?: number;
}

/** A call failed (after whatever the policy did about it). */
export interface FailureEvent {
  error: unknown;
  durationMs?: number;
}

/** A call was turned away by the policy itself (breaker open, bulkhead full, budget spent …). */
export interface RejectedEvent {
  reason: RejectionReason;
  error: KeelError;
}

/** Events every policy emits. */
export interface CommonEvents {
  success: SuccessEvent;
  failure: FailureEvent;
  rejected: RejectedEvent;
}

/** Why a retry policy stopped retrying a retryable failure. */
export type GiveUpReason = 'attempts' | 'elapsed' | 'budget' | 'aborted';

/** Events of {@link retry}. */
export interface RetryEvents extends CommonEvents {
  /** A retry is scheduled: `attempt` is the attempt about to run (2 for the first retry). */
  retry: { attempt: number; delayMs: number; error: unknown };
  /** Retrying stopped although the failure was retryable. */
  giveUp: { attempts: number; error: unknown; reason: GiveUpReason };
}

/** States of a circuit breaker. `isolated` is held open by hand ({@link CircuitBreakerPolicy.isolate}). */
export type BreakerState = 'closed' | 'open' | 'halfOpen' | 'isolated';

/** Why a breaker opened. */
export type OpenReason = 'failureRate' | 'slowCallRate' | 'halfOpenFailure';

/** Events of {@link circuitBreaker}. */
export interface BreakerEvents extends CommonEvents {
  stateChange: { from: BreakerState; to: BreakerState };
  open: { reason: OpenReason; openForMs: number; reopenCount: number };
  halfOpen: Record<string, never>;
  close: Record<string, never>;
}

/** Events of {@link timeout}. */
export interface TimeoutEvents extends CommonEvents {
  timeout: { afterMs: number };
}

/** Events of {@link bulkhead}. */
export type BulkheadEvents = CommonEvents;

/** Events of {@link fallback}. */
export interface FallbackEvents extends CommonEvents {
  fallback: { error: unknown };
}

/** Events of {@link retryBudget}. */
export type RetryBudgetEvents = CommonEvents;

/** Events of {@link adaptiveThrottle}. */
export type AdaptiveThrottleEvents = CommonEvents;

/** Events of {@link hedge}. */
export interface HedgeEvents extends CommonEvents {
  /** A hedged attempt started (`attempt` ≥ 2). */
  hedge: { attempt: number };
}

/** Events of {@link pipeline}. */
export type PipelineEvents = CommonEvents;

/** Payload shared by events that carry nothing. */
export const NO_PAYLOAD: Record<string, never> = Object.freeze({});

/**
 * How many emitters have a `success` or `failure` listener, across the process. While it is 0
 * (the usual case) no call reads a stopwatch at all.
 * @internal
 */
export const timedEmitters = { count: 0 };

/**
 * A minimal typed event emitter. Emitting to an event with no listener costs one property read;
 * callers check {@link Emitter.has} before building a payload so nothing is allocated either.
 * A throwing listener never breaks the policy: its error is rethrown on a later microtask.
 */
export class Emitter<M extends object> {
  private map: Map<keyof M, readonly Listener<never>[]> | undefined;
  /** True when someone listens to `success` or `failure`: only then do policies start a stopwatch. */
  timed = false;

  /** Registers `listener` for `event`; the returned function removes it (calling it twice is harmless). */
  on<K extends keyof M>(event: K, listener: Listener<M[K]>): () => void {
    const map = (this.map ??= new Map<keyof M, readonly Listener<never>[]>());
    // Copy on write: an emit in progress keeps iterating the array it started with.
    map.set(event, [...(map.get(event) ?? []), listener]);
    this.refresh();
    let live = true;
    return () => {
      if (!live) return;
      live = false;
      const list = map.get(event);
      if (!list) return;
      const i = list.indexOf(listener);
      if (i < 0) return;
      const next = list.filter((_, j) => j !== i);
      if (next.length === 0) map.delete(event);
      else map.set(event, next);
      this.refresh();
    };
  }

  /** Whether `event` has at least one listener. */
  has(event: keyof M): boolean {
    return this.map !== undefined && this.map.has(event);
  }

  /** Calls every listener of `event` with `payload`. */
  emit<K extends keyof M>(event: K, payload: M[K]): void {
    const list = this.map?.get(event) as readonly Listener<M[K]>[] | undefined;
    if (list === undefined) return;
    for (const listener of list) {
      try {
        listener(payload);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  private refresh(): void {
    const timed = this.has('success' as keyof M) || this.has('failure' as keyof M);
    if (timed !== this.timed) timedEmitters.count += timed ? 1 : -1;
    this.timed = timed;
  }
}

import { classify, keelError, type KeelError } from '../errors/index.js';
import {
  deadlineScheduler,
  systemClock,
  type Clock,
  type DeadlineScheduler,
  type TimerHandle,
} from '../time/index.js';
import { constant, type Backoff } from './backoff.js';
import { PolicyBase, type BaseOptions } from './base.js';
import { consecutive } from './breaker/consecutive.js';
import { FAILED, SLOW, type BreakerWindow, type WindowSpec, type WindowState } from './breaker/window.js';
import { CallContext } from './context.js';
import { PASS } from './engine.js';
import { derivedError } from './fast-reject.js';
import { NO_PAYLOAD, type BreakerEvents, type BreakerState, type OpenReason } from './events.js';
import type { BreakerStats } from './policy.js';

/** A breaker's state as plain data (`toJSON()`), to save, share or restore (`initialState`). */
export interface BreakerSnapshot {
  state: BreakerState;
  /** Clock time (epoch ms) at which an open breaker lets a probe through. */
  openUntil?: number;
  /** Re-openings since the breaker last closed (drives a backoff open duration). */
  reopenCount: number;
  /** Successful probes so far in half-open. */
  halfOpenSuccesses?: number;
  window: WindowState;
}

/** Options of {@link circuitBreaker}. */
export interface CircuitBreakerOptions extends BaseOptions {
  /** When to open (default `consecutive(5)`). */
  window?: WindowSpec;
  /** How long to stay open before a probe: a duration or a backoff that grows on each re-open (default 10 s). */
  halfOpenAfterMs?: number | Backoff;
  /** Probes admitted at once in half-open, counted when admitted (default 1). */
  maxProbes?: number;
  /** Successful probes needed to close (default 1). */
  successesToClose?: number;
  /** A call slower than this counts as slow (default: no slow-call detection). */
  slowCallMs?: number;
  /** Share of slow calls in the window that opens the breaker (default 1, as resilience4j). */
  slowCallRate?: number;
  /** Which failures count against the dependency (default {@link countsAsFailure}); others count as successes. */
  shouldCount?: (error: KeelError) => boolean;
  clock?: Clock;
  /** State to start from (a `toJSON()` of this or another breaker). */
  initialState?: BreakerSnapshot;
}

const LOCAL_REJECTIONS = new Set(['CIRCUIT_OPEN', 'BULKHEAD_FULL', 'THROTTLED', 'ABORTED']);

/**
 * The default failure predicate of breakers: retryable errors count (the dependency is in
 * trouble), client errors do not (a 404 is an answer). A RETRIES_EXHAUSTED or
 * RETRY_BUDGET_EXHAUSTED counts when its cause would; local rejections by other policies never do.
 */
export function countsAsFailure(error: KeelError): boolean {
  if (LOCAL_REJECTIONS.has(error.code)) return false;
  if (error.code === 'RETRIES_EXHAUSTED' || error.code === 'RETRY_BUDGET_EXHAUSTED') {
    return error.cause !== undefined && countsAsFailure(classify(error.cause));
  }
  return error.retryable;
}

/** Per-call state, made only for probes and for slow-call timing. */
class BreakerContext extends CallContext {
  generation = 0;
  probe = false;
  beganAt = 0;
}

const DEFAULT_OPEN_FOR = constant(10_000);

const STATES: readonly BreakerState[] = ['closed', 'open', 'halfOpen', 'isolated'];

/**
 * A circuit breaker: counts failures in a pluggable window; when it says so, opens and rejects
 * calls at once with CIRCUIT_OPEN (no stack, no call to the dependency) until `halfOpenAfterMs`
 * passed, then lets `maxProbes` probes through; `successesToClose` successful probes close it,
 * a failed one re-opens it. No timers: the open → half-open move happens on the next call.
 */
export class CircuitBreakerPolicy extends PolicyBase<BreakerEvents, BreakerStats> {
  readonly kind = 'circuitBreaker' as const;
  private window: BreakerWindow;
  private readonly spec: WindowSpec;
  private readonly slowCallRate: number;
  private readonly openFor: Backoff;
  private readonly maxProbes: number;
  private readonly successesToClose: number;
  private readonly slowCallMs: number | undefined;
  private readonly shouldCount: (error: KeelError) => boolean;
  private readonly clock: Clock;
  private current: BreakerState = 'closed';
  private generation = 0;
  private openUntil = 0;
  private nextOpen: Backoff;
  private reopenCount = 0;
  private probesInFlight = 0;
  private halfOpenSuccesses = 0;
  private isolations = 0;
  private trips = 0;
  private probes = 0;
  private stateSince: number;
  private readonly timeIn: Record<BreakerState, number> = { closed: 0, open: 0, halfOpen: 0, isolated: 0 };
  private template: KeelError | undefined;
  private openTimer: TimerHandle | undefined;
  private readonly scheduler: DeadlineScheduler;
  private templateGeneration = -1;

  constructor(options: CircuitBreakerOptions = {}) {
    super(options);
    const slowCallRate = options.slowCallRate ?? 1;
    if (!(slowCallRate > 0 && slowCallRate <= 1)) {
      throw keelError(
        'INVALID_CONFIG',
        `circuitBreaker: slowCallRate must be in (0, 1], got ${String(slowCallRate)}`,
      );
    }
    this.spec = options.window ?? consecutive(5);
    this.slowCallRate = slowCallRate;
    this.window = this.spec.create(slowCallRate);
    const after = options.halfOpenAfterMs ?? DEFAULT_OPEN_FOR;
    this.openFor = typeof after === 'number' ? constant(after) : after;
    this.nextOpen = this.openFor;
    this.maxProbes = positiveInt('maxProbes', options.maxProbes ?? 1);
    this.successesToClose = positiveInt('successesToClose', options.successesToClose ?? 1);
    this.slowCallMs = options.slowCallMs;
    this.shouldCount = options.shouldCount ?? countsAsFailure;
    this.clock = options.clock ?? systemClock;
    this.scheduler = deadlineScheduler(this.clock);
    this.stateSince = this.clock.now();
    if (options.initialState !== undefined) this.restore(options.initialState);
  }

  /** The current state (an open breaker whose wait is over reports, and becomes, half-open). */
  get state(): BreakerState {
    if (this.current === 'open' && this.clock.now() >= this.openUntil) this.transition('halfOpen');
    return this.current;
  }

  /**
   * Holds the breaker open (state `isolated`) until every holder released it: reference-counted,
   * each call returns its own release function (calling it again does nothing).
   */
  isolate(): () => void {
    this.isolations++;
    if (this.current !== 'isolated') this.transition('isolated');
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.isolations--;
      if (this.isolations === 0 && this.current === 'isolated') this.close();
    };
  }

  /** Closes the breaker and clears its window (an isolation still holds until released). */
  reset(): void {
    if (this.current === 'isolated') return;
    this.close();
  }

  /** The breaker's state as plain data. */
  toJSON(): BreakerSnapshot {
    const snap: BreakerSnapshot = {
      state: this.current,
      reopenCount: this.reopenCount,
      window: this.window.toJSON(),
    };
    if (this.current === 'open') snap.openUntil = this.openUntil;
    if (this.current === 'halfOpen') snap.halfOpenSuccesses = this.halfOpenSuccesses;
    return snap;
  }

  /**
   * Moves the breaker to `snapshot` (a `toJSON()` of this or another breaker, such as one in
   * another process): its window, re-open count and state, `open` until the snapshot's
   * `openUntil` (a snapshot without one, or an `isolated` one, opens for the next open duration).
   * Calls admitted before no longer count, except that a probe still in flight keeps its place
   * among `maxProbes`. Emits `stateChange` (and `halfOpen` or `close`) as any move does, but not
   * `open`: nothing tripped here. A breaker isolated by hand stays isolated until released.
   * Throws INVALID_CONFIG when `snapshot.state` is not a breaker state.
   */
  restore(snapshot: BreakerSnapshot): void {
    if (!STATES.includes(snapshot.state)) {
      throw keelError(
        'INVALID_CONFIG',
        `circuitBreaker: restored state is not a breaker state (${STATES.join(', ')}): ${JSON.stringify(snapshot.state)}`,
      );
    }
    if (this.current === 'isolated') return;
    this.window = this.spec.create(this.slowCallRate, snapshot.window);
    this.nextOpen = this.openFor;
    const reopens = Number.isFinite(snapshot.reopenCount) ? Math.max(0, Math.floor(snapshot.reopenCount)) : 0;
    // A backoff open duration resumes where the snapshot's re-openings left it (bounded walk).
    this.reopenCount = reopens;
    for (let i = 0; i < Math.min(reopens, 64); i++) this.nextOpen = this.nextOpen.next().next;
    if (snapshot.state === 'closed') {
      this.transition('closed');
      return;
    }
    if (snapshot.state === 'halfOpen') {
      this.transition('halfOpen');
      this.halfOpenSuccesses = Math.max(0, Math.floor(snapshot.halfOpenSuccesses ?? 0));
      return;
    }
    const now = this.clock.now();
    const step = this.nextOpen.next();
    this.nextOpen = step.next;
    this.openUntil =
      snapshot.state === 'open' && snapshot.openUntil !== undefined && Number.isFinite(snapshot.openUntil)
        ? snapshot.openUntil
        : now + step.delayMs;
    this.transition('open');
    this.openTimer = this.scheduler.schedule(Math.max(0, this.openUntil - now), () => {
      this.onOpenElapsed();
    });
  }

  /** The outermost layer's shortcut: an open or isolated breaker rejects before any context is made. */
  rejectNow(): KeelError | undefined {
    if (this.current === 'open') {
      this.calls++;
      return this.reject('circuitOpen');
    }
    if (this.current === 'isolated') {
      this.calls++;
      return this.reject('isolated');
    }
    return undefined;
  }

  enter(ctx: CallContext, level: number): CallContext | KeelError {
    this.calls++;
    switch (this.current) {
      case 'closed':
        if (this.slowCallMs === undefined) return ctx;
        return this.context(ctx, level, false);
      case 'open':
        // No clock read: a deadline on the shared scheduler moves the breaker to half-open.
        return this.reject('circuitOpen');
      case 'halfOpen':
        return this.admitProbe(ctx, level);
      case 'isolated':
        return this.reject('isolated');
    }
  }

  onSuccess(ctx: CallContext, level: number): void {
    this.succeeded(ctx);
    if (this.current === 'closed' && ctx.level !== level) {
      // The common case: a closed breaker, no per-call state.
      const reason = this.window.record(0, this.window.needsTime ? this.clock.now() : 0);
      if (reason !== undefined) this.open(reason);
      return;
    }
    this.settle(ctx, level, 0);
  }

  onFailure(ctx: CallContext, error: unknown, _next: unknown, level: number): typeof PASS {
    this.failed(ctx, error);
    this.settle(ctx, level, this.shouldCount(classify(error)) ? FAILED : 0);
    return PASS;
  }

  stats(): BreakerStats {
    const state = this.state;
    const timeInStateMs = { ...this.timeIn };
    timeInStateMs[state] += this.clock.now() - this.stateSince;
    return { ...this.commonStats(), state, trips: this.trips, probes: this.probes, timeInStateMs };
  }

  private settle(ctx: CallContext, level: number, failed: number): void {
    let flags = failed;
    // A context made at this breaker's level is one of its own (a probe or a timed call).
    if (ctx.level === level && ctx instanceof BreakerContext) {
      // A probe stays counted until it ends, even past a state change: a recovering dependency
      // never sees more than maxProbes probes at once.
      if (ctx.probe) this.probesInFlight--;
      if (ctx.generation !== this.generation) return; // admitted before a state change: stale
      if (this.slowCallMs !== undefined && this.clock.now() - ctx.beganAt >= this.slowCallMs) flags |= SLOW;
      if (ctx.probe) {
        if (flags !== 0) this.open('halfOpenFailure');
        else if (++this.halfOpenSuccesses >= this.successesToClose) this.close();
        return;
      }
    }
    if (this.current !== 'closed') return;
    const reason = this.window.record(flags, this.window.needsTime ? this.clock.now() : 0);
    if (reason !== undefined) this.open(reason);
  }

  private admitProbe(ctx: CallContext, level: number): CallContext | KeelError {
    if (this.probesInFlight >= this.maxProbes) return this.reject('circuitOpen');
    this.probesInFlight++;
    this.probes++;
    return this.context(ctx, level, true);
  }

  private context(ctx: CallContext, level: number, probe: boolean): BreakerContext {
    const c = new BreakerContext(ctx, undefined, level, ctx.attempt);
    c.startedAt = ctx.startedAt;
    c.generation = this.generation;
    c.probe = probe;
    if (this.slowCallMs !== undefined) c.beganAt = this.clock.now();
    return c;
  }

  private reject(reason: 'circuitOpen' | 'isolated'): KeelError {
    // One real KeelError per state period; each rejection is a light object derived from it.
    if (this.template === undefined || this.templateGeneration !== this.generation) {
      const details: Record<string, unknown> = { state: this.current };
      if (reason !== 'isolated') {
        details.openUntil = this.openUntil;
        details.retryAfterMs = Math.max(0, this.openUntil - this.clock.now());
      }
      this.template = keelError(
        'CIRCUIT_OPEN',
        reason === 'isolated'
          ? `${this.label('the circuit breaker')} is isolated by hand`
          : `${this.label('the circuit breaker')} is ${this.current === 'open' ? 'open' : 'half-open with all probes busy'}: ` +
              'calls are rejected without reaching the dependency',
        details,
        { stack: false },
      );
      this.templateGeneration = this.generation;
    }
    return this.rejected(reason, derivedError(this.template));
  }

  /** The open period is over: let probes in (one deadline per open period, on the shared scheduler). */
  private onOpenElapsed(): void {
    this.openTimer = undefined;
    if (this.current === 'open') this.transition('halfOpen');
  }

  private open(reason: OpenReason): void {
    const step = this.nextOpen.next();
    this.nextOpen = step.next;
    if (reason === 'halfOpenFailure') this.reopenCount++;
    this.openUntil = this.clock.now() + step.delayMs;
    this.trips++;
    this.transition('open');
    this.openTimer = this.scheduler.schedule(step.delayMs, () => {
      this.onOpenElapsed();
    });
    if (this.events.has('open')) {
      this.events.emit('open', { reason, openForMs: step.delayMs, reopenCount: this.reopenCount });
    }
  }

  private close(): void {
    this.window.reset();
    this.nextOpen = this.openFor;
    this.reopenCount = 0;
    this.transition('closed');
  }

  private transition(to: BreakerState): void {
    const from = this.current;
    if (this.openTimer !== undefined) {
      this.openTimer.cancel();
      this.openTimer = undefined;
    }
    const now = this.clock.now();
    this.timeIn[from] += now - this.stateSince;
    this.stateSince = now;
    this.current = to;
    this.generation++;
    this.halfOpenSuccesses = 0;
    if (from === to) return;
    if (this.events.has('stateChange')) this.events.emit('stateChange', { from, to });
    if (to === 'halfOpen' && this.events.has('halfOpen')) this.events.emit('halfOpen', NO_PAYLOAD);
    if (to === 'closed' && this.events.has('close')) this.events.emit('close', NO_PAYLOAD);
  }
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw keelError(
      'INVALID_CONFIG',
      `circuitBreaker: ${name} must be an integer >= 1, got ${String(value)}`,
    );
  }
  return value;
}

/**
 * Creates a {@link CircuitBreakerPolicy}. Defaults: `consecutive(5)`, open 10 s, one probe,
 * one success to close, no slow-call detection, {@link countsAsFailure}.
 */
export function circuitBreaker(options?: CircuitBreakerOptions): CircuitBreakerPolicy {
  return new CircuitBreakerPolicy(options);
}

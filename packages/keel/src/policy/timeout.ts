import { keelError } from '../errors/index.js';
import { deadlineScheduler, systemClock, type Clock, type DeadlineScheduler } from '../time/index.js';
import { PolicyBase, type BaseOptions } from './base.js';
import { CallContext } from './context.js';
import { PASS, type Next } from './engine.js';
import type { TimeoutEvents } from './events.js';
import type { TimeoutStats } from './policy.js';

/**
 * - `'cooperative'` (default): at the deadline the call's signal aborts and the policy waits for
 *   the function; if it then fails, the failure is a TIMEOUT; if it still returns, its value is
 *   used. The function must honour `ctx.signal` (fetch, undici, AWS SDK and node streams do).
 * - `'aggressive'`: at the deadline the call rejects with TIMEOUT at once and the signal aborts;
 *   whatever the function does later is ignored.
 */
export type TimeoutStrategy = 'cooperative' | 'aggressive';

/** Options of {@link timeout}. */
export interface TimeoutOptions extends BaseOptions {
  /** Default `'cooperative'`. */
  strategy?: TimeoutStrategy;
  /**
   * How late a deadline may fire (default timeoutMs / 20, between 1 ms and 250 ms). The policy
   * keeps one tick of this length running while calls are in flight, instead of a timer and a
   * clock read per call.
   */
  resolutionMs?: number;
  clock?: Clock;
}

/** A call under a timeout: an abort scope and a node in the policy's list of calls in flight. */
type TimeoutContext = CallContext;

/**
 * Bounds how long a call may take. Calls in flight sit in a list ordered by start; one tick per
 * policy (on the shared {@link DeadlineScheduler}, only while calls are in flight) expires those
 * past their deadline. A call costs one small object and no timer. Deadlines fire between
 * `timeoutMs` and `timeoutMs + resolutionMs` after the call started.
 */
export class TimeoutPolicy extends PolicyBase<TimeoutEvents, TimeoutStats> {
  readonly kind = 'timeout' as const;
  readonly timeoutMs: number;
  readonly strategy: TimeoutStrategy;
  readonly wrap: ((ctx: CallContext, next: Next, level: number) => Promise<unknown>) | undefined;
  private readonly tickMs: number;
  private readonly ticksToExpire: number;
  private readonly clock: Clock;
  private readonly scheduler: DeadlineScheduler;
  private head: TimeoutContext | undefined;
  private tail: TimeoutContext | undefined;
  private inFlight = 0;
  private tick = 0;
  private origin = 0;
  private ticking = false;
  private timeouts = 0;
  private tickFn: (() => void) | undefined;

  constructor(timeoutMs: number, options: TimeoutOptions = {}) {
    super(options);
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw keelError(
        'INVALID_CONFIG',
        `timeout: timeoutMs must be a finite number > 0, got ${String(timeoutMs)}`,
      );
    }
    this.timeoutMs = timeoutMs;
    this.strategy = options.strategy ?? 'cooperative';
    if (this.strategy !== 'cooperative' && this.strategy !== 'aggressive') {
      throw keelError('INVALID_CONFIG', `timeout: strategy must be 'cooperative' or 'aggressive'`);
    }
    this.tickMs = Math.max(1, options.resolutionMs ?? Math.min(250, timeoutMs / 20));
    // +1: a call starts somewhere inside the current tick, so one more tick makes sure it had its time.
    this.ticksToExpire = Math.ceil(timeoutMs / this.tickMs) + 1;
    this.clock = options.clock ?? systemClock;
    this.scheduler = deadlineScheduler(this.clock);
    this.wrap = this.strategy === 'aggressive' ? this.runAggressive.bind(this) : undefined;
  }

  enter(ctx: CallContext, level: number): CallContext {
    this.calls++;
    return this.admit(ctx, level);
  }

  onSuccess(ctx: CallContext): void {
    this.release(ctx);
    this.succeeded(ctx);
  }

  onFailure(ctx: CallContext, error: unknown): typeof PASS {
    this.release(ctx);
    const timedOut = ctx.timeoutError;
    this.failed(ctx, timedOut ?? error);
    if (timedOut !== undefined) throw timedOut;
    return PASS;
  }

  stats(): TimeoutStats {
    return { ...this.commonStats(), timeouts: this.timeouts, inFlight: this.inFlight };
  }

  private runAggressive(ctx: CallContext, next: Next, level: number): Promise<unknown> {
    this.calls++;
    const c = this.admit(ctx, level);
    return new Promise((resolve, reject) => {
      c.settle = reject;
      next(c).then(
        (value) => {
          if (c.timeoutError !== undefined) return;
          this.release(c);
          this.succeeded(c);
          resolve(value);
        },
        (error: unknown) => {
          if (c.timeoutError !== undefined) return;
          this.release(c);
          this.failed(c, error);
          reject(error);
        },
      );
    });
  }

  private admit(ctx: CallContext, level: number): TimeoutContext {
    if (!this.ticking) this.startTicking();
    let c: TimeoutContext;
    if (level === 0 && ctx.level === -1 && !ctx.linked && ctx.timeoutError === undefined) {
      c = ctx; // the root: only the engine holds it, so as the outermost layer this call's node can be it
    } else {
      c = new CallContext(ctx, undefined, level, ctx.attempt);
      c.startedAt = ctx.startedAt;
    }
    c.expiresAtTick = this.tick + this.ticksToExpire;
    c.linked = true;
    const tail = this.tail;
    if (tail === undefined) this.head = c;
    else {
      tail.next = c;
      c.prev = tail;
    }
    this.tail = c;
    this.inFlight++;
    return c;
  }

  private release(c: TimeoutContext): void {
    c.dispose();
    if (!c.linked) return;
    c.linked = false;
    const { prev, next } = c;
    if (prev === undefined) this.head = next;
    else prev.next = next;
    if (next === undefined) this.tail = prev;
    else next.prev = prev;
    c.prev = undefined;
    c.next = undefined;
    this.inFlight--;
  }

  private startTicking(): void {
    this.ticking = true;
    this.origin = this.clock.now();
    this.tick = 0;
    this.tickFn ??= () => {
      this.onTick();
    };
    this.scheduler.schedule(this.tickMs, this.tickFn);
  }

  private onTick(): void {
    const now = this.clock.now();
    this.tick = Math.floor((now - this.origin) / this.tickMs);
    for (let c = this.head; c !== undefined && c.expiresAtTick <= this.tick; c = this.head) {
      this.release(c);
      this.expire(c);
    }
    if (this.head === undefined) {
      this.ticking = false;
      return;
    }
    this.scheduler.schedule(this.origin + (this.tick + 1) * this.tickMs - now, this.tickFn as () => void);
  }

  private expire(c: TimeoutContext): void {
    this.timeouts++;
    const error = keelError(
      'TIMEOUT',
      `${this.label('the call')} timed out after ${this.timeoutMs} ms` +
        (this.strategy === 'cooperative'
          ? ' (its signal was aborted)'
          : ' (abandoned; its signal was aborted)'),
      {
        timeoutMs: this.timeoutMs,
        strategy: this.strategy,
        ...(this.name === undefined ? {} : { operation: this.name }),
      },
      { stack: false },
    );
    c.timeoutError = error;
    if (this.events.has('timeout')) this.events.emit('timeout', { afterMs: this.timeoutMs });
    c.abort(error);
    if (c.settle !== undefined) {
      this.failed(c, error);
      c.settle(error);
    }
  }
}

/** {@link timeout}'s single-argument form: the time allowed as `ms`, with the other options. */
export interface TimeoutConfig extends TimeoutOptions {
  /** Milliseconds a call may take (> 0). */
  ms: number;
}

/**
 * Creates a {@link TimeoutPolicy}: calls longer than `timeoutMs` fail with TIMEOUT (retryable).
 * Default strategy `'cooperative'`; no per-call timers either way. The time comes first
 * (`timeout(1000, { strategy: 'aggressive' })`) or as `ms` in one options object, the way every
 * other policy is configured (`timeout({ ms: 1000, strategy: 'aggressive' })`).
 * @throws KeelError `INVALID_CONFIG` when the time is not a finite number > 0.
 */
export function timeout(timeoutMs: number, options?: TimeoutOptions): TimeoutPolicy;
export function timeout(config: TimeoutConfig): TimeoutPolicy;
export function timeout(timeoutMsOrConfig: number | TimeoutConfig, options?: TimeoutOptions): TimeoutPolicy {
  if (typeof timeoutMsOrConfig !== 'object' || timeoutMsOrConfig === null) {
    return new TimeoutPolicy(timeoutMsOrConfig, options);
  }
  const { ms, ...rest } = timeoutMsOrConfig;
  if (!Number.isFinite(ms) || ms <= 0) {
    throw keelError('INVALID_CONFIG', `timeout: ms must be a finite number > 0, got ${String(ms)}`);
  }
  return new TimeoutPolicy(ms, rest);
}

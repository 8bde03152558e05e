import { keelError, type KeelError } from '../errors/index.js';
import { deadlineScheduler, systemClock, type Clock, type TimerHandle } from '../time/index.js';
import { PolicyBase, type BaseOptions } from './base.js';
import { abortedError, type CallContext } from './context.js';
import { PASS } from './engine.js';
import type { BulkheadEvents } from './events.js';
import { derivedError } from './fast-reject.js';
import type { BulkheadStats } from './policy.js';

/** Options of {@link bulkhead}. */
export interface BulkheadOptions extends BaseOptions {
  /** Calls allowed to run at once (default 10). */
  maxConcurrent?: number;
  /** Calls allowed to wait for a slot (default 0: reject at once when full). */
  maxQueue?: number;
  /** A queued call that waited this long is rejected (default: waits until a slot frees or it is aborted). */
  queueTimeoutMs?: number;
  clock?: Clock;
}

interface Waiter {
  ctx: CallContext;
  resolve: (ctx: CallContext) => void;
  reject: (error: KeelError) => void;
  timer: TimerHandle | undefined;
  onAbort: (() => void) | undefined;
  done: boolean;
}

/**
 * Limits concurrency: at most `maxConcurrent` calls run, up to `maxQueue` more wait in order,
 * anything beyond is rejected at once with BULKHEAD_FULL. A queued call leaves the queue when
 * its caller aborts or after `queueTimeoutMs`.
 */
export class BulkheadPolicy extends PolicyBase<BulkheadEvents, BulkheadStats> {
  readonly kind = 'bulkhead' as const;
  readonly maxConcurrent: number;
  readonly maxQueue: number;
  private readonly queueTimeoutMs: number | undefined;
  private readonly clock: Clock;
  private active = 0;
  private queue: Waiter[] = [];
  private queueHead = 0;
  private queued = 0;
  private fullTemplate: KeelError | undefined;

  constructor(options: BulkheadOptions = {}) {
    super(options);
    this.maxConcurrent = count('maxConcurrent', options.maxConcurrent ?? 10, 1);
    this.maxQueue = count('maxQueue', options.maxQueue ?? 0, 0);
    this.queueTimeoutMs = options.queueTimeoutMs;
    this.clock = options.clock ?? systemClock;
  }

  enter(ctx: CallContext): CallContext | Promise<CallContext> | KeelError {
    this.calls++;
    if (this.active < this.maxConcurrent) {
      this.active++;
      return ctx;
    }
    if (this.queued >= this.maxQueue) {
      this.fullTemplate ??= keelError(
        'BULKHEAD_FULL',
        `${this.label('the bulkhead')} is full: ${this.maxConcurrent} calls running and ${this.maxQueue} waiting; ` +
          `shed load or raise maxConcurrent/maxQueue`,
        { maxConcurrent: this.maxConcurrent, maxQueue: this.maxQueue },
        { stack: false },
      );
      return this.rejected(
        'bulkheadFull',
        derivedError(this.fullTemplate, {
          active: this.active,
          queued: this.queued,
          maxConcurrent: this.maxConcurrent,
          maxQueue: this.maxQueue,
        }),
      );
    }
    return this.enqueue(ctx);
  }

  onSuccess(ctx: CallContext): void {
    this.succeeded(ctx);
    this.release();
  }

  onFailure(ctx: CallContext, error: unknown): typeof PASS {
    this.failed(ctx, error);
    this.release();
    return PASS;
  }

  stats(): BulkheadStats {
    return {
      ...this.commonStats(),
      active: this.active,
      queued: this.queued,
      maxConcurrent: this.maxConcurrent,
      maxQueue: this.maxQueue,
    };
  }

  private enqueue(ctx: CallContext): Promise<CallContext> {
    return new Promise<CallContext>((resolve, reject) => {
      const waiter: Waiter = { ctx, resolve, reject, timer: undefined, onAbort: undefined, done: false };
      this.queue.push(waiter);
      this.queued++;
      if (this.queueTimeoutMs !== undefined) {
        const waited = this.queueTimeoutMs;
        waiter.timer = deadlineScheduler(this.clock).schedule(waited, () => {
          this.leave(
            waiter,
            'queueTimeout',
            keelError(
              'BULKHEAD_FULL',
              `${this.label('the bulkhead')} had no free slot within ${waited} ms (maxConcurrent ${this.maxConcurrent})`,
              { queueTimeoutMs: waited, maxConcurrent: this.maxConcurrent },
              { stack: false },
            ),
          );
        });
      }
      if (ctx.aborted) {
        this.leave(waiter, 'aborted', abortedError(ctx.abortReason(), this.label('the bulkhead queue')));
        return;
      }
      const signal = ctx.signal;
      waiter.onAbort = () => {
        this.leave(waiter, 'aborted', abortedError(signal.reason, this.label('the bulkhead queue')));
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
    });
  }

  private leave(waiter: Waiter, reason: 'queueTimeout' | 'aborted', error: KeelError): void {
    if (waiter.done) return;
    this.finish(waiter);
    waiter.reject(this.rejected(reason, error));
  }

  private finish(waiter: Waiter): void {
    waiter.done = true;
    this.queued--;
    waiter.timer?.cancel();
    if (waiter.onAbort !== undefined) waiter.ctx.signal.removeEventListener('abort', waiter.onAbort);
  }

  private release(): void {
    this.active--;
    while (this.queued > 0 && this.queueHead < this.queue.length) {
      const waiter = this.queue[this.queueHead++] as Waiter;
      if (waiter.done) continue;
      this.finish(waiter);
      this.active++;
      waiter.resolve(waiter.ctx);
      break;
    }
    if (this.queueHead > 64 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }
}

function count(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) {
    throw keelError('INVALID_CONFIG', `bulkhead: ${name} must be an integer >= ${min}, got ${String(value)}`);
  }
  return value;
}

/** Creates a {@link BulkheadPolicy} (defaults: 10 at once, no queue). */
export function bulkhead(options?: BulkheadOptions): BulkheadPolicy {
  return new BulkheadPolicy(options);
}

import { keelError, type KeelError } from '../errors/index.js';
import {
  deadlineScheduler,
  systemClock,
  type Clock,
  type DeadlineScheduler,
  type TimerHandle,
} from '../time/index.js';
import { PolicyBase, type BaseOptions } from './base.js';
import type { CallContext } from './context.js';
import { PASS, type Next } from './engine.js';
import type { HedgeEvents } from './events.js';
import type { HedgeStats } from './policy.js';

/** Options of {@link hedge}. */
export interface HedgeOptions extends BaseOptions {
  /** Wait without an answer before starting another attempt (default 100 ms). */
  delayMs?: number;
  /** Extra attempts at most (default 1). */
  maxHedges?: number;
  clock?: Clock;
}

/**
 * Hedged requests ("The Tail at Scale"): when an attempt has not answered after `delayMs`, start
 * another, up to `maxHedges` more; the first success wins and the others' signals are aborted.
 * A failed attempt starts the next one at once. If every attempt fails, the last error is thrown.
 * Only hedge idempotent work: several attempts may reach the dependency.
 */
export class HedgePolicy extends PolicyBase<HedgeEvents, HedgeStats> {
  readonly kind = 'hedge' as const;
  readonly wrap: (ctx: CallContext, next: Next, level: number) => Promise<unknown>;
  private readonly delayMs: number;
  private readonly maxHedges: number;
  private readonly scheduler: DeadlineScheduler;
  private hedges = 0;
  private hedgeWins = 0;
  private lostTemplate: KeelError | undefined;

  constructor(options: HedgeOptions = {}) {
    super(options);
    this.delayMs = options.delayMs ?? 100;
    this.maxHedges = options.maxHedges ?? 1;
    if (!(this.delayMs >= 0) || !Number.isInteger(this.maxHedges) || this.maxHedges < 0) {
      throw keelError('INVALID_CONFIG', 'hedge: delayMs must be >= 0 and maxHedges an integer >= 0');
    }
    this.scheduler = deadlineScheduler(options.clock ?? systemClock);
    this.wrap = (ctx, next, level) => this.race(ctx, next, level);
  }

  enter(ctx: CallContext): CallContext {
    return ctx; // unused: a hedge always wraps
  }

  onSuccess(): void {
    // unused: a hedge always wraps
  }

  onFailure(): typeof PASS {
    return PASS; // unused: a hedge always wraps
  }

  stats(): HedgeStats {
    return { ...this.commonStats(), hedges: this.hedges, hedgeWins: this.hedgeWins };
  }

  private race(ctx: CallContext, next: Next, level: number): Promise<unknown> {
    this.calls++;
    return new Promise((resolve, reject) => {
      const attempts: CallContext[] = [];
      let running = 0;
      let settled = false;
      let timer: TimerHandle | undefined;
      const finish = (): void => {
        settled = true;
        timer?.cancel();
        timer = undefined;
      };
      const launch = (): void => {
        timer?.cancel();
        timer = undefined;
        if (settled || ctx.aborted) return;
        const attempt = attempts.length + 1;
        const c = ctx.child(level, attempt);
        attempts.push(c);
        running++;
        if (attempt > 1) {
          this.hedges++;
          if (this.events.has('hedge')) this.events.emit('hedge', { attempt });
        }
        if (attempt <= this.maxHedges) timer = this.scheduler.schedule(this.delayMs, launch);
        next(c).then(
          (value) => {
            running--;
            c.dispose();
            if (settled) return;
            finish();
            if (attempt > 1) this.hedgeWins++;
            this.lostTemplate ??= keelError(
              'ABORTED',
              `${this.label('a hedged attempt')} lost the race`,
              {},
              { stack: false },
            );
            for (const other of attempts) if (other !== c) other.abort(this.lostTemplate);
            this.succeeded(ctx);
            resolve(value);
          },
          (error: unknown) => {
            running--;
            c.dispose();
            if (settled) return;
            if (attempts.length <= this.maxHedges && !ctx.aborted) launch();
            else if (running === 0) {
              finish();
              this.failed(ctx, error);
              reject(error);
            }
          },
        );
      };
      launch();
    });
  }
}

/** Creates a {@link HedgePolicy} (defaults: one extra attempt after 100 ms). */
export function hedge(options?: HedgeOptions): HedgePolicy {
  return new HedgePolicy(options);
}

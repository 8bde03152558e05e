import { sleepWith, type Clock, type TimerHandle } from './clock.js';

interface VirtualTimer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** Lets pending promise callbacks (and their follow-ups) run before time moves on. */
async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/**
 * A clock that only moves when told to. Timers fire in order of their due time (then of
 * registration) during {@link VirtualClock.advance} or {@link VirtualClock.runAll}, and promise
 * callbacks scheduled by a timer run before the next timer fires.
 */
export class VirtualClock implements Clock {
  private current: number;
  private seq = 0;
  private timers: VirtualTimer[] = [];

  /** @param startMs the initial value of `now()` (default 0). */
  constructor(startMs = 0) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const timer: VirtualTimer = { at: this.current + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepWith(this, ms, signal);
  }

  /** How many timers are waiting to fire. */
  pendingTimers(): number {
    return this.timers.reduce((n, t) => (t.cancelled ? n : n + 1), 0);
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way, in order. */
  async advance(ms: number): Promise<void> {
    if (ms < 0) throw new RangeError(`VirtualClock.advance: ms must be >= 0, got ${ms}`);
    const target = this.current + ms;
    await flushMicrotasks();
    for (;;) {
      const next = this.nextDue();
      if (!next || next.at > target) break;
      this.fire(next);
      await flushMicrotasks();
    }
    this.current = target;
  }

  /**
   * Fires timers until none are left (including ones scheduled by the timers themselves).
   * @throws RangeError after `maxTimers` firings, which means something reschedules forever.
   */
  async runAll(maxTimers = 100_000): Promise<void> {
    await flushMicrotasks();
    for (let fired = 0; ; fired++) {
      const next = this.nextDue();
      if (!next) return;
      if (fired >= maxTimers)
        throw new RangeError(`VirtualClock.runAll: more than ${maxTimers} timers fired`);
      this.fire(next);
      await flushMicrotasks();
    }
  }

  private nextDue(): VirtualTimer | undefined {
    this.timers = this.timers.filter((t) => !t.cancelled);
    let best: VirtualTimer | undefined;
    for (const t of this.timers) {
      if (!best || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t;
    }
    return best;
  }

  private fire(timer: VirtualTimer): void {
    timer.cancelled = true;
    this.current = Math.max(this.current, timer.at);
    timer.fn();
  }
}

import { keelError } from '../../errors/index.js';
import type { OpenReason } from '../events.js';
import { FAILED, reaches, SLOW, type BreakerWindow, type WindowSpec, type WindowState } from './window.js';

/** Options of {@link timeWindow}. */
export interface TimeWindowOptions {
  /** Length of the window (default 10 s). */
  ms?: number;
  /** Buckets the window is cut into; outcomes leave the window one bucket at a time (default 10). */
  buckets?: number;
  /** Share of failures in the window that opens the breaker (default 0.5). */
  failureRate?: number;
  /** No decision before this many calls are in the window (default 10). */
  minCalls?: number;
}

// Per bucket, four numbers in one Float64Array: bucket index, calls, failures, slow calls.
const STRIDE = 4;

class TimeWindow implements BreakerWindow {
  readonly needsTime = true;
  private readonly data: Float64Array;
  private calls = 0;
  private failures = 0;
  private slowCalls = 0;

  constructor(
    private readonly bucketMs: number,
    private readonly buckets: number,
    private readonly failureRate: number,
    private readonly minCalls: number,
    private readonly slowCallRate: number,
  ) {
    this.data = new Float64Array(buckets * STRIDE).fill(-1);
  }

  record(flags: number, nowMs: number): OpenReason | undefined {
    const index = Math.floor(nowMs / this.bucketMs);
    const slot = (index % this.buckets) * STRIDE;
    const d = this.data;
    if (d[slot] !== index) {
      this.expire(index);
      d[slot] = index;
      d[slot + 1] = 0;
      d[slot + 2] = 0;
      d[slot + 3] = 0;
    }
    d[slot + 1] = (d[slot + 1] as number) + 1;
    this.calls++;
    if ((flags & FAILED) !== 0) {
      d[slot + 2] = (d[slot + 2] as number) + 1;
      this.failures++;
    }
    if ((flags & SLOW) !== 0) {
      d[slot + 3] = (d[slot + 3] as number) + 1;
      this.slowCalls++;
    }
    if (this.calls < this.minCalls) return undefined;
    if (reaches(this.failures, this.calls, this.failureRate)) return 'failureRate';
    if (reaches(this.slowCalls, this.calls, this.slowCallRate)) return 'slowCallRate';
    return undefined;
  }

  /** Drops buckets that fell out of the window ending at bucket `index`. */
  private expire(index: number): void {
    const d = this.data;
    for (let b = 0; b < this.buckets; b++) {
      const s = b * STRIDE;
      const at = d[s] as number;
      if (at >= 0 && at <= index - this.buckets) {
        this.calls -= d[s + 1] as number;
        this.failures -= d[s + 2] as number;
        this.slowCalls -= d[s + 3] as number;
        d[s] = -1;
        d[s + 1] = 0;
        d[s + 2] = 0;
        d[s + 3] = 0;
      }
    }
  }

  reset(): void {
    this.data.fill(-1);
    this.calls = 0;
    this.failures = 0;
    this.slowCalls = 0;
  }

  restore(state: Extract<WindowState, { kind: 'timeWindow' }>): void {
    for (const b of state.buckets.slice(-this.buckets)) {
      const s = (b.index % this.buckets) * STRIDE;
      this.data[s] = b.index;
      this.data[s + 1] = b.calls;
      this.data[s + 2] = b.failures;
      this.data[s + 3] = b.slowCalls;
      this.calls += b.calls;
      this.failures += b.failures;
      this.slowCalls += b.slowCalls;
    }
  }

  toJSON(): WindowState {
    const buckets: { index: number; calls: number; failures: number; slowCalls: number }[] = [];
    for (let b = 0; b < this.buckets; b++) {
      const s = b * STRIDE;
      const index = this.data[s] as number;
      if (index < 0) continue;
      buckets.push({
        index,
        calls: this.data[s + 1] as number,
        failures: this.data[s + 2] as number,
        slowCalls: this.data[s + 3] as number,
      });
    }
    buckets.sort((a, b) => a.index - b.index);
    return { kind: 'timeWindow', buckets };
  }
}

/**
 * Opens when, over the last `ms` milliseconds (and once at least `minCalls` calls were seen), the
 * share of failures reaches `failureRate` (or the share of slow calls reaches slowCallRate).
 * Outcomes expire a bucket (ms / buckets) at a time. Reads the clock on every call.
 */
export function timeWindow(options: TimeWindowOptions = {}): WindowSpec {
  const ms = options.ms ?? 10_000;
  const buckets = options.buckets ?? 10;
  const failureRate = options.failureRate ?? 0.5;
  const minCalls = options.minCalls ?? 10;
  if (!Number.isInteger(buckets) || buckets < 1) {
    throw keelError('INVALID_CONFIG', `timeWindow: buckets must be an integer >= 1, got ${String(buckets)}`);
  }
  if (!(ms >= buckets)) {
    throw keelError(
      'INVALID_CONFIG',
      `timeWindow: ms must be >= buckets (1 ms per bucket), got ${String(ms)}`,
    );
  }
  if (!(failureRate > 0 && failureRate <= 1)) {
    throw keelError(
      'INVALID_CONFIG',
      `timeWindow: failureRate must be in (0, 1], got ${String(failureRate)}`,
    );
  }
  if (!(minCalls >= 1)) {
    throw keelError('INVALID_CONFIG', `timeWindow: minCalls must be >= 1, got ${String(minCalls)}`);
  }
  return {
    kind: 'timeWindow',
    create(slowCallRate, state) {
      const w = new TimeWindow(ms / buckets, buckets, failureRate, minCalls, slowCallRate);
      if (state?.kind === 'timeWindow') w.restore(state);
      return w;
    },
  };
}

import { keelError } from '../../errors/index.js';
import type { OpenReason } from '../events.js';
import { FAILED, reaches, SLOW, type BreakerWindow, type WindowSpec, type WindowState } from './window.js';

/** Options of {@link countWindow}. */
export interface CountWindowOptions {
  /** Calls remembered (default 100). */
  size?: number;
  /** Share of failures among them that opens the breaker (default 0.5). */
  failureRate?: number;
  /** No decision before this many calls are in the window (default: size). */
  minCalls?: number;
}

class CountWindow implements BreakerWindow {
  readonly needsTime = false;
  private readonly ring: Uint8Array;
  private next = 0;
  private filled = 0;
  private failures = 0;
  private slowCalls = 0;

  constructor(
    size: number,
    private readonly failureRate: number,
    private readonly minCalls: number,
    private readonly slowCallRate: number,
  ) {
    this.ring = new Uint8Array(size);
  }

  record(flags: number): OpenReason | undefined {
    const ring = this.ring;
    if (this.filled === ring.length) {
      const old = ring[this.next] as number;
      if ((old & FAILED) !== 0) this.failures--;
      if ((old & SLOW) !== 0) this.slowCalls--;
    } else this.filled++;
    ring[this.next] = flags;
    this.next = this.next + 1 === ring.length ? 0 : this.next + 1;
    if ((flags & FAILED) !== 0) this.failures++;
    if ((flags & SLOW) !== 0) this.slowCalls++;
    if (this.filled < this.minCalls) return undefined;
    if (reaches(this.failures, this.filled, this.failureRate)) return 'failureRate';
    if (reaches(this.slowCalls, this.filled, this.slowCallRate)) return 'slowCallRate';
    return undefined;
  }

  reset(): void {
    this.ring.fill(0);
    this.next = 0;
    this.filled = 0;
    this.failures = 0;
    this.slowCalls = 0;
  }

  toJSON(): WindowState {
    const outcomes: number[] = [];
    const start = this.filled === this.ring.length ? this.next : 0;
    for (let i = 0; i < this.filled; i++) outcomes.push(this.ring[(start + i) % this.ring.length] as number);
    return { kind: 'countWindow', outcomes };
  }
}

/**
 * Opens when, among the last `size` calls (and once at least `minCalls` were seen), the share of
 * failures reaches `failureRate` (or the share of slow calls reaches the breaker's slowCallRate).
 * Memory: one byte per remembered call.
 */
export function countWindow(options: CountWindowOptions = {}): WindowSpec {
  const size = options.size ?? 100;
  const failureRate = options.failureRate ?? 0.5;
  const minCalls = options.minCalls ?? size;
  if (!Number.isInteger(size) || size < 1) {
    throw keelError('INVALID_CONFIG', `countWindow: size must be an integer >= 1, got ${String(size)}`);
  }
  if (!(failureRate > 0 && failureRate <= 1)) {
    throw keelError(
      'INVALID_CONFIG',
      `countWindow: failureRate must be in (0, 1], got ${String(failureRate)}`,
    );
  }
  if (!(minCalls >= 1 && minCalls <= size)) {
    throw keelError('INVALID_CONFIG', `countWindow: minCalls must be in [1, size], got ${String(minCalls)}`);
  }
  return {
    kind: 'countWindow',
    create(slowCallRate, state) {
      const w = new CountWindow(size, failureRate, minCalls, slowCallRate);
      if (state?.kind === 'countWindow') for (const o of state.outcomes.slice(-size)) w.record(o & 3);
      return w;
    },
  };
}

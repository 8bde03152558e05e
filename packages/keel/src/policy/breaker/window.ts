import type { OpenReason } from '../events.js';

/** The plain-data state of a breaker window, for saving and restoring. */
export type WindowState =
  | { kind: 'consecutive'; failures: number; slowCalls: number }
  | { kind: 'countWindow'; outcomes: number[] }
  | { kind: 'timeWindow'; buckets: { index: number; calls: number; failures: number; slowCalls: number }[] };

/** Outcome flags recorded by a window: bit 0 = failure, bit 1 = slow. */
export const FAILED = 1;
export const SLOW = 2;

/**
 * What a circuit breaker asks of its window: record an outcome and say whether to open.
 * @internal
 */
export interface BreakerWindow {
  /** Whether `record` needs the current time (only time windows read the clock per call). */
  readonly needsTime: boolean;
  /** Records one call (`flags`: FAILED | SLOW); returns why to open, or undefined to stay closed. */
  record(flags: number, nowMs: number): OpenReason | undefined;
  reset(): void;
  toJSON(): WindowState;
}

/** How a breaker decides to open: `consecutive(5)`, `countWindow({…})`, `timeWindow({…})`. */
export interface WindowSpec {
  readonly kind: WindowState['kind'];
  /** A fresh window, optionally restored from saved state. */
  create(slowCallRate: number, state?: WindowState): BreakerWindow;
}

/** Whether a share reaches a threshold, tolerant of float rounding (3/10 >= 0.3). */
export function reaches(count: number, total: number, rate: number): boolean {
  return count >= rate * total - 1e-9;
}

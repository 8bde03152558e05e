import { keelError } from '../../errors/index.js';
import type { OpenReason } from '../events.js';
import { FAILED, SLOW, type BreakerWindow, type WindowSpec, type WindowState } from './window.js';

class ConsecutiveWindow implements BreakerWindow {
  readonly needsTime = false;
  failures = 0;
  slowCalls = 0;
  constructor(private readonly threshold: number) {}

  record(flags: number): OpenReason | undefined {
    if ((flags & FAILED) !== 0) {
      if (++this.failures >= this.threshold) return 'failureRate';
    } else this.failures = 0;
    if ((flags & SLOW) !== 0) {
      if (++this.slowCalls >= this.threshold) return 'slowCallRate';
    } else this.slowCalls = 0;
    return undefined;
  }

  reset(): void {
    this.failures = 0;
    this.slowCalls = 0;
  }

  toJSON(): WindowState {
    return { kind: 'consecutive', failures: this.failures, slowCalls: this.slowCalls };
  }
}

/**
 * Opens after `threshold` failures in a row (or, with slow-call detection, `threshold` slow calls
 * in a row); any success resets the streak. The cheapest window: two counters, no clock.
 */
export function consecutive(threshold = 5): WindowSpec {
  if (!Number.isInteger(threshold) || threshold < 1) {
    throw keelError(
      'INVALID_CONFIG',
      `consecutive: threshold must be an integer >= 1, got ${String(threshold)}`,
    );
  }
  return {
    kind: 'consecutive',
    create(_slowCallRate, state) {
      const w = new ConsecutiveWindow(threshold);
      if (state?.kind === 'consecutive') {
        w.failures = state.failures;
        w.slowCalls = state.slowCalls;
      }
      return w;
    },
  };
}

/** A cancellable timer registration. Cancelling twice, or after it fired, does nothing. */
export interface TimerHandle {
  cancel(): void;
}

/**
 * The source of time for every keel component. Pass a {@link VirtualClock} in tests to make
 * time-based behaviour deterministic; production code uses {@link systemClock}.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch (virtual clocks start wherever they were constructed). */
  now(): number;
  /** Runs `fn` once after `ms` milliseconds. System timers are `unref`'d: they never keep a process alive. */
  setTimer(ms: number, fn: () => void): TimerHandle;
  /**
   * Resolves after `ms` milliseconds. When `signal` aborts, rejects at once with `signal.reason`
   * and releases the timer.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/** Builds `sleep` from `setTimer`, so every clock cancels waits the same way. */
export function sleepWith(clock: Pick<Clock, 'setTimer'>, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise<void>((resolve, reject) => {
    if (!signal) {
      clock.setTimer(ms, resolve);
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject(abortReason(signal));
    };
    const timer = clock.setTimer(ms, () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

class SystemTimer implements TimerHandle {
  constructor(private readonly handle: NodeJS.Timeout) {}
  cancel(): void {
    clearTimeout(this.handle);
  }
}

/** The real clock: `Date.now()` and `unref`'d `setTimeout`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    const handle = setTimeout(fn, Math.max(0, ms));
    handle.unref();
    return new SystemTimer(handle);
  },
  sleep(ms, signal) {
    return sleepWith(systemClock, ms, signal);
  },
};

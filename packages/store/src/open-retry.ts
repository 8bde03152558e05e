import { classify, keelError, type KeelError } from 'keel';

/** A health registry as the stores use it: structurally @keel/ops' `HealthRegistry`. */
export interface StartupHealth {
  register(check: {
    name: string;
    componentType?: string;
    probes?: readonly ('liveness' | 'readiness' | 'startup')[];
    run: () => { status: 'pass' | 'warn' | 'fail'; output?: string };
  }): () => void;
}

/** One failed attempt to open a store at start, as told to `onWaiting`. */
export interface OpenAttempt {
  attempt: number;
  /** Wait before the next attempt. */
  delayMs: number;
  /** Why it failed (classified: `code`, `message`, `hints` …). */
  error: KeelError;
}

/** How {@link openWithRetry} waits for a store that is down when the service starts. */
export interface OpenRetrySettings {
  /** What is opened, for messages (e.g. `the queue store at postgres://db:5432/app`). */
  what: string;
  /** Name of the health check registered while waiting, e.g. `queue:orders`. */
  checkName: string;
  /** Give up once this much time has passed since the first attempt. */
  maxWaitMs: number;
  /** The wait before attempt `n + 1` after `n` failed ones. */
  delayAfter: (attempt: number) => number;
  sleep: (ms: number) => Promise<void>;
  now: () => number;
  /** Failures worth waiting out (the store unreachable); any other is thrown at once. */
  retryable: (err: unknown) => boolean;
  health?: StartupHealth | undefined;
  onWaiting?: ((attempt: OpenAttempt) => void) | undefined;
}

/**
 * Opens a store, retrying with backoff while it is unreachable, for at most `maxWaitMs`. Meanwhile
 * a health check (`checkName`, on the startup and readiness probes) fails with
 * `starting: waiting for …`, so probes say the service is starting rather than broken; it is
 * removed once the store opens or the wait ends.
 * @throws the last error, with "gave up after N attempts over M ms" added, once the wait is over.
 */
export async function openWithRetry<T>(open: () => Promise<T>, settings: OpenRetrySettings): Promise<T> {
  const started = settings.now();
  let waiting = `starting: opening ${settings.what}`;
  const unregister = settings.health?.register({
    name: settings.checkName,
    componentType: 'datastore',
    probes: ['startup', 'readiness'],
    run: () => ({ status: 'fail', output: waiting }),
  });
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        return await open();
      } catch (err) {
        if (!settings.retryable(err)) throw err;
        const elapsed = settings.now() - started;
        const delayMs = Math.min(settings.delayAfter(attempt), Math.max(0, settings.maxWaitMs - elapsed));
        const e = classify(err);
        if (elapsed >= settings.maxWaitMs || delayMs <= 0) {
          throw keelError(
            e.code,
            `${e.message}; gave up after ${String(attempt)} attempt(s) over ${String(elapsed)} ms of waiting for it at start`,
            { ...e.details, attempts: attempt, waitedMs: elapsed },
            { cause: err, kind: e.kind, retryable: e.retryable, hints: e.hints, severity: e.severity },
          );
        }
        waiting = `starting: waiting for ${settings.what} (attempt ${String(attempt)} failed: ${e.message}; next in ${String(delayMs)} ms)`;
        settings.onWaiting?.({ attempt, delayMs, error: e });
        await settings.sleep(delayMs);
      }
    }
  } finally {
    unregister?.();
  }
}

/** Options of waiting for a store that is down at start (`startup` of openQueue and openGroupRepository). */
export interface StartupRetryOptions {
  /** Stop waiting once this much time has passed (default 30 000 ms; 0: fail at once). */
  maxWaitMs?: number;
  /** First wait between attempts (default 200 ms), doubled each time up to `maxDelayMs`. */
  initialDelayMs?: number;
  /** Longest wait between attempts (default 5 000 ms). Waits get ±50 % jitter (equal jitter). */
  maxDelayMs?: number;
  /** A registry (structurally @keel/ops' HealthRegistry) whose probes say "starting" while it waits. */
  health?: StartupHealth;
  /** Told of each failed attempt (log it). */
  onWaiting?: (attempt: OpenAttempt) => void;
}

/**
 * {@link OpenRetrySettings} from `startup` options (false: no waiting), with their defaults.
 * @throws KeelError `INVALID_CONFIG` naming a bad value.
 */
export function startupSettings(
  startup: StartupRetryOptions | false | undefined,
  base: Pick<OpenRetrySettings, 'what' | 'checkName' | 'sleep' | 'now' | 'retryable'>,
): OpenRetrySettings {
  const options = startup === false ? { maxWaitMs: 0 } : (startup ?? {});
  const maxWaitMs = options.maxWaitMs ?? 30_000;
  const initial = options.initialDelayMs ?? 200;
  const max = options.maxDelayMs ?? 5000;
  for (const [k, v] of Object.entries({ maxWaitMs, initialDelayMs: initial, maxDelayMs: max })) {
    if (!(Number.isFinite(v) && v >= 0))
      throw keelError('INVALID_CONFIG', `startup.${k} must be a number of ms >= 0, got ${String(v)}`);
  }
  return {
    ...base,
    maxWaitMs,
    delayAfter: (attempt) => {
      const full = Math.min(max, initial * 2 ** (attempt - 1));
      return Math.round(full / 2 + (Math.random() * full) / 2);
    },
    health: options.health,
    onWaiting: options.onWaiting,
  };
}

import type { Clock, TimerHandle } from 'keel';
import { systemClock, redactString } from 'keel';
import type { HealthRegistry } from './health.js';
import type { AlertManager } from './alerts/manager.js';
import type { Metrics } from './metrics.js';
import { JsonStateFile } from './state-store.js';

/** Where a recovery stands. */
export type RecoveryStatus = 'idle' | 'waiting' | 'recovering' | 'recovered' | 'exhausted';

/** One recovery attempt, as recorded in status and reloaded after a restart. */
export interface RecoveryAttempt {
  /** ISO-8601 time the action started. */
  at: string;
  attempt: number;
  outcome: 'recovered' | 'still-failing' | 'action-failed';
  error?: string;
}

/** A recovery's state (plain data: shown in `/status`, persisted). */
export interface RecoveryState {
  check: string;
  status: RecoveryStatus;
  attempts: number;
  history: RecoveryAttempt[];
}

/** Options of {@link AutoRecovery}. */
export interface AutoRecoveryOptions {
  /** Name of the health check that triggers the action. */
  check: string;
  /** Reconnect, reset a breaker, evict, restart… Throwing counts as a failed attempt. */
  action: (signal: AbortSignal) => Promise<void> | void;
  /**
   * Time an action may take: then its signal is aborted and the attempt counts as failed, so a
   * hung reconnect cannot stall recovery for ever. Default 30 s.
   */
  actionTimeoutMs?: number;
  /** Attempts before giving up (until the check passes again). Default 3. */
  maxAttempts?: number;
  /** Wait before attempt `n` (n ≥ 2). Default 1 s · 2^(n-2), at most 60 s. */
  backoffMs?: (attempt: number) => number;
  clock?: Clock;
  /** Raises `RecoveryFailed` (critical) when attempts run out, resolves it after recovery. */
  alerts?: AlertManager;
  /** Attempts kept in the history. Default 20. */
  historySize?: number;
  /** State from a previous run (see `state()`), e.g. loaded from a {@link JsonStateFile}. */
  initialState?: RecoveryState;
  /** Called after every change of state (persist it here). */
  onChange?: (state: RecoveryState) => void;
  /**
   * Counts attempts in `keel_recovery_attempts_total{check,outcome}` (recovered, still-failing,
   * action-failed) and give-ups in `keel_recoveries_exhausted_total{check}`.
   */
  metrics?: Metrics;
}

/** Default backoff: 1 s, 2 s, 4 s … capped at 60 s. */
export function defaultRecoveryBackoff(attempt: number): number {
  return Math.min(1000 * 2 ** Math.max(0, attempt - 2), 60_000);
}

/**
 * Binds a recovery action to a health check: when the check fails, the action runs, then the
 * check runs again; failing attempts are spaced by the backoff up to `maxAttempts`, after which
 * the recovery is `exhausted` and an alert is raised. A passing check resets it.
 */
export class AutoRecovery {
  private readonly clock: Clock;
  private current: RecoveryState;
  private timer: TimerHandle | undefined;
  private readonly dispose: () => void;
  private busy = false;

  constructor(
    private readonly health: HealthRegistry,
    private readonly options: AutoRecoveryOptions,
  ) {
    const max = options.maxAttempts ?? 3;
    if (!Number.isInteger(max) || max < 1)
      throw new Error(`recovery[${options.check}].maxAttempts: must be an integer >= 1`);
    const timeout = options.actionTimeoutMs ?? 30_000;
    if (!Number.isFinite(timeout) || timeout <= 0)
      throw new Error(`recovery[${options.check}].actionTimeoutMs: must be a number of milliseconds > 0`);
    this.clock = options.clock ?? systemClock;
    const init = options.initialState;
    this.current = init
      ? {
          ...init,
          // An attempt that was pending or running when the process stopped is due again.
          status: init.status === 'waiting' || init.status === 'recovering' ? 'idle' : init.status,
          history: [...init.history],
        }
      : { check: options.check, status: 'idle', attempts: 0, history: [] };
    if (options.metrics !== undefined) {
      const attempts = options.metrics.counter(
        'keel_recovery_attempts_total',
        'Automatic recovery attempts by health check and outcome.',
        ['check', 'outcome'],
      );
      const exhausted = options.metrics.counter(
        'keel_recoveries_exhausted_total',
        'Automatic recoveries that ran out of attempts (a RecoveryFailed alert), by health check.',
        ['check'],
      );
      for (const outcome of ['recovered', 'still-failing', 'action-failed'])
        attempts.inc({ check: options.check, outcome }, 0);
      exhausted.inc({ check: options.check }, 0);
      this.counted = {
        attempt: (outcome) => attempts.inc({ check: options.check, outcome }),
        exhausted: () => exhausted.inc({ check: options.check }),
      };
    }
    this.dispose = health.onResult((name, entry) => {
      if (name !== options.check || this.busy) return;
      if (entry.status === 'fail') this.onFailure();
      else this.onPass();
    });
  }

  /**
   * An AutoRecovery whose state is kept in `file`: the state of the previous run is loaded (a
   * missing or unreadable file is a fresh start) and every change is saved. Throws, naming the
   * setting, when the file cannot be written.
   */
  static async persistent(
    health: HealthRegistry,
    options: AutoRecoveryOptions,
    file: string,
  ): Promise<AutoRecovery> {
    const store = new JsonStateFile<RecoveryState>(file);
    await store.assertWritable(`recovery[${options.check}].stateFile`);
    const saved = await store.load();
    const initialState = saved?.check === options.check && Array.isArray(saved.history) ? saved : undefined;
    const onChange = options.onChange;
    const recovery = new AutoRecovery(health, {
      ...options,
      ...(initialState ? { initialState } : {}),
      onChange: (state) => {
        void store.save(state).catch(() => undefined);
        onChange?.(state);
      },
    });
    recovery.store = store;
    return recovery;
  }

  private store: JsonStateFile<RecoveryState> | undefined;
  private counted: { attempt(outcome: RecoveryAttempt['outcome']): void; exhausted(): void } | undefined;

  /** Resolves when the state file (if any) holds the latest state. */
  async flush(): Promise<void> {
    await this.store?.flush();
  }

  /** A copy of the state. */
  state(): RecoveryState {
    return { ...this.current, history: [...this.current.history] };
  }

  /** Stops listening, cancels a pending attempt and aborts a running action. */
  close(): void {
    this.timer?.cancel();
    this.running?.abort(new Error(`recovery of ${this.options.check} closed`));
    this.dispose();
  }

  private running: AbortController | undefined;

  /** Runs the action; rejects when it throws or outlives `actionTimeoutMs` (its signal aborted). */
  private async runAction(): Promise<void> {
    const controller = new AbortController();
    this.running = controller;
    const timeoutMs = this.options.actionTimeoutMs ?? 30_000;
    let timer: TimerHandle | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = this.clock.setTimer(timeoutMs, () => {
        const err = new Error(`recovery action timed out after ${String(timeoutMs)} ms`);
        controller.abort(err);
        reject(err);
      });
    });
    try {
      await Promise.race([Promise.resolve(this.options.action(controller.signal)), timedOut]);
    } finally {
      timer?.cancel();
      this.running = undefined;
    }
  }

  private get maxAttempts(): number {
    return this.options.maxAttempts ?? 3;
  }

  private onPass(): void {
    if (this.current.status === 'idle' || this.current.status === 'recovered') return;
    this.timer?.cancel();
    this.timer = undefined;
    const wasExhausted = this.current.status === 'exhausted';
    this.update({ status: 'recovered', attempts: 0 });
    if (wasExhausted) this.options.alerts?.resolve('RecoveryFailed', { check: this.options.check });
  }

  private onFailure(): void {
    if (
      this.current.status === 'waiting' ||
      this.current.status === 'recovering' ||
      this.current.status === 'exhausted'
    )
      return;
    if (this.current.status === 'recovered') this.update({ status: 'idle', attempts: 0 });
    this.scheduleNext();
  }

  private scheduleNext(): void {
    const next = this.current.attempts + 1;
    if (next > this.maxAttempts) {
      this.update({ status: 'exhausted' });
      this.counted?.exhausted();
      this.options.alerts?.raise({
        name: 'RecoveryFailed',
        severity: 'critical',
        summary: `automatic recovery of ${this.options.check} failed after ${String(this.maxAttempts)} attempts; manual action needed`,
        labels: { check: this.options.check },
        details: { history: this.current.history.slice(-this.maxAttempts) },
      });
      return;
    }
    const delay = next === 1 ? 0 : (this.options.backoffMs ?? defaultRecoveryBackoff)(next);
    this.update({ status: 'waiting' });
    this.timer = this.clock.setTimer(delay, () => {
      this.timer = undefined;
      void this.attempt(next);
    });
  }

  private async attempt(n: number): Promise<void> {
    this.update({ status: 'recovering', attempts: n });
    const at = new Date(this.clock.now()).toISOString();
    let record: RecoveryAttempt;
    this.busy = true;
    try {
      await this.runAction();
      const result = await this.health.runCheck(this.options.check);
      record =
        result.status === 'fail'
          ? { at, attempt: n, outcome: 'still-failing', ...(result.output ? { error: result.output } : {}) }
          : { at, attempt: n, outcome: 'recovered' };
    } catch (err) {
      record = {
        at,
        attempt: n,
        outcome: 'action-failed',
        error: redactString(err instanceof Error ? err.message : String(err)),
      };
    } finally {
      this.busy = false;
    }
    this.counted?.attempt(record.outcome);
    const history = [...this.current.history, record].slice(-(this.options.historySize ?? 20));
    if (record.outcome === 'recovered') {
      this.update({ status: 'recovered', attempts: 0, history });
      return;
    }
    this.update({ status: 'idle', history });
    this.scheduleNext();
  }

  private update(patch: Partial<RecoveryState>): void {
    this.current = { ...this.current, ...patch };
    this.options.onChange?.(this.state());
  }
}

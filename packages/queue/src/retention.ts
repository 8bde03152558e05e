import { keelError } from 'keel';
import type { Clock, TimerHandle } from 'keel';
import type { QueueStore } from '@keel/store';

/** Retention of finished items, swept on an interval by one instance at a time. */
export interface RetentionOptions {
  /** Completed items are deleted this long after they finished (default 1 day). */
  completedMs?: number;
  /** Dead letters are deleted this long after they died (default 14 days). */
  deadMs?: number;
  /** How often to sweep (default 5 minutes). */
  intervalMs?: number;
}

const DEFAULT_COMPLETED_MS = 86_400_000;
const DEFAULT_DEAD_MS = 14 * 86_400_000;
const DEFAULT_INTERVAL_MS = 300_000;

/**
 * The retention settings with their defaults filled in, or undefined when `retention` is `false`.
 * @throws KeelError `INVALID_CONFIG` naming the setting when a value is not a number of ms
 *   (`intervalMs` must be at least 1).
 */
export function retentionSettings(
  retention: RetentionOptions | false | undefined,
): Required<RetentionOptions> | undefined {
  if (retention === false) return undefined;
  const kept = {
    completedMs: retention?.completedMs ?? DEFAULT_COMPLETED_MS,
    deadMs: retention?.deadMs ?? DEFAULT_DEAD_MS,
    intervalMs: retention?.intervalMs ?? DEFAULT_INTERVAL_MS,
  };
  for (const [k, v] of Object.entries(kept))
    if (!(Number.isFinite(v) && v >= 0) || (k === 'intervalMs' && v < 1))
      throw keelError(
        'INVALID_CONFIG',
        `queue option retention.${k} must be a number of ms >= ${k === 'intervalMs' ? 1 : 0}, got ${String(v)}`,
      );
  return kept;
}

/**
 * Deletes old completed items and dead letters of one queue: on demand ({@link purge}) and, with
 * settings, every `intervalMs` of the queue's clock.
 */
export class RetentionSweeper {
  /** Items removed by this instance's sweeps. */
  swept = 0;
  private timer: TimerHandle | undefined;
  private sweeping: Promise<void> | undefined;
  private sweepAgain = false;
  private stopped = false;

  constructor(
    private readonly store: QueueStore,
    private readonly name: string,
    private readonly clock: Clock,
    private readonly settings?: Required<RetentionOptions>,
  ) {
    if (settings) this.schedule(settings);
  }

  /**
   * Deletes completed items older than `completedMaxAgeMs` (default: the retention setting, 1 day)
   * and dead letters older than `deadMaxAgeMs` (default 14 days); resolves with how many (0 when
   * another instance is sweeping right now).
   */
  async purge(
    completedMaxAgeMs = this.settings?.completedMs ?? DEFAULT_COMPLETED_MS,
    deadMaxAgeMs = this.settings?.deadMs ?? DEFAULT_DEAD_MS,
  ): Promise<number> {
    const now = this.clock.now();
    const n = (await this.store.sweep(this.name, now - completedMaxAgeMs, now - deadMaxAgeMs)) ?? 0;
    this.swept += n;
    return n;
  }

  /** Cancels the timer; a sweep in progress ends after its current pass. */
  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  /** Resolves when no sweep is running. */
  async idle(): Promise<void> {
    await this.sweeping;
  }

  /**
   * Sweeps every `intervalMs` of the queue's clock. The next timer is set before the sweep runs;
   * a tick that finds a sweep still running asks for one more after it (never two at once).
   */
  private schedule(r: Required<RetentionOptions>): void {
    this.timer = this.clock.setTimer(r.intervalMs, () => {
      if (this.stopped) return;
      this.schedule(r);
      if (this.sweeping) {
        this.sweepAgain = true;
        return;
      }
      const sweep = async (): Promise<void> => {
        do {
          this.sweepAgain = false;
          // A failed sweep (store unavailable) is simply tried again at the next tick.
          await this.purge(r.completedMs, r.deadMs).catch(() => 0);
        } while (this.sweepAgain && !this.stopped);
      };
      this.sweeping = sweep().finally(() => {
        this.sweeping = undefined;
      });
    });
  }
}

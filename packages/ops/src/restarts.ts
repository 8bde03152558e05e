import { open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock, type Clock, type TimerHandle } from 'keel';
import type { AlertManager } from './alerts/manager.js';
import type { HealthRegistry } from './health.js';
import type { Metrics } from './metrics.js';
import { fixFileMode, privateDir, PRIVATE_FILE_MODE } from './private-files.js';
import { JsonStateFile } from './state-store.js';

/** Options of {@link ProcessRestarts.start}. */
export interface ProcessRestartsOptions {
  /** The process's state directory: holds `run.json` and the `clean-shutdown` marker (created 0700). */
  dir: string;
  /** Where `ProcessRestarted` and `ProcessRestartLoop` are raised. */
  alerts?: AlertManager;
  /** Each check's last status becomes part of the last known state (saved when one changes). */
  health?: HealthRegistry;
  /** Registers `keel_process_restarts_total{shutdown}` and `keel_process_unclean_restarts_recent`. */
  metrics?: Metrics;
  /** Unclean restarts are counted over this window (default 15 min). */
  loopWindowMs?: number;
  /** This many unclean restarts within the window raise `ProcessRestartLoop` (default 3). */
  loopThreshold?: number;
  clock?: Clock;
}

/** What the previous run left: when it started and the last state it recorded. */
export interface PreviousRun {
  pid: number;
  /** ISO-8601. */
  startedAt: string;
  /** Whether it wrote the clean-shutdown marker before it ended. */
  clean: boolean;
  lastState: Record<string, unknown> | null;
  /** ISO-8601 time of the last state, or null. */
  lastStateAt: string | null;
}

interface RunFile {
  version: 1;
  pid: number;
  startedAt: number;
  state: Record<string, unknown> | null;
  stateAt: number | null;
  /** Times of the unclean restarts within the loop window, oldest first. */
  uncleanRestarts: number[];
  totals: { clean: number; unclean: number };
}

const MARKER = 'clean-shutdown';
const MAX_REMEMBERED = 100;

const isRunFile = (v: unknown): v is RunFile =>
  typeof v === 'object' &&
  v !== null &&
  (v as RunFile).version === 1 &&
  typeof (v as RunFile).startedAt === 'number' &&
  Array.isArray((v as RunFile).uncleanRestarts);

const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * Notices restarts. At start it reads what the previous run left in `dir`: without the
 * clean-shutdown marker (written by {@link markCleanShutdown}, typically the first hook given to
 * `GracefulShutdown`, so it runs last), the previous run crashed, was killed or lost its host, and
 * `ProcessRestarted` (warning) is raised with that run's start time and last known state; when
 * `loopThreshold` such restarts fall within `loopWindowMs`, `ProcessRestartLoop` (critical) too.
 * Both resolve once this process has stayed up for the window. Counts are kept in `run.json`
 * across restarts, so `keel_process_restarts_total` keeps growing from one run to the next.
 */
export class ProcessRestarts {
  private readonly clock: Clock;
  private readonly runFile: JsonStateFile<RunFile>;
  private run: RunFile;
  private resolveTimer: TimerHandle | undefined;
  private disposeHealth: (() => void) | undefined;

  private constructor(
    private readonly options: ProcessRestartsOptions,
    /** The previous run, or undefined on a first start. */
    readonly previous: PreviousRun | undefined,
    run: RunFile,
    clock: Clock,
  ) {
    this.clock = clock;
    this.run = run;
    this.runFile = new JsonStateFile<RunFile>(join(options.dir, 'run.json'));
  }

  /**
   * Reads the previous run, raises what it calls for, and records this run's start.
   * @throws Error naming `restarts.dir` when the directory cannot be created or written.
   */
  static async start(options: ProcessRestartsOptions): Promise<ProcessRestarts> {
    const clock = options.clock ?? systemClock;
    const windowMs = options.loopWindowMs ?? 15 * 60_000;
    const threshold = options.loopThreshold ?? 3;
    if (!(Number.isFinite(windowMs) && windowMs > 0))
      throw new Error(`restarts.loopWindowMs: must be a number of ms > 0, got ${String(windowMs)}`);
    if (!Number.isInteger(threshold) || threshold < 1)
      throw new Error(`restarts.loopThreshold: must be an integer >= 1, got ${String(threshold)}`);
    const file = new JsonStateFile<RunFile>(join(options.dir, 'run.json'));
    await file.assertWritable('restarts.dir');
    await privateDir(options.dir);
    const saved = await file.load();
    const marker = join(options.dir, MARKER);
    const clean = await stat(marker).then(
      () => true,
      () => false,
    );
    await rm(marker, { force: true });
    const now = clock.now();
    const before = isRunFile(saved) ? saved : undefined;
    const previous: PreviousRun | undefined =
      before === undefined
        ? undefined
        : {
            pid: before.pid,
            startedAt: iso(before.startedAt),
            clean,
            lastState: before.state,
            lastStateAt: before.stateAt === null ? null : iso(before.stateAt),
          };
    const totals = { clean: before?.totals.clean ?? 0, unclean: before?.totals.unclean ?? 0 };
    let unclean = (before?.uncleanRestarts ?? []).filter((t) => now - t <= windowMs);
    if (previous !== undefined) {
      if (previous.clean) totals.clean++;
      else {
        totals.unclean++;
        unclean = [...unclean, now].slice(-MAX_REMEMBERED);
      }
    }
    const run: RunFile = {
      version: 1,
      pid: process.pid,
      startedAt: now,
      state: null,
      stateAt: null,
      uncleanRestarts: unclean,
      totals,
    };
    const restarts = new ProcessRestarts(options, previous, run, clock);
    await restarts.runFile.save(run);
    restarts.raise(windowMs, threshold);
    restarts.registerMetrics(windowMs);
    restarts.followHealth();
    return restarts;
  }

  /** True when the previous run ended without the clean-shutdown marker. */
  get restartedUncleanly(): boolean {
    return this.previous !== undefined && !this.previous.clean;
  }

  /** This run's start, the previous run and the counts, for `/status`. */
  snapshot(): {
    startedAt: string;
    previous: PreviousRun | null;
    uncleanRestartsRecent: number;
    totals: { clean: number; unclean: number };
  } {
    return {
      startedAt: iso(this.run.startedAt),
      previous: this.previous ?? null,
      uncleanRestartsRecent: this.recent(this.options.loopWindowMs ?? 15 * 60_000),
      totals: { ...this.run.totals },
    };
  }

  /**
   * Records the process's last known state (merged into what was recorded), shown with
   * `ProcessRestarted` if this run does not end cleanly. Saves are coalesced.
   */
  recordState(state: Record<string, unknown>): Promise<void> {
    this.run = { ...this.run, state: { ...this.run.state, ...state }, stateAt: this.clock.now() };
    return this.runFile.save(this.run);
  }

  /** Writes the clean-shutdown marker (after the last state); the next start then counts a clean restart. */
  async markCleanShutdown(): Promise<void> {
    this.close();
    await this.runFile.flush();
    const marker = join(this.options.dir, MARKER);
    await rm(marker, { force: true });
    const handle = await open(marker, 'wx', PRIVATE_FILE_MODE);
    try {
      await handle.writeFile(JSON.stringify({ pid: process.pid, at: iso(this.clock.now()) }));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fixFileMode(marker);
  }

  /** Stops following health and cancels the pending resolve of the alerts. */
  close(): void {
    this.resolveTimer?.cancel();
    this.disposeHealth?.();
  }

  private recent(windowMs: number): number {
    const now = this.clock.now();
    return this.run.uncleanRestarts.filter((t) => now - t <= windowMs).length;
  }

  private raise(windowMs: number, threshold: number): void {
    const alerts = this.options.alerts;
    const previous = this.previous;
    if (alerts === undefined || previous === undefined || previous.clean) return;
    const state =
      previous.lastState === null
        ? 'no state recorded'
        : `last known state ${JSON.stringify(previous.lastState)} at ${String(previous.lastStateAt)}`;
    alerts.raise({
      name: 'ProcessRestarted',
      severity: 'warning',
      summary: `the previous run (pid ${String(previous.pid)}, started ${previous.startedAt}) ended without a clean shutdown; ${state}`,
      details: {
        previousPid: previous.pid,
        previousStartedAt: previous.startedAt,
        lastState: previous.lastState,
        lastStateAt: previous.lastStateAt,
      },
    });
    const recent = this.recent(windowMs);
    if (recent >= threshold) {
      alerts.raise({
        name: 'ProcessRestartLoop',
        severity: 'critical',
        summary: `${String(recent)} restarts without a clean shutdown within ${String(Math.round(windowMs / 60_000))} min: the process keeps crashing; look at its logs and the last known state`,
        details: { restarts: this.run.uncleanRestarts.map(iso), lastState: previous.lastState },
      });
    }
    // Staying up for a whole window ends the episode.
    this.resolveTimer = this.clock.setTimer(windowMs, () => {
      alerts.resolve('ProcessRestarted');
      alerts.resolve('ProcessRestartLoop');
    });
  }

  private registerMetrics(windowMs: number): void {
    const metrics = this.options.metrics;
    if (metrics === undefined) return;
    const restarts = metrics.counter(
      'keel_process_restarts_total',
      'Starts of this process after a clean or an unclean end of the previous run (kept across restarts).',
      ['shutdown'],
    );
    restarts.inc({ shutdown: 'clean' }, this.run.totals.clean);
    restarts.inc({ shutdown: 'unclean' }, this.run.totals.unclean);
    metrics.gauge(
      'keel_process_unclean_restarts_recent',
      'Starts after an unclean end of the previous run within the restart-loop window.',
      [],
      (gauge) => {
        gauge.set(this.recent(windowMs));
      },
    );
  }

  private followHealth(): void {
    const health = this.options.health;
    if (health === undefined) return;
    const last = new Map<string, string>();
    this.disposeHealth = health.onResult((name, entry) => {
      if (last.get(name) === entry.status) return;
      last.set(name, entry.status);
      void this.recordState({ checks: Object.fromEntries(last) }).catch(() => undefined);
    });
  }
}

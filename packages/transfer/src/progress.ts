import { EventEmitter } from 'node:events';
import cliProgress from 'cli-progress';
import { systemClock, type Clock } from 'keel';

/** Where a transfer stands. */
export interface ProgressSnapshot {
  done: number;
  total: number | undefined;
  /** 0..100, when the total is known. */
  percent: number | undefined;
  /** Smoothed speed. */
  bytesPerSec: number;
  /** Estimated time left, when the total and a speed are known. */
  etaMs: number | undefined;
  elapsedMs: number;
}

/** Options of {@link ProgressTracker}. */
export interface ProgressOptions {
  total?: number;
  /** Bytes already done when tracking starts (a resumed transfer). They do not count towards speed. */
  initial?: number;
  /** Least time between `progress` events (default 200 ms). */
  intervalMs?: number;
  /** Weight of the newest speed sample in the moving average, 0..1 (default 0.3). */
  smoothing?: number;
  clock?: Clock;
}

/**
 * Tracks bytes done of a total with a smoothed speed and an ETA, and emits `progress` at a bounded
 * rate (never more often than `intervalMs`) and `done` once.
 */
export class ProgressTracker extends EventEmitter<{
  progress: [ProgressSnapshot];
  done: [ProgressSnapshot];
}> {
  private doneBytes: number;
  private total: number | undefined;
  private speed = 0;
  private readonly startedAt: number;
  private sampleAt: number;
  private sampleBytes: number;
  private lastEmit = -Infinity;
  private finished = false;
  private readonly intervalMs: number;
  private readonly smoothing: number;
  private readonly clock: Clock;

  constructor(options: ProgressOptions = {}) {
    super();
    this.clock = options.clock ?? systemClock;
    this.total = options.total;
    this.doneBytes = options.initial ?? 0;
    this.intervalMs = options.intervalMs ?? 200;
    this.smoothing = options.smoothing ?? 0.3;
    this.startedAt = this.clock.now();
    this.sampleAt = this.startedAt;
    this.sampleBytes = this.doneBytes;
  }

  /** Counts `bytes` more. */
  add(bytes: number): void {
    this.set(this.doneBytes + bytes);
  }

  /** Sets the bytes done (it may go back, e.g. when a resumed transfer re-checks its start). */
  set(done: number): void {
    this.doneBytes = done;
    const now = this.clock.now();
    const dt = now - this.sampleAt;
    if (dt >= this.intervalMs) {
      const sample = ((done - this.sampleBytes) / dt) * 1000;
      this.speed = this.speed === 0 ? sample : this.smoothing * sample + (1 - this.smoothing) * this.speed;
      this.sampleAt = now;
      this.sampleBytes = done;
    }
    if (now - this.lastEmit >= this.intervalMs) {
      this.lastEmit = now;
      this.emit('progress', this.snapshot());
    }
  }

  /** Sets the total once it is known. */
  setTotal(total: number): void {
    this.total = total;
  }

  /** The current state. */
  snapshot(): ProgressSnapshot {
    const total = this.total;
    const percent =
      total === undefined ? undefined : total === 0 ? 100 : Math.min(100, (this.doneBytes / total) * 100);
    const etaMs =
      total === undefined || this.speed <= 0
        ? undefined
        : Math.max(0, ((total - this.doneBytes) / this.speed) * 1000);
    return {
      done: this.doneBytes,
      total,
      percent,
      bytesPerSec: this.speed,
      etaMs,
      elapsedMs: this.clock.now() - this.startedAt,
    };
  }

  /** Marks the transfer finished and emits `done` (once). */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.emit('done', this.snapshot());
  }
}

function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u] ?? 'B'}`;
}

/** One line describing a snapshot: `12.0 MiB / 256.0 MiB (4.7%), 30.2 MiB/s, ETA 8s`. */
export function describeProgress(s: ProgressSnapshot): string {
  const of =
    s.total === undefined
      ? human(s.done)
      : `${human(s.done)} / ${human(s.total)} (${(s.percent ?? 0).toFixed(1)}%)`;
  const eta = s.etaMs === undefined ? '' : `, ETA ${Math.ceil(s.etaMs / 1000)}s`;
  return `${of}, ${human(s.bytesPerSec)}/s${eta}`;
}

/**
 * Shows a tracker's progress: a cli-progress bar when `stream` is a terminal; otherwise a line
 * every `logEveryMs` (default: silent). Returns a function that stops it.
 */
export function showProgress(
  tracker: ProgressTracker,
  options: { label?: string; stream?: NodeJS.WriteStream; logEveryMs?: number } = {},
): () => void {
  const stream = options.stream ?? process.stderr;
  const label = options.label ?? 'transfer';
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${label} {bar} {percentage}% | {value}/{total} bytes | {speed} | ETA {eta_formatted}`,
        stream,
        hideCursor: true,
      },
      cliProgress.Presets.shades_classic,
    );
    const s = tracker.snapshot();
    bar.start(s.total ?? 0, s.done, { speed: '' });
    const update = (p: ProgressSnapshot): void => {
      if (p.total !== undefined) bar.setTotal(p.total);
      bar.update(p.done, { speed: `${human(p.bytesPerSec)}/s` });
    };
    tracker.on('progress', update);
    tracker.on('done', update);
    return () => {
      tracker.off('progress', update);
      tracker.off('done', update);
      bar.stop();
    };
  }
  if (options.logEveryMs === undefined) return () => undefined;
  let last = 0;
  const log = (p: ProgressSnapshot): void => {
    if (p.elapsedMs - last < (options.logEveryMs ?? 0)) return;
    last = p.elapsedMs;
    stream.write(`${label}: ${describeProgress(p)}\n`);
  };
  tracker.on('progress', log);
  return () => tracker.off('progress', log);
}

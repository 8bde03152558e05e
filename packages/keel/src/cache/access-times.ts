import type { TimerHandle } from '../time/index.js';
import type { CacheReporter } from './counters.js';
import type { SliceIndex } from './eviction.js';
import type { CacheMeta } from './metadata.js';
import type { CacheSettings } from './options.js';

/** What {@link AccessTimes} needs from the cache. */
export interface AccessTimesParts extends Pick<CacheSettings, 'clock' | 'accessFlushMs'> {
  index: SliceIndex;
  /** Writes the object's metadata again (under its lock), which stamps in its access times. */
  persist(hash: string): Promise<void>;
  /** No flush is scheduled once the cache is closed. */
  isClosed(): boolean;
  report: CacheReporter;
}

/**
 * Access times of read slices, for least-recently-used eviction. A read only updates the index in
 * memory and marks its object; the times reach meta.json lazily (one timer per `accessFlushMs`, and on
 * {@link AccessTimes.flush}), so reads never write, and the eviction order survives a restart.
 */
export class AccessTimes {
  /** Objects whose slices were read since their access times were last written. */
  private readonly dirty = new Set<string>();
  private timer: TimerHandle | undefined;
  private flushing: Promise<void> | undefined;

  constructor(private readonly parts: AccessTimesParts) {}

  /** Records a read of a slice (on every hit: no allocation, no I/O). */
  touch(hash: string, index: number): void {
    const { index: slices, clock, accessFlushMs } = this.parts;
    slices.touch(hash, index, clock.now());
    this.dirty.add(hash);
    if (this.timer === undefined && !this.parts.isClosed())
      this.timer = clock.setTimer(accessFlushMs, () => {
        this.timer = undefined;
        void this.flush();
      });
  }

  /** `meta` with each slice's latest access time from the index, to be written. */
  latest(hash: string, meta: CacheMeta): CacheMeta {
    return {
      ...meta,
      slices: meta.slices.map((s) => {
        const at = this.parts.index.lastAccessOf(hash, s.index);
        return at !== undefined && at > s.lastAccess ? { ...s, lastAccess: at } : s;
      }),
    };
  }

  /** The object's access times are on disk (its metadata was written) or no longer matter (removed). */
  clean(hash: string): void {
    this.dirty.delete(hash);
  }

  /**
   * Writes the access times of slices read since the last flush into their metadata. Best
   * effort: a failure only loses access times (and is reported as a fault).
   */
  async flush(): Promise<void> {
    // One flush at a time: a caller waits for the one running (the timer's) and then its own.
    const run = (this.flushing ?? Promise.resolve()).then(() => this.writeAll());
    this.flushing = run;
    await run;
    if (this.flushing === run) this.flushing = undefined;
  }

  /** Cancels the pending timed flush. */
  cancelTimer(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  private async writeAll(): Promise<void> {
    const hashes = [...this.dirty];
    this.dirty.clear();
    for (const hash of hashes) {
      await this.parts.persist(hash).catch((err: unknown) => {
        this.parts.report.fault(`could not record access times of ${hash}`, err);
      });
    }
  }
}

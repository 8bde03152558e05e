import path from 'node:path';
import { classify, keelError } from '../errors/index.js';
import type { TimerHandle } from '../time/index.js';
import { TMP_MARKER, writeFileAtomic } from './atomic-write.js';
import type { RecentIoErrors } from './io-errors.js';
import type { CacheSettings } from './options.js';

/** What {@link Bypass} needs from the cache. */
export interface BypassParts extends Pick<
  CacheSettings,
  'dir' | 'fs' | 'clock' | 'bypassProbeMs' | 'sliceBytes' | 'bypassResumeFreeSlices'
> {
  objectsRoot: string;
  inFlight: Set<string>;
  /** The cache's recent I/O errors: bypass lasts until a whole window has passed without one. */
  ioErrors: RecentIoErrors;
  /** Neither enters bypass nor probes once the cache is closed. */
  isClosed(): boolean;
  /** Runs once the probe write succeeded, before bypass ends; a throw keeps the cache bypassed. */
  beforeLeave(): Promise<void>;
  /** Told when bypass starts and ends (the cache's `bypass` event). */
  onChange(event: { active: boolean; reason: string }): void;
}

/**
 * Bypass mode: while the cache's disk is unusable (full after an emergency eviction, failing with
 * I/O errors, or the directory cannot be used at all), writes are refused and the caller serves
 * the origin's bytes. Every `bypassProbeMs` a probe checks that the disk is usable again, and
 * bypass ends when it is: no I/O error for `ioErrorWindowMs`, room for `bypassResumeFreeSlices`
 * slices, and a full slice written (atomically, fsynced) and removed. Asking for more room than
 * one write keeps a nearly full disk from leaving bypass only to re-enter it at the next fill.
 */
export class Bypass {
  private why: string | undefined;
  private probeTimer: TimerHandle | undefined;
  private probing: Promise<{ error: unknown } | undefined> | undefined;

  constructor(private readonly parts: BypassParts) {}

  /** True while writes are bypassed. */
  get active(): boolean {
    return this.why !== undefined;
  }

  /** Why writes are bypassed, or undefined. */
  get reason(): string | undefined {
    return this.why;
  }

  /** Starts bypass (no-op while already bypassed or once closed) and schedules the probe. */
  enter(reason: string): void {
    if (this.why !== undefined || this.parts.isClosed()) return;
    this.why = reason;
    this.parts.onChange({ active: true, reason });
    this.scheduleProbe();
  }

  /** Stops probing. */
  cancelProbe(): void {
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
  }

  /**
   * Probes now rather than at the next timer: resolves once bypass has ended (at once when not
   * bypassed), rejects with the probe write's error when the disk still refuses (probing goes on).
   */
  async probeNow(): Promise<void> {
    if (this.why === undefined) return;
    this.cancelProbe();
    const failure = await this.startProbe();
    if (failure !== undefined) throw classify(failure.error);
  }

  private scheduleProbe(): void {
    this.probeTimer = this.parts.clock.setTimer(this.parts.bypassProbeMs, () => {
      void this.startProbe();
    });
  }

  /** The probe under way, or a new one: a probe from the timer and one asked for now are shared. */
  private startProbe(): Promise<{ error: unknown } | undefined> {
    this.probing ??= this.probe().finally(() => (this.probing = undefined));
    return this.probing;
  }

  /** Leaves bypass once the disk is usable again (see the class); resolves with the error when not. */
  private async probe(): Promise<{ error: unknown } | undefined> {
    const { dir, objectsRoot, fs, sliceBytes, inFlight } = this.parts;
    if (this.parts.isClosed()) return undefined;
    const file = path.join(dir, `probe${TMP_MARKER}check`);
    try {
      this.checkQuiet();
      await fs.mkdir(objectsRoot, { recursive: true });
      await this.checkRoom();
      await writeFileAtomic(fs, file, Buffer.alloc(sliceBytes), inFlight);
      await fs.rm(file, { force: true });
      await this.parts.beforeLeave();
      const reason = this.why ?? '';
      this.why = undefined;
      this.parts.onChange({ active: false, reason: `cache usable again (was: ${reason})` });
      return undefined;
    } catch (error) {
      await fs.rm(file, { force: true }).catch(() => undefined);
      this.scheduleProbe();
      return { error };
    }
  }

  /** @throws KeelError `IO_ERROR` while the last I/O error is more recent than the window. */
  private checkQuiet(): void {
    const { ioErrors } = this.parts;
    const since = ioErrors.sinceLastMs();
    if (since === undefined || since >= ioErrors.windowMs) return;
    throw keelError(
      'IO_ERROR',
      `${ioErrors.count()} I/O error(s) in the cache directory ${this.parts.dir} in the last ` +
        `${seconds(ioErrors.windowMs)}, the last ${seconds(since)} ago; caching resumes once ` +
        `${seconds(ioErrors.windowMs)} pass without one`,
    );
  }

  /** @throws KeelError `DISK_FULL` while the file system has less room than `bypassResumeFreeSlices` slices. */
  private async checkRoom(): Promise<void> {
    const { fs, dir, sliceBytes, bypassResumeFreeSlices } = this.parts;
    const s = await fs.statfs(dir);
    const freeBytes = s.bavail * s.bsize;
    const neededBytes = bypassResumeFreeSlices * sliceBytes;
    if (freeBytes >= neededBytes) return;
    throw keelError(
      'DISK_FULL',
      `${mib(freeBytes)} free for the cache in ${dir}; caching resumes with room for ` +
        `${bypassResumeFreeSlices} slices (${mib(neededBytes)})`,
    );
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

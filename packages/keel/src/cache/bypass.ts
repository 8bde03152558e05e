import path from 'node:path';
import { classify } from '../errors/index.js';
import type { TimerHandle } from '../time/index.js';
import { TMP_MARKER, writeFileAtomic } from './atomic-write.js';
import type { CacheSettings } from './options.js';

/** What {@link Bypass} needs from the cache. */
export interface BypassParts extends Pick<
  CacheSettings,
  'dir' | 'fs' | 'clock' | 'bypassProbeMs' | 'sliceBytes'
> {
  objectsRoot: string;
  inFlight: Set<string>;
  /** Neither enters bypass nor probes once the cache is closed. */
  isClosed(): boolean;
  /** Runs once the probe write succeeded, before bypass ends; a throw keeps the cache bypassed. */
  beforeLeave(): Promise<void>;
  /** Told when bypass starts and ends (the cache's `bypass` event). */
  onChange(event: { active: boolean; reason: string }): void;
}

/**
 * Bypass mode: while the cache's disk is unusable (full after an emergency eviction, or the
 * directory cannot be used at all), writes are refused and the caller serves the origin's bytes.
 * Every `bypassProbeMs` a probe writes a slice's worth (at most 1 MiB); once that succeeds,
 * bypass ends.
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

  /** Leaves bypass once a slice-sized write succeeds again; resolves with the error when it did not. */
  private async probe(): Promise<{ error: unknown } | undefined> {
    const { dir, objectsRoot, fs, sliceBytes, inFlight } = this.parts;
    if (this.parts.isClosed()) return undefined;
    const file = path.join(dir, `probe${TMP_MARKER}check`);
    try {
      await fs.mkdir(objectsRoot, { recursive: true });
      await writeFileAtomic(fs, file, Buffer.alloc(Math.min(sliceBytes, 1024 * 1024)), inFlight);
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
}

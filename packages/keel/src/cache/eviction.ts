import type { CacheCounts, CacheReporter } from './counters.js';
import type { CacheLocks } from './file-lock.js';
import type { ObjectStore } from './object-store.js';
import type { CacheSettings } from './options.js';

/** One indexed slice: what eviction needs to know about it. */
export interface IndexedSlice {
  /** The object's directory name ({@link identityHash}). */
  hash: string;
  index: number;
  length: number;
  /** Last read or write, epoch ms. */
  lastAccess: number;
}

/**
 * The in-memory index of the slices on disk, by object: their sizes for the size limit and their
 * last access for least-recently-used eviction. Rebuilt from the metadata files at open.
 */
export class SliceIndex {
  private readonly objects = new Map<string, Map<number, IndexedSlice>>();
  private bytes = 0;
  private count = 0;

  /** Bytes of all indexed slices. */
  get sizeBytes(): number {
    return this.bytes;
  }

  /** Number of indexed slices. */
  get slices(): number {
    return this.count;
  }

  /** Number of objects with at least one indexed slice. */
  get objectCount(): number {
    return this.objects.size;
  }

  /** Indexes a slice (no-op when already indexed). */
  add(hash: string, slice: { index: number; length: number; lastAccess: number }): void {
    let object = this.objects.get(hash);
    if (!object) {
      object = new Map();
      this.objects.set(hash, object);
    }
    if (object.has(slice.index)) return;
    object.set(slice.index, { hash, index: slice.index, length: slice.length, lastAccess: slice.lastAccess });
    this.bytes += slice.length;
    this.count++;
  }

  /**
   * Makes the object's entries the slices its metadata lists (as read from disk, where another
   * process may have added or dropped some), keeping the later access time of each.
   */
  syncObject(hash: string, slices: readonly { index: number; length: number; lastAccess: number }[]): void {
    const object = this.objects.get(hash);
    if (object && object.size === slices.length && slices.every((s) => object.has(s.index))) {
      for (const s of slices) {
        const e = object.get(s.index) as IndexedSlice;
        if (s.lastAccess > e.lastAccess) e.lastAccess = s.lastAccess;
      }
      return;
    }
    const listed = new Set(slices.map((s) => s.index));
    if (object) for (const i of [...object.keys()]) if (!listed.has(i)) this.remove(hash, i);
    for (const s of slices) this.add(hash, s);
  }

  /**
   * Takes over the entries of `other` (a fresh scan of the disk), dropping its own but keeping
   * their access times where later (reads not yet written into the metadata).
   */
  replaceWith(other: SliceIndex): void {
    for (const [hash, object] of other.objects)
      for (const e of object.values()) {
        const mine = this.lastAccessOf(hash, e.index);
        if (mine !== undefined && mine > e.lastAccess) e.lastAccess = mine;
      }
    this.objects.clear();
    for (const [hash, object] of other.objects) this.objects.set(hash, object);
    this.bytes = other.bytes;
    this.count = other.count;
  }

  /** True when any slice of the object is indexed. */
  hasObject(hash: string): boolean {
    return this.objects.has(hash);
  }

  has(hash: string, index: number): boolean {
    return this.objects.get(hash)?.has(index) ?? false;
  }

  /** Last access of an indexed slice, epoch ms. */
  lastAccessOf(hash: string, index: number): number | undefined {
    return this.objects.get(hash)?.get(index)?.lastAccess;
  }

  /** Records a read of the slice, for LRU order. */
  touch(hash: string, index: number, now: number): void {
    const e = this.objects.get(hash)?.get(index);
    if (e) e.lastAccess = now;
  }

  remove(hash: string, index: number): void {
    const object = this.objects.get(hash);
    const e = object?.get(index);
    if (!object || !e) return;
    object.delete(index);
    if (object.size === 0) this.objects.delete(hash);
    this.bytes -= e.length;
    this.count--;
  }

  removeObject(hash: string): void {
    const object = this.objects.get(hash);
    if (!object) return;
    for (const e of object.values()) this.bytes -= e.length;
    this.count -= object.size;
    this.objects.delete(hash);
  }

  clear(): void {
    this.objects.clear();
    this.bytes = 0;
    this.count = 0;
  }

  /** Slices, least recently used first, leaving out the object `except` (being written). */
  lruOrder(except?: string): IndexedSlice[] {
    const all: IndexedSlice[] = [];
    for (const [hash, object] of this.objects)
      if (hash !== except) for (const e of object.values()) all.push(e);
    return all.sort((a, b) => a.lastAccess - b.lastAccess);
  }
}

/**
 * How many bytes to keep after eviction: nothing to do (`undefined`) while `size + incoming` stays
 * at or under the high watermark, otherwise down to the low watermark minus the incoming bytes.
 */
export function evictionTarget(
  sizeBytes: number,
  incoming: number,
  maxBytes: number,
  high: number,
  low: number,
): number | undefined {
  if (sizeBytes + incoming <= maxBytes * high) return undefined;
  return Math.max(0, maxBytes * low - incoming);
}

/** Name of the lock only the process evicting holds (one evictor at a time per cache directory). */
export const EVICTOR_LOCK = 'evictor';

/** What {@link Evictor} needs from the cache. */
export interface EvictorParts extends Pick<
  CacheSettings,
  'maxBytes' | 'sliceBytes' | 'highWatermark' | 'lowWatermark' | 'clock' | 'rescanMs'
> {
  index: SliceIndex;
  store: ObjectStore;
  locks: CacheLocks;
  counts: CacheCounts;
  /** A fresh index of every slice on disk (other processes' included), read without repairing. */
  scan(): Promise<SliceIndex>;
  /** Failures of a background rescan. */
  report: CacheReporter;
}

/**
 * Keeps the cache under its size limit: before a write, evicts least recently used slices down to
 * the low watermark once the high one would be passed, and at once when the disk is full.
 *
 * Several processes may share the directory: one evicts at a time (the others, finding the
 * evictor's lock taken, leave it to that one), each slice is dropped under its object's lock
 * against the metadata on disk, and a process that writes re-reads the whole index from disk at
 * most every `rescanMs`, so slices written by the others count towards the limit.
 */
export class Evictor {
  private lastScan: number;
  private scanning: Promise<void> | undefined;

  constructor(private readonly parts: EvictorParts) {
    this.lastScan = parts.clock.now();
  }

  /** Makes room for `incoming` bytes (see {@link evictionTarget}). */
  async makeRoom(incoming: number): Promise<void> {
    const { index, maxBytes, highWatermark, lowWatermark, clock, rescanMs } = this.parts;
    if (this.scanning === undefined && clock.now() - this.lastScan >= rescanMs) {
      this.lastScan = clock.now();
      this.scanning = this.rescan().finally(() => (this.scanning = undefined));
    }
    const target = evictionTarget(index.sizeBytes, incoming, maxBytes, highWatermark, lowWatermark);
    if (target !== undefined) await this.evictTo(target);
  }

  /** Waits for a background rescan under way (tests, close). */
  async settled(): Promise<void> {
    await this.scanning;
  }

  /** True while a background rescan (and the eviction it may start) is under way. */
  get rescanning(): boolean {
    return this.scanning !== undefined;
  }

  /**
   * Evicts least recently used slices until at most `targetBytes` remain, leaving the object
   * `exceptObject` alone; returns bytes freed (0 when another process is evicting meanwhile).
   */
  async evictTo(targetBytes: number, exceptObject?: string): Promise<number> {
    if (this.parts.index.sizeBytes <= targetBytes) return 0;
    const run = await this.parts.locks.tryRun(EVICTOR_LOCK, () =>
      this.evictLocked(targetBytes, exceptObject),
    );
    return run.ran ? run.value : 0;
  }

  /**
   * On a full disk: frees at least a slice's worth (two), down to the low watermark, leaving the
   * object being written alone; returns bytes freed.
   */
  emergencyEvict(exceptObject: string): Promise<number> {
    const { index, maxBytes, lowWatermark, sliceBytes } = this.parts;
    const target = Math.min(maxBytes * lowWatermark, Math.max(0, index.sizeBytes - 2 * sliceBytes));
    return this.evictTo(target, exceptObject);
  }

  /**
   * Re-reads the index from disk (whoever is evicting: reading takes no lock, so a process never
   * goes on counting only its own writes while another one evicts) and evicts if it is over the
   * high watermark, unless another process is evicting already.
   */
  private async rescan(): Promise<void> {
    const { index, maxBytes, highWatermark, lowWatermark } = this.parts;
    try {
      index.replaceWith(await this.parts.scan());
      const target = evictionTarget(index.sizeBytes, 0, maxBytes, highWatermark, lowWatermark);
      if (target !== undefined) await this.evictTo(target);
    } catch (err) {
      this.parts.report.fault('could not rescan the cache directory for eviction', err);
    }
  }

  private async evictLocked(targetBytes: number, exceptObject?: string): Promise<number> {
    const { index, locks, store, counts } = this.parts;
    // The object being written (whose lock the caller holds) is never evicted from under it.
    const entries = index.lruOrder(exceptObject);
    let freed = 0;
    for (const e of entries) {
      if (index.sizeBytes <= targetBytes) break;
      if (!index.has(e.hash, e.index)) continue;
      freed += await locks.run(e.hash, async () => {
        const loaded = await store.load(e.hash);
        if (loaded.state !== 'ok') {
          index.removeObject(e.hash);
          return 0;
        }
        // Another process may have dropped it already: then nothing is freed here, and this
        // index stops counting it.
        if (!loaded.meta.slices.some((s) => s.index === e.index)) {
          index.remove(e.hash, e.index);
          return 0;
        }
        await store.dropSlices(e.hash, [e.index], loaded.meta);
        counts.evictions++;
        return e.length;
      });
    }
    return freed;
  }
}

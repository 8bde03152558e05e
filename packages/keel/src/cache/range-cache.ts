import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import { classify, keelError, type KeelError } from '../errors/index.js';
import { AccessTimes } from './access-times.js';
import { Bypass } from './bypass.js';
import { walkCache, type CleanupReport, type VerifyReport, type WalkContext } from './cleanup.js';
import {
  zeroCounts,
  type CacheOperation,
  type CacheReporter,
  type CacheStats,
  type RepairCounter,
} from './counters.js';
import { Evictor, SliceIndex } from './eviction.js';
import type { CacheFs } from './fs.js';
import { identityHash, sameIdentity, type ObjectIdentity } from './identity.js';
import { RecentIoErrors } from './io-errors.js';
import { FileLocks, type CacheLocks } from './file-lock.js';
import { objectsRootOf } from './layout.js';
import { MetaMemo } from './meta-memo.js';
import type { CacheMeta, ObjectInfo } from './metadata.js';
import { ObjectStore, type LoadedMeta } from './object-store.js';
import { resolveOptions, type RangeCacheOptions } from './options.js';
import { planRead, slicesOf, type ReadUnit, type SlicePart } from './read-plan.js';
import { streamUnits } from './read-stream.js';
import { SliceReader, type SliceBytes } from './slice-read.js';
import { VerifyPool } from './verify-pool.js';
import { CacheWriter, type WriteResult } from './writes.js';

/** A read: the bytes, or why not. */
export type ReadResult = { hit: true; meta: CacheMeta; stream: Readable } | { hit: false; reason: string };

/**
 * A read into memory: every byte verified, or why not. Call `release()` once nothing uses `bytes`
 * any more (for a response: when it has finished) so the cache can reuse the memory; `bytes` must
 * not be used after. Not calling it is fine: the memory is then garbage-collected.
 */
export type BufferReadResult =
  | { hit: true; meta: CacheMeta; bytes: Buffer; release: () => void }
  | {
      hit: false;
      reason: string;
      /** The slice that could not be served (missing, corrupt or unreadable), when one was read. */
      slice?: number;
    };

/** Options of {@link RangeCache.read} and {@link RangeCache.readBuffer}. */
export interface ReadOptions {
  /**
   * The metadata `getMeta()` returned for this object just before: when nothing has replaced it
   * since, it is not looked up again.
   */
  meta?: CacheMeta;
}

/** Where a read starts: the object's metadata as loaded, or why the read is refused before that. */
type Lookup = LoadedMeta | { state: 'refused'; reason: string };

const CLOSED: Lookup = { state: 'refused', reason: 'cache closed' };
const INVALID_RANGE: Lookup = { state: 'refused', reason: 'invalid range' };

/** Why a read whose lookup found no usable metadata is a miss. */
function missReason(found: Exclude<Lookup, { state: 'ok' }>): string {
  return found.state === 'refused'
    ? found.reason
    : found.state === 'missing'
      ? 'not cached'
      : 'metadata unusable';
}

/** Largest range {@link RangeCache.readBuffer} reads (16 MiB). */
export const MAX_BUFFER_READ_BYTES = 16 * 1024 * 1024;

/** Events of the cache: repairs, faults and bypass changes, for logs, metrics and alerts. */
export interface RangeCacheEvents {
  repair: [{ counter: RepairCounter; message: string; count: number }];
  /** An I/O error, and what the cache was doing (see {@link CACHE_OPERATIONS}). */
  fault: [{ message: string; error: KeelError; operation: CacheOperation }];
  bypass: [{ active: boolean; reason: string }];
}

/**
 * A range cache on local disk that checks every byte it serves and repairs itself. Objects are
 * cut into aligned slices, each stored in its own file with its CRC32 in the object's metadata.
 * Every fault (corrupted or empty metadata, a missing or corrupt slice, a full disk, permission
 * and I/O errors) is a miss for the caller, plus a repair and a counter; see docs/cache.md.
 *
 * The reads (the hit path) are here; the rest is delegated: metadata and slice files to
 * {@link ObjectStore}, writes to {@link CacheWriter}, access times to {@link AccessTimes},
 * eviction to {@link Evictor}, bypass mode to {@link Bypass}, cleanup and verify to {@link walkCache}.
 */
export class RangeCache extends EventEmitter<RangeCacheEvents> {
  readonly dir: string;
  readonly sliceBytes: number;
  readonly maxBytes: number;
  /** I/O errors within this window are counted towards `ioErrorBypassThreshold`. */
  readonly ioErrorWindowMs: number;
  /** This many I/O errors within `ioErrorWindowMs` put the cache in bypass. */
  readonly ioErrorBypassThreshold: number;
  private readonly objectsRoot: string;
  private readonly cleanupOnOpen: boolean;
  private readonly graceMs: number;
  private readonly fs: CacheFs;
  private readonly index = new SliceIndex();
  /** Shared with the store, which keeps it in step with meta.json; reads consult it directly. */
  private readonly memo: MetaMemo;
  /** Threads that read and verify slices off the event loop; none with an injected `fs`. */
  private readonly verifier: VerifyPool | undefined;
  private readonly locks: CacheLocks;
  private readonly counts = zeroCounts();
  private readonly ioErrors: RecentIoErrors;
  private readonly access: AccessTimes;
  private readonly store: ObjectStore;
  private readonly bypass: Bypass;
  /** The cleanup walk under way, shared by callers. */
  private cleaning: Promise<CleanupReport> | undefined;
  private readonly evictor: Evictor;
  private readonly reader: SliceReader;
  private readonly writer: CacheWriter;
  private readonly walkContext: WalkContext;
  private closed = false;
  /** Writes, evictions and cleanups under way: {@link close} waits for them. */
  private readonly pending = new Set<Promise<unknown>>();

  private constructor(options: RangeCacheOptions) {
    super();
    const s = resolveOptions(options);
    const { dir, fs } = s;
    this.dir = dir;
    this.sliceBytes = s.sliceBytes;
    this.maxBytes = s.maxBytes;
    this.ioErrorWindowMs = s.ioErrorWindowMs;
    this.ioErrorBypassThreshold = s.ioErrorBypassThreshold;
    this.cleanupOnOpen = s.cleanupOnOpen;
    this.graceMs = s.cleanupGraceMs;
    this.fs = fs;
    this.objectsRoot = objectsRootOf(dir);
    // Object locks are shared by every process that opens the directory.
    this.locks = s.locks ?? new FileLocks(dir);
    this.memo = new MetaMemo(s.metadataMemoSlices);
    this.verifier = s.verifyThreads > 0 ? new VerifyPool(s.verifyThreads) : undefined;
    const { objectsRoot, memo, verifier, index, locks, counts } = this;
    // Paths being written in this process: cleanup leaves them alone.
    const inFlight = new Set<string>();
    const isClosed = (): boolean => this.closed;
    const ioErrors = new RecentIoErrors(s.clock, s.ioErrorWindowMs, s.ioErrorBypassThreshold);
    this.ioErrors = ioErrors;
    const repair: CacheReporter['repair'] = (counter, message, count = 1) => {
      counts.repairs[counter] += count;
      this.emit('repair', { counter, message, count });
    };
    // Each part reports its faults under the operation it does.
    const reporter = (operation: CacheOperation): CacheReporter => ({
      repair,
      fault: (message, err) => {
        counts.ioErrors++;
        counts.ioErrorsByOperation[operation]++;
        const recent = ioErrors.record();
        this.emit('fault', { message, error: classify(err), operation });
        if (recent >= ioErrors.limit)
          bypass.enter(
            `${recent} I/O errors in the cache directory in the last ${ioErrors.windowMs / 1000} s, ` +
              `the last: ${message}`,
          );
      },
    });
    const report = reporter('write');

    // Writing an object's metadata again stamps in its latest access times.
    const persist = (hash: string): Promise<void> =>
      locks.run(hash, async () => {
        const loaded = await store.load(hash);
        if (loaded.state === 'ok') await store.write(hash, loaded.meta);
      });
    const access = new AccessTimes({ ...s, index, persist, isClosed, report });
    const store = new ObjectStore({
      fs,
      objectsRoot,
      memo,
      index,
      access,
      locks,
      inFlight,
      report,
      readReport: reporter('read'),
    });
    const bypass = new Bypass({
      ...s,
      objectsRoot,
      inFlight,
      ioErrors,
      isClosed,
      beforeLeave: async () => {
        if (index.slices === 0) await this.rebuildIndex();
      },
      onChange: (event) => {
        this.emit('bypass', event);
      },
    });
    const evictor = new Evictor({
      ...s,
      index,
      store,
      locks,
      counts,
      report: reporter('cleanup'),
      scan: async () => {
        const fresh = new SliceIndex();
        await walkCache({ ...this.walkContext, index: fresh }, { deep: false, fix: false, minAgeMs: 0 });
        return fresh;
      },
    });
    this.access = access;
    this.store = store;
    this.bypass = bypass;
    this.evictor = evictor;
    this.reader = new SliceReader({
      fs,
      objectsRoot,
      verifier,
      memo,
      access,
      store,
      report: reporter('read'),
    });
    this.writer = new CacheWriter({
      ...s,
      objectsRoot,
      index,
      store,
      locks,
      evictor,
      bypass,
      inFlight,
      counts,
      report,
      isClosed,
    });
    this.walkContext = { dir, objectsRoot, fs, inFlight, locks, store, index, report: reporter('cleanup') };
  }

  /**
   * Opens (creating if needed) the cache in `options.dir`, removes leftover `.tmp` files and
   * corrupted metadata, and rebuilds the size index from disk.
   * @throws KeelError `INVALID_CONFIG` for bad options. An unusable directory does not throw: the
   *   cache starts in bypass mode and keeps probing.
   */
  static async open(options: RangeCacheOptions): Promise<RangeCache> {
    const cache = new RangeCache(options);
    try {
      await cache.fs.mkdir(cache.objectsRoot, { recursive: true });
      await cache.rebuildIndex();
    } catch (err) {
      cache.bypass.enter(`cache directory ${cache.dir} is unusable: ${classify(err).message}`);
    }
    return cache;
  }

  /**
   * Refuses new writes, waits for the writes, evictions (a background rescan's included) and
   * cleanups under way, writes pending access times (see `accessFlushMs`) and stops background
   * work: once it resolves, this cache changes nothing more on disk, so its directory can be
   * removed. Reads and writes after close are misses.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.access.cancelTimer();
    this.bypass.cancelProbe();
    // A write under way may start a rescan as it ends: wait until nothing is left.
    while (this.pending.size > 0 || this.evictor.rescanning)
      await Promise.allSettled([...this.pending, this.evictor.settled()]);
    if (!this.bypassed) await this.flushAccess();
    this.memo.clear();
    await this.verifier?.close();
  }

  /** Counts `work` as under way until it settles (see {@link close}). */
  private track<T>(work: Promise<T>): Promise<T> {
    this.pending.add(work);
    const done = (): void => {
      this.pending.delete(work);
    };
    work.then(done, done);
    return work;
  }

  /** True while writes are bypassed. */
  get bypassed(): boolean {
    return this.bypass.active;
  }

  /**
   * While bypassed, checks at once (instead of at the next probe, every `bypassProbeMs`) whether
   * the disk is usable again (no I/O error for `ioErrorWindowMs`, room for
   * `bypassResumeFreeSlices` slices, a full slice written): resolves once bypass has ended (at
   * once when not bypassed), rejects with the reason it has not (`IO_ERROR`, `DISK_FULL`, or the
   * write's error).
   */
  async probeBypass(): Promise<void> {
    await this.bypass.probeNow();
  }

  /** Counters and gauges. */
  stats(): CacheStats {
    return {
      ...this.counts,
      ioErrorsByOperation: { ...this.counts.ioErrorsByOperation },
      recentIoErrors: this.ioErrors.count(),
      repairs: { ...this.counts.repairs },
      sizeBytes: this.index.sizeBytes,
      maxBytes: this.maxBytes,
      objects: this.index.objectCount,
      slices: this.index.slices,
      bypass: this.bypassed,
      bypassReason: this.bypass.reason,
    };
  }

  /**
   * The object's metadata, or undefined when not cached (corrupted metadata is repaired: a miss).
   * Kept in memory while meta.json is unchanged (one `stat` per call); treat it as read-only.
   * `lazy`: answer from memory without the `stat` when the object is remembered; the next read
   * of the object checks the file on its verifying thread (and forgets the metadata if the file
   * changed), so a caller that goes on to read it pays no extra system call. Without verifying
   * threads, `lazy` changes nothing.
   */
  async getMeta(id: ObjectIdentity, options: { lazy?: boolean } = {}): Promise<CacheMeta | undefined> {
    const hash = identityHash(id);
    if (options.lazy && this.verifier && !this.closed) {
      const known = this.memo.get(hash);
      if (known && sameIdentity(known.meta.identity, id)) return known.meta;
    }
    const loaded = await this.store.load(hash, id);
    return loaded.state === 'ok' ? loaded.meta : undefined;
  }

  /**
   * False when no slice of the object is cached, answered from memory (no system call): a read
   * of it is a miss whatever its metadata says. True does not promise a hit.
   */
  mayHaveSlices(id: ObjectIdentity): boolean {
    return this.index.hasObject(identityHash(id));
  }

  /**
   * True when this process holds the object's metadata in memory (it stored or read it lately),
   * answered without a system call: with {@link mayHaveSlices}, what tells an object cached with
   * no slice at all (an empty one) from one not cached.
   */
  remembers(id: ObjectIdentity): boolean {
    const known = this.memo.peek(identityHash(id));
    return known !== undefined && sameIdentity(known.meta.identity, id);
  }

  /**
   * True when slice `index` of the object is cached as far as memory knows (no system call): a
   * hint for whoever is about to fetch it, not a promise of a hit (its bytes are checked when read).
   */
  hasSlice(id: ObjectIdentity, index: number): boolean {
    return this.index.has(identityHash(id), index);
  }

  /** Indexes of the slices of `[start, end]` (inclusive) that are cached, and the metadata. */
  async cachedSlices(
    id: ObjectIdentity,
    start = 0,
    end?: number,
  ): Promise<{ meta: CacheMeta; cached: Set<number>; needed: number[] } | undefined> {
    const meta = await this.getMeta(id);
    if (!meta) return undefined;
    const last = Math.min(end ?? meta.size - 1, meta.size - 1);
    const needed: number[] = [];
    for (
      let i = Math.floor(start / meta.sliceBytes);
      i <= Math.floor(last / meta.sliceBytes) && last >= start;
      i++
    )
      needed.push(i);
    return { meta, cached: new Set(meta.slices.map((s) => s.index)), needed };
  }

  /**
   * Stores what the origin said about an object. The same ETag keeps the cached slices and
   * refreshes `cachedAt` (a revalidation); another ETag drops every slice of the old version.
   */
  putMeta(id: ObjectIdentity, info: ObjectInfo): Promise<WriteResult> {
    return this.track(this.writer.putMeta(id, info));
  }

  /**
   * Stores slice `index` of the object, checked against the stored metadata: the ETag must match
   * (versions never mix) and the length must be the slice's. The write is atomic and durable
   * before the metadata refers to it.
   * `expected` is the ETag the bytes were fetched under, as a string or `{ etag }`.
   * @throws KeelError `INVALID_INPUT` for an index or length that cannot be right.
   */
  writeSlice(
    id: ObjectIdentity,
    index: number,
    data: Uint8Array,
    expected: string | { etag: string },
  ): Promise<WriteResult> {
    return this.track(this.writer.writeSlice(id, index, data, expected));
  }

  /**
   * Reads bytes `start..end` (inclusive) of the object. A hit streams exactly those bytes, each
   * slice's CRC32 verified before its bytes are passed on. Anything missing, corrupt or unreadable
   * is a miss (and repaired). The first slice is verified before a hit is returned; should a later
   * slice fail, the stream errors with a `CHECKSUM_MISMATCH` KeelError whose `details.offset` says
   * where to continue from the origin.
   */
  async read(id: ObjectIdentity, start: number, end: number, options: ReadOptions = {}): Promise<ReadResult> {
    const hash = identityHash(id);
    const found = await this.lookup(hash, id, start, end, options.meta, Infinity);
    if (found.state !== 'ok') return this.miss(missReason(found));
    const meta = found.meta;
    const plan = planRead(meta, start, end);
    if (!plan.ok) return this.miss(plan.reason);
    const units = plan.units;
    const first = units[0] as ReadUnit;
    const reader = this.reader.unitReader(hash, id, found.meta === options.meta);
    const firstBytes = await reader.read(first);
    if (!firstBytes) {
      reader.doneBefore(Infinity);
      return this.miss(`slice ${first.slice.index} unusable`);
    }
    this.counts.hits++;
    const bytes = streamUnits(id, units, firstBytes, reader, this.counts);
    return { hit: true, meta, stream: Readable.from(bytes, { objectMode: false }) };
  }

  /**
   * Reads bytes `start..end` (inclusive) into memory and answers only once every one of them is
   * verified: a hit holds exactly those bytes, so nothing unverified can reach a client. Meant for
   * ranges that fit in memory (a gateway's ranged GETs); stream bigger ones with `read()`.
   * Anything missing, corrupt or unreadable is a miss (and repaired).
   * @throws KeelError `INVALID_INPUT` for a range longer than {@link MAX_BUFFER_READ_BYTES}.
   */
  async readBuffer(
    id: ObjectIdentity,
    start: number,
    end: number,
    options: ReadOptions = {},
  ): Promise<BufferReadResult> {
    const hash = identityHash(id);
    const found = await this.lookup(hash, id, start, end, options.meta, MAX_BUFFER_READ_BYTES);
    if (found.state !== 'ok') return this.miss(missReason(found));
    const meta = found.meta;
    const span = slicesOf(meta, start, end);
    if (!span.ok) return this.miss(span.reason);
    // One check of meta.json per read, and none when the lookup has just made it.
    const checkMeta = meta === options.meta;
    const read = await Promise.all(
      span.parts.map((p, i) =>
        this.reader.read(hash, id, p.slice, p.from, p.to, { checkMeta: checkMeta && i === 0 }),
      ),
    );
    const bad = read.findIndex((p) => p === undefined);
    if (bad >= 0) {
      for (const p of read) p?.release();
      const slice = (span.parts[bad] as SlicePart).slice.index;
      return { ...this.miss(`slice ${slice} unusable`), slice };
    }
    const parts = read as SliceBytes[];
    this.counts.hits++;
    if (parts.length === 1) {
      const only = parts[0] as (typeof parts)[number];
      this.counts.bytesServed += only.bytes.length;
      return { hit: true, meta, bytes: only.bytes, release: only.release };
    }
    const bytes = Buffer.concat(parts.map((p) => p.bytes));
    for (const p of parts) p.release();
    this.counts.bytesServed += bytes.length;
    return { hit: true, meta, bytes, release: () => undefined };
  }

  /** Forgets an object: metadata and every slice. */
  async invalidate(id: ObjectIdentity): Promise<void> {
    const hash = identityHash(id);
    await this.track(this.locks.run(hash, () => this.store.remove(hash)));
  }

  /**
   * Removes references to slice files that do not exist (or have the wrong size); deletes the
   * entry when none remain. Counts `inconsistency_fixed_total` per reference removed.
   */
  async verifyAndFix(id: ObjectIdentity): Promise<{ removed: number; remaining: number }> {
    const hash = identityHash(id);
    return this.track(this.locks.run(hash, () => this.store.fixReferences(hash, id)));
  }

  /**
   * Removes leftover `.tmp` files, orphaned slice files and references to missing slices over the
   * whole cache, never touching what a writer in this process is using. A call while a cleanup
   * runs shares it (and its report) rather than walking the cache a second time at once.
   */
  cleanup(): Promise<CleanupReport> {
    this.cleaning ??= this.track(this.walk(false, true, undefined, this.graceMs))
      .then((report) => ({
        partialWrites: report.partialWrites,
        orphanedFiles: report.orphanedFiles,
        inconsistenciesFixed: report.inconsistenciesFixed,
        corruptMetadata: report.corruptMetadata,
        objectsScanned: report.objectsScanned,
      }))
      .finally(() => {
        this.cleaning = undefined;
      });
    return this.cleaning;
  }

  /**
   * Checks every metadata file and every slice's checksum. With `fix`, repairs what it finds
   * (and runs cleanup); without, only reports. `onProgress` is told objects done of total.
   */
  verify(
    options: { fix?: boolean; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<VerifyReport> {
    return this.track(this.walk(true, options.fix ?? false, options.onProgress, this.graceMs));
  }

  /** Evicts least recently used slices until at most `targetBytes` remain; returns bytes freed. */
  evictTo(targetBytes: number, exceptObject?: string): Promise<number> {
    return this.track(this.evictor.evictTo(targetBytes, exceptObject));
  }

  /**
   * Writes the access times of slices read since the last flush into their metadata, so the
   * eviction order survives a restart. Best effort: a failure only loses access times.
   */
  flushAccess(): Promise<void> {
    return this.access.flush();
  }

  // ---- internals ----

  /**
   * The start of every read of `start..end`: the object's metadata (`known` while it is still the
   * remembered one, else loaded), or why the read misses before any slice is looked at (see
   * {@link missReason}). Answers without a promise of its own, so a read awaits once for it.
   * Only an answer of `known` itself skipped the `stat` of meta.json: the read's first slice read
   * then makes it on a verifying thread.
   * @throws KeelError `INVALID_INPUT` for a range longer than `maxRangeBytes` (readBuffer's limit).
   */
  private lookup(
    hash: string,
    id: ObjectIdentity,
    start: number,
    end: number,
    known: CacheMeta | undefined,
    maxRangeBytes: number,
  ): Lookup | Promise<LoadedMeta> {
    if (this.closed) return CLOSED;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start)
      return INVALID_RANGE;
    if (end - start + 1 > maxRangeBytes)
      throw keelError(
        'INVALID_INPUT',
        `readBuffer reads at most ${maxRangeBytes} bytes; use read() for ${end - start + 1}`,
      );
    return known !== undefined && this.memo.isCurrent(hash, known)
      ? { state: 'ok', meta: known }
      : this.store.load(hash, id);
  }

  /** Counts a miss and answers it. */
  private miss(reason: string): { hit: false; reason: string } {
    this.counts.misses++;
    return { hit: false, reason };
  }

  private async rebuildIndex(): Promise<void> {
    this.index.clear();
    await this.walk(false, this.cleanupOnOpen);
  }

  private walk(
    deep: boolean,
    fix = true,
    onProgress?: (done: number, total: number) => void,
    minAgeMs = 0,
  ): Promise<VerifyReport> {
    return walkCache(this.walkContext, { deep, fix, minAgeMs, ...(onProgress ? { onProgress } : {}) });
  }
}

export type { CleanupReport, VerifyReport };

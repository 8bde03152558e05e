import { EventEmitter } from 'node:events';
import path from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { classify, keelError, type KeelError } from '../errors/index.js';
import { systemClock, type Clock, type TimerHandle } from '../time/index.js';
import { TMP_MARKER, writeFileAtomic } from './atomic-write.js';
import { zeroRepairs, type CacheStats, type RepairCounter } from './counters.js';
import { walkCache, type CleanupReport, type VerifyReport, type WalkContext } from './cleanup.js';
import { evictionTarget, SliceIndex } from './eviction.js';
import { META_FILE, SLICE_PREFIX } from './layout.js';
import { realFs, type CacheFs } from './fs.js';
import { planRead } from './read-plan.js';
import { readAndVerify } from './slice-read.js';
import { defaultVerifyThreads, VerifyPool } from './verify-pool.js';
import { describeIdentity, identityHash, type ObjectIdentity } from './identity.js';
import { MetaMemo, sameStamp, stampOf, type FileStamp } from './meta-memo.js';
import {
  blocksOf,
  decodeMeta,
  encodeMeta,
  META_VERSION,
  sliceLength,
  type CacheMeta,
  type ObjectInfo,
  type SliceInfo,
  sliceChecksums,
} from './metadata.js';

/** Options of {@link RangeCache.open}. */
export interface RangeCacheOptions {
  /** Directory of the cache; created if missing. */
  dir: string;
  /** Size limit for slice bytes (default 10 GiB). */
  maxBytes?: number;
  /** Slice size; objects are cut at multiples of it (default 8 MiB). */
  sliceBytes?: number;
  /** Eviction starts above this share of maxBytes (default 0.95)… */
  highWatermark?: number;
  /** …and stops at this share (default 0.8). */
  lowWatermark?: number;
  /** While bypassed, how often to check whether the disk is usable again (default 30 s). */
  bypassProbeMs?: number;
  /**
   * Remove leftover `.tmp` files, orphans and corrupted entries at open (default true: the process
   * that opens the cache owns it). `keel cache verify` without `--fix` opens with false.
   */
  cleanupOnOpen?: boolean;
  /**
   * `cleanup()` and `verify()` leave `.tmp` and unreferenced slice files younger than this alone,
   * in case another process is writing them (default 60 s).
   */
  cleanupGraceMs?: number;
  /**
   * How long access times of read slices stay in memory before they are written into meta.json
   * (default 5 minutes; also on `close()` and `flushAccess()`). Reads never write on their own.
   */
  accessFlushMs?: number;
  /**
   * Threads that read slice files and check their CRC32s off the event loop (default: one per
   * core, at most 4; 0 reads and checks on the event loop). With an injected `fs`, reads always
   * go through it on the event loop.
   */
  verifyThreads?: number;
  /** Most slices whose decoded metadata is kept in memory, over all objects (default 100,000). */
  metadataMemoSlices?: number;
  clock?: Clock;
  /** File system to use (default `node:fs/promises`); inject faults with `faultyFs()` from `keel/chaos`. */
  fs?: CacheFs;
}

/** A read: the bytes, or why not. */
export type ReadResult = { hit: true; meta: CacheMeta; stream: Readable } | { hit: false; reason: string };

/**
 * A read into memory: every byte verified, or why not. Call `release()` once nothing uses `bytes`
 * any more (for a response: when it has finished) so the cache can reuse the memory; `bytes` must
 * not be used after. Not calling it is fine: the memory is then garbage-collected.
 */
export type BufferReadResult =
  { hit: true; meta: CacheMeta; bytes: Buffer; release: () => void } | { hit: false; reason: string };

/** Options of {@link RangeCache.read} and {@link RangeCache.readBuffer}. */
export interface ReadOptions {
  /**
   * The metadata `getMeta()` returned for this object just before: when nothing has replaced it
   * since, it is not looked up again.
   */
  meta?: CacheMeta;
}

/** Largest range {@link RangeCache.readBuffer} reads (16 MiB). */
export const MAX_BUFFER_READ_BYTES = 16 * 1024 * 1024;

/** A write: stored, or why not (none of these is an error for the caller: it just serves the origin's bytes). */
export type WriteResult =
  | { stored: true }
  | {
      stored: false;
      reason: 'bypass' | 'no-metadata' | 'etag-mismatch' | 'disk-full' | 'io-error';
      message: string;
    };

/** Events of the cache: repairs, faults and bypass changes, for logs, metrics and alerts. */
export interface RangeCacheEvents {
  repair: [{ counter: RepairCounter; message: string; count: number }];
  fault: [{ message: string; error: KeelError }];
  bypass: [{ active: boolean; reason: string }];
}

/** Units read ahead of the consumer while streaming. */
const READ_AHEAD = 2;

/** metadata.json as found on disk. */
export type LoadedMeta =
  | { state: 'ok'; meta: CacheMeta }
  | { state: 'missing' }
  | { state: 'corrupt'; reason: string }
  | { state: 'error'; error: KeelError };

/**
 * A range cache on local disk that checks every byte it serves and repairs itself. Objects are
 * cut into aligned slices, each stored in its own file with its CRC32 in the object's metadata.
 * Every fault (corrupted or empty metadata, a missing or corrupt slice, a full disk, permission
 * and I/O errors) is a miss for the caller, plus a repair and a counter; see docs/cache.md.
 */
export class RangeCache extends EventEmitter<RangeCacheEvents> {
  readonly dir: string;
  readonly sliceBytes: number;
  readonly maxBytes: number;
  private readonly high: number;
  private readonly low: number;
  private readonly probeMs: number;
  private readonly cleanupOnOpen: boolean;
  private readonly graceMs: number;
  private readonly clock: Clock;
  private readonly fs: CacheFs;
  private readonly index = new SliceIndex();
  private readonly memo: MetaMemo;
  private readonly accessFlushMs: number;
  /** Objects whose slices were read since their access times were last written. */
  private readonly accessDirty = new Set<string>();
  private accessTimer: TimerHandle | undefined;
  private flushing: Promise<void> | undefined;
  /** Counts starts and ends of metadata writes and removals (see loadMeta). */
  private metaWrites = 0;
  /** Threads that read and verify slices off the event loop; none with an injected `fs`. */
  private readonly verifier: VerifyPool | undefined;
  private readonly locks = new Map<string, Promise<void>>();
  private readonly inFlight = new Set<string>();
  private bypassReason: string | undefined;
  private probeTimer: TimerHandle | undefined;
  private closed = false;
  private readonly counts = {
    hits: 0,
    misses: 0,
    bytesServed: 0,
    bytesWritten: 0,
    slicesWritten: 0,
    evictions: 0,
    ioErrors: 0,
    repairs: zeroRepairs(),
  };

  private constructor(options: RangeCacheOptions) {
    super();
    this.dir = path.resolve(options.dir);
    this.sliceBytes = options.sliceBytes ?? 8 * 1024 * 1024;
    this.maxBytes = options.maxBytes ?? 10 * 1024 ** 3;
    this.high = options.highWatermark ?? 0.95;
    this.low = options.lowWatermark ?? 0.8;
    this.probeMs = options.bypassProbeMs ?? 30_000;
    this.cleanupOnOpen = options.cleanupOnOpen ?? true;
    this.graceMs = options.cleanupGraceMs ?? 60_000;
    this.clock = options.clock ?? systemClock;
    this.fs = options.fs ?? realFs;
    this.accessFlushMs = options.accessFlushMs ?? 300_000;
    this.memo = new MetaMemo(options.metadataMemoSlices);
    const threads = options.verifyThreads ?? defaultVerifyThreads();
    this.verifier = options.fs === undefined && threads > 0 ? new VerifyPool(threads) : undefined;
    const bad = (m: string): never => {
      throw keelError('INVALID_CONFIG', `range cache: ${m}`);
    };
    if (!Number.isSafeInteger(this.sliceBytes) || this.sliceBytes < 1)
      bad(`sliceBytes must be a positive integer, got ${this.sliceBytes}`);
    if (!(this.accessFlushMs > 0)) bad(`accessFlushMs must be > 0, got ${this.accessFlushMs}`);
    if (!(this.maxBytes > 0)) bad(`maxBytes must be > 0, got ${this.maxBytes}`);
    if (!(this.low > 0 && this.low < this.high && this.high <= 1)) {
      bad(`watermarks must satisfy 0 < lowWatermark < highWatermark <= 1, got ${this.low} and ${this.high}`);
    }
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
      await cache.fs.mkdir(cache.objectsDir(), { recursive: true });
      await cache.rebuildIndex();
    } catch (err) {
      cache.enterBypass(`cache directory ${cache.dir} is unusable: ${classify(err).message}`);
    }
    return cache;
  }

  /**
   * Writes pending access times (see `accessFlushMs`) and stops background work. Reads and writes
   * after close are misses.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.accessTimer?.cancel();
    this.accessTimer = undefined;
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
    if (!this.bypassed) await this.flushAccess();
    this.closed = true;
    this.memo.clear();
    await this.verifier?.close();
  }

  /** True while writes are bypassed. */
  get bypassed(): boolean {
    return this.bypassReason !== undefined;
  }

  /** Counters and gauges. */
  stats(): CacheStats {
    return {
      ...this.counts,
      repairs: { ...this.counts.repairs },
      sizeBytes: this.index.sizeBytes,
      maxBytes: this.maxBytes,
      objects: this.index.objectCount,
      slices: this.index.slices,
      bypass: this.bypassed,
      bypassReason: this.bypassReason,
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
      if (known && sameIdentity(known.meta, id)) return known.meta;
    }
    const loaded = await this.loadMeta(hash, id);
    return loaded.state === 'ok' ? loaded.meta : undefined;
  }

  /**
   * False when no slice of the object is cached, answered from memory (no system call): a read
   * of it is a miss whatever its metadata says. True does not promise a hit.
   */
  mayHaveSlices(id: ObjectIdentity): boolean {
    return this.index.hasObject(identityHash(id));
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
  async putMeta(id: ObjectIdentity, info: ObjectInfo): Promise<WriteResult> {
    if (this.bypassed || this.closed)
      return { stored: false, reason: 'bypass', message: this.bypassReason ?? 'cache closed' };
    const hash = identityHash(id);
    return this.withLock(hash, async () => {
      const loaded = await this.loadMeta(hash, id);
      const keep = loaded.state === 'ok' && loaded.meta.etag === info.etag && loaded.meta.size === info.size;
      if (loaded.state === 'ok' && !keep)
        await this.dropSlices(
          hash,
          loaded.meta.slices.map((s) => s.index),
        );
      const meta: CacheMeta = {
        version: META_VERSION,
        identity: { bucket: id.bucket, key: id.key, versionId: id.versionId ?? null },
        etag: info.etag,
        size: info.size,
        ...(info.lastModified === undefined ? {} : { lastModified: info.lastModified }),
        ...(info.contentType === undefined ? {} : { contentType: info.contentType }),
        ...(info.headers === undefined ? {} : { headers: info.headers }),
        sliceBytes: this.sliceBytes,
        cachedAt: this.clock.now(),
        slices: keep ? loaded.meta.slices : [],
      };
      if (keep) meta.sliceBytes = loaded.meta.sliceBytes;
      return this.storeWithRetry(
        () => this.writeMeta(hash, meta),
        `metadata of ${describeIdentity(id)}`,
        hash,
      );
    });
  }

  /**
   * Stores slice `index` of the object, checked against the stored metadata: the ETag must match
   * (versions never mix) and the length must be the slice's. The write is atomic and durable
   * before the metadata refers to it.
   * `expected` is the ETag the bytes were fetched under, as a string or `{ etag }`.
   * @throws KeelError `INVALID_INPUT` for an index or length that cannot be right.
   */
  async writeSlice(
    id: ObjectIdentity,
    index: number,
    data: Uint8Array,
    expected: string | { etag: string },
  ): Promise<WriteResult> {
    const etag = typeof expected === 'string' ? expected : expected.etag;
    if (this.bypassed || this.closed)
      return { stored: false, reason: 'bypass', message: this.bypassReason ?? 'cache closed' };
    const hash = identityHash(id);
    await this.makeRoom(data.byteLength);
    return this.withLock(hash, async () => {
      const loaded = await this.loadMeta(hash, id);
      if (loaded.state !== 'ok')
        return { stored: false, reason: 'no-metadata', message: `no metadata for ${describeIdentity(id)}` };
      const meta = loaded.meta;
      if (meta.etag !== etag) {
        return {
          stored: false,
          reason: 'etag-mismatch',
          message: `slice of ${describeIdentity(id)} has ETag ${etag}, cached version is ${meta.etag}`,
        };
      }
      const expected = sliceLength(meta.size, meta.sliceBytes, index);
      if (!Number.isSafeInteger(index) || index < 0 || expected === 0 || data.byteLength !== expected) {
        throw keelError(
          'INVALID_INPUT',
          `slice ${index} of ${describeIdentity(id)} must be ${expected} bytes, got ${data.byteLength}`,
        );
      }
      if (meta.slices.some((s) => s.index === index)) return { stored: true };
      const file = this.slicePath(hash, index);
      const slice: SliceInfo = {
        index,
        length: data.byteLength,
        ...sliceChecksums(data),
        lastAccess: this.clock.now(),
      };
      this.inFlight.add(file);
      try {
        const result = await this.storeWithRetry(
          async () => {
            await this.fs.mkdir(this.objectDir(hash), { recursive: true });
            await writeFileAtomic(this.fs, file, data, this.inFlight);
            try {
              await this.writeMeta(hash, { ...meta, slices: [...meta.slices, slice] });
            } catch (err) {
              await this.fs.rm(file, { force: true }).catch(() => undefined);
              throw err;
            }
          },
          `slice ${index} of ${describeIdentity(id)}`,
          hash,
        );
        if (result.stored) {
          this.indexSlice(hash, slice);
          this.counts.bytesWritten += data.byteLength;
          this.counts.slicesWritten++;
        }
        return result;
      } finally {
        this.inFlight.delete(file);
      }
    });
  }

  /**
   * Reads bytes `start..end` (inclusive) of the object. A hit streams exactly those bytes, each
   * slice's CRC32 verified before its bytes are passed on. Anything missing, corrupt or unreadable
   * is a miss (and repaired). The first slice is verified before a hit is returned; should a later
   * slice fail, the stream errors with a `CHECKSUM_MISMATCH` KeelError whose `details.offset` says
   * where to continue from the origin.
   */
  async read(id: ObjectIdentity, start: number, end: number, options: ReadOptions = {}): Promise<ReadResult> {
    const miss = (reason: string): ReadResult => {
      this.counts.misses++;
      return { hit: false, reason };
    };
    if (this.closed) return miss('cache closed');
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start)
      return miss('invalid range');
    const hash = identityHash(id);
    const loaded = await this.metaFor(hash, id, options.meta);
    if (loaded.state !== 'ok') return miss(loaded.state === 'missing' ? 'not cached' : 'metadata unusable');
    const meta = loaded.meta;
    const plan = planRead(meta, start, end);
    if (!plan.ok) return miss(plan.reason);
    const units = plan.units;
    const first = Math.floor(start / meta.sliceBytes);
    const handles = new Map<number, Promise<FileHandle>>();
    const closeHandles = (keepFrom: number): void => {
      for (const [index, h] of handles) {
        if (index >= keepFrom) continue;
        handles.delete(index);
        void h.then((fh) => fh.close()).catch(() => undefined);
      }
    };
    const fetchUnit = (u: (typeof units)[number]): Promise<Buffer | undefined> => {
      const open = (): Promise<FileHandle> => {
        let h = handles.get(u.slice.index);
        if (!h) {
          h = this.fs.open(this.slicePath(hash, u.slice.index), 'r');
          h.catch(() => undefined);
          handles.set(u.slice.index, h);
        }
        return h;
      };
      return this.readSlice(hash, id, u.slice, u.from, u.to, open).then((p) => p?.bytes);
    };
    const firstBytes = await fetchUnit(units[0] as (typeof units)[number]);
    if (!firstBytes) {
      closeHandles(Infinity);
      return miss(`slice ${first} unusable`);
    }
    this.counts.hits++;
    const generate = async function* (this: RangeCache): AsyncGenerator<Buffer> {
      // Each unit is verified before its bytes go out; READ_AHEAD units are read while the
      // consumer takes this one.
      const ahead: Promise<Buffer | undefined>[] = [];
      let scheduled = 1;
      const fill = (): void => {
        while (ahead.length < READ_AHEAD && scheduled < units.length) {
          const p = fetchUnit(units[scheduled++] as (typeof units)[number]);
          p.catch(() => undefined);
          ahead.push(p);
        }
      };
      try {
        fill();
        this.counts.bytesServed += firstBytes.length;
        yield firstBytes;
        for (let u = 1; u < units.length; u++) {
          const unit = units[u] as (typeof units)[number];
          const bytes = await (ahead.shift() as Promise<Buffer | undefined>);
          if (!bytes) {
            throw keelError(
              'CHECKSUM_MISMATCH',
              `slice ${unit.slice.index} of ${describeIdentity(id)} failed verification mid-read; continue from the origin at byte ${unit.offset}`,
              { offset: unit.offset },
            );
          }
          // Units are in order: slices before the next unit's are done with.
          const following = units[u + 1];
          if (following) closeHandles(following.slice.index);
          fill();
          this.counts.bytesServed += bytes.length;
          yield bytes;
        }
      } finally {
        // close() waits for reads still in flight on a handle.
        closeHandles(Infinity);
      }
    };
    return { hit: true, meta, stream: Readable.from(generate.call(this), { objectMode: false }) };
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
    const miss = (reason: string): BufferReadResult => {
      this.counts.misses++;
      return { hit: false, reason };
    };
    if (this.closed) return miss('cache closed');
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start)
      return miss('invalid range');
    if (end - start + 1 > MAX_BUFFER_READ_BYTES)
      throw keelError(
        'INVALID_INPUT',
        `readBuffer reads at most ${MAX_BUFFER_READ_BYTES} bytes; use read() for ${end - start + 1}`,
      );
    const hash = identityHash(id);
    const loaded = await this.metaFor(hash, id, options.meta);
    if (loaded.state !== 'ok') return miss(loaded.state === 'missing' ? 'not cached' : 'metadata unusable');
    const meta = loaded.meta;
    if (end >= meta.size) return miss('range beyond the object');
    const first = Math.floor(start / meta.sliceBytes);
    const last = Math.floor(end / meta.sliceBytes);
    const pieces: Promise<{ bytes: Buffer; release: () => void } | undefined>[] = [];
    for (let i = first; i <= last; i++) {
      const slice = meta.slices.find((s) => s.index === i);
      if (!slice) return miss(`slice ${i} not cached`);
      const base = i * meta.sliceBytes;
      pieces.push(
        this.readSlice(hash, id, slice, Math.max(0, start - base), Math.min(slice.length, end - base + 1)),
      );
    }
    const read = await Promise.all(pieces);
    const bad = read.findIndex((p) => p === undefined);
    if (bad >= 0) {
      for (const p of read) p?.release();
      return miss(`slice ${first + bad} unusable`);
    }
    const parts = read as { bytes: Buffer; release: () => void }[];
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
    await this.withLock(hash, async () => {
      await this.removeObject(hash);
    });
  }

  /**
   * Removes references to slice files that do not exist (or have the wrong size); deletes the
   * entry when none remain. Counts `inconsistency_fixed_total` per reference removed.
   */
  async verifyAndFix(id: ObjectIdentity): Promise<{ removed: number; remaining: number }> {
    const hash = identityHash(id);
    return this.withLock(hash, () => this.fixReferences(hash, id));
  }

  /**
   * Removes leftover `.tmp` files, orphaned slice files and references to missing slices over the
   * whole cache, never touching what a writer in this process is using.
   */
  async cleanup(): Promise<CleanupReport> {
    const report = (await this.walk(false, true, undefined, this.graceMs)) as CleanupReport;
    return {
      partialWrites: report.partialWrites,
      orphanedFiles: report.orphanedFiles,
      inconsistenciesFixed: report.inconsistenciesFixed,
      corruptMetadata: report.corruptMetadata,
      objectsScanned: report.objectsScanned,
    };
  }

  /**
   * Checks every metadata file and every slice's checksum. With `fix`, repairs what it finds
   * (and runs cleanup); without, only reports. `onProgress` is told objects done of total.
   */
  verify(
    options: { fix?: boolean; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<VerifyReport> {
    return this.walk(true, options.fix ?? false, options.onProgress, this.graceMs);
  }

  /** Evicts least recently used slices until at most `targetBytes` remain; returns bytes freed. */
  async evictTo(targetBytes: number, exceptObject?: string): Promise<number> {
    if (this.index.sizeBytes <= targetBytes) return 0;
    // The object being written (whose lock the caller holds) is never evicted from under it.
    const entries = this.index.lruOrder(exceptObject);
    let freed = 0;
    for (const e of entries) {
      if (this.index.sizeBytes <= targetBytes) break;
      if (!this.index.has(e.hash, e.index)) continue;
      freed += await this.withLock(e.hash, async () => {
        const loaded = await this.loadMeta(e.hash);
        if (loaded.state !== 'ok') {
          this.unindexObject(e.hash);
          return 0;
        }
        await this.dropSlices(e.hash, [e.index], loaded.meta);
        this.counts.evictions++;
        return e.length;
      });
    }
    return freed;
  }

  // ---- internals ----

  private objectsDir(): string {
    return path.join(this.dir, 'objects');
  }

  // Paths are built on every hit: plain concatenation of parts that need no normalising (a
  // resolved directory and hex hashes) instead of path.join.
  private objectDir(hash: string): string {
    const base = this.dir.endsWith(path.sep) ? this.dir.slice(0, -1) : this.dir; // '/' itself
    return `${base}${path.sep}objects${path.sep}${hash.slice(0, 2)}${path.sep}${hash}`;
  }

  private slicePath(hash: string, index: number): string {
    return `${this.objectDir(hash)}${path.sep}${SLICE_PREFIX}${index}`;
  }

  private async withLock<T>(hash: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(hash) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const chained = previous.then(() => mine);
    this.locks.set(hash, chained);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(hash) === chained) this.locks.delete(hash);
    }
  }

  private repair(counter: RepairCounter, message: string, count = 1): void {
    this.counts.repairs[counter] += count;
    this.emit('repair', { counter, message, count });
  }

  private fault(message: string, err: unknown): void {
    this.counts.ioErrors++;
    this.emit('fault', { message, error: classify(err) });
  }

  /** `known` when it is still the remembered metadata of the object, else loaded. */
  private metaFor(
    hash: string,
    id: ObjectIdentity,
    known: CacheMeta | undefined,
  ): Promise<LoadedMeta> | LoadedMeta {
    return known !== undefined && this.memo.isCurrent(hash, known)
      ? { state: 'ok', meta: known }
      : this.loadMeta(hash, id);
  }

  private metaPath(hash: string): string {
    return `${this.objectDir(hash)}${path.sep}${META_FILE}`;
  }

  /**
   * The object's metadata: from memory when meta.json is the file it was read from or written as
   * (one `stat`), else read, checked and remembered. Corrupted metadata is repaired (a miss).
   */
  private async loadMeta(hash: string, id?: ObjectIdentity): Promise<LoadedMeta> {
    const file = this.metaPath(hash);
    // A metadata write or removal while this load runs may leave its stamp and bytes from two
    // different files: then the result is used but not remembered.
    const writesBefore = this.metaWrites;
    let bytes: Buffer;
    let stamp: FileStamp;
    const unreadable = (err: unknown): LoadedMeta => {
      const e = classify(err);
      if (e.code === 'NOT_FOUND') {
        this.memo.delete(hash);
        return { state: 'missing' };
      }
      this.fault(
        `could not read metadata of ${id ? describeIdentity(id) : hash}: ${e.message}; serving from origin`,
        err,
      );
      return { state: 'error', error: e };
    };
    try {
      stamp = stampOf(await this.fs.stat(file));
    } catch (err) {
      return unreadable(err);
    }
    const known = this.memo.get(hash);
    if (known && sameStamp(known.stamp, stamp) && (!id || sameIdentity(known.meta, id)))
      return { state: 'ok', meta: known.meta };
    try {
      bytes = await this.fs.readFile(file);
    } catch (err) {
      return unreadable(err);
    }
    const decoded = decodeMeta(bytes);
    if (!decoded.ok || (id && !sameIdentity(decoded.meta, id))) {
      const reason = decoded.ok ? 'metadata belongs to another object' : decoded.reason;
      await this.removeObject(hash).catch((err: unknown) => {
        this.fault(`could not remove corrupted entry ${hash}`, err);
      });
      this.repair(
        'corruption_metadata_total',
        `metadata of ${id ? describeIdentity(id) : hash} was corrupted (${reason}); entry deleted`,
      );
      return { state: 'corrupt', reason };
    }
    // Stat came first: if the file changed in between, the stamp is older than the bytes and the
    // next load reads the file again.
    if (this.metaWrites === writesBefore) this.memo.set(hash, decoded.meta, stamp);
    return { state: 'ok', meta: decoded.meta };
  }

  /**
   * Replaces meta.json atomically and remembers what was written. Slices carry their latest
   * access times from the index, so eviction order survives a restart.
   */
  private async writeMeta(hash: string, meta: CacheMeta): Promise<void> {
    const written: CacheMeta = {
      ...meta,
      slices: meta.slices.map((s) => {
        const at = this.index.lastAccessOf(hash, s.index);
        return at !== undefined && at > s.lastAccess ? { ...s, lastAccess: at } : s;
      }),
    };
    this.memo.delete(hash);
    this.metaWrites++;
    await this.fs.mkdir(this.objectDir(hash), { recursive: true });
    await writeFileAtomic(this.fs, this.metaPath(hash), encodeMeta(written), this.inFlight);
    this.metaWrites++;
    this.accessDirty.delete(hash);
    // Remember it only with the stamp of the file as renamed into place.
    const stamp = await this.fs.stat(this.metaPath(hash)).then(stampOf, () => undefined);
    if (stamp) this.memo.set(hash, written, stamp);
  }

  /**
   * Reads bytes `[from, to)` of one slice, verifying every block they touch (the whole slice when
   * it has no block checksums), on a verifying thread when there are any. On any failure repairs
   * and returns undefined.
   */
  private async readSlice(
    hash: string,
    id: ObjectIdentity,
    slice: SliceInfo,
    from = 0,
    to = slice.length,
    open?: () => Promise<FileHandle>,
  ): Promise<{ bytes: Buffer; release: () => void } | undefined> {
    const { blockBytes, blocks } = blocksOf(slice);
    const firstBlock = Math.floor(from / blockBytes);
    const lastBlock = Math.floor((to - 1) / blockBytes);
    const readFrom = firstBlock * blockBytes;
    const readTo = Math.min(slice.length, (lastBlock + 1) * blockBytes);
    // At the slice's end, one byte more: a slice file longer than recorded is corrupt too.
    const atEnd = readTo === slice.length;
    const crcs =
      blocks instanceof Uint32Array
        ? blocks.subarray(firstBlock, lastBlock + 1)
        : Uint32Array.from(Array.prototype.slice.call(blocks, firstBlock, lastBlock + 1) as number[]);
    // The thread also checks that meta.json is still the file the metadata in memory came from.
    const known = this.verifier ? this.memo.peek(hash) : undefined;
    const request = {
      path: this.slicePath(hash, slice.index),
      position: readFrom,
      length: readTo - readFrom,
      atEnd,
      blockBytes,
      crcs,
      meta: known && { path: this.metaPath(hash), stamp: known.stamp },
    };
    const outcome = this.verifier
      ? await this.verifier.verify(request)
      : await readAndVerify(this.fs, request, open);
    if (outcome.ok) {
      // The bytes match the checksums they were read against; a changed meta.json is read anew
      // by the next lookup.
      if (outcome.metaChanged && this.memo.peek(hash) === known) this.memo.delete(hash);
      this.touch(hash, slice.index);
      return { bytes: outcome.bytes.subarray(from - readFrom, to - readFrom), release: outcome.release };
    }
    if (outcome.kind === 'error') {
      const e = classify(outcome.error);
      if (e.code !== 'NOT_FOUND') {
        this.fault(
          `could not read slice ${slice.index} of ${describeIdentity(id)}: ${e.message}; serving from origin`,
          outcome.error,
        );
        return undefined;
      }
    }
    const why =
      outcome.kind === 'error'
        ? 'missing'
        : outcome.kind === 'checksum'
          ? 'failed its checksum'
          : 'has the wrong length';
    await this.dropCorruptSlice(hash, id, slice.index, why);
    return undefined;
  }

  /** Records a read for LRU order; the access time reaches meta.json lazily. */
  private touch(hash: string, index: number): void {
    this.index.touch(hash, index, this.clock.now());
    this.accessDirty.add(hash);
    if (this.accessTimer === undefined && !this.closed)
      this.accessTimer = this.clock.setTimer(this.accessFlushMs, () => {
        this.accessTimer = undefined;
        void this.flushAccess();
      });
  }

  /**
   * Writes the access times of slices read since the last flush into their metadata, so the
   * eviction order survives a restart. Best effort: a failure only loses access times.
   */
  async flushAccess(): Promise<void> {
    // One flush at a time: a caller waits for the one running (the timer's) and then its own.
    const run = (this.flushing ?? Promise.resolve()).then(() => this.writeAccessTimes());
    this.flushing = run;
    await run;
    if (this.flushing === run) this.flushing = undefined;
  }

  private async writeAccessTimes(): Promise<void> {
    const hashes = [...this.accessDirty];
    this.accessDirty.clear();
    for (const hash of hashes) {
      await this.withLock(hash, async () => {
        const loaded = await this.loadMeta(hash);
        if (loaded.state === 'ok') await this.writeMeta(hash, loaded.meta);
      }).catch((err: unknown) => {
        this.fault(`could not record access times of ${hash}`, err);
      });
    }
  }

  private async dropCorruptSlice(
    hash: string,
    id: ObjectIdentity,
    index: number,
    why: string,
    locked = false,
  ): Promise<void> {
    const drop = async (): Promise<void> => {
      const loaded = await this.loadMeta(hash, id);
      if (loaded.state === 'ok' && loaded.meta.slices.some((s) => s.index === index)) {
        await this.dropSlices(hash, [index], loaded.meta);
      }
    };
    await (locked ? drop() : this.withLock(hash, drop)).catch((err: unknown) => {
      this.fault(`could not repair slice ${index} of ${describeIdentity(id)}`, err);
    });
    this.repair(
      'corruption_missing_range_total',
      `slice ${index} of ${describeIdentity(id)} ${why}; dropped, other slices kept`,
    );
  }

  /** Removes slices from the metadata (atomically) and then their files. Caller holds the lock. */
  private async dropSlices(hash: string, indexes: number[], meta?: CacheMeta): Promise<void> {
    if (meta) {
      const remaining = meta.slices.filter((s) => !indexes.includes(s.index));
      if (remaining.length === 0) {
        await this.removeObject(hash);
        return;
      }
      await this.writeMeta(hash, { ...meta, slices: remaining });
    }
    for (const i of indexes) {
      await this.fs.rm(this.slicePath(hash, i), { force: true });
      this.unindexSlice(hash, i);
    }
  }

  private async removeObject(hash: string): Promise<void> {
    this.memo.delete(hash);
    this.accessDirty.delete(hash);
    this.metaWrites++;
    await this.fs.rm(this.objectDir(hash), { recursive: true, force: true });
    this.metaWrites++;
    this.unindexObject(hash);
  }

  private indexSlice(hash: string, slice: SliceInfo): void {
    this.index.add(hash, slice);
  }

  private unindexSlice(hash: string, index: number): void {
    this.index.remove(hash, index);
  }

  private unindexObject(hash: string): void {
    this.index.removeObject(hash);
  }

  private async makeRoom(incoming: number): Promise<void> {
    const target = evictionTarget(this.index.sizeBytes, incoming, this.maxBytes, this.high, this.low);
    if (target !== undefined) await this.evictTo(target);
  }

  /**
   * Runs a write; on a full disk, evicts and retries once, then bypasses. Other errors are
   * reported and give up on caching this write.
   */
  private async storeWithRetry(write: () => Promise<void>, what: string, hash: string): Promise<WriteResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        await write();
        return { stored: true };
      } catch (err) {
        const e = classify(err);
        if (e.code !== 'DISK_FULL') {
          this.fault(`could not write ${what} to ${this.dir}: ${e.message}; serving from origin`, err);
          return { stored: false, reason: 'io-error', message: e.message };
        }
        this.repair(
          'disk_full_events_total',
          `could not write ${what} to ${this.dir}: disk full; ${attempt === 1 ? 'evicting and retrying once' : 'entering bypass mode'}`,
        );
        if (attempt >= 2) {
          this.enterBypass(`disk full while writing ${what}`);
          return { stored: false, reason: 'disk-full', message: e.message };
        }
        // Emergency eviction: free at least a slice's worth, down to the low watermark.
        const target = Math.min(
          this.maxBytes * this.low,
          Math.max(0, this.index.sizeBytes - 2 * this.sliceBytes),
        );
        await this.evictTo(target, hash).catch(() => 0);
      }
    }
  }

  private enterBypass(reason: string): void {
    if (this.bypassReason !== undefined || this.closed) return;
    this.bypassReason = reason;
    this.emit('bypass', { active: true, reason });
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    this.probeTimer = this.clock.setTimer(this.probeMs, () => {
      void this.probe();
    });
  }

  /** Leaves bypass once a slice-sized write succeeds again. */
  private async probe(): Promise<void> {
    if (this.closed) return;
    const file = path.join(this.dir, `probe${TMP_MARKER}check`);
    try {
      await this.fs.mkdir(this.objectsDir(), { recursive: true });
      await writeFileAtomic(
        this.fs,
        file,
        Buffer.alloc(Math.min(this.sliceBytes, 1024 * 1024)),
        this.inFlight,
      );
      await this.fs.rm(file, { force: true });
      if (this.index.slices === 0) await this.rebuildIndex();
      const reason = this.bypassReason ?? '';
      this.bypassReason = undefined;
      this.emit('bypass', { active: false, reason: `cache usable again (was: ${reason})` });
    } catch {
      await this.fs.rm(file, { force: true }).catch(() => undefined);
      this.scheduleProbe();
    }
  }

  private async rebuildIndex(): Promise<void> {
    this.index.clear();
    await this.walk(false, this.cleanupOnOpen);
  }

  private async fixReferences(
    hash: string,
    id?: ObjectIdentity,
  ): Promise<{ removed: number; remaining: number }> {
    const loaded = await this.loadMeta(hash, id);
    if (loaded.state !== 'ok') return { removed: 0, remaining: 0 };
    const meta = loaded.meta;
    const missing: number[] = [];
    for (const s of meta.slices) {
      try {
        const st = await this.fs.stat(this.slicePath(hash, s.index));
        if (st.size !== s.length) missing.push(s.index);
      } catch {
        missing.push(s.index);
      }
    }
    if (missing.length === 0) return { removed: 0, remaining: meta.slices.length };
    await this.dropSlices(hash, missing, meta);
    this.repair(
      'inconsistency_fixed_total',
      `metadata of ${describeIdentity(meta.identity)} referred to ${missing.length} missing slice(s); references removed`,
      missing.length,
    );
    return { removed: missing.length, remaining: meta.slices.length - missing.length };
  }

  private walk(
    deep: boolean,
    fix = true,
    onProgress?: (done: number, total: number) => void,
    minAgeMs = 0,
  ): Promise<VerifyReport> {
    return walkCache(this.walkContext(), { deep, fix, minAgeMs, ...(onProgress ? { onProgress } : {}) });
  }

  private walkContext(): WalkContext {
    return {
      dir: this.dir,
      fs: this.fs,
      inFlight: this.inFlight,
      objectsDir: () => this.objectsDir(),
      objectDir: (hash) => this.objectDir(hash),
      slicePath: (hash, index) => this.slicePath(hash, index),
      readdirSafe: (dir) => this.readdirSafe(dir),
      withLock: (hash, fn) => this.withLock(hash, fn),
      peekMeta: (hash, fix) => this.peekMeta(hash, fix),
      fixReferences: (hash) => this.fixReferences(hash),
      dropCorruptSlice: (hash, id, index, why) => this.dropCorruptSlice(hash, id, index, why, true),
      indexSlice: (hash, slice) => {
        this.indexSlice(hash, slice);
      },
      repair: (counter, message, count) => {
        this.repair(counter, message, count);
      },
      fault: (message, err) => {
        this.fault(message, err);
      },
    };
  }

  /** loadMeta without the repair side effects when not fixing. */
  private async peekMeta(hash: string, fix: boolean): Promise<LoadedMeta> {
    if (fix) return this.loadMeta(hash);
    try {
      const decoded = decodeMeta(await this.fs.readFile(path.join(this.objectDir(hash), META_FILE)));
      return decoded.ok ? { state: 'ok', meta: decoded.meta } : { state: 'corrupt', reason: decoded.reason };
    } catch (err) {
      const e = classify(err);
      return e.code === 'NOT_FOUND' ? { state: 'missing' } : { state: 'error', error: e };
    }
  }

  private async readdirSafe(dir: string): Promise<string[]> {
    try {
      return await this.fs.readdir(dir);
    } catch (err) {
      if (classify(err).code !== 'NOT_FOUND') this.fault(`could not list ${dir}`, err);
      return [];
    }
  }
}

function sameIdentity(meta: CacheMeta, id: ObjectIdentity): boolean {
  return (
    meta.identity.bucket === id.bucket &&
    meta.identity.key === id.key &&
    (meta.identity.versionId ?? null) === (id.versionId ?? null)
  );
}

export type { CleanupReport, VerifyReport };

import path from 'node:path';
import { keelError } from '../errors/index.js';
import { systemClock, type Clock } from '../time/index.js';
import type { CacheLocks } from './file-lock.js';
import { realFs, type CacheFs } from './fs.js';
import { defaultVerifyThreads } from './verify-pool.js';

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
   * Bypass ends only while the file system has room for this many slices free to unprivileged
   * users, besides the probe's own full-slice write succeeding (default 4): a nearly full disk
   * stays bypassed instead of leaving and re-entering at the next slice write.
   */
  bypassResumeFreeSlices?: number;
  /**
   * I/O errors (EIO, EROFS, EPERM, EACCES, ENOTDIR …: every `fault` event) this many within
   * `ioErrorWindowMs` put the cache in bypass (default 10, at most 10,000).
   */
  ioErrorBypassThreshold?: number;
  /**
   * The window the I/O errors are counted in (default 60 s). Bypass entered for any reason ends
   * only once this long has passed without an I/O error.
   */
  ioErrorWindowMs?: number;
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
  /**
   * Several processes may share the directory (`keel gateway --workers`): each counts the slices
   * it writes and reads, and one that writes re-reads every object's metadata from disk at most
   * this often, so the size limit counts the others' slices too (default 30 s).
   */
  rescanMs?: number;
  /**
   * The locks of object metadata and of the evictor (default: lock files in `<dir>/locks`, for the
   * processes of one host; see `CacheLocks`).
   */
  locks?: CacheLocks;
  clock?: Clock;
  /** File system to use (default `node:fs/promises`); inject faults with `faultyFs()` from `keel/chaos`. */
  fs?: CacheFs;
}

/** {@link RangeCacheOptions} with every default filled in and checked. */
export interface CacheSettings {
  /** Resolved to an absolute path. */
  dir: string;
  maxBytes: number;
  sliceBytes: number;
  highWatermark: number;
  lowWatermark: number;
  bypassProbeMs: number;
  bypassResumeFreeSlices: number;
  ioErrorBypassThreshold: number;
  ioErrorWindowMs: number;
  cleanupOnOpen: boolean;
  cleanupGraceMs: number;
  accessFlushMs: number;
  /** Verifying threads to start; 0 with an injected `fs`, whose reads stay on the event loop. */
  verifyThreads: number;
  metadataMemoSlices: number | undefined;
  rescanMs: number;
  locks: CacheLocks | undefined;
  clock: Clock;
  fs: CacheFs;
}

/**
 * Fills in the defaults of {@link RangeCacheOptions} and checks them.
 * @throws KeelError `INVALID_CONFIG` naming the bad option.
 */
export function resolveOptions(options: RangeCacheOptions): CacheSettings {
  const threads = options.verifyThreads ?? defaultVerifyThreads();
  const s: CacheSettings = {
    dir: path.resolve(options.dir),
    sliceBytes: options.sliceBytes ?? 8 * 1024 * 1024,
    maxBytes: options.maxBytes ?? 10 * 1024 ** 3,
    highWatermark: options.highWatermark ?? 0.95,
    lowWatermark: options.lowWatermark ?? 0.8,
    bypassProbeMs: options.bypassProbeMs ?? 30_000,
    bypassResumeFreeSlices: options.bypassResumeFreeSlices ?? 4,
    ioErrorBypassThreshold: options.ioErrorBypassThreshold ?? 10,
    ioErrorWindowMs: options.ioErrorWindowMs ?? 60_000,
    cleanupOnOpen: options.cleanupOnOpen ?? true,
    cleanupGraceMs: options.cleanupGraceMs ?? 60_000,
    accessFlushMs: options.accessFlushMs ?? 300_000,
    verifyThreads: options.fs === undefined && threads > 0 ? threads : 0,
    metadataMemoSlices: options.metadataMemoSlices,
    rescanMs: options.rescanMs ?? 30_000,
    locks: options.locks,
    clock: options.clock ?? systemClock,
    fs: options.fs ?? realFs,
  };
  const bad = (m: string): never => {
    throw keelError('INVALID_CONFIG', `range cache: ${m}`);
  };
  if (!Number.isSafeInteger(s.sliceBytes) || s.sliceBytes < 1)
    bad(`sliceBytes must be a positive integer, got ${s.sliceBytes}`);
  if (!(s.accessFlushMs > 0)) bad(`accessFlushMs must be > 0, got ${s.accessFlushMs}`);
  if (!(s.maxBytes > 0)) bad(`maxBytes must be > 0, got ${s.maxBytes}`);
  if (!(s.rescanMs > 0)) bad(`rescanMs must be > 0, got ${s.rescanMs}`);
  if (!(s.bypassProbeMs > 0)) bad(`bypassProbeMs must be > 0, got ${s.bypassProbeMs}`);
  if (!(Number.isFinite(s.bypassResumeFreeSlices) && s.bypassResumeFreeSlices >= 1))
    bad(`bypassResumeFreeSlices must be a number >= 1, got ${s.bypassResumeFreeSlices}`);
  const threshold = s.ioErrorBypassThreshold;
  if (!Number.isSafeInteger(threshold) || threshold < 1 || threshold > 10_000)
    bad(`ioErrorBypassThreshold must be an integer from 1 to 10000, got ${threshold}`);
  if (!(Number.isFinite(s.ioErrorWindowMs) && s.ioErrorWindowMs > 0))
    bad(`ioErrorWindowMs must be > 0, got ${s.ioErrorWindowMs}`);
  const { lowWatermark: low, highWatermark: high } = s;
  if (!(low > 0 && low < high && high <= 1)) {
    bad(`watermarks must satisfy 0 < lowWatermark < highWatermark <= 1, got ${low} and ${high}`);
  }
  return s;
}

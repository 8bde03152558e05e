import path from 'node:path';
import { keelError } from '../errors/index.js';
import { systemClock, type Clock } from '../time/index.js';
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

/** {@link RangeCacheOptions} with every default filled in and checked. */
export interface CacheSettings {
  /** Resolved to an absolute path. */
  dir: string;
  maxBytes: number;
  sliceBytes: number;
  highWatermark: number;
  lowWatermark: number;
  bypassProbeMs: number;
  cleanupOnOpen: boolean;
  cleanupGraceMs: number;
  accessFlushMs: number;
  /** Verifying threads to start; 0 with an injected `fs`, whose reads stay on the event loop. */
  verifyThreads: number;
  metadataMemoSlices: number | undefined;
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
    cleanupOnOpen: options.cleanupOnOpen ?? true,
    cleanupGraceMs: options.cleanupGraceMs ?? 60_000,
    accessFlushMs: options.accessFlushMs ?? 300_000,
    verifyThreads: options.fs === undefined && threads > 0 ? threads : 0,
    metadataMemoSlices: options.metadataMemoSlices,
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
  const { lowWatermark: low, highWatermark: high } = s;
  if (!(low > 0 && low < high && high <= 1)) {
    bad(`watermarks must satisfy 0 < lowWatermark < highWatermark <= 1, got ${low} and ${high}`);
  }
  return s;
}

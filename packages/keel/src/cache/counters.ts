/**
 * The six repair counters, by their stable names (exported to Prometheus as `keel_cache_<name>`).
 * 1. corrupted metadata deleted; 2. a missing or corrupt slice dropped; 3. disk-full events;
 * 4. references to missing slices removed; 5. leftover `.tmp` files removed; 6. orphaned slice
 * files removed.
 */
export const REPAIR_COUNTERS = [
  'corruption_metadata_total',
  'corruption_missing_range_total',
  'disk_full_events_total',
  'inconsistency_fixed_total',
  'partial_write_cleanup_total',
  'orphaned_files_cleaned_total',
] as const;

/** One of {@link REPAIR_COUNTERS}. */
export type RepairCounter = (typeof REPAIR_COUNTERS)[number];

/**
 * What the cache was doing when an I/O error struck (the `operation` of a `fault` event and of
 * `keel_cache_io_errors_total`): reading metadata or slices, writing them (access times
 * included), or walking the cache in cleanup and verify.
 */
export const CACHE_OPERATIONS = ['read', 'write', 'cleanup'] as const;

/** One of {@link CACHE_OPERATIONS}. */
export type CacheOperation = (typeof CACHE_OPERATIONS)[number];

/** A snapshot of the cache's counters and gauges. */
export interface CacheStats {
  /** Reads answered from the cache (at least the first slice verified). */
  hits: number;
  /** Reads that found nothing usable. */
  misses: number;
  /** Bytes streamed out of the cache. */
  bytesServed: number;
  /** Slice bytes written to the cache. */
  bytesWritten: number;
  slicesWritten: number;
  /** Slices removed to stay under the size limit. */
  evictions: number;
  /** Permission errors, EIO and other unexpected file-system errors (each a miss). */
  ioErrors: number;
  /** {@link ioErrors} by what the cache was doing. */
  ioErrorsByOperation: Record<CacheOperation, number>;
  /**
   * I/O errors within the last `ioErrorWindowMs`, counted up to `ioErrorBypassThreshold` (where
   * the cache enters bypass).
   */
  recentIoErrors: number;
  repairs: Record<RepairCounter, number>;
  /** Bytes of slices on disk, as indexed. */
  sizeBytes: number;
  maxBytes: number;
  objects: number;
  slices: number;
  /** True while writes are bypassed (disk full or cache unusable). */
  bypass: boolean;
  bypassReason: string | undefined;
}

/** The counters of {@link CacheStats}, kept by the cache and bumped by its parts. */
export type CacheCounts = Pick<
  CacheStats,
  | 'hits'
  | 'misses'
  | 'bytesServed'
  | 'bytesWritten'
  | 'slicesWritten'
  | 'evictions'
  | 'ioErrors'
  | 'ioErrorsByOperation'
  | 'repairs'
>;

/** Fresh zeroed counters. */
export function zeroCounts(): CacheCounts {
  return {
    hits: 0,
    misses: 0,
    bytesServed: 0,
    bytesWritten: 0,
    slicesWritten: 0,
    evictions: 0,
    ioErrors: 0,
    ioErrorsByOperation: { read: 0, write: 0, cleanup: 0 },
    repairs: zeroRepairs(),
  };
}

/**
 * Where the cache's parts report what they repaired and what failed (counted, then emitted as
 * events). Each part gets one for the operation it does, so its faults are counted under it.
 */
export interface CacheReporter {
  repair(counter: RepairCounter, message: string, count?: number): void;
  /** An I/O error: counted, and past `ioErrorBypassThreshold` within the window, bypass. */
  fault(message: string, err: unknown): void;
}

/** Fresh zeroed repair counters. */
function zeroRepairs(): Record<RepairCounter, number> {
  return Object.fromEntries(REPAIR_COUNTERS.map((c) => [c, 0])) as Record<RepairCounter, number>;
}

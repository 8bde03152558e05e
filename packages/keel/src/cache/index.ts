/**
 * The self-healing range cache: objects cut into aligned slices on local disk, every byte
 * checked on the way out, every fault a miss plus a repair and a counter.
 * @packageDocumentation
 */
export {
  RangeCache,
  MAX_BUFFER_READ_BYTES,
  type BufferReadResult,
  type ReadOptions,
  type CleanupReport,
  type RangeCacheEvents,
  type ReadResult,
  type VerifyReport,
} from './range-cache.js';
export { type RangeCacheOptions } from './options.js';
export { type WriteResult } from './writes.js';
export {
  REPAIR_COUNTERS,
  CACHE_OPERATIONS,
  type CacheOperation,
  type CacheStats,
  type RepairCounter,
} from './counters.js';
export { identityHash, describeIdentity, type ObjectIdentity } from './identity.js';
export {
  sliceChecksums,
  VERIFY_BLOCK_BYTES,
  V1_BLOCK_BYTES,
  decodeMeta,
  encodeMeta,
  sliceLength,
  META_VERSION,
  MAX_META_BYTES,
  type CacheMeta,
  type ObjectInfo,
  type SliceInfo,
  type DecodedMeta,
} from './metadata.js';
export { type CacheFs } from './fs.js';
export { releaseChunk } from './slice-read.js';
export { FileLocks, type CacheLocks } from './file-lock.js';
export { EVICTOR_LOCK } from './eviction.js';

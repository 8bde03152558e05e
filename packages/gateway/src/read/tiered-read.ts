import type { ServerResponse } from 'node:http';
import type { CacheMeta, ObjectIdentity, RangeCache } from 'keel/cache';
import type { MemoryTier } from './memory-tier.js';
import { generation, safe, type ReadContext } from './read-context.js';

/*
 * A cached range read into memory before its answer starts, from the memory tier when it holds
 * every byte, else from the disk cache (verified whole), whose blocks the memory tier may then
 * take in. Shared by the gateway's reads and by passthrough auth's authorised hits.
 */

/** Which tier of the cache answered a HIT or STALE: the `x-keel-cache-tier` header. */
export type CacheTier = 'memory' | 'disk';

/**
 * Cached ranges up to this size are read into memory and verified whole before the answer
 * starts; larger ones stream.
 */
export const BUFFERED_HIT_BYTES = 16 * 1024 * 1024;

/** Bytes held by buffered hits at once, at most; beyond it, reads stream instead. */
const MAX_BUFFERED_BYTES = 256 * 1024 * 1024;

/** The range to read, and who asks. */
export interface TieredRange {
  id: ObjectIdentity;
  hash: string;
  /** The cached object's metadata (the version the bytes must be of). */
  meta: CacheMeta;
  start: number;
  end: number;
  /** The memory tier, when the object may use it. */
  memory: MemoryTier | undefined;
  /** Writes through the gateway that had changed the object when the read began. */
  gen: number;
  /** The memory tier was asked for these blocks already by this request (they count once). */
  memoryAsked?: boolean;
}

/** The bytes of a range, where they came from, and what to call once they are sent or abandoned. */
export interface TieredBytes {
  chunks: Buffer[];
  tier: CacheTier;
  /** The bytes are with the OS: the cache may reuse their memory (none for bytes from memory). */
  sent?: () => void;
  /** The answer closed: the bytes no longer count as buffered (their memory is left to the GC). */
  closed?: () => void;
}

/** Bytes the memory tier answered: nothing to let go of once sent. */
export function fromMemory(chunks: Buffer[]): TieredBytes {
  return { chunks, tier: 'memory' };
}

/**
 * Reads `start..end` (at most {@link BUFFERED_HIT_BYTES}) of a cached object: from memory when it
 * holds every byte (no file-system call), else from the disk cache, every byte verified, the read
 * widened to whole blocks the memory tier would take in. When the disk cannot serve them
 * (missing, failing their check, or too many bytes buffered at once), the slice that failed, if
 * one did, is named and nothing is held.
 */
export async function readTiered(
  ctx: ReadContext,
  cache: RangeCache,
  r: TieredRange,
): Promise<TieredBytes | { failedSlice?: number }> {
  const { memory, meta, start, end } = r;
  if (memory) {
    const chunks = r.memoryAsked ? undefined : memory.read(r.hash, meta.etag, start, end);
    if (chunks) return fromMemory(chunks);
  }
  let from = start;
  let to = end;
  if (memory) {
    // Within the slices the read covers (all cached): widened to the blocks memory would take in.
    const sliceStart = Math.floor(start / meta.sliceBytes) * meta.sliceBytes;
    const sliceEnd = Math.min(meta.size, (Math.floor(end / meta.sliceBytes) + 1) * meta.sliceBytes) - 1;
    const span = memory.wanted(r.hash, meta.etag, start, end, meta.size, {
      start: sliceStart,
      end: sliceEnd,
    });
    if (span && span.end - span.start < BUFFERED_HIT_BYTES) ({ start: from, end: to } = span);
  }
  const length = to - from + 1;
  if (ctx.buffered.bytes + length > MAX_BUFFERED_BYTES) return {};
  ctx.buffered.bytes += length;
  let released = false;
  const unbuffer = (): void => {
    if (released) return;
    released = true;
    ctx.buffered.bytes -= length;
  };
  const hit = await safe(ctx, 'read', () => cache.readBuffer(r.id, from, to, { meta }));
  if (!hit?.hit || hit.meta.etag !== meta.etag) {
    if (hit?.hit) hit.release();
    unbuffer();
    return hit?.hit === false && hit.slice !== undefined ? { failedSlice: hit.slice } : {};
  }
  // Verified bytes: the memory tier takes its copy of the blocks it admits, unless a write
  // changed the object since the read began.
  if (memory && generation(ctx, r.hash) === r.gen) {
    memory.admit(r.hash, meta.etag, from, hit.bytes, meta.size);
    memory.rememberMeta(r.hash, hit.meta);
  }
  const body = from === start && to === end ? hit.bytes : hit.bytes.subarray(start - from, end - from + 1);
  return {
    chunks: [body],
    tier: 'disk',
    sent: () => {
      hit.release();
      unbuffer();
    },
    closed: unbuffer,
  };
}

/**
 * Sends bytes read by {@link readTiered} as the whole answer, then lets them go (once the OS has
 * them: the cache may reuse the memory then, not before), and counts them as served from the cache.
 */
export function sendTiered(
  ctx: ReadContext,
  res: ServerResponse,
  bytes: TieredBytes,
  status: number,
  headers: Record<string, string>,
): void {
  res.writeHead(status, headers);
  const { chunks } = bytes;
  let length = 0;
  for (const c of chunks) length += c.length;
  // Bytes from memory have nothing to let go of: no listener, no callback (a small hit's cost).
  if (bytes.closed) res.once('close', bytes.closed);
  if (chunks.length === 1) res.end(chunks[0], bytes.sent);
  else {
    res.cork();
    for (const c of chunks) res.write(c);
    res.end(bytes.sent);
  }
  ctx.onBytes('cache', length);
}

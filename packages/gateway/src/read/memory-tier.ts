import type { CacheMeta } from 'keel/cache';
import { FrequencySketch } from './frequency-sketch.js';

/*
 * The memory tier: verified blocks of hot objects, and the metadata of recently read ones, held in
 * this process's memory in front of the disk cache. A hot small range is then answered with no
 * file-system call and no checksum pass: its bytes were checked once, when they entered memory.
 */

/** Block size of the memory tier: object bytes are held in aligned blocks of this many bytes. */
export const MEMORY_BLOCK_BYTES = 64 * 1024;

/** Default bound of the metadata held: slices listed over all objects remembered (plus one each). */
export const DEFAULT_MEMORY_META_SLICES = 100_000;

/** Settings of {@link MemoryTier}. */
export interface MemoryTierOptions {
  /** Most bytes of object data held (the blocks; metadata is bounded by `maxMetaSlices`). */
  maxBytes: number;
  /** Block size (default {@link MEMORY_BLOCK_BYTES}). */
  blockBytes?: number;
  /** Metadata held, counted in slices listed plus one per object (default 100,000). */
  maxMetaSlices?: number;
}

/** What the memory tier holds and did (for `/metrics` and `/status`). */
export interface MemoryTierStats {
  bytes: number;
  maxBytes: number;
  blocks: number;
  objects: number;
  /** Reads answered whole from memory, and reads that needed a block it did not hold. */
  hits: number;
  misses: number;
  /** Blocks taken in, turned away by the frequency filter, and pushed out for others. */
  admitted: number;
  rejected: number;
  evicted: number;
}

/** The aligned span of object bytes a read should fetch from disk so its blocks can enter memory. */
export interface BlockSpan {
  start: number;
  end: number;
}

/**
 * Verified blocks (least recently used out first) and object metadata, bounded in bytes and in
 * metadata held. Blocks of one object version are keyed by the object's hash and ETag, so a new
 * version never meets an old one's bytes. Admission is TinyLFU's: once memory is full, a block
 * enters only if it was asked for more often lately than the block it would push out, so one
 * large sequential read (each block asked for once) cannot flush a hot set; and blocks asked for
 * again while held are protected (a segmented LRU, as W-TinyLFU's main region), victims coming
 * from those asked for once.
 */
export class MemoryTier {
  readonly maxBytes: number;
  readonly blockBytes: number;
  private readonly maxMetaSlices: number;
  /**
   * Blocks asked for once since they entered, least recently used first: where victims come from
   * (a scan's blocks never leave it).
   */
  private readonly probation = new Map<string, Buffer>();
  /** Blocks asked for again while held, least recently used first (at most 80 % of the bytes). */
  private readonly protected = new Map<string, Buffer>();
  private protectedBytes = 0;
  private readonly maxProtectedBytes: number;
  /** The block keys held per object hash (to forget an object at once). */
  private readonly byObject = new Map<string, Set<string>>();
  /** Metadata in order of use, least recent first. */
  private readonly metas = new Map<string, CacheMeta>();
  private readonly sketch: FrequencySketch;
  private metaSlices = 0;
  private heldBytes = 0;
  private readonly counts = { hits: 0, misses: 0, admitted: 0, rejected: 0, evicted: 0 };

  /** @throws RangeError for a size or block size that is not a positive integer. */
  constructor(options: MemoryTierOptions) {
    const blockBytes = options.blockBytes ?? MEMORY_BLOCK_BYTES;
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes <= 0)
      throw new RangeError(`the memory tier's maxBytes must be a positive integer, got ${options.maxBytes}`);
    if (!Number.isSafeInteger(blockBytes) || blockBytes <= 0)
      throw new RangeError(`the memory tier's blockBytes must be a positive integer, got ${blockBytes}`);
    this.maxBytes = options.maxBytes;
    this.blockBytes = blockBytes;
    this.maxMetaSlices = options.maxMetaSlices ?? DEFAULT_MEMORY_META_SLICES;
    this.maxProtectedBytes = Math.floor(0.8 * this.maxBytes);
    this.sketch = new FrequencySketch(Math.max(16, Math.ceil(this.maxBytes / blockBytes)));
  }

  /** The metadata remembered for `hash`, most recently used from now on. */
  meta(hash: string): CacheMeta | undefined {
    const m = this.metas.get(hash);
    if (m) {
      this.metas.delete(hash);
      this.metas.set(hash, m);
    }
    return m;
  }

  /**
   * Remembers the metadata the disk cache answered for `hash` (replacing what was remembered).
   * Another ETag than before forgets the blocks of the old version.
   */
  rememberMeta(hash: string, meta: CacheMeta): void {
    const before = this.metas.get(hash);
    if (before === meta) {
      this.meta(hash);
      return;
    }
    if (before) {
      if (before.etag !== meta.etag) this.dropBlocks(hash);
      this.metas.delete(hash);
      this.metaSlices -= before.slices.length + 1;
    }
    this.metas.set(hash, meta);
    this.metaSlices += meta.slices.length + 1;
    for (const [oldest, m] of this.metas) {
      if (this.metaSlices <= this.maxMetaSlices || oldest === hash) break;
      this.metas.delete(oldest);
      this.metaSlices -= m.slices.length + 1;
    }
  }

  /** Forgets everything held of `hash`: its metadata and every block (a write changed it). */
  forget(hash: string): void {
    const m = this.metas.get(hash);
    if (m) {
      this.metas.delete(hash);
      this.metaSlices -= m.slices.length + 1;
    }
    this.dropBlocks(hash);
  }

  /**
   * Bytes `start..end` (inclusive) of version `etag` as the chunks that hold them in order, when
   * every block they span is held; else undefined. Either way each block counts as asked for.
   */
  read(hash: string, etag: string, start: number, end: number): Buffer[] | undefined {
    const B = this.blockBytes;
    const first = Math.floor(start / B);
    const last = Math.floor(end / B);
    const prefix = blockPrefix(hash, etag);
    let found: Buffer[] | undefined = [];
    const keys: string[] = [];
    for (let b = first; b <= last; b++) {
      const key = `${prefix}${b}`;
      this.sketch.increment(key);
      if (found === undefined) continue;
      keys.push(key);
      const block = this.probation.get(key) ?? this.protected.get(key);
      if (block === undefined) {
        found = undefined;
        continue;
      }
      const from = b === first ? start - b * B : 0;
      const to = b === last ? end - b * B + 1 : block.length;
      if (to > block.length) {
        found = undefined;
        continue;
      }
      found.push(from === 0 && to === block.length ? block : block.subarray(from, to));
    }
    if (found === undefined) {
      this.counts.misses++;
      return undefined;
    }
    for (const key of keys) this.used(key);
    this.counts.hits++;
    return found;
  }

  /**
   * The span a read of `start..end` of an object of `size` bytes should fetch from disk so that
   * the blocks it touches which memory lacks and would admit can enter (whole blocks only, within
   * `limit`: the bytes the disk read may cover); undefined when none would.
   */
  wanted(
    hash: string,
    etag: string,
    start: number,
    end: number,
    size: number,
    limit: BlockSpan,
  ): BlockSpan | undefined {
    const B = this.blockBytes;
    let lo = -1;
    let hi = -1;
    for (let b = Math.floor(start / B); b <= Math.floor(end / B); b++) {
      const from = b * B;
      const to = Math.min(size, from + B) - 1;
      if (from < limit.start || to > limit.end) continue;
      const key = blockKey(hash, etag, b);
      if (this.holds(key) || !this.admissible(key, to - from + 1)) continue;
      if (lo < 0) lo = from;
      hi = to;
    }
    return lo < 0 ? undefined : { start: Math.min(lo, start), end: Math.max(hi, end) };
  }

  /**
   * Offers the blocks wholly inside `bytes` (object bytes from `offset` on, already verified; the
   * last block of an object of `size` bytes may be short): each one memory lacks and admits is
   * copied in. Returns how many entered.
   */
  admit(hash: string, etag: string, offset: number, bytes: Uint8Array, size: number): number {
    const B = this.blockBytes;
    let entered = 0;
    for (let b = Math.ceil(offset / B); b * B < offset + bytes.length; b++) {
      const from = b * B;
      const length = Math.min(B, size - from);
      if (length <= 0 || from + length > offset + bytes.length) break;
      const key = blockKey(hash, etag, b);
      if (this.holds(key)) continue;
      if (!this.admissible(key, length)) {
        this.counts.rejected++;
        continue;
      }
      while (this.heldBytes + length > this.maxBytes) this.evictOldest();
      // A copy of its own: the disk cache reuses the memory of what it read.
      const copy = Buffer.allocUnsafeSlow(length);
      copy.set(bytes.subarray(from - offset, from - offset + length));
      this.probation.set(key, copy);
      this.heldBytes += length;
      let held = this.byObject.get(hash);
      if (!held) this.byObject.set(hash, (held = new Set()));
      held.add(key);
      this.counts.admitted++;
      entered++;
    }
    return entered;
  }

  stats(): MemoryTierStats {
    return {
      bytes: this.heldBytes,
      maxBytes: this.maxBytes,
      blocks: this.probation.size + this.protected.size,
      objects: this.metas.size,
      ...this.counts,
    };
  }

  /** Room for a block of `length`, or asked for more often lately than the block it would push out. */
  private admissible(key: string, length: number): boolean {
    if (length > this.maxBytes) return false;
    if (this.heldBytes + length <= this.maxBytes) return true;
    const victim = (this.probation.size > 0 ? this.probation : this.protected).keys().next();
    return !victim.done && this.sketch.frequency(key) > this.sketch.frequency(victim.value);
  }

  private holds(key: string): boolean {
    return this.probation.has(key) || this.protected.has(key);
  }

  /**
   * A held block was asked for: most recently used of the protected blocks from now on (from
   * probation, it moves there, and the protected block used least recently goes back once
   * protected is over its share).
   */
  private used(key: string): void {
    const hot = this.protected.get(key);
    if (hot) {
      this.protected.delete(key);
      this.protected.set(key, hot);
      return;
    }
    const block = this.probation.get(key);
    if (!block) return;
    this.probation.delete(key);
    this.protected.set(key, block);
    this.protectedBytes += block.length;
    while (this.protectedBytes > this.maxProtectedBytes) {
      const oldest = this.protected.entries().next();
      if (oldest.done) break;
      const [k, b] = oldest.value;
      this.protected.delete(k);
      this.protectedBytes -= b.length;
      this.probation.set(k, b);
    }
  }

  private evictOldest(): void {
    const segment = this.probation.size > 0 ? this.probation : this.protected;
    const oldest = segment.entries().next();
    if (oldest.done) return;
    const [key, block] = oldest.value;
    segment.delete(key);
    if (segment === this.protected) this.protectedBytes -= block.length;
    this.heldBytes -= block.length;
    const hash = key.slice(0, key.indexOf('\n'));
    const held = this.byObject.get(hash);
    held?.delete(key);
    if (held?.size === 0) this.byObject.delete(hash);
    this.counts.evicted++;
  }

  private dropBlocks(hash: string): void {
    const held = this.byObject.get(hash);
    if (!held) return;
    for (const key of held) {
      const inProbation = this.probation.get(key);
      const block = inProbation ?? this.protected.get(key);
      if (!block) continue;
      this.heldBytes -= block.length;
      if (inProbation) this.probation.delete(key);
      else {
        this.protected.delete(key);
        this.protectedBytes -= block.length;
      }
    }
    this.byObject.delete(hash);
  }
}

/** What the keys of the blocks of one object version start with (its hash first: see evictOldest). */
function blockPrefix(hash: string, etag: string): string {
  return `${hash}\n${etag}\n`;
}

function blockKey(hash: string, etag: string, block: number): string {
  return `${blockPrefix(hash, etag)}${block}`;
}

import type { ObjectIdentity } from './identity.js';

import { crc32 } from './crc32.js';

/**
 * Size of the blocks inside a slice that carry their own CRC32 (64 KiB): a range is verified by
 * reading only the blocks it touches, so a 4 KiB read checks 64 KiB, not the whole slice.
 */
export const VERIFY_BLOCK_BYTES = 64 * 1024;

/** Block size of slices stored by format version 1 (1 MiB blocks, or none: the whole slice). */
export const V1_BLOCK_BYTES = 1024 * 1024;

/** Whole-slice CRC32 and per-block CRC32s of {@link VERIFY_BLOCK_BYTES}. */
export function sliceChecksums(data: Uint8Array): { crc32: number; blockBytes: number; blocks: Uint32Array } {
  const blocks = new Uint32Array(Math.ceil(data.byteLength / VERIFY_BLOCK_BYTES));
  let whole = 0;
  for (let b = 0, offset = 0; offset < data.byteLength; b++, offset += VERIFY_BLOCK_BYTES) {
    const block = data.subarray(offset, Math.min(data.byteLength, offset + VERIFY_BLOCK_BYTES));
    blocks[b] = crc32(block);
    whole = crc32(block, whole);
  }
  return { crc32: whole, blockBytes: VERIFY_BLOCK_BYTES, blocks };
}

/**
 * How a slice is verified: its block size and the CRC32 of each block. A slice stored without
 * block checksums is one block, the whole slice.
 */
export function blocksOf(slice: SliceInfo): { blockBytes: number; blocks: Uint32Array } {
  const { blocks } = slice;
  if (blocks === undefined)
    return { blockBytes: Math.max(1, slice.length), blocks: Uint32Array.of(slice.crc32) };
  // Decoded and computed checksums are already a Uint32Array; only metadata built by hand is not.
  return {
    blockBytes: slice.blockBytes ?? VERIFY_BLOCK_BYTES,
    blocks: blocks instanceof Uint32Array ? blocks : Uint32Array.from(blocks),
  };
}

/** Current metadata format version (2: 64 KiB block checksums, base64-packed). */
export const META_VERSION = 2;

/** Largest meta.json accepted; anything bigger is treated as corrupted. */
export const MAX_META_BYTES = 16 * 1024 * 1024;

/** One cached slice of an object. */
export interface SliceInfo {
  index: number;
  length: number;
  /** CRC-32 (as zlib.crc32 computes it) of the slice's bytes. */
  crc32: number;
  /**
   * CRC32 of each `blockBytes` block of the slice, so a small range is verified without reading
   * the whole slice. Absent: the slice is verified whole against `crc32`. In meta.json, the
   * big-endian uint32s packed in base64.
   */
  blocks?: ArrayLike<number>;
  /** Size of the blocks of `blocks` (default {@link VERIFY_BLOCK_BYTES}; 1 MiB for version 1). */
  blockBytes?: number;
  /** Last read or write, epoch ms. */
  lastAccess: number;
}

/** What the origin said about the object. */
export interface ObjectInfo {
  etag: string;
  size: number;
  lastModified?: string;
  contentType?: string;
  /** Other response headers to replay (user metadata, cache-control …), lower-case names. */
  headers?: Record<string, string>;
}

/** The content of meta.json. */
export interface CacheMeta extends ObjectInfo {
  version: typeof META_VERSION;
  identity: ObjectIdentity;
  sliceBytes: number;
  /** When the object's metadata was stored or last revalidated, epoch ms. */
  cachedAt: number;
  slices: SliceInfo[];
}

/** Result of decoding meta.json: a valid entry, or why it is not one. */
export type DecodedMeta = { ok: true; meta: CacheMeta } | { ok: false; reason: string };

const isInt = (v: unknown, min = 0): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= min;
const isStr = (v: unknown): v is string => typeof v === 'string';

/** Serialises metadata (always in the current format version). */
export function encodeMeta(meta: CacheMeta): Buffer {
  return Buffer.from(
    JSON.stringify({
      ...meta,
      version: META_VERSION,
      slices: meta.slices.map((s) => {
        if (s.blocks === undefined) return s;
        const packed = Buffer.allocUnsafe(4 * s.blocks.length);
        for (let b = 0; b < s.blocks.length; b++) packed.writeUInt32BE(s.blocks[b] ?? 0, 4 * b);
        return { ...s, blockBytes: s.blockBytes ?? VERIFY_BLOCK_BYTES, blocks: packed.toString('base64') };
      }),
    }),
  );
}

/** Unpacks base64 block checksums; undefined when malformed. */
function unpackBlocks(packed: unknown, count: number): Uint32Array | undefined {
  if (typeof packed !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(packed)) return undefined;
  const bytes = Buffer.from(packed, 'base64');
  if (bytes.length !== 4 * count || bytes.toString('base64') !== packed) return undefined;
  const blocks = new Uint32Array(count);
  for (let b = 0; b < count; b++) blocks[b] = bytes.readUInt32BE(4 * b);
  return blocks;
}

/**
 * Decodes and checks meta.json: any byte string gives either a valid entry or a reason, never an
 * exception. Checked: size, JSON, version, identity, ETag, size, slice size, every slice entry
 * (index in range, length matching its position, CRC32 a uint32, block checksums), no duplicates.
 * Version 1 (1 MiB blocks as a JSON list) is still read and comes back as the current version;
 * any other version is corrupted metadata.
 */
export function decodeMeta(bytes: Uint8Array): DecodedMeta {
  if (bytes.byteLength === 0) return { ok: false, reason: 'empty metadata file' };
  if (bytes.byteLength > MAX_META_BYTES)
    return { ok: false, reason: `metadata larger than ${MAX_META_BYTES} bytes` };
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return { ok: false, reason: 'metadata is not valid JSON' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return { ok: false, reason: 'metadata is not an object' };
  const m = raw as Record<string, unknown>;
  if (m.version !== META_VERSION && m.version !== 1)
    return { ok: false, reason: `unknown metadata version ${JSON.stringify(m.version)}` };
  const v1 = m.version === 1;
  const id = m.identity as Record<string, unknown> | null | undefined;
  if (typeof id !== 'object' || id === null || !isStr(id.bucket) || !isStr(id.key)) {
    return { ok: false, reason: 'metadata identity is missing or malformed' };
  }
  if (id.versionId !== undefined && id.versionId !== null && !isStr(id.versionId)) {
    return { ok: false, reason: 'metadata versionId is malformed' };
  }
  if (!isStr(m.etag) || m.etag === '') return { ok: false, reason: 'metadata etag is missing' };
  if (!isInt(m.size)) return { ok: false, reason: 'metadata size is not a non-negative integer' };
  if (!isInt(m.sliceBytes, 1)) return { ok: false, reason: 'metadata sliceBytes is not a positive integer' };
  if (!isInt(m.cachedAt)) return { ok: false, reason: 'metadata cachedAt is malformed' };
  if (m.lastModified !== undefined && !isStr(m.lastModified))
    return { ok: false, reason: 'metadata lastModified is malformed' };
  if (m.contentType !== undefined && !isStr(m.contentType))
    return { ok: false, reason: 'metadata contentType is malformed' };
  if (m.headers !== undefined) {
    if (typeof m.headers !== 'object' || m.headers === null || Array.isArray(m.headers)) {
      return { ok: false, reason: 'metadata headers are malformed' };
    }
    for (const v of Object.values(m.headers))
      if (!isStr(v)) return { ok: false, reason: 'metadata headers are malformed' };
  }
  if (!Array.isArray(m.slices)) return { ok: false, reason: 'metadata slices are not a list' };
  const count = Math.ceil(m.size / m.sliceBytes);
  const seen = new Set<number>();
  for (const s of m.slices as unknown[]) {
    if (typeof s !== 'object' || s === null) return { ok: false, reason: 'a slice entry is malformed' };
    const e = s as Record<string, unknown>;
    if (!isInt(e.index) || e.index >= count || seen.has(e.index))
      return { ok: false, reason: 'a slice index is out of range or repeated' };
    if (!isInt(e.length) || e.length !== sliceLength(m.size, m.sliceBytes, e.index)) {
      return { ok: false, reason: `slice ${e.index} has a wrong length` };
    }
    if (!isInt(e.crc32) || e.crc32 > 0xffffffff)
      return { ok: false, reason: `slice ${e.index} has a malformed crc32` };
    if (e.blocks !== undefined) {
      const blockBytes = v1 ? V1_BLOCK_BYTES : e.blockBytes;
      if (!isInt(blockBytes, 1)) return { ok: false, reason: `slice ${e.index} has a malformed blockBytes` };
      const n = Math.ceil(e.length / blockBytes);
      const blocks = v1
        ? Array.isArray(e.blocks) &&
          e.blocks.length === n &&
          e.blocks.every((b) => isInt(b) && b <= 0xffffffff)
          ? Uint32Array.from(e.blocks as number[])
          : undefined
        : unpackBlocks(e.blocks, n);
      if (!blocks) return { ok: false, reason: `slice ${e.index} has malformed block checksums` };
      e.blocks = blocks;
      e.blockBytes = blockBytes;
    } else if (e.blockBytes !== undefined) {
      return { ok: false, reason: `slice ${e.index} has blockBytes without block checksums` };
    }
    if (!isInt(e.lastAccess)) return { ok: false, reason: `slice ${e.index} has a malformed lastAccess` };
    seen.add(e.index);
  }
  m.version = META_VERSION;
  return { ok: true, meta: raw as CacheMeta };
}

/** Length of slice `index` of an object of `size` bytes cut into `sliceBytes` slices. */
export function sliceLength(size: number, sliceBytes: number, index: number): number {
  return Math.max(0, Math.min(sliceBytes, size - index * sliceBytes));
}

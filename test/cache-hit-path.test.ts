import { randomBytes } from 'node:crypto';
import { appendFile, mkdir, open, readFile, rename, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  MAX_BUFFER_READ_BYTES,
  RangeCache,
  VERIFY_BLOCK_BYTES,
  V1_BLOCK_BYTES,
  type ObjectIdentity,
} from 'keel/cache';
import { VirtualClock } from 'keel';
import { bytesOf, objectDirOf, useTempDir } from './cache-support.js';

const BLOCK = VERIFY_BLOCK_BYTES;
const SLICE = 16 * BLOCK; // 1 MiB
const SIZE = 2 * SLICE + 5000;
const id: ObjectIdentity = { bucket: 'b', key: 'hits.bin' };
const tmp = useTempDir();

const objectDir = (): string => objectDirOf(tmp().dir, id);

const flipByteAt = async (offset: number): Promise<void> => {
  const index = Math.floor(offset / SLICE);
  const file = await open(path.join(objectDir(), `slice-${index}`), 'r+');
  const b = Buffer.alloc(1);
  await file.read(b, 0, 1, offset - index * SLICE);
  b[0] = (b[0] ?? 0) ^ 0x01;
  await file.write(b, 0, 1, offset - index * SLICE);
  await file.close();
};

async function filled(
  verifyThreads: number,
  extra: Partial<Parameters<typeof RangeCache.open>[0]> = {},
): Promise<{ cache: RangeCache; data: Buffer }> {
  const cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE, verifyThreads, ...extra });
  const data = randomBytes(SIZE);
  await cache.putMeta(id, { etag: '"e1"', size: SIZE });
  for (let i = 0; i * SLICE < SIZE; i++) {
    const r = await cache.writeSlice(id, i, data.subarray(i * SLICE, (i + 1) * SLICE), '"e1"');
    expect(r.stored).toBe(true);
  }
  return { cache, data };
}

describe.each([
  ['on the event loop', 0],
  ['on a verifying thread', 1],
])('range cache hits, verified %s', (_name, verifyThreads) => {
  it('readBuffer answers exactly the bytes of ranges within and across blocks and slices', async () => {
    const { cache, data } = await filled(verifyThreads);
    for (const [a, b] of [
      [0, 4095],
      [BLOCK - 10, BLOCK + 10],
      [SLICE - 3, SLICE + 3],
      [5, SIZE - 1],
      [SIZE - 1, SIZE - 1],
    ] as const) {
      const r = await cache.readBuffer(id, a, b);
      expect(r.hit).toBe(true);
      if (r.hit) expect(r.bytes.equals(data.subarray(a, b + 1))).toBe(true);
      if (r.hit) r.release();
    }
    expect((await cache.readBuffer(id, 0, SIZE)).hit).toBe(false);
    await expect(cache.readBuffer(id, 0, MAX_BUFFER_READ_BYTES)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
    await cache.close();
  });

  it('a flipped byte in the block a 4 KiB range covers is a miss; one in another block is caught when that block is read', async () => {
    const { cache, data } = await filled(verifyThreads);
    const bad = SLICE + 5 * BLOCK + 123; // slice 1, block 5
    await flipByteAt(bad);
    // 4 KiB in block 0 of the same slice: only block 0 is read and checked.
    const fine = await cache.readBuffer(id, SLICE, SLICE + 4095);
    expect(fine.hit && fine.bytes.equals(data.subarray(SLICE, SLICE + 4096))).toBe(true);
    expect(cache.stats().repairs.corruption_missing_range_total).toBe(0);
    // 4 KiB over the flipped byte: a miss, and the slice is dropped.
    expect(await cache.readBuffer(id, bad - 100, bad + 3995)).toMatchObject({ hit: false });
    expect(cache.stats().repairs.corruption_missing_range_total).toBe(1);
    expect((await cache.getMeta(id))?.slices.map((s) => s.index).sort()).toEqual([0, 2]);
    expect((await cache.readBuffer(id, SLICE, SLICE + 4095)).hit).toBe(false);
    // The other slices are untouched.
    const other = await cache.read(id, 0, SLICE - 1);
    expect(other.hit && (await bytesOf(other.stream)).equals(data.subarray(0, SLICE))).toBe(true);
    await cache.close();
  });

  it('a slice file longer or shorter than recorded is a miss where it is read, and dropped', async () => {
    const { cache, data } = await filled(verifyThreads);
    await appendFile(path.join(objectDir(), 'slice-0'), Buffer.from([1]));
    expect((await cache.readBuffer(id, 0, 4095)).hit).toBe(true); // the end is not read
    expect((await cache.readBuffer(id, SLICE - 10, SLICE - 1)).hit).toBe(false);
    await truncate(path.join(objectDir(), 'slice-1'), SLICE - 3 * BLOCK - 5);
    const before = await cache.readBuffer(id, SLICE, SLICE + 2 * BLOCK - 1);
    expect(before.hit && before.bytes.equals(data.subarray(SLICE, SLICE + 2 * BLOCK))).toBe(true);
    expect((await cache.readBuffer(id, 2 * SLICE - 4 * BLOCK, 2 * SLICE - 4 * BLOCK + 1)).hit).toBe(false);
    expect(cache.stats().repairs.corruption_missing_range_total).toBe(2);
    expect((await cache.getMeta(id))?.slices.map((s) => s.index)).toEqual([2]);
    await cache.close();
  });

  it('a stream over a flipped block stops before it, with the offset to continue from', async () => {
    const { cache, data } = await filled(verifyThreads);
    const bad = 3 * BLOCK + 1;
    await flipByteAt(bad);
    const r = await cache.read(id, 0, SIZE - 1);
    // The first read unit holds the bad block: a miss before any byte.
    expect(r.hit).toBe(false);
    const from = await cache.read(id, SLICE, SIZE - 1);
    expect(from.hit && (await bytesOf(from.stream)).equals(data.subarray(SLICE))).toBe(true);
    await cache.close();
  });

  it('metadata kept in memory follows repairs, new ETags and files changed by another process', async () => {
    const { cache, data } = await filled(verifyThreads);
    const first = await cache.getMeta(id);
    expect(await cache.getMeta(id)).toBe(first); // unchanged file: the same entry, not re-read
    // A new ETag drops the slices, in memory too.
    await cache.putMeta(id, { etag: '"e2"', size: SIZE });
    expect((await cache.getMeta(id))?.etag).toBe('"e2"');
    expect((await cache.readBuffer(id, 0, 10)).hit).toBe(false);
    expect(await cache.writeSlice(id, 0, data.subarray(0, SLICE), '"e2"')).toEqual({ stored: true });
    // Another process replaces meta.json (atomically) with another version: noticed at once.
    const file = path.join(objectDir(), 'meta.json');
    const onDisk = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    await writeFile(`${file}.new`, JSON.stringify({ ...onDisk, etag: '"e3"', slices: [] }));
    await rename(`${file}.new`, file);
    expect((await cache.getMeta(id))?.etag).toBe('"e3"');
    expect((await cache.readBuffer(id, 0, 10)).hit).toBe(false);
    await cache.close();
  });

  it('lazy metadata comes from memory; the next read checks the file and a corrupted one is then repaired', async () => {
    const { cache, data } = await filled(verifyThreads);
    const meta = await cache.getMeta(id);
    expect(meta).toBeDefined();
    await writeFile(path.join(objectDir(), 'meta.json'), '{"version":2,"etag":');
    const lazy = await cache.getMeta(id, { lazy: true });
    if (verifyThreads > 0) {
      expect(lazy).toBe(meta);
      // Bytes verified against the checksums in memory are right whatever the file says now…
      const r = await cache.readBuffer(id, 0, 4095, lazy ? { meta: lazy } : {});
      expect(r.hit && r.bytes.equals(data.subarray(0, 4096))).toBe(true);
      expect(cache.stats().repairs.corruption_metadata_total).toBe(0);
    }
    // …and the changed file is looked at again: corrupted, so the entry is deleted.
    expect(await cache.getMeta(id, { lazy: true })).toBeUndefined();
    expect(cache.stats().repairs.corruption_metadata_total).toBe(1);
    await expect(stat(objectDir())).rejects.toMatchObject({ code: 'ENOENT' });
    await cache.close();
  });
});

describe('range cache: verified buffers are reused safely', () => {
  it('a released buffer never shows the bytes of a later read', async () => {
    const { cache, data } = await filled(1);
    const first = await cache.readBuffer(id, 0, SLICE - 1);
    if (!first.hit) throw new Error('expected a hit');
    const view = first.bytes;
    first.release();
    first.release(); // twice is harmless
    const later = await cache.readBuffer(id, SLICE, 2 * SLICE - 1);
    expect(later.hit && later.bytes.equals(data.subarray(SLICE, 2 * SLICE))).toBe(true);
    // The old view was detached when its memory went to the next read: empty, never other bytes.
    expect(view.length === 0 || view.equals(data.subarray(0, SLICE))).toBe(true);
    expect(view.length).toBe(0);
    await cache.close();
  });
});

describe('range cache: access times', () => {
  it('reads keep access times in memory; close writes them, and the eviction order survives a restart', async () => {
    const clock = new VirtualClock(1_000);
    const { cache, data } = await filled(0, { clock, maxBytes: 100 * SLICE });
    const file = path.join(objectDir(), 'meta.json');
    const before = await readFile(file);
    await clock.advance(1_000);
    const r = await cache.readBuffer(id, 0, 10); // slice 0 is now the most recently used
    expect(r.hit).toBe(true);
    expect((await readFile(file)).equals(before)).toBe(true); // a read writes nothing
    await cache.close();
    const after = JSON.parse(await readFile(file, 'utf8')) as {
      slices: { index: number; lastAccess: number }[];
    };
    expect(Object.fromEntries(after.slices.map((s) => [s.index, s.lastAccess]))).toEqual({
      0: 2_000,
      1: 1_000,
      2: 1_000,
    });
    const reopened = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE, clock, verifyThreads: 0 });
    await reopened.evictTo(SIZE - SLICE - 1); // two slices must go: the least recently used
    expect((await reopened.getMeta(id))?.slices.map((s) => s.index)).toEqual([0]);
    const kept = await reopened.readBuffer(id, 0, SLICE - 1);
    expect(kept.hit && kept.bytes.equals(data.subarray(0, SLICE))).toBe(true);
    await reopened.close();
  });

  it('writes access times after accessFlushMs without a close', async () => {
    const clock = new VirtualClock(1_000);
    const { cache } = await filled(0, { clock, accessFlushMs: 60_000 });
    await clock.advance(500);
    expect((await cache.readBuffer(id, SLICE, SLICE)).hit).toBe(true);
    const file = path.join(objectDir(), 'meta.json');
    const lastAccessOf1 = async (): Promise<number | undefined> =>
      (
        JSON.parse(await readFile(file, 'utf8')) as { slices: { index: number; lastAccess: number }[] }
      ).slices.find((s) => s.index === 1)?.lastAccess;
    expect(await lastAccessOf1()).toBe(1_000);
    await clock.advance(60_000);
    await cache.flushAccess(); // the timer's flush runs under the object's lock: wait for it
    expect(await lastAccessOf1()).toBe(1_500);
    await cache.close();
  });
});

describe('range cache: metadata format 1', () => {
  it('reads an entry stored with 1 MiB block checksums, catches a flipped byte, and writes format 2 next', async () => {
    const size = 3 * V1_BLOCK_BYTES;
    const sliceBytes = 2 * V1_BLOCK_BYTES;
    const data = randomBytes(size);
    const dir = objectDir();
    await mkdir(dir, { recursive: true });
    const slice0 = data.subarray(0, sliceBytes);
    await writeFile(path.join(dir, 'slice-0'), slice0);
    const v1 = {
      version: 1,
      identity: { bucket: id.bucket, key: id.key, versionId: null },
      etag: '"old"',
      size,
      sliceBytes,
      cachedAt: 1,
      slices: [
        {
          index: 0,
          length: sliceBytes,
          crc32: crc32(slice0),
          blocks: [crc32(slice0.subarray(0, V1_BLOCK_BYTES)), crc32(slice0.subarray(V1_BLOCK_BYTES))],
          lastAccess: 1,
        },
      ],
    };
    await writeFile(path.join(dir, 'meta.json'), JSON.stringify(v1));
    const cache = await RangeCache.open({ dir: tmp().dir, sliceBytes, verifyThreads: 0, cleanupGraceMs: 0 });
    const r = await cache.readBuffer(id, 10, 5000);
    expect(r.hit && r.bytes.equals(data.subarray(10, 5001))).toBe(true);
    expect((await cache.getMeta(id))?.slices[0]?.blockBytes).toBe(V1_BLOCK_BYTES);
    // A new slice rewrites the metadata in format 2; the old slice keeps its 1 MiB blocks.
    expect(await cache.writeSlice(id, 1, data.subarray(sliceBytes), '"old"')).toEqual({ stored: true });
    const v2 = JSON.parse(await readFile(path.join(dir, 'meta.json'), 'utf8')) as {
      version: number;
      slices: { index: number; blockBytes: number; blocks: string }[];
    };
    expect(v2.version).toBe(2);
    expect(v2.slices.map((s) => [s.index, s.blockBytes, typeof s.blocks])).toEqual([
      [0, V1_BLOCK_BYTES, 'string'],
      [1, VERIFY_BLOCK_BYTES, 'string'],
    ]);
    const whole = await cache.read(id, 0, size - 1);
    expect(whole.hit && (await bytesOf(whole.stream)).equals(data)).toBe(true);
    // A flipped byte in the old slice's second 1 MiB block is caught by that block's checksum.
    const file = await open(path.join(dir, 'slice-0'), 'r+');
    await file.write(Buffer.from([(slice0[V1_BLOCK_BYTES + 7] ?? 0) ^ 0x01]), 0, 1, V1_BLOCK_BYTES + 7);
    await file.close();
    expect((await cache.readBuffer(id, 0, 100)).hit).toBe(true);
    expect((await cache.readBuffer(id, V1_BLOCK_BYTES, V1_BLOCK_BYTES + 100)).hit).toBe(false);
    expect(cache.stats().repairs.corruption_missing_range_total).toBe(1);
    await cache.close();
  });
});

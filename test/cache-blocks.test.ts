import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RangeCache, VERIFY_BLOCK_BYTES, type ObjectIdentity } from 'keel/cache';
import { bytesOf, sliceFileOf, useTempDir } from './cache-support.js';

// Slices of several verification blocks, as in production (8 MiB slices of 1 MiB blocks).
const MiB = VERIFY_BLOCK_BYTES;
const SLICE = 5 * MiB;
const SIZE = 2 * SLICE + 3 * MiB + 123;
const id: ObjectIdentity = { bucket: 'b', key: 'blocks.bin' };
const tmp = useTempDir();
let cache: RangeCache;
let data: Buffer;
beforeEach(async () => {
  cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE, maxBytes: 1024 * MiB });
  data = randomBytes(SIZE);
  await cache.putMeta(id, { etag: '"e"', size: SIZE });
  for (let i = 0; i * SLICE < SIZE; i++) {
    const r = await cache.writeSlice(id, i, data.subarray(i * SLICE, (i + 1) * SLICE), { etag: '"e"' });
    expect(r.stored).toBe(true);
  }
});
afterEach(async () => {
  await cache.close();
});

const flipByteAt = async (offset: number): Promise<void> => {
  const index = Math.floor(offset / SLICE);
  const file = await open(sliceFileOf(tmp().dir, id, index), 'r+');
  const b = Buffer.alloc(1);
  await file.read(b, 0, 1, offset - index * SLICE);
  b[0] = (b[0] ?? 0) ^ 0xff;
  await file.write(b, 0, 1, offset - index * SLICE);
  await file.close();
};

describe('range cache: slices of many verification blocks', () => {
  it('serves exact bytes for ranges across block, read-unit and slice boundaries', async () => {
    const ranges: [number, number][] = [
      [0, SIZE - 1],
      [MiB - 1, MiB],
      [2 * MiB - 5, 4 * MiB + 5],
      [SLICE - 1, SLICE],
      [SLICE - 10, 2 * SLICE + 10],
      [2 * SLICE + 3 * MiB, SIZE - 1],
      [7, 7],
    ];
    for (const [a, b] of ranges) {
      const r = await cache.read(id, a, b);
      expect(r.hit).toBe(true);
      if (r.hit) expect((await bytesOf(r.stream)).equals(data.subarray(a, b + 1))).toBe(true);
    }
  });

  it('a flipped byte fails only the blocks that hold it: other ranges of the slice still verify, a read over it never yields it', async () => {
    const bad = SLICE + 3 * MiB + 17; // slice 1, block 3
    await flipByteAt(bad);
    // A range of slice 1 that does not touch block 3 verifies (only touched blocks are read).
    const before = await cache.read(id, SLICE, SLICE + MiB - 1);
    expect(before.hit).toBe(true);
    if (before.hit)
      expect((await bytesOf(before.stream)).equals(data.subarray(SLICE, SLICE + MiB))).toBe(true);
    // A read from slice 0 over the bad byte: a hit whose stream stops with the offset to resume at,
    // having passed on only verified bytes before it.
    const r = await cache.read(id, 0, SIZE - 1);
    expect(r.hit).toBe(true);
    if (!r.hit) return;
    const got: Buffer[] = [];
    const err = await (async () => {
      for await (const c of r.stream) got.push(c as Buffer);
    })().then(
      () => undefined,
      (e: unknown) => e as { code: string; details: { offset: number } },
    );
    expect(err?.code).toBe('CHECKSUM_MISMATCH');
    const served = Buffer.concat(got);
    expect(served.length).toBeLessThanOrEqual(bad);
    expect(served.equals(data.subarray(0, served.length))).toBe(true);
    expect(err?.details.offset).toBe(served.length);
    // The bad slice is dropped, the others kept.
    expect(cache.stats().repairs.corruption_missing_range_total).toBe(1);
    expect((await cache.read(id, SLICE, SLICE)).hit).toBe(false);
    expect((await cache.read(id, 0, SLICE - 1)).hit).toBe(true);
    expect((await cache.read(id, 2 * SLICE, SIZE - 1)).hit).toBe(true);
  });

  it('a read that starts in a corrupt block is a miss', async () => {
    await flipByteAt(2 * SLICE + 5);
    expect(await cache.read(id, 2 * SLICE, 2 * SLICE + 100)).toMatchObject({ hit: false });
    expect(cache.stats().misses).toBe(1);
  });
});

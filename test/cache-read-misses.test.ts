import { writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { MAX_BUFFER_READ_BYTES, RangeCache, type ObjectIdentity } from 'keel/cache';
import { metaFileOf, SLICE, useTempDir } from './cache-support.js';

const id: ObjectIdentity = { bucket: 'b', key: 'misses.bin' };
const SIZE = 3 * SLICE;
const tmp = useTempDir();
const metaFile = (): string => metaFileOf(tmp().dir, id);

/** A cache holding slices 0 and 2 of the object. */
async function partlyCached(): Promise<RangeCache> {
  const cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE, cleanupGraceMs: 0 });
  await cache.putMeta(id, { etag: '"e"', size: SIZE });
  for (const i of [0, 2])
    expect(await cache.writeSlice(id, i, Buffer.alloc(SLICE, i), '"e"')).toEqual({ stored: true });
  return cache;
}

/** Both reads, answering just hit or miss (a streamed hit's bytes are not wanted here). */
const reads = {
  read: async (c: RangeCache, a: number, b: number, meta?: Awaited<ReturnType<RangeCache['getMeta']>>) => {
    const r = await c.read(id, a, b, meta ? { meta } : {});
    if (r.hit) r.stream.destroy();
    return r.hit ? { hit: true } : r;
  },
  readBuffer: async (
    c: RangeCache,
    a: number,
    b: number,
    meta?: Awaited<ReturnType<RangeCache['getMeta']>>,
  ) => {
    const r = await c.readBuffer(id, a, b, meta ? { meta } : {});
    if (r.hit) r.release();
    return r.hit ? { hit: true } : r;
  },
};

describe.each(Object.entries(reads))('range cache %s: misses', (_name, read) => {
  it('answers each miss with its reason and counts it once', async () => {
    const cache = await partlyCached();
    const cases: [number, number, string][] = [
      [5, 4, 'invalid range'],
      [-1, 3, 'invalid range'],
      [0.5, 3, 'invalid range'],
      [Number.NaN, 3, 'invalid range'],
      [0, Number.POSITIVE_INFINITY, 'invalid range'],
      [0, SIZE, 'range beyond the object'],
      [SLICE - 1, SLICE, 'slice 1 not cached'],
    ];
    for (const [a, b, reason] of cases) {
      const before = cache.stats().misses;
      expect(await read(cache, a, b)).toEqual({ hit: false, reason });
      expect(cache.stats().misses).toBe(before + 1);
    }
    const meta = await cache.getMeta(id);
    expect(await read(cache, 2 * SLICE, SIZE - 1, meta)).toEqual({ hit: true });
    expect(cache.stats()).toMatchObject({ hits: 1, misses: cases.length });
    expect(await read(cache, 0, 0, { ...meta!, etag: '"other"' })).toEqual({ hit: true }); // not current: loaded
    await cache.invalidate(id);
    expect(await read(cache, 0, 0, meta)).toEqual({ hit: false, reason: 'not cached' });
    await cache.close();
    expect(await read(cache, 0, 0)).toEqual({ hit: false, reason: 'cache closed' });
    expect(cache.stats()).toMatchObject({ hits: 2, misses: cases.length + 2 });
  });

  it('corrupted metadata is a miss, repaired', async () => {
    const cache = await partlyCached();
    await writeFile(metaFile(), '{"version":2,');
    expect(await read(cache, 0, 0)).toEqual({ hit: false, reason: 'metadata unusable' });
    expect(cache.stats()).toMatchObject({ misses: 1, repairs: { corruption_metadata_total: 1 } });
    expect(await read(cache, 0, 0)).toEqual({ hit: false, reason: 'not cached' });
    await cache.close();
  });
});

describe('range cache readBuffer: the size limit', () => {
  it('throws for a longer range before looking at the metadata, after the closed and range checks', async () => {
    const cache = await partlyCached();
    await writeFile(metaFile(), '{"version":2,');
    await expect(cache.readBuffer(id, 0, MAX_BUFFER_READ_BYTES)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
    expect(cache.stats()).toMatchObject({ misses: 0, repairs: { corruption_metadata_total: 0 } });
    expect(await cache.readBuffer(id, -1, MAX_BUFFER_READ_BYTES)).toEqual({
      hit: false,
      reason: 'invalid range',
    });
    // Any range up to the limit is looked up (here: the corrupted metadata, repaired).
    expect(await cache.readBuffer(id, 0, MAX_BUFFER_READ_BYTES - 1)).toEqual({
      hit: false,
      reason: 'metadata unusable',
    });
    // read() has no limit.
    expect(await cache.read(id, 0, MAX_BUFFER_READ_BYTES)).toEqual({ hit: false, reason: 'not cached' });
    await cache.close();
    expect(await cache.readBuffer(id, 0, MAX_BUFFER_READ_BYTES)).toEqual({
      hit: false,
      reason: 'cache closed',
    });
    expect(cache.stats().misses).toBe(4);
  });
});

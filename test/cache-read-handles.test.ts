import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RangeCache, VERIFY_BLOCK_BYTES, type ObjectIdentity } from 'keel/cache';
import { bytesOf, sliceFileOf, useTempDir, watchedFs, type FsCall } from './cache-support.js';

// Slices of three 2 MiB read units each (the last one short), so a stream reads each slice thrice.
const SLICE = 5 * 1024 * 1024;
const SIZE = 2 * SLICE + 3 * VERIFY_BLOCK_BYTES;
const id: ObjectIdentity = { bucket: 'b', key: 'handles.bin' };
const tmp = useTempDir();
let cache: RangeCache;
let calls: FsCall[];
let data: Buffer;
beforeEach(async () => {
  const watched = watchedFs();
  calls = watched.calls;
  // An injected file system: reads and checks run on the event loop.
  cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE, maxBytes: 100 * SLICE, fs: watched.fs });
  data = randomBytes(SIZE);
  await cache.putMeta(id, { etag: '"e"', size: SIZE });
  for (let i = 0; i * SLICE < SIZE; i++) {
    const r = await cache.writeSlice(id, i, data.subarray(i * SLICE, (i + 1) * SLICE), '"e"');
    expect(r.stored).toBe(true);
  }
  calls.length = 0;
});
afterEach(async () => {
  await cache.close();
});

const sliceFile = (index: number): string => sliceFileOf(tmp().dir, id, index);
/** Opens and closes of each slice file (not of files being written) since the last reset. */
const handleCounts = (): Record<string, [opened: number, closed: number]> => {
  const counts: Record<string, [number, number]> = {};
  for (const c of calls) {
    const name = path.basename(c.path);
    if ((c.op !== 'open' && c.op !== 'close') || !/^slice-\d+$/.test(name)) continue;
    const n = (counts[name] ??= [0, 0]);
    n[c.op === 'open' ? 0 : 1]++;
  }
  return counts;
};

describe('range cache: streamed reads on the event loop', () => {
  it('open each slice file once for all its read units and close it', async () => {
    const r = await cache.read(id, 0, SIZE - 1);
    expect(r.hit).toBe(true);
    if (r.hit) expect((await bytesOf(r.stream)).equals(data)).toBe(true);
    await vi.waitFor(() => {
      expect(handleCounts()).toEqual({ 'slice-0': [1, 1], 'slice-1': [1, 1], 'slice-2': [1, 1] });
    });
  });

  it('close every handle when the consumer stops early', async () => {
    const r = await cache.read(id, 0, SIZE - 1);
    if (!r.hit) throw new Error('expected a hit');
    for await (const chunk of r.stream) {
      expect((chunk as Buffer).length).toBeGreaterThan(0);
      break; // destroys the stream with reads ahead still in flight
    }
    await vi.waitFor(() => {
      const counts = Object.values(handleCounts());
      expect(counts.length).toBeGreaterThan(0);
      for (const [opened, closed] of counts) expect([opened, closed]).toEqual([1, 1]);
    });
  });

  it('close every handle when a unit fails: on the first unit a miss, on a later one a stream error', async () => {
    // A flipped byte in the third read unit of slice 1 (bytes 4 MiB..5 MiB of the slice).
    const bad = 4 * 1024 * 1024 + 7;
    const flip = async (): Promise<void> => {
      const file = await open(sliceFile(1), 'r+');
      await file.write(Buffer.from([(data[SLICE + bad] ?? 0) ^ 0xff]), 0, 1, bad);
      await file.close();
    };
    await flip();
    expect(await cache.read(id, SLICE + bad, SIZE - 1)).toMatchObject({ hit: false });
    await vi.waitFor(() => {
      expect(handleCounts()).toEqual({ 'slice-1': [1, 1] });
    });
    // The slice was dropped: store it again, flipped again, and stream over it.
    expect(await cache.writeSlice(id, 1, data.subarray(SLICE, 2 * SLICE), '"e"')).toEqual({ stored: true });
    await flip();
    calls.length = 0;
    const r = await cache.read(id, 0, SIZE - 1);
    if (!r.hit) throw new Error('expected a hit');
    await expect(bytesOf(r.stream)).rejects.toMatchObject({
      code: 'CHECKSUM_MISMATCH',
      details: { offset: SLICE + 4 * 1024 * 1024 },
    });
    await vi.waitFor(() => {
      const counts = handleCounts();
      expect(counts['slice-0']).toEqual([1, 1]);
      expect(counts['slice-1']).toEqual([1, 1]);
      for (const [opened, closed] of Object.values(counts)) expect(closed).toBe(opened);
    });
  });
});

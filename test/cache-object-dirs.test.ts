import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RangeCache, type ObjectIdentity } from 'keel/cache';
import { bytesOf, objectDirOf, SLICE, useTempDir, watchedFs, type FsCall } from './cache-support.js';

const id: ObjectIdentity = { bucket: 'b', key: 'dirs.bin' };
const tmp = useTempDir();
const objectDir = (): string => objectDirOf(tmp().dir, id);
const open = (fs?: Parameters<typeof RangeCache.open>[0]['fs']): Promise<RangeCache> =>
  RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE, cleanupGraceMs: 0, ...(fs ? { fs } : {}) });
const expectBytes = async (cache: RangeCache, data: Buffer): Promise<void> => {
  const r = await cache.read(id, 0, data.length - 1);
  expect(r.hit).toBe(true);
  if (r.hit) expect((await bytesOf(r.stream)).equals(data)).toBe(true);
};

describe("range cache: an object's directory", () => {
  it('one write of a slice creates the directory once', async () => {
    const { fs, calls } = watchedFs();
    const cache = await open(fs);
    const data = randomBytes(2 * SLICE);
    await cache.putMeta(id, { etag: '"e"', size: data.length });
    calls.length = 0;
    expect(await cache.writeSlice(id, 0, data.subarray(0, SLICE), '"e"')).toEqual({ stored: true });
    expect(calls.filter((c) => c.op === 'mkdir').map((c) => c.path)).toEqual([objectDir()]);
    calls.length = 0;
    expect(await cache.writeSlice(id, 1, data.subarray(SLICE), '"e"')).toEqual({ stored: true });
    expect(calls.filter((c) => c.op === 'mkdir').map((c) => c.path)).toEqual([objectDir()]);
    await expectBytes(cache, data);
    await cache.close();
  });

  it('a slice is not stored when the object was removed while it was written: the removal is never undone', async () => {
    // As another process does between the write's look at meta.json and its files (an
    // invalidation after a PUT, an eviction): bringing the metadata back from memory would
    // resurrect what that process removed.
    let removeAfter: ((c: FsCall) => boolean) | undefined;
    const { fs } = watchedFs(async (c) => {
      if (removeAfter?.(c)) {
        removeAfter = undefined;
        await rm(objectDir(), { recursive: true, force: true });
      }
    });
    const cache = await open(fs);
    const faults: string[] = [];
    cache.on('fault', (f) => faults.push(f.message));
    const data = randomBytes(SLICE + 10);
    await cache.putMeta(id, { etag: '"e"', size: data.length });
    removeAfter = (c) => c.op === 'stat' && c.path.endsWith('meta.json');
    expect(await cache.writeSlice(id, 0, data.subarray(0, SLICE), '"e"')).toMatchObject({
      stored: false,
      reason: 'no-metadata',
    });
    expect(removeAfter).toBeUndefined(); // the directory was removed
    expect(faults).toEqual([]);
    expect(await cache.getMeta(id)).toBeUndefined();
    expect((await readdir(objectDir()).catch(() => [])).filter((n) => n !== 'meta.json')).toEqual([]);
    // Learned again, it fills as usual.
    await cache.putMeta(id, { etag: '"e"', size: data.length });
    expect(await cache.writeSlice(id, 0, data.subarray(0, SLICE), '"e"')).toEqual({ stored: true });
    expect(await cache.writeSlice(id, 1, data.subarray(SLICE), '"e"')).toEqual({ stored: true });
    await expectBytes(cache, data);
    await cache.close();
  });

  it('a directory removed between the slice file and its metadata fails the write and leaves no metadata behind', async () => {
    let armed = false;
    const { fs } = watchedFs(async (c) => {
      if (armed && c.op === 'rename' && c.path.includes('slice-0')) {
        armed = false;
        await rm(objectDir(), { recursive: true, force: true });
      }
    });
    const cache = await open(fs);
    const faults: string[] = [];
    cache.on('fault', (f) => faults.push(f.message));
    await cache.putMeta(id, { etag: '"e"', size: SLICE });
    armed = true;
    expect(await cache.writeSlice(id, 0, randomBytes(SLICE), '"e"')).toMatchObject({
      stored: false,
      reason: 'io-error',
    });
    expect(faults).toHaveLength(1);
    // Not recreated with metadata that names a slice file that is gone.
    await expect(stat(objectDir())).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await cache.getMeta(id)).toBeUndefined();
    await cache.close();
  });

  it('after eviction and invalidate removed the directory, the next metadata and slices land in a new one', async () => {
    const cache = await open();
    const data = randomBytes(2 * SLICE);
    const fill = async (): Promise<void> => {
      expect(await cache.putMeta(id, { etag: '"e"', size: data.length })).toEqual({ stored: true });
      for (const i of [0, 1])
        expect(await cache.writeSlice(id, i, data.subarray(i * SLICE, (i + 1) * SLICE), '"e"')).toEqual({
          stored: true,
        });
      await expectBytes(cache, data);
    };
    await fill();
    expect(await cache.evictTo(0)).toBe(2 * SLICE);
    await expect(stat(objectDir())).rejects.toMatchObject({ code: 'ENOENT' });
    await fill();
    await cache.invalidate(id);
    await expect(stat(objectDir())).rejects.toMatchObject({ code: 'ENOENT' });
    await fill();
    const meta = JSON.parse(await readFile(path.join(objectDir(), 'meta.json'), 'utf8')) as {
      slices: { index: number }[];
    };
    expect(meta.slices.map((s) => s.index).sort()).toEqual([0, 1]);
    await cache.close();
  });
});

import { readdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { type ObjectIdentity } from 'keel/cache';
import { faultyFs, type FsFaultCode, type FsOperation } from 'keel/chaos';
import { bytesOf, filledCache, objectDirOf, SLICE, useTempDir } from './cache-support.js';

const id: ObjectIdentity = { bucket: 'b', key: 'w' };
const tmp = useTempDir();
const objectDir = (ident: ObjectIdentity): string => objectDirOf(tmp().dir, ident);

describe('range cache: write faults other than a full disk', () => {
  const cases: [FsFaultCode, FsOperation][] = [
    ['EIO', 'write'],
    ['EIO', 'sync'],
    ['EACCES', 'open'],
    ['EROFS', 'rename'],
  ];
  for (const [code, op] of cases) {
    it(`${code} on ${op}: not stored, a fault event, no partial file, no bypass, earlier slices intact`, async () => {
      const fs = faultyFs();
      const { cache, data } = await filledCache(tmp().dir, id, 2 * SLICE + 10, { fs });
      const other: ObjectIdentity = { bucket: 'b', key: 'other' };
      await cache.putMeta(other, { etag: '"o"', size: SLICE });
      const faults: string[] = [];
      cache.on('fault', (f) => faults.push(f.error.code));
      const stop = fs.inject({ code, ops: [op], path: /slice-0/ });
      const r = await cache.writeSlice(other, 0, Buffer.alloc(SLICE, 1), { etag: '"o"' });
      stop();
      expect(r).toMatchObject({ stored: false, reason: 'io-error' });
      expect(faults.length).toBe(1);
      expect(cache.stats().ioErrors).toBe(1);
      expect(cache.bypassed).toBe(false);
      expect((await readdir(objectDir(other))).sort()).toEqual(['meta.json']);
      expect((await cache.read(other, 0, 0)).hit).toBe(false);
      const old = await cache.read(id, 0, 2 * SLICE + 9);
      expect(old.hit).toBe(true);
      if (old.hit) expect((await bytesOf(old.stream)).equals(data)).toBe(true);
      // Once the fault passes, the same write succeeds.
      expect(await cache.writeSlice(other, 0, Buffer.alloc(SLICE, 1), { etag: '"o"' })).toEqual({
        stored: true,
      });
    });
  }
});

describe('range cache: EDQUOT is a full disk too', () => {
  it('a quota error on fsync counts a disk-full event, leaves no partial file and succeeds on the one retry', async () => {
    const fs = faultyFs();
    const { cache } = await filledCache(tmp().dir, id, 2 * SLICE, { fs });
    const other: ObjectIdentity = { bucket: 'b', key: 'quota' };
    await cache.putMeta(other, { etag: '"q"', size: SLICE });
    fs.inject({ code: 'EDQUOT', ops: ['sync'], path: /slice-0\.tmp-/, times: 1 });
    expect(await cache.writeSlice(other, 0, Buffer.alloc(SLICE, 2), { etag: '"q"' })).toEqual({
      stored: true,
    });
    expect(cache.stats().repairs.disk_full_events_total).toBe(1);
    expect(cache.stats().evictions).toBeGreaterThan(0);
    expect((await readdir(objectDir(other))).sort()).toEqual(['meta.json', 'slice-0']);
    const r = await cache.read(other, 0, SLICE - 1);
    expect(r.hit).toBe(true);
    if (r.hit) expect((await bytesOf(r.stream)).equals(Buffer.alloc(SLICE, 2))).toBe(true);
  });
});

import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { RangeCache, type ObjectIdentity } from 'keel/cache';
import { bytesOf, SLICE, useTempDir } from './cache-support.js';

const tmp = useTempDir();

describe('range cache: cleanup and verify running alongside writers', () => {
  it('never remove what a writer in this process is writing: every write lands and reads back', async () => {
    // No grace period: only the in-flight bookkeeping protects the writers' files.
    const cache = await RangeCache.open({
      dir: tmp().dir,
      sliceBytes: SLICE,
      maxBytes: 64 * 1024 * 1024,
      cleanupGraceMs: 0,
    });
    const objects = Array.from({ length: 8 }, (_, o) => ({
      id: { bucket: 'b', key: `c${o}` } satisfies ObjectIdentity,
      data: randomBytes(6 * SLICE + 17),
    }));
    for (const o of objects) await cache.putMeta(o.id, { etag: '"e"', size: o.data.length });
    let stop = false;
    const sweeper = (async () => {
      let sweeps = 0;
      while (!stop) {
        const c = await cache.cleanup();
        const v = await cache.verify({ fix: true });
        expect(
          c.orphanedFiles + c.partialWrites + v.orphanedFiles + v.partialWrites + v.checksumFailures,
        ).toBe(0);
        sweeps++;
      }
      return sweeps;
    })();
    await Promise.all(
      objects.map(async (o) => {
        for (let i = 0; i * SLICE < o.data.length; i++) {
          const r = await cache.writeSlice(o.id, i, o.data.subarray(i * SLICE, (i + 1) * SLICE), {
            etag: '"e"',
          });
          expect(r).toEqual({ stored: true });
        }
      }),
    );
    stop = true;
    expect(await sweeper).toBeGreaterThan(0);
    for (const o of objects) {
      const r = await cache.read(o.id, 0, o.data.length - 1);
      expect(r.hit).toBe(true);
      if (r.hit) expect((await bytesOf(r.stream)).equals(o.data)).toBe(true);
    }
    expect(cache.stats().repairs).toMatchObject({
      orphaned_files_cleaned_total: 0,
      partial_write_cleanup_total: 0,
    });
    await cache.close();
  });
});

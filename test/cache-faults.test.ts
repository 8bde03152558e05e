import * as fsP from 'node:fs/promises';
import { readdir, readFile, rm, truncate, writeFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RangeCache, type CacheFs, type CacheOperation, type ObjectIdentity } from 'keel/cache';
import { faultyFs } from 'keel/chaos';
import { VirtualClock } from 'keel';
import { bytesOf, filledCache, objectDirOf, SLICE, useTempDir } from './cache-support.js';

const id: ObjectIdentity = { bucket: 'b', key: 'dir/object.bin' };
const tmp = useTempDir();

const objectDir = (ident: ObjectIdentity = id): string => objectDirOf(tmp().dir, ident);

/** A cache on a disk with room for metadata but not for a slice, probing every `bypassProbeMs`. */
async function fullDiskCache(
  bypassProbeMs: number,
): Promise<{ cache: RangeCache; fs: ReturnType<typeof faultyFs>; clock: VirtualClock }> {
  const clock = new VirtualClock();
  const fs = faultyFs({ diskBytes: 800 });
  const cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE, fs, clock, bypassProbeMs });
  return { cache, fs, clock };
}

describe('range cache: reads and writes', () => {
  it('serves exactly the requested bytes across slices after a write', async () => {
    const { cache, data } = await filledCache(tmp().dir, id, 5000);
    for (const [start, end] of [
      [0, 4999],
      [0, 0],
      [1023, 1024],
      [100, 3100],
      [4096, 4999],
      [4999, 4999],
    ] as const) {
      const r = await cache.read(id, start, end);
      expect(r.hit).toBe(true);
      if (r.hit) expect((await bytesOf(r.stream)).equals(data.subarray(start, end + 1))).toBe(true);
    }
    expect(cache.stats()).toMatchObject({ slices: 5, sizeBytes: 5000, objects: 1 });
  });

  it('is a miss for uncached objects, missing slices and out-of-range reads', async () => {
    const cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE });
    expect(await cache.read(id, 0, 10)).toEqual({ hit: false, reason: 'not cached' });
    await cache.putMeta(id, { etag: '"e1"', size: 3000 });
    await cache.writeSlice(id, 0, Buffer.alloc(SLICE, 1), '"e1"');
    expect((await cache.read(id, 0, 1023)).hit).toBe(true);
    expect(await cache.read(id, 0, 1024)).toMatchObject({ hit: false, reason: 'slice 1 not cached' });
    expect((await cache.read(id, 0, 3000)).hit).toBe(false);
    expect((await cache.read(id, 10, 5)).hit).toBe(false);
    expect((await cache.cachedSlices(id, 0, 2999))?.needed).toEqual([0, 1, 2]);
  });

  it('never mixes versions: a slice with another ETag is refused, a new ETag drops the old slices', async () => {
    const { cache } = await filledCache(tmp().dir, id, 3000);
    expect(await cache.writeSlice(id, 0, Buffer.alloc(SLICE), '"other"')).toMatchObject({
      stored: false,
      reason: 'etag-mismatch',
    });
    await cache.putMeta(id, { etag: '"e2"', size: 3000 });
    expect((await cache.read(id, 0, 10)).hit).toBe(false);
    expect((await readdir(objectDir())).filter((n) => n.startsWith('slice-'))).toEqual([]);
    expect(cache.stats().slices).toBe(0);
  });

  it('refuses slices of the wrong length', async () => {
    const cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE });
    await cache.putMeta(id, { etag: '"e1"', size: 1500 });
    await expect(cache.writeSlice(id, 1, Buffer.alloc(SLICE), '"e1"')).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
    expect((await cache.writeSlice(id, 1, Buffer.alloc(476), '"e1"')).stored).toBe(true);
  });

  it('keys objects by bucket, key and version id', async () => {
    const { cache } = await filledCache(tmp().dir, id, 100);
    expect((await cache.read({ ...id, versionId: 'v2' }, 0, 10)).hit).toBe(false);
    expect((await cache.read({ bucket: 'other', key: id.key }, 0, 10)).hit).toBe(false);
  });
});

describe('range cache: faults are misses plus repairs', () => {
  it.each([
    ['garbage', Buffer.from('{not json')],
    ['empty', Buffer.alloc(0)],
    ['wrong shape', Buffer.from(JSON.stringify({ version: 1, identity: 'x' }))],
    ['unknown version', Buffer.from(JSON.stringify({ version: 99 }))],
    ['oversize', Buffer.alloc(2 * 1024 * 1024, 0x20)],
  ])('corrupted metadata (%s): miss, entry and slices deleted, counter', async (_name, bytes) => {
    const { cache } = await filledCache(tmp().dir, id, 3000);
    await writeFile(path.join(objectDir(), 'meta.json'), bytes);
    expect((await cache.read(id, 0, 10)).hit).toBe(false);
    await expect(stat(objectDir())).rejects.toMatchObject({ code: 'ENOENT' });
    expect(cache.stats().repairs.corruption_metadata_total).toBe(1);
    expect(cache.stats().slices).toBe(0);
  });

  it('a missing slice: miss for it, reference removed, other slices kept', async () => {
    const { cache, data } = await filledCache(tmp().dir, id, 3000);
    await rm(path.join(objectDir(), 'slice-1'));
    expect((await cache.read(id, 1024, 2047)).hit).toBe(false);
    expect(cache.stats().repairs.corruption_missing_range_total).toBe(1);
    const meta = JSON.parse(await readFile(path.join(objectDir(), 'meta.json'), 'utf8')) as {
      slices: { index: number }[];
    };
    expect(meta.slices.map((s) => s.index).sort()).toEqual([0, 2]);
    const r = await cache.read(id, 0, 1023);
    expect(r.hit && (await bytesOf(r.stream)).equals(data.subarray(0, 1024))).toBe(true);
  });

  it('a flipped byte: miss, never the wrong byte, slice dropped', async () => {
    const { cache } = await filledCache(tmp().dir, id, 3000);
    const file = path.join(objectDir(), 'slice-0');
    const bytes = await readFile(file);
    bytes[500] = (bytes[500] ?? 0) ^ 0x01;
    await writeFile(file, bytes);
    expect((await cache.read(id, 0, 10)).hit).toBe(false);
    expect(cache.stats().repairs.corruption_missing_range_total).toBe(1);
    expect((await cache.cachedSlices(id))?.cached.has(0)).toBe(false);
  });

  it('a later slice failing mid-stream errors with the offset to resume from, never a wrong byte', async () => {
    const { cache, data } = await filledCache(tmp().dir, id, 3000);
    const r = await cache.read(id, 0, 2999);
    expect(r.hit).toBe(true);
    await truncate(path.join(objectDir(), 'slice-2'), 10);
    if (!r.hit) return;
    const got: Buffer[] = [];
    const err = await (async () => {
      for await (const c of r.stream) got.push(c as Buffer);
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'CHECKSUM_MISMATCH', details: { offset: 2048 } });
    expect(Buffer.concat(got).equals(data.subarray(0, 2048))).toBe(true);
  });

  it('verifyAndFix removes references to missing slices, some or all', async () => {
    const { cache } = await filledCache(tmp().dir, id, 3000);
    await rm(path.join(objectDir(), 'slice-0'));
    expect(await cache.verifyAndFix(id)).toEqual({ removed: 1, remaining: 2 });
    expect(cache.stats().repairs.inconsistency_fixed_total).toBe(1);
    await rm(path.join(objectDir(), 'slice-1'));
    await rm(path.join(objectDir(), 'slice-2'));
    expect(await cache.verifyAndFix(id)).toEqual({ removed: 2, remaining: 0 });
    await expect(stat(objectDir())).rejects.toMatchObject({ code: 'ENOENT' });
    expect(cache.stats().repairs.inconsistency_fixed_total).toBe(3);
  });

  it('cleanup removes .tmp files and orphans, fixes references and leaves valid entries alone', async () => {
    const { cache, data } = await filledCache(tmp().dir, id, 3000);
    const other: ObjectIdentity = { bucket: 'b', key: 'other' };
    await cache.putMeta(other, { etag: '"o"', size: 10 });
    await cache.writeSlice(other, 0, Buffer.alloc(10, 7), '"o"');
    const dir = objectDir();
    await writeFile(path.join(dir, 'slice-1.tmp-abc'), 'partial');
    await writeFile(path.join(dir, 'meta.json.tmp-def'), '{');
    await writeFile(path.join(dir, 'slice-9'), 'orphan');
    await rm(path.join(dir, 'slice-2'));
    const orphanDir = path.join(tmp().dir, 'objects', 'ab', 'ab'.repeat(32));
    await import('node:fs/promises').then((f) => f.mkdir(orphanDir, { recursive: true }));
    await writeFile(path.join(orphanDir, 'slice-0'), 'no meta');
    // Two at once share one walk: the files are counted once.
    const [report, shared] = await Promise.all([cache.cleanup(), cache.cleanup()]);
    expect(shared).toBe(report);
    expect(report).toMatchObject({
      partialWrites: 2,
      orphanedFiles: 2,
      inconsistenciesFixed: 1,
      corruptMetadata: 0,
    });
    expect(cache.stats().repairs).toMatchObject({
      partial_write_cleanup_total: 2,
      orphaned_files_cleaned_total: 2,
      inconsistency_fixed_total: 1,
    });
    expect((await readdir(dir)).sort()).toEqual(['meta.json', 'slice-0', 'slice-1']);
    await expect(stat(orphanDir)).rejects.toMatchObject({ code: 'ENOENT' });
    const r = await cache.read(id, 0, 2047);
    expect(r.hit && (await bytesOf(r.stream)).equals(data.subarray(0, 2048))).toBe(true);
    const o = await cache.read(other, 0, 9);
    expect(o.hit && (await bytesOf(o.stream)).equals(Buffer.alloc(10, 7))).toBe(true);
    expect(await cache.cleanup()).toMatchObject({
      partialWrites: 0,
      orphanedFiles: 0,
      inconsistenciesFixed: 0,
    });
  });

  it('cleanup leaves young .tmp and unreferenced files alone: another process may be writing them', async () => {
    const { cache } = await filledCache(tmp().dir, id, 3000, { cleanupGraceMs: 60_000 });
    await writeFile(path.join(objectDir(), 'slice-1.tmp-fresh'), 'writing');
    await writeFile(path.join(objectDir(), 'slice-7'), 'renamed, metadata not yet');
    expect(await cache.cleanup()).toMatchObject({ partialWrites: 0, orphanedFiles: 0 });
    expect(await readdir(objectDir())).toContain('slice-1.tmp-fresh');
  });

  it('removes leftover .tmp files at start-up and rebuilds the index from disk', async () => {
    const { cache } = await filledCache(tmp().dir, id, 3000);
    await cache.close();
    await writeFile(path.join(objectDir(), 'slice-0.tmp-zzz'), 'x');
    const reopened = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE });
    expect(reopened.stats()).toMatchObject({
      slices: 3,
      sizeBytes: 3000,
      repairs: { partial_write_cleanup_total: 1 },
    });
    expect(await readdir(objectDir())).not.toContain('slice-0.tmp-zzz');
  });

  it('permission errors and EIO are misses with a counter, never crashes', async () => {
    const fs = faultyFs();
    const { cache } = await filledCache(tmp().dir, id, 3000, { fs });
    const faults: string[] = [];
    cache.on('fault', (f) => faults.push(f.error.code));
    const stop = fs.inject({ code: 'EIO', ops: ['read'], path: /slice-0$/ });
    expect((await cache.read(id, 0, 10)).hit).toBe(false);
    stop();
    // Metadata is read through stat (kept in memory while the file is unchanged) and readFile.
    fs.inject({ code: 'EACCES', ops: ['stat', 'readFile'], path: /meta\.json$/ });
    expect((await cache.read(id, 0, 10)).hit).toBe(false);
    expect(faults).toEqual(['IO_ERROR', 'PERMISSION_DENIED']);
    expect(cache.stats().ioErrors).toBe(2);
    fs.clear();
    expect((await cache.read(id, 0, 10)).hit).toBe(true); // nothing was deleted over a transient fault
  });
});

/** An errno error such as Node raises, for codes faultyFs does not offer. */
function errnoError(code: string, syscall: string, file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${syscall} '${file}'`), { code, syscall, path: file });
}

/** The real file system, except that `open` of a path `fails` picks fails with `code`. */
function openFails(code: string, fails: (file: string) => boolean): CacheFs {
  return {
    ...fsP,
    open: ((file: string, flags: string) =>
      fails(file)
        ? Promise.reject(errnoError(code, 'open', file))
        : fsP.open(file, flags)) as typeof fsP.open,
  };
}

describe('range cache: I/O errors', () => {
  it.each([
    ['EIO', 'a slice read', 'read'],
    ['EPERM', 'a slice read', 'read'],
    ['EROFS', 'a slice write', 'write'],
    ['ENOTDIR', 'a slice write', 'write'],
  ] as const)(
    '%s on %s is a miss or a refused write, counted as an I/O error of the %s operation',
    async (code, _what, operation: CacheOperation) => {
      const other: ObjectIdentity = { bucket: 'b', key: 'other' };
      // Reads of slice 0 of `id` fail, or writes of slice 0 of `other` do.
      const fails =
        operation === 'read'
          ? (file: string): boolean => file === path.join(objectDir(), 'slice-0')
          : (file: string): boolean => file.startsWith(path.join(objectDir(other), 'slice-0.tmp-'));
      const { cache } = await filledCache(tmp().dir, id, 3000, { fs: openFails(code, fails) });
      const faults: CacheOperation[] = [];
      cache.on('fault', (f) => faults.push(f.operation));
      if (operation === 'read') expect((await cache.read(id, 0, 10)).hit).toBe(false);
      else {
        await cache.putMeta(other, { etag: '"o"', size: 10 });
        expect(await cache.writeSlice(other, 0, Buffer.alloc(10), '"o"')).toMatchObject({
          stored: false,
          reason: 'io-error',
        });
      }
      expect(faults).toEqual([operation]);
      const stats = cache.stats();
      expect(stats.ioErrors).toBe(1);
      expect(stats.ioErrorsByOperation).toEqual({ read: 0, write: 0, cleanup: 0, [operation]: 1 });
      expect(stats.recentIoErrors).toBe(1);
      expect(cache.bypassed).toBe(false);
      await cache.close();
    },
  );

  it('enters bypass at ioErrorBypassThreshold errors within the window, and leaves only after a window without one', async () => {
    const clock = new VirtualClock(1_000);
    const fs = faultyFs();
    const { cache } = await filledCache(tmp().dir, id, 3000, {
      fs,
      clock,
      ioErrorBypassThreshold: 3,
      ioErrorWindowMs: 10_000,
      bypassProbeMs: 60_000,
    });
    const changes: { active: boolean; reason: string }[] = [];
    cache.on('bypass', (b) => changes.push(b));
    const stop = fs.inject({ code: 'EIO', ops: ['read'], path: /slice-0$/ });
    const failRead = async (): Promise<void> => {
      expect((await cache.read(id, 0, 10)).hit).toBe(false);
    };
    await failRead();
    await failRead();
    expect(cache.stats().recentIoErrors).toBe(2);
    // Errors older than the window no longer count: two more make two, not four.
    await clock.advance(10_000);
    expect(cache.stats().recentIoErrors).toBe(0);
    await failRead();
    await failRead();
    expect(cache.bypassed).toBe(false);
    await failRead();
    expect(cache.bypassed).toBe(true);
    expect(changes).toHaveLength(1);
    expect(changes[0]?.reason).toMatch(
      /^3 I\/O errors in the cache directory in the last 10 s, the last: could not read slice 0/,
    );
    expect(cache.stats()).toMatchObject({ ioErrors: 5, recentIoErrors: 3, bypass: true });
    expect(await cache.writeSlice(id, 0, Buffer.alloc(SLICE), '"e1"')).toMatchObject({ reason: 'bypass' });

    // The disk goes on failing: bypass holds, however often it is probed.
    await clock.advance(5_000);
    await failRead();
    await expect(cache.probeBypass()).rejects.toMatchObject({ code: 'IO_ERROR' });
    stop();
    await clock.advance(9_999);
    await expect(cache.probeBypass()).rejects.toThrow(
      /the last 10 s ago; caching resumes once 10 s pass without one/,
    );
    expect(cache.bypassed).toBe(true);
    await clock.advance(1);
    await cache.probeBypass();
    expect(cache.bypassed).toBe(false);
    expect(changes.map((c) => c.active)).toEqual([true, false]);
    expect((await cache.read(id, 0, 10)).hit).toBe(true);
    await cache.close();
  });

  it('rejects I/O error settings out of range, naming the option', async () => {
    for (const [option, value] of [
      ['ioErrorBypassThreshold', 0],
      ['ioErrorBypassThreshold', 1.5],
      ['ioErrorBypassThreshold', 10_001],
      ['ioErrorWindowMs', 0],
      ['bypassResumeFreeSlices', 0],
      ['bypassProbeMs', -1],
    ] as const)
      await expect(
        RangeCache.open({ dir: tmp().dir, [option]: value }),
        `${option} ${value}`,
      ).rejects.toMatchObject({
        code: 'INVALID_CONFIG',
        message: expect.stringContaining(option) as unknown,
      });
  });
});

describe('range cache: full disk and eviction', () => {
  it('evicts least recently used slices between the watermarks', async () => {
    const clock = new VirtualClock(1_000);
    const cache = await RangeCache.open({
      dir: tmp().dir,
      sliceBytes: SLICE,
      maxBytes: 10 * SLICE,
      highWatermark: 0.9,
      lowWatermark: 0.5,
      clock,
    });
    const ids = Array.from({ length: 10 }, (_, i): ObjectIdentity => ({ bucket: 'b', key: `k${i}` }));
    for (const [i, o] of ids.entries()) {
      await clock.advance(10);
      await cache.putMeta(o, { etag: '"e"', size: SLICE });
      await cache.writeSlice(o, 0, Buffer.alloc(SLICE, i), '"e"');
      if (i === 0) continue;
      await clock.advance(1);
      const r = await cache.read(ids[0]!, 0, 0); // keep k0 recently used
      if (r.hit) r.stream.resume();
    }
    const stats = cache.stats();
    expect(stats.evictions).toBeGreaterThan(0);
    expect(stats.sizeBytes).toBeLessThanOrEqual(9 * SLICE);
    expect((await cache.read(ids[0]!, 0, 0)).hit).toBe(true);
    expect((await cache.read(ids[1]!, 0, 0)).hit).toBe(false);
    expect((await cache.read(ids[9]!, 0, 0)).hit).toBe(true);
  });

  it('disk full with room to evict: no partial file, emergency eviction, one retry succeeds', async () => {
    const fs = faultyFs();
    const { cache } = await filledCache(tmp().dir, id, 4096, { fs });
    const other: ObjectIdentity = { bucket: 'b', key: 'new' };
    await cache.putMeta(other, { etag: '"n"', size: SLICE });
    fs.inject({ code: 'ENOSPC', ops: ['write'], times: 1 });
    const r = await cache.writeSlice(other, 0, Buffer.alloc(SLICE, 9), '"n"');
    expect(r).toEqual({ stored: true });
    expect(cache.stats().repairs.disk_full_events_total).toBe(1);
    expect(cache.stats().evictions).toBeGreaterThan(0);
    expect(cache.bypassed).toBe(false);
    const names = await readdir(objectDir(other));
    expect(names.some((n) => n.includes('.tmp-'))).toBe(false);
  });

  it('disk full with nothing to evict: bypass until space returns, then caching again', async () => {
    const { cache, fs, clock } = await fullDiskCache(5_000);
    const changes: boolean[] = [];
    cache.on('bypass', (b) => changes.push(b.active));
    await cache.putMeta(id, { etag: '"e1"', size: 3000 });
    const r = await cache.writeSlice(id, 0, Buffer.alloc(SLICE), '"e1"');
    expect(r).toMatchObject({ stored: false, reason: 'disk-full' });
    expect(cache.bypassed).toBe(true);
    expect(cache.stats().repairs.disk_full_events_total).toBe(2);
    expect(await cache.writeSlice(id, 0, Buffer.alloc(SLICE), '"e1"')).toMatchObject({ reason: 'bypass' });
    expect((await readdir(objectDir())).filter((n) => n !== 'meta.json')).toEqual([]);
    await clock.advance(5_000);
    // The timer's probe does real disk I/O: a probe asked for now joins it and answers its outcome.
    await expect(cache.probeBypass()).rejects.toMatchObject({ code: 'DISK_FULL' });
    expect(cache.bypassed).toBe(true);
    fs.setFreeBytes(undefined);
    const recovered = new Promise((resolve) => cache.once('bypass', resolve));
    await clock.advance(5_000);
    await recovered; // the probe does real disk I/O after the timer fires
    expect(cache.bypassed).toBe(false);
    expect(changes).toEqual([true, false]);
    expect((await cache.writeSlice(id, 0, Buffer.alloc(SLICE), '"e1"')).stored).toBe(true);
    await cache.close();
  });

  it('probeBypass checks the disk at once: rejects while it refuses writes, leaves bypass when it takes them', async () => {
    const { cache, fs } = await fullDiskCache(60_000);
    await cache.probeBypass(); // not bypassed: nothing to do
    await cache.putMeta(id, { etag: '"e1"', size: 3000 });
    await cache.writeSlice(id, 0, Buffer.alloc(SLICE), '"e1"');
    expect(cache.bypassed).toBe(true);
    await expect(cache.probeBypass()).rejects.toMatchObject({ code: 'DISK_FULL' });
    expect(cache.bypassed).toBe(true);
    fs.setFreeBytes(undefined);
    // Two at once share one probe; no clock advance: the timer (60 s) is not what ends bypass.
    const renames = fs.counts.calls.rename ?? 0;
    await Promise.all([cache.probeBypass(), cache.probeBypass()]);
    expect(cache.bypassed).toBe(false);
    expect((fs.counts.calls.rename ?? 0) - renames).toBe(1); // one probe write, not two
    expect((await cache.writeSlice(id, 0, Buffer.alloc(SLICE), '"e1"')).stored).toBe(true);
    await cache.close();
  });

  it('a nearly full disk stays bypassed until it has room for bypassResumeFreeSlices slices: no flapping', async () => {
    const { cache, fs, clock } = await fullDiskCache(1_000);
    const changes: boolean[] = [];
    cache.on('bypass', (b) => changes.push(b.active));
    const objects = Array.from({ length: 10 }, (_, i): ObjectIdentity => ({ bucket: 'b', key: `fill-${i}` }));
    await cache.putMeta(objects[0] as ObjectIdentity, { etag: '"e"', size: 2 * SLICE });
    await cache.writeSlice(objects[0] as ObjectIdentity, 0, Buffer.alloc(SLICE), '"e"');
    expect(cache.bypassed).toBe(true);
    for (const o of objects) {
      // A disk that hovers at room for two slices: one probe write fits, a fill of two does not.
      fs.setFreeBytes(2 * SLICE);
      // A probe period passes, and the probe it started is awaited (probeBypass joins a probe in
      // flight; it is also what the gateway's recovery calls on every failed check); then fills.
      await clock.advance(1_000);
      await cache.probeBypass().catch(() => undefined);
      await cache.putMeta(o, { etag: '"e"', size: 2 * SLICE });
      for (const i of [0, 1]) await cache.writeSlice(o, i, Buffer.alloc(SLICE), '"e"');
    }
    // Before, a probe left bypass as soon as one slice fit, and the next fill that did not fit
    // entered it again.
    expect(changes).toEqual([true]);
    await expect(cache.probeBypass()).rejects.toMatchObject({
      code: 'DISK_FULL',
      message: expect.stringMatching(/caching resumes with room for 4 slices/) as unknown,
    });
    fs.setFreeBytes(4 * SLICE);
    await cache.probeBypass();
    expect(changes).toEqual([true, false]);
    expect(await cache.putMeta(objects[1] as ObjectIdentity, { etag: '"e"', size: 2 * SLICE })).toEqual({
      stored: true,
    });
    await cache.close();
  });

  it('the bypass probe writes a full slice, not a part of one', async () => {
    const big = 3 * 1024 * 1024; // more than the 1 MiB the probe used to stop at
    const base = faultyFs();
    const probeSizes: number[] = [];
    const fs: CacheFs = {
      ...base,
      rename: async (from, to) => {
        if (String(to).includes('probe')) probeSizes.push((await stat(from)).size);
        await base.rename(from, to);
      },
    };
    const cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: big, fs });
    await cache.putMeta(id, { etag: '"e1"', size: big });
    const stop = base.inject({ code: 'ENOSPC', ops: ['write'] });
    expect(await cache.writeSlice(id, 0, Buffer.alloc(big), '"e1"')).toMatchObject({ reason: 'disk-full' });
    stop();
    await cache.probeBypass();
    expect(cache.bypassed).toBe(false);
    expect(probeSizes).toEqual([big]);
    await cache.close();
  });

  it('a real ENOSPC (/dev/full) on a slice write is a full disk: no partial file, bypass', async () => {
    const fsP = await import('node:fs/promises');
    const isFullDevice = await fsP.stat('/dev/full').then(
      (s) => s.isCharacterDevice(),
      () => false,
    );
    if (!isFullDevice) {
      console.warn('SKIPPED: /dev/full is not a character device on this machine');
      return;
    }
    // Every temporary file the cache opens is really /dev/full, so the kernel answers ENOSPC.
    const fs = {
      ...fsP,
      open: ((p: string, flags: string) =>
        fsP.open(p.includes('.tmp-') && p.includes('slice-') ? '/dev/full' : p, flags)) as typeof fsP.open,
    };
    const cache = await RangeCache.open({ dir: tmp().dir, sliceBytes: SLICE, fs });
    await cache.putMeta(id, { etag: '"e1"', size: 3000 });
    const r = await cache.writeSlice(id, 0, Buffer.alloc(SLICE), '"e1"');
    expect(r).toMatchObject({ stored: false, reason: 'disk-full' });
    expect(cache.stats().repairs.disk_full_events_total).toBe(2);
    expect(cache.bypassed).toBe(true);
    expect(await readdir(objectDir())).toEqual(['meta.json']);
    await cache.close();
  });
});

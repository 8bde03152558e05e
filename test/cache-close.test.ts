import * as nodeFs from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { RangeCache, type CacheFs } from 'keel/cache';
import { SLICE, useTempDir, watchedFs } from './cache-support.js';

/**
 * The real file system ({@link watchedFs}), with one gate: once `hold(name)` was called, the next
 * call of that function waits, once done, until `open()` (the cache has not seen its result, so
 * the work that made it is still under way). Every call is counted, so a test can see whether
 * the cache still touched the disk after `close()` resolved.
 */
function gatedFs(): {
  fs: CacheFs;
  calls: () => number;
  hold: (name: keyof CacheFs) => Promise<void>;
  open: () => void;
} {
  let held: keyof CacheFs | undefined;
  let reached: (() => void) | undefined;
  let gate: Promise<void> = Promise.resolve();
  let release: () => void = () => undefined;
  const watched = watchedFs(async (call) => {
    if (held !== call.op) return;
    held = undefined;
    reached?.();
    await gate;
  });
  return {
    fs: watched.fs,
    calls: () => watched.calls.length,
    hold: (name) => {
      gate = new Promise((r) => (release = r));
      held = name;
      return new Promise((r) => (reached = r));
    },
    open: () => release(),
  };
}

const id = (key: string) => ({ bucket: 'b', key });
const ETAG = '"e"';

/** True when `p` has not settled within a few turns of the event loop and 30 ms. */
async function stillPending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void p.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((r) => setTimeout(r, 30));
  return !settled;
}

describe('RangeCache.close', () => {
  const temp = useTempDir();

  it('waits for a slice write under way, refuses new writes at once, and touches the disk no more once it resolves', async () => {
    const g = gatedFs();
    const cache = await RangeCache.open({ dir: temp().dir, sliceBytes: SLICE, fs: g.fs });
    await cache.putMeta(id('k'), { etag: ETAG, size: 2 * SLICE });
    const reached = g.hold('rename'); // the slice's temporary file is renamed into place
    const write = cache.writeSlice(id('k'), 0, Buffer.alloc(SLICE, 1), ETAG);
    await reached;
    const closing = cache.close();
    expect(await stillPending(closing)).toBe(true); // the write is under way: close waits
    // A write asked for while closing is refused, never half-done.
    await expect(cache.writeSlice(id('k'), 1, Buffer.alloc(SLICE, 2), ETAG)).resolves.toMatchObject({
      stored: false,
      reason: 'bypass',
    });
    g.open();
    await closing;
    await expect(write).resolves.toEqual({ stored: true });
    const after = g.calls();
    await new Promise((r) => setTimeout(r, 50));
    expect(g.calls()).toBe(after);
    // The write that was under way is complete on disk: another cache reads it back.
    const again = await RangeCache.open({ dir: temp().dir, sliceBytes: SLICE });
    try {
      const got = await again.readBuffer(id('k'), 0, SLICE - 1);
      expect(got.hit && got.bytes.equals(Buffer.alloc(SLICE, 1))).toBe(true);
      if (got.hit) got.release();
    } finally {
      await again.close();
    }
  });

  it('waits for a background rescan and the eviction it starts, so the directory can be removed at once', async () => {
    const g = gatedFs();
    const dir = temp().dir;
    // rescanMs 1: a write that makes room a millisecond after the last rescan rereads the
    // directory in the background (and evicts if that finds it over its limit).
    const cache = await RangeCache.open({
      dir,
      sliceBytes: SLICE,
      maxBytes: 4 * SLICE,
      rescanMs: 1,
      fs: g.fs,
    });
    const reached = g.hold('readdir'); // the first rescan's walk of the directory
    await cache.putMeta(id('a'), { etag: ETAG, size: 8 * SLICE });
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 2));
      await cache.writeSlice(id('a'), i, Buffer.alloc(SLICE, i), ETAG);
    }
    await reached;
    const closing = cache.close();
    expect(await stillPending(closing)).toBe(true);
    g.open();
    await closing;
    const after = g.calls();
    await new Promise((r) => setTimeout(r, 50));
    expect(g.calls()).toBe(after);
    await expect(nodeFs.rm(dir, { recursive: true })).resolves.toBeUndefined();
    await nodeFs.mkdir(dir); // for the hook that removes it
  });
});

import { createHash, randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RangeCache, releaseChunk, type ObjectIdentity } from 'keel/cache';
import { useTempDir } from './cache-support.js';

/*
 * Streamed hits hand their chunks' memory back: a chunk released once its bytes are no longer
 * needed is reused by the next read (no new allocation, nothing for the garbage collector), and
 * what was released is never seen again as other bytes.
 */

const SLICE = 8 * 1024 * 1024;
const SIZE = 3 * SLICE;
const id: ObjectIdentity = { bucket: 'b', key: 'release.bin' };
const tmp = useTempDir();
let cache: RangeCache;
let data: Buffer;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

beforeEach(async () => {
  // Verifying threads (no injected file system): their read buffers are the ones pooled.
  cache = await RangeCache.open({
    dir: tmp().dir,
    sliceBytes: SLICE,
    maxBytes: 100 * SLICE,
    verifyThreads: 2,
  });
  data = randomBytes(SIZE);
  await cache.putMeta(id, { etag: '"e"', size: SIZE });
  for (let i = 0; i < 3; i++) {
    const r = await cache.writeSlice(id, i, data.subarray(i * SLICE, (i + 1) * SLICE), '"e"');
    expect(r.stored).toBe(true);
  }
});
afterEach(async () => {
  await cache.close();
});

/** Every chunk of a streamed read of the whole object, checked against the data as it comes. */
async function streamed(release: boolean): Promise<Buffer[]> {
  return (await streamedAt(release)).map(([c]) => c);
}

/** The chunks of a streamed read with the offset of each. */
async function streamedAt(release: boolean): Promise<[Buffer, number][]> {
  const r = await cache.read(id, 0, SIZE - 1);
  if (!r.hit) throw new Error('expected a hit');
  const chunks: [Buffer, number][] = [];
  let at = 0;
  for await (const c of r.stream as AsyncIterable<Buffer>) {
    expect(sha(c)).toBe(sha(data.subarray(at, at + c.length)));
    chunks.push([c, at]);
    at += c.length;
    if (release) releaseChunk(c);
  }
  expect(at).toBe(SIZE);
  return chunks;
}

describe('range cache: chunks of streamed reads', () => {
  it('released chunks are reused by the next reads: their old views read as empty, never as other bytes', async () => {
    const released = await streamedAt(true);
    expect(released.length).toBeGreaterThan(3);
    // The next read takes the released memory (moved to a verifying thread and back).
    const again = await streamed(false);
    expect(Buffer.concat(again).equals(data)).toBe(true);
    expect(released.filter(([c]) => c.length === 0).length).toBeGreaterThan(0);
    for (const [c, at] of released)
      if (c.length > 0) expect(sha(c)).toBe(sha(data.subarray(at, at + c.length)));
  });

  it('chunks not released keep their bytes whatever reads follow', async () => {
    const kept = await streamed(false);
    await streamed(true);
    await streamed(true);
    expect(Buffer.concat(kept).equals(data)).toBe(true);
    // Releasing twice, or something the cache never gave out, changes nothing.
    const first = kept[0] as Buffer;
    releaseChunk(first);
    releaseChunk(first);
    releaseChunk(Buffer.from('not from the cache'));
    await streamed(false);
    expect(first.length === 0 || sha(first) === sha(data.subarray(0, first.length))).toBe(true);
  });
});

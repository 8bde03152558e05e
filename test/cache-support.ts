import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import type { Readable } from 'node:stream';
import { RangeCache, type ObjectIdentity, type RangeCacheOptions } from '../src/cache/index.js';

export const SLICE = 1024;

export async function tempDir(): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-cache-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Opens a cache with 1 KiB slices and stores `size` random bytes of `id`, all slices. */
export async function filledCache(
  dir: string,
  id: ObjectIdentity,
  size: number,
  options: Partial<RangeCacheOptions> = {},
): Promise<{ cache: RangeCache; data: Buffer }> {
  const cache = await RangeCache.open({
    dir,
    sliceBytes: SLICE,
    maxBytes: 10 * 1024 * 1024,
    cleanupGraceMs: 0,
    ...options,
  });
  const data = randomBytes(size);
  await cache.putMeta(id, { etag: '"e1"', size, contentType: 'application/octet-stream' });
  for (let i = 0; i * SLICE < size; i++) {
    const r = await cache.writeSlice(id, i, data.subarray(i * SLICE, (i + 1) * SLICE), '"e1"');
    if (!r.stored) throw new Error(`fill failed: ${r.message}`);
  }
  return { cache, data };
}

export async function bytesOf(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

export { text };

/** `keel/cache` as installed: a slice written, read back verified, and the cache closed. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RangeCache } from 'keel/cache';

const dir = await mkdtemp(path.join(tmpdir(), 'keel-installed-cache-'));
try {
  const sliceBytes = 64 * 1024;
  const cache = await RangeCache.open({ dir, maxBytes: 16 * sliceBytes, sliceBytes });
  const id = { bucket: 'data', key: 'a.bin' };
  const bytes = new Uint8Array(sliceBytes).map((_, i) => i % 251);
  await cache.putMeta(id, { etag: '"v1"', size: bytes.length });
  assert.deepEqual(await cache.writeSlice(id, 0, bytes, '"v1"'), { stored: true });
  const r = await cache.readBuffer(id, 100, 199);
  assert.ok(r.hit, 'the range is cached');
  assert.deepEqual([...r.bytes], [...bytes.subarray(100, 200)]);
  r.release();
  await cache.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
console.log('keel/cache: ok');

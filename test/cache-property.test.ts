import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  encodeMeta,
  META_VERSION,
  RangeCache,
  sliceLength,
  type CacheMeta,
  type ObjectIdentity,
} from 'keel/cache';
import { bytesOf, objectDirOf, tempDir, type TempDir } from './cache-support.js';

const id: ObjectIdentity = { bucket: 'b', key: 'prop' };
const SIZE = 3000;
const SLICE = 1024;
const content = Buffer.alloc(SIZE, 7);
let tmp: TempDir;
beforeAll(async () => {
  tmp = await tempDir();
});
afterAll(async () => {
  await tmp.remove();
});

const validMeta = (): CacheMeta => ({
  version: META_VERSION,
  identity: { bucket: id.bucket, key: id.key, versionId: null },
  etag: '"e"',
  size: SIZE,
  sliceBytes: SLICE,
  cachedAt: 1,
  slices: [0, 1, 2].map((index) => ({
    index,
    length: sliceLength(SIZE, SLICE, index),
    crc32: crc32(content.subarray(index * SLICE, (index + 1) * SLICE)),
    lastAccess: 1,
  })),
});

describe('range cache: any meta.json on disk', () => {
  it('property: any bytes as meta.json give a miss or a valid entry with the right bytes, never an exception', async () => {
    const dir = objectDirOf(tmp.dir, id);
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v))),
      fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([at, value]) => {
        const b = encodeMeta(validMeta());
        b[at % b.length] = value; // one mutated byte of a valid file
        return b;
      }),
      fc.nat({ max: 400 }).map((n) => encodeMeta(validMeta()).subarray(0, n)), // torn file
      fc.constant(encodeMeta(validMeta())),
    );
    let hits = 0;
    const cache = await RangeCache.open({ dir: tmp.dir, sliceBytes: SLICE, cleanupGraceMs: 0 });
    await fc.assert(
      fc.asyncProperty(bytes, async (b) => {
        // Real slice files holding the right bytes, and arbitrary metadata next to them.
        await mkdir(dir, { recursive: true });
        for (let i = 0; i < 3; i++)
          await writeFile(path.join(dir, `slice-${i}`), content.subarray(i * SLICE, (i + 1) * SLICE));
        await writeFile(path.join(dir, 'meta.json'), b);
        const meta = await cache.getMeta(id);
        if (meta) expect(meta.version).toBe(META_VERSION);
        const r = await cache.read(id, 0, SIZE - 1);
        if (r.hit) {
          // Served only if every byte verified; a stream error is a verified miss mid-read.
          const got = await bytesOf(r.stream).catch(() => undefined);
          if (got) expect(got.equals(content)).toBe(true);
          if (got) hits++;
        } else {
          expect(typeof r.reason).toBe('string');
        }
        const report = await cache.verify({ fix: true });
        expect(report.objectsScanned).toBeLessThanOrEqual(1);
      }),
      { numRuns: 150 },
    );
    await cache.close();
    expect(hits).toBeGreaterThan(0); // valid files really are served
  }, 30_000);
});

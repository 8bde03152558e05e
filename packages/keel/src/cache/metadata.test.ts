import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeMeta, encodeMeta, sliceLength, META_VERSION, type CacheMeta } from './index.js';

const metaArb: fc.Arbitrary<CacheMeta> = fc
  .record({
    bucket: fc.string({ minLength: 1 }),
    key: fc.string(),
    versionId: fc.option(fc.string(), { nil: null }),
    etag: fc.string({ minLength: 1 }),
    size: fc.nat({ max: 1e9 }),
    sliceBytes: fc.integer({ min: 1, max: 64 * 1024 * 1024 }),
    cachedAt: fc.nat(),
    contentType: fc.option(fc.string(), { nil: undefined }),
    headers: fc.option(fc.dictionary(fc.string({ minLength: 1 }), fc.string()), { nil: undefined }),
    picks: fc.array(fc.nat(), { maxLength: 20 }),
  })
  .map(({ bucket, key, versionId, etag, size, sliceBytes, cachedAt, contentType, headers, picks }) => {
    const count = Math.ceil(size / sliceBytes);
    const indexes = [...new Set(picks.map((p) => (count === 0 ? -1 : p % count)))].filter((i) => i >= 0);
    const meta: CacheMeta = {
      version: META_VERSION,
      identity: { bucket, key, versionId },
      etag,
      size,
      sliceBytes,
      cachedAt,
      slices: indexes.map((index) => ({
        index,
        length: sliceLength(size, sliceBytes, index),
        crc32: (index * 2654435761) >>> 0,
        lastAccess: cachedAt,
      })),
    };
    if (contentType !== undefined) meta.contentType = contentType;
    if (headers !== undefined) meta.headers = headers;
    return meta;
  });

describe('metadata codec', () => {
  it('property: decode(encode(meta)) = meta', () => {
    fc.assert(
      fc.property(metaArb, (meta) => {
        const decoded = decodeMeta(encodeMeta(meta));
        expect(decoded).toEqual({ ok: true, meta: JSON.parse(JSON.stringify(meta)) as CacheMeta });
      }),
      { numRuns: 300 },
    );
  });

  it('property: any bytes give a valid entry or a reason, never an exception', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 512 }),
      fc.string().map((s) => Buffer.from(s)),
      fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v))),
      metaArb.chain((m) =>
        fc
          .tuple(fc.constant(encodeMeta(m)), fc.nat(), fc.integer({ min: 0, max: 255 }))
          .map(([buf, at, value]) => {
            const copy = Buffer.from(buf);
            if (copy.length > 0) copy[at % copy.length] = value; // one mutated byte of a valid file
            return copy;
          }),
      ),
    );
    fc.assert(
      fc.property(bytes, (b) => {
        const decoded = decodeMeta(b);
        if (decoded.ok) {
          expect(decoded.meta.version).toBe(META_VERSION);
          for (const s of decoded.meta.slices)
            expect(s.length).toBe(sliceLength(decoded.meta.size, decoded.meta.sliceBytes, s.index));
        } else {
          expect(typeof decoded.reason).toBe('string');
        }
      }),
      { numRuns: 1000 },
    );
  });
});

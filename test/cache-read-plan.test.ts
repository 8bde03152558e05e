import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { META_VERSION, sliceChecksums, sliceLength, type CacheMeta } from 'keel/cache';
import { planRead, READ_UNIT_BYTES } from '../packages/keel/src/cache/read-plan.js';

const MiB = 1024 * 1024;
const metaOf = (
  size: number,
  sliceBytes: number,
  cached: (i: number) => boolean,
  blocks: boolean,
): CacheMeta => ({
  version: META_VERSION,
  identity: { bucket: 'b', key: 'k', versionId: null },
  etag: '"e"',
  size,
  sliceBytes,
  cachedAt: 0,
  slices: Array.from({ length: Math.ceil(size / sliceBytes) }, (_, index) => index)
    .filter(cached)
    .map((index) => {
      const length = sliceLength(size, sliceBytes, index);
      const sums = sliceChecksums(new Uint8Array(blocks ? length : 0));
      return { index, length, crc32: 0, ...(blocks ? { blocks: sums.blocks } : {}), lastAccess: 0 };
    }),
});

describe('read planning', () => {
  it('property: units cover exactly start..end in order, each inside one slice and one read unit', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 * MiB }),
        fc.constantFrom(MiB, 3 * MiB, 8 * MiB, 5 * MiB + 7),
        fc.nat(),
        fc.nat(),
        fc.boolean(),
        (size, sliceBytes, a, b, blocks) => {
          const start = a % size;
          const end = start + (b % (size - start));
          const plan = planRead(
            metaOf(size, sliceBytes, () => true, blocks),
            start,
            end,
          );
          expect(plan.ok).toBe(true);
          if (!plan.ok) return;
          let at = start;
          for (const u of plan.units) {
            expect(u.offset).toBe(at);
            expect(u.offset).toBe(u.slice.index * sliceBytes + u.from);
            expect(u.to).toBeGreaterThan(u.from);
            expect(u.to).toBeLessThanOrEqual(u.slice.length);
            if (blocks)
              expect(Math.floor((u.to - 1) / READ_UNIT_BYTES)).toBe(Math.floor(u.from / READ_UNIT_BYTES));
            at += u.to - u.from;
          }
          expect(at).toBe(end + 1);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('names the first missing slice, an invalid range and a range beyond the object', () => {
    const meta = metaOf(10 * MiB, 4 * MiB, (i) => i !== 1, true);
    expect(planRead(meta, 0, 10 * MiB - 1)).toEqual({ ok: false, reason: 'slice 1 not cached' });
    expect(planRead(meta, 8 * MiB, 10 * MiB - 1).ok).toBe(true);
    expect(planRead(meta, 5, 4)).toEqual({ ok: false, reason: 'invalid range' });
    expect(planRead(meta, 0, 10 * MiB)).toEqual({ ok: false, reason: 'range beyond the object' });
  });
});

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { CacheMeta } from 'keel/cache';
import { FrequencySketch } from './frequency-sketch.js';
import { MemoryTier } from './memory-tier.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Object bytes whose every position is recognisable: byte i of object `seed` is (i * 31 + seed) mod 251. */
function objectBytes(seed: number, from: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = ((from + i) * 31 + seed) % 251;
  return out;
}

function metaOf(etag: string, slices = 1): CacheMeta {
  return {
    version: 2,
    identity: { bucket: 'b', key: 'k' },
    etag,
    size: 1,
    sliceBytes: 8 * MiB,
    cachedAt: 0,
    headers: {},
    slices: Array.from({ length: slices }, (_, index) => ({ index, length: 1, crc32: 0 })),
  } as unknown as CacheMeta;
}

describe('FrequencySketch', () => {
  it('never estimates a key below how often it was counted since the last halving', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 600 }), (keys) => {
        const sketch = new FrequencySketch(64, 1_000_000);
        const truth = new Map<number, number>();
        for (const k of keys) {
          sketch.increment(`k${k}`);
          truth.set(k, (truth.get(k) ?? 0) + 1);
        }
        for (const [k, n] of truth)
          expect(sketch.frequency(`k${k}`)).toBeGreaterThanOrEqual(Math.min(n, FrequencySketch.MAX_COUNT));
      }),
    );
  });

  it('halves every count once it has counted its sample size, so old favourites fade', () => {
    const sketch = new FrequencySketch(1024, 100);
    for (let i = 0; i < 12; i++) sketch.increment('old');
    expect(sketch.frequency('old')).toBe(12);
    for (let i = 0; i < 88; i++) sketch.increment(`other-${i}`);
    expect(sketch.frequency('old')).toBe(6);
    expect(sketch.frequency('never')).toBe(0);
  });
});

describe('MemoryTier', () => {
  it('answers any range of the blocks it holds with the bytes it was given, and nothing it lacks', () => {
    const size = 5 * 64 * KiB + 1000;
    const tier = new MemoryTier({ maxBytes: 8 * MiB });
    expect(tier.read('h', '"e"', 0, 99)).toBeUndefined();
    expect(tier.admit('h', '"e"', 0, objectBytes(7, 0, size), size)).toBe(6);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 0, max: size - 1 }), (a, b) => {
        const [start, end] = a <= b ? [a, b] : [b, a];
        const chunks = tier.read('h', '"e"', start, end);
        expect(chunks).toBeDefined();
        expect(Buffer.concat(chunks as Buffer[]).equals(objectBytes(7, start, end - start + 1))).toBe(true);
      }),
    );
    // Another version, or a range past what is held, is not answered.
    expect(tier.read('h', '"other"', 0, 10)).toBeUndefined();
    expect(tier.read('h', '"e"', size - 10, size + 10)).toBeUndefined();
  });

  it('takes in only whole blocks: a read that covers part of a block leaves it out', () => {
    const tier = new MemoryTier({ maxBytes: 8 * MiB });
    // Bytes 1000..200000 of a large object: blocks 1 and 2 are whole, 0 and 3 are not.
    expect(tier.admit('h', '"e"', 1000, objectBytes(1, 1000, 199_001), 10 * MiB)).toBe(2);
    expect(tier.read('h', '"e"', 64 * KiB, 192 * KiB - 1)).toBeDefined();
    expect(tier.read('h', '"e"', 1000, 2000)).toBeUndefined();
  });

  it('asks the disk read for the whole blocks it would take in, within the limit it is given', () => {
    const tier = new MemoryTier({ maxBytes: 8 * MiB });
    const size = 10 * MiB;
    // A 4 KiB read inside block 3: fetch all of block 3.
    expect(
      tier.wanted('h', '"e"', 3 * 64 * KiB + 100, 3 * 64 * KiB + 4195, size, { start: 0, end: size - 1 }),
    ).toEqual({ start: 3 * 64 * KiB, end: 4 * 64 * KiB - 1 });
    // Not past the limit (the slices the read may cover): the block crossing it is left out.
    expect(tier.wanted('h', '"e"', 100, 200, size, { start: 50, end: size - 1 })).toBeUndefined();
    // The object's short last block is whole.
    expect(tier.wanted('h', '"e"', size - 10, size + 4, size + 5, { start: 0, end: size + 4 })).toEqual({
      start: size - 64 * KiB,
      end: size + 4,
    });
  });

  it('never holds more than its limit, and a full tier admits a block only if asked for more often than the one it pushes out', () => {
    const B = 64 * KiB;
    const tier = new MemoryTier({ maxBytes: 4 * B });
    const block = (seed: number): Buffer => objectBytes(seed, 0, B);
    for (let i = 0; i < 4; i++) {
      tier.read(`o${i}`, 'e', 0, 10);
      tier.admit(`o${i}`, 'e', 0, block(i), B);
    }
    expect(tier.stats()).toMatchObject({ bytes: 4 * B, blocks: 4 });
    // A newcomer asked for once does not push out o0 (asked for once too).
    tier.read('new', 'e', 0, 10);
    expect(tier.admit('new', 'e', 0, block(9), B)).toBe(0);
    expect(tier.stats().rejected).toBe(1);
    // Asked for twice more, it does, and the tier stays at its limit.
    tier.read('new', 'e', 0, 10);
    tier.read('new', 'e', 0, 10);
    expect(tier.admit('new', 'e', 0, block(9), B)).toBe(1);
    expect(tier.stats()).toMatchObject({ bytes: 4 * B, blocks: 4, evicted: 1 });
    expect(tier.read('o0', 'e', 0, 10)).toBeUndefined();
  });

  it('keeps a hot set of 100 objects through a 1 GiB sequential scan (hit ratio of the hot set >= 95 %)', () => {
    const B = 64 * KiB;
    // Room for the hot set and a little more: a least-recently-used cache this size would lose
    // every hot block, since 800 scan blocks pass between two reads of one.
    const tier = new MemoryTier({ maxBytes: 256 * B });
    const hot = Array.from({ length: 100 }, (_, i) => ({ hash: `hot-${i}`, bytes: objectBytes(i, 0, B) }));
    const scanBlock = objectBytes(999, 0, MiB);
    const readHot = (i: number): boolean => {
      const o = hot[i % hot.length] as (typeof hot)[number];
      if (tier.read(o.hash, 'e', 0, 4095)) return true;
      tier.admit(o.hash, 'e', 0, o.bytes, B);
      return false;
    };
    // Warm: the hot set read a few times over.
    for (let i = 0; i < 300; i++) readHot(i);
    let hits = 0;
    let reads = 0;
    // The scan: 1 GiB in 1 MiB reads, each followed by two reads of the hot set.
    for (let offset = 0; offset < 1024 * MiB; offset += MiB) {
      if (!tier.read('scan', 'e', offset, offset + MiB - 1))
        tier.admit('scan', 'e', offset, scanBlock, 1024 * MiB);
      for (let k = 0; k < 2; k++) {
        reads++;
        if (readHot(reads)) hits++;
      }
      expect(tier.stats().bytes).toBeLessThanOrEqual(tier.maxBytes);
    }
    expect(hits / reads).toBeGreaterThanOrEqual(0.95);
  });

  it('forgets an object whole, and the blocks of an old version once its metadata names a new ETag', () => {
    const B = 64 * KiB;
    const tier = new MemoryTier({ maxBytes: 16 * B });
    tier.rememberMeta('h', metaOf('"v1"'));
    tier.admit('h', '"v1"', 0, objectBytes(1, 0, 2 * B), 2 * B);
    tier.admit('g', '"v1"', 0, objectBytes(2, 0, B), B);
    expect(tier.stats()).toMatchObject({ bytes: 3 * B, objects: 1 });
    tier.rememberMeta('h', metaOf('"v2"'));
    expect(tier.read('h', '"v1"', 0, 10)).toBeUndefined();
    expect(tier.stats().bytes).toBe(B);
    tier.forget('g');
    tier.forget('h');
    expect(tier.stats()).toMatchObject({ bytes: 0, blocks: 0, objects: 0 });
    expect(tier.meta('h')).toBeUndefined();
  });

  it('bounds the metadata it holds by the slices listed, least recently used forgotten first', () => {
    const tier = new MemoryTier({ maxBytes: MiB, maxMetaSlices: 30 });
    for (let i = 0; i < 10; i++) tier.rememberMeta(`o${i}`, metaOf(`"${i}"`, 4));
    // 5 slices a piece (4 listed plus one): 6 fit.
    expect(tier.stats().objects).toBe(6);
    expect(tier.meta('o0')).toBeUndefined();
    expect(tier.meta('o9')?.etag).toBe('"9"');
  });

  it('rejects a size that is not a positive integer', () => {
    expect(() => new MemoryTier({ maxBytes: 0 })).toThrow(/maxBytes must be a positive integer, got 0/);
    expect(() => new MemoryTier({ maxBytes: 10, blockBytes: 1.5 })).toThrow(/blockBytes/);
  });
});

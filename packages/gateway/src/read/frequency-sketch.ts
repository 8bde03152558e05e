/**
 * How often keys were seen lately, approximately, in a fixed amount of memory: a count-min sketch
 * of small saturating counters (TinyLFU's frequency filter). Every `sampleSize` increments all
 * counters are halved, so what was popular long ago fades and a new favourite can win.
 *
 * An estimate is never below the true count since the last halving (collisions only add), which
 * is what an admission filter needs: a key seen once cannot pass for one seen often unless the
 * sketch is far too small for the keys it sees.
 */
export class FrequencySketch {
  /** Counters saturate here (TinyLFU's 4-bit counters). */
  static readonly MAX_COUNT = 15;
  private static readonly ROWS = 4;
  private readonly table: Uint8Array;
  private readonly mask: number;
  private readonly sampleSize: number;
  private additions = 0;

  /**
   * @param expectedKeys How many distinct keys should be told apart well (the cache's capacity in
   *   entries); the sketch takes 4 bytes per key rounded up to a power of two, at least 64.
   * @param sampleSize Increments between two halvings (default 10 × expectedKeys).
   */
  constructor(expectedKeys: number, sampleSize = 10 * Math.max(1, expectedKeys)) {
    const width = 2 ** Math.ceil(Math.log2(Math.max(16, expectedKeys)));
    this.table = new Uint8Array(width * FrequencySketch.ROWS);
    this.mask = width - 1;
    this.sampleSize = Math.max(1, sampleSize);
  }

  /** Bytes the sketch holds. */
  get bytes(): number {
    return this.table.byteLength;
  }

  /** Counts one sighting of `key`. */
  increment(key: string): void {
    const h = hashOf(key);
    let grew = false;
    const width = this.mask + 1;
    for (let row = 0; row < FrequencySketch.ROWS; row++) {
      const at = row * width + (rowHash(h, row) & this.mask);
      const v = this.table[at] as number;
      if (v < FrequencySketch.MAX_COUNT) {
        this.table[at] = v + 1;
        grew = true;
      }
    }
    if (grew && ++this.additions >= this.sampleSize) this.halve();
  }

  /** Sightings of `key` lately (an over-estimate at worst), 0 to {@link FrequencySketch.MAX_COUNT}. */
  frequency(key: string): number {
    const h = hashOf(key);
    const width = this.mask + 1;
    let min = FrequencySketch.MAX_COUNT;
    for (let row = 0; row < FrequencySketch.ROWS; row++) {
      const v = this.table[row * width + (rowHash(h, row) & this.mask)] as number;
      if (v < min) min = v;
    }
    return min;
  }

  private halve(): void {
    for (let i = 0; i < this.table.length; i++) this.table[i] = (this.table[i] as number) >>> 1;
    this.additions = Math.floor(this.additions / 2);
  }
}

/** FNV-1a over the key's UTF-16 code units. */
function hashOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const SEEDS = [0x9e3779b1, 0x85ebca77, 0xc2b2ae3d, 0x27d4eb2f];

/** An independent-enough hash per row, mixed from one key hash (murmur3's finaliser). */
function rowHash(h: number, row: number): number {
  let x = Math.imul(h ^ (SEEDS[row] as number), 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

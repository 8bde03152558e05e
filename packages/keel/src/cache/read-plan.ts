import { blocksOf, type CacheMeta, type SliceInfo } from './metadata.js';

/** Most bytes read (and verified) in one go while streaming: whole verification blocks. */
export const READ_UNIT_BYTES = 2 * 1024 * 1024;

/** One read of a stream: bytes `[from, to)` of one slice, at `offset` in the object. */
export interface ReadUnit {
  slice: SliceInfo;
  from: number;
  to: number;
  offset: number;
}

/** One slice's share of a range: bytes `[from, to)` of `slice`, whose byte 0 is at `base` in the object. */
export interface SlicePart {
  slice: SliceInfo;
  from: number;
  to: number;
  base: number;
}

/**
 * The slices that hold bytes `start..end` (inclusive) of a cached object, each with its share of
 * the range, or why the range cannot be served (beyond the object, or the first slice not
 * cached). `start..end` is a valid range. One pass over the object's slices, however many there are.
 */
export function slicesOf(
  meta: CacheMeta,
  start: number,
  end: number,
): { ok: true; parts: SlicePart[] } | { ok: false; reason: string } {
  if (end >= meta.size) return { ok: false, reason: 'range beyond the object' };
  const sliceBytes = meta.sliceBytes;
  const first = Math.floor(start / sliceBytes);
  const last = Math.floor(end / sliceBytes);
  const found: (SliceInfo | undefined)[] = new Array<SliceInfo | undefined>(last - first + 1);
  for (const s of meta.slices) if (s.index >= first && s.index <= last) found[s.index - first] = s;
  const parts: SlicePart[] = [];
  for (let i = first; i <= last; i++) {
    const slice = found[i - first];
    if (!slice) return { ok: false, reason: `slice ${i} not cached` };
    const base = i * sliceBytes;
    parts.push({ slice, from: Math.max(0, start - base), to: Math.min(slice.length, end - base + 1), base });
  }
  return { ok: true, parts };
}

/** The units that stream bytes `start..end` (inclusive), or why the range cannot be served. */
export type ReadPlan = { ok: true; units: ReadUnit[] } | { ok: false; reason: string };

/**
 * Cuts an inclusive byte range of a cached object into read units: within each slice, pieces that
 * end on multiples of {@link READ_UNIT_BYTES} (so every unit covers whole verification blocks
 * plus the range's edges); a slice without block checksums is one unit, verified whole.
 */
export function planRead(meta: CacheMeta, start: number, end: number): ReadPlan {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start)
    return { ok: false, reason: 'invalid range' };
  const span = slicesOf(meta, start, end);
  if (!span.ok) return span;
  const units: ReadUnit[] = [];
  for (const { slice, from, to, base } of span.parts) {
    // Units of whole blocks (a slice without block checksums is one block).
    const { blockBytes } = blocksOf(slice);
    const step = Math.max(blockBytes, Math.floor(READ_UNIT_BYTES / blockBytes) * blockBytes);
    for (let at = from; at < to; at = (Math.floor(at / step) + 1) * step) {
      units.push({
        slice,
        from: at,
        to: Math.min(to, (Math.floor(at / step) + 1) * step),
        offset: base + at,
      });
    }
  }
  return { ok: true, units };
}

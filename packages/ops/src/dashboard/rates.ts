/**
 * Per-second rates of counters, from one reading to the next (a view reads its counters once per
 * tick). Keys are the view's own fixed names (outcomes, counters), never client input.
 */
export class RateMeter {
  private readonly last = new Map<string, { value: number; atMs: number }>();

  /**
   * The rate of `key` since its previous reading, per second; null at the first reading or when
   * no time passed. A counter that went down (a restart) starts over from its new value.
   */
  rate(key: string, value: number, atMs: number): number | null {
    const prev = this.last.get(key);
    this.last.set(key, { value, atMs });
    if (!prev || atMs <= prev.atMs) return null;
    const delta = value >= prev.value ? value - prev.value : value;
    return (delta * 1000) / (atMs - prev.atMs);
  }
}

/** Cumulative bucket counts of a histogram: `le` upper bounds ascending, the last one +Inf. */
export interface HistogramReading {
  le: number[];
  counts: number[];
}

/**
 * The q-quantile (0..1) of the observations between two readings of a cumulative histogram,
 * interpolated within its bucket as Prometheus' histogram_quantile does; null without
 * observations. A quantile in the +Inf bucket is the highest finite bound.
 */
export function quantileBetween(
  before: HistogramReading | undefined,
  after: HistogramReading,
  q: number,
): number | null {
  const counts = after.counts.map((c, i) => c - (before?.counts[i] ?? 0));
  const total = counts[counts.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] ?? 0;
    if (c < rank) continue;
    const upper = after.le[i] ?? Infinity;
    const lower = i === 0 ? 0 : (after.le[i - 1] ?? 0);
    if (!Number.isFinite(upper)) return lower;
    const prev = i === 0 ? 0 : (counts[i - 1] ?? 0);
    const inBucket = c - prev;
    return inBucket <= 0 ? upper : lower + ((upper - lower) * (rank - prev)) / inBucket;
  }
  return null;
}

import type { Clock } from '../time/index.js';

/**
 * The cache's recent I/O errors: when each of the last `limit` happened, so the cache can tell
 * how many fell within the last `windowMs` (up to `limit`, the count that matters: it enters
 * bypass there) and how long it has been quiet. Memory is `limit` numbers, whatever the rate.
 */
export class RecentIoErrors {
  /** Times of the last `limit` errors, a ring; `next` is where the next one goes. */
  private readonly times: number[] = [];
  private next = 0;

  constructor(
    private readonly clock: Clock,
    readonly windowMs: number,
    readonly limit: number,
  ) {}

  /** Records an error now; returns how many errors (at most `limit`) fell within the window. */
  record(): number {
    const now = this.clock.now();
    if (this.times.length < this.limit) this.times.push(now);
    else this.times[this.next] = now;
    this.next = (this.next + 1) % this.limit;
    return this.count(now);
  }

  /** Errors within the window (at most `limit`). */
  count(now = this.clock.now()): number {
    let n = 0;
    for (const t of this.times) if (now - t < this.windowMs) n++;
    return n;
  }

  /** Milliseconds since the last error, or undefined when there was none. */
  sinceLastMs(): number | undefined {
    if (this.times.length === 0) return undefined;
    const last = this.times[(this.next + this.limit - 1) % this.limit] as number;
    return this.clock.now() - last;
  }
}

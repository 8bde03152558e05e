import type { KeelError } from './keel-error.js';
import { classify } from './classify.js';

/** Something with a `now()` in milliseconds (a keel Clock fits). */
export interface NowSource {
  now(): number;
}

/** Options of {@link ErrorAggregator}. */
export interface ErrorAggregatorOptions {
  /** Length of the sliding window (default 5 minutes). */
  windowMs?: number;
  /** Buckets the window is cut into; more is finer and costs more memory (default 30). */
  buckets?: number;
  /** Most fingerprints tracked; the least recently seen are dropped beyond it (default 1000). */
  maxFingerprints?: number;
  /** Source of time (default `Date`). */
  clock?: NowSource;
}

/** One group of alike errors in the window. */
export interface AggregatedError {
  fingerprint: string;
  code: string;
  /** A redacted sample message. */
  message: string;
  /** Occurrences inside the window. */
  count: number;
  /** First and last time seen since tracking began (epoch ms). */
  firstSeen: number;
  lastSeen: number;
}

interface Entry {
  fingerprint: string;
  code: string;
  message: string;
  firstSeen: number;
  lastSeen: number;
  counts: Float64Array;
  epochs: Float64Array;
}

/**
 * Counts errors by code and by fingerprint over a sliding window, with first/last seen and the
 * top N: what an alert rule or a status page reads.
 */
export class ErrorAggregator {
  private readonly windowMs: number;
  private readonly buckets: number;
  private readonly bucketMs: number;
  private readonly maxFingerprints: number;
  private readonly clock: NowSource;
  private readonly entries = new Map<string, Entry>();

  constructor(options: ErrorAggregatorOptions = {}) {
    this.windowMs = options.windowMs ?? 5 * 60_000;
    this.buckets = options.buckets ?? 30;
    this.maxFingerprints = options.maxFingerprints ?? 1000;
    this.clock = options.clock ?? Date;
    if (!(this.windowMs > 0))
      throw new RangeError(`ErrorAggregator: windowMs must be > 0, got ${this.windowMs}`);
    if (!Number.isInteger(this.buckets) || this.buckets < 1) {
      throw new RangeError(`ErrorAggregator: buckets must be a positive integer, got ${this.buckets}`);
    }
    this.bucketMs = this.windowMs / this.buckets;
  }

  /** Records one occurrence of `err` (classified first) and returns the classified error. */
  record(err: unknown): KeelError {
    const error = classify(err);
    const now = this.clock.now();
    const epoch = Math.floor(now / this.bucketMs);
    let entry = this.entries.get(error.fingerprint);
    if (entry) {
      this.entries.delete(error.fingerprint);
    } else {
      entry = {
        fingerprint: error.fingerprint,
        code: error.code,
        message: error.toJSON().message,
        firstSeen: now,
        lastSeen: now,
        counts: new Float64Array(this.buckets),
        epochs: new Float64Array(this.buckets).fill(-1),
      };
      if (this.entries.size >= this.maxFingerprints) {
        const oldest = this.entries.keys().next().value;
        if (oldest !== undefined) this.entries.delete(oldest);
      }
    }
    this.entries.set(error.fingerprint, entry);
    entry.lastSeen = now;
    const slot = epoch % this.buckets;
    if (entry.epochs[slot] !== epoch) {
      entry.epochs[slot] = epoch;
      entry.counts[slot] = 0;
    }
    entry.counts[slot] = (entry.counts[slot] ?? 0) + 1;
    return error;
  }

  /** Groups with at least one occurrence in the window, most frequent first. */
  top(n = 10): AggregatedError[] {
    const epoch = Math.floor(this.clock.now() / this.bucketMs);
    const out: AggregatedError[] = [];
    for (const [key, e] of this.entries) {
      const count = this.windowCount(e, epoch);
      if (count === 0) {
        if (this.clock.now() - e.lastSeen > this.windowMs) this.entries.delete(key);
        continue;
      }
      out.push({
        fingerprint: e.fingerprint,
        code: e.code,
        message: e.message,
        count,
        firstSeen: e.firstSeen,
        lastSeen: e.lastSeen,
      });
    }
    out.sort((a, b) => b.count - a.count || b.lastSeen - a.lastSeen);
    return out.slice(0, n);
  }

  /** Occurrences in the window by error code. */
  countsByCode(): Record<string, number> {
    const epoch = Math.floor(this.clock.now() / this.bucketMs);
    const out: Record<string, number> = {};
    for (const e of this.entries.values()) {
      const count = this.windowCount(e, epoch);
      if (count > 0) out[e.code] = (out[e.code] ?? 0) + count;
    }
    return out;
  }

  /** Occurrences of one fingerprint in the window. */
  count(fingerprint: string): number {
    const e = this.entries.get(fingerprint);
    return e ? this.windowCount(e, Math.floor(this.clock.now() / this.bucketMs)) : 0;
  }

  /** All occurrences in the window. */
  total(): number {
    const epoch = Math.floor(this.clock.now() / this.bucketMs);
    let sum = 0;
    for (const e of this.entries.values()) sum += this.windowCount(e, epoch);
    return sum;
  }

  /** Forgets everything. */
  clear(): void {
    this.entries.clear();
  }

  private windowCount(e: Entry, epoch: number): number {
    let sum = 0;
    for (let i = 0; i < this.buckets; i++) {
      const at = e.epochs[i] ?? -1;
      if (at > epoch - this.buckets && at <= epoch) sum += e.counts[i] ?? 0;
    }
    return sum;
  }
}

import { classify, keelError, type KeelError, exponential, type Backoff } from 'keel';
import type { CacheMeta } from 'keel/cache';
import type { Clock } from 'keel';

/** Options of {@link Revalidator}. */
export interface RevalidatorOptions {
  /**
   * Longest a revalidation may take (default 1 s). Requests for the object wait for it at most
   * this long, then get the cached copy, marked STALE.
   */
  timeoutMs?: number;
  /** Wait after a failed revalidation before the object is revalidated again (default 1 s, doubling). */
  backoffMs?: number;
  /** Longest wait between revalidations of an object whose origin keeps failing (default 60 s). */
  maxBackoffMs?: number;
  /** Objects whose revalidation state is remembered at once (default 10 000; the oldest are forgotten). */
  maxEntries?: number;
}

/**
 * What a revalidation settles to: `fresh` (the origin confirmed or replaced the copy; `value` is
 * what to serve), or `stale` (the origin could not confirm in time: serve the cached copy).
 */
export type RevalidationOutcome<T> = { state: 'fresh'; value: T } | { state: 'stale'; error: KeelError };

interface Entry<T> {
  etag: string;
  /** The revalidation in flight, shared by every request for the object. */
  flight: Promise<RevalidationOutcome<T>> | undefined;
  /** What the last revalidation answered, kept while its metadata is being written. */
  settled: RevalidationOutcome<T> | undefined;
  /** The backoff after the next failure (undefined: the first step). */
  backoff: Backoff | undefined;
  /** No new revalidation of this version before this time (epoch ms). */
  retryAt: number;
}

/**
 * Revalidation of expired cached objects, per object: one request to the origin in flight shared
 * by every concurrent request (coalesced), bounded by a short timeout. When it fails or times out,
 * the object is served stale and not revalidated again before a backoff (doubling per failure),
 * so a failing origin is asked about it once per backoff, not once per request.
 */
export class Revalidator<T> {
  private readonly entries = new Map<string, Entry<T>>();
  readonly timeoutMs: number;
  /** Waits after failed revalidations of an object: backoffMs, doubling up to maxBackoffMs. */
  private readonly backoff: Backoff;
  private readonly maxEntries: number;
  /** Revalidations sent to the origin, and how many of them failed or timed out. */
  readonly stats = { started: 0, failed: 0, servedStaleWithoutAsking: 0 };

  constructor(
    private readonly clock: Clock,
    options: RevalidatorOptions = {},
  ) {
    this.timeoutMs = positive('timeoutMs', options.timeoutMs ?? 1_000);
    const backoffMs = positive('backoffMs', options.backoffMs ?? 1_000);
    this.backoff = exponential({
      initialMs: backoffMs,
      maxMs: Math.max(backoffMs, positive('maxBackoffMs', options.maxBackoffMs ?? 60_000)),
      jitter: 'none',
    });
    this.maxEntries = positive('maxEntries', options.maxEntries ?? 10_000);
  }

  /**
   * Revalidates the object cached as `cached` (its `hash` names it): joins the revalidation in
   * flight, starts one with `ask` (given a signal that aborts at the timeout), or, while the
   * object backs off after a failure, answers `stale` at once without asking.
   * `ask` resolves with what to serve, or rejects when the origin could not answer.
   * `settledUntil` (optional) keeps a fresh answer shared until it resolves (the metadata write).
   */
  revalidate(
    hash: string,
    cached: Pick<CacheMeta, 'etag'>,
    ask: (signal: AbortSignal) => Promise<T>,
    settledUntil?: () => Promise<unknown> | undefined,
  ): Promise<RevalidationOutcome<T>> {
    let entry = this.entries.get(hash);
    if (entry && entry.etag !== cached.etag) {
      // Another version is cached now: what was learnt about the old one does not apply.
      this.entries.delete(hash);
      entry = undefined;
    }
    if (entry?.flight) return entry.flight;
    if (entry?.settled) return Promise.resolve(entry.settled);
    if (entry && this.clock.now() < entry.retryAt) {
      this.stats.servedStaleWithoutAsking++;
      return Promise.resolve({
        state: 'stale',
        error: keelError('CIRCUIT_OPEN', 'the last revalidation of this object failed; backing off', {
          retryAt: entry.retryAt,
        }),
      });
    }
    if (!entry) {
      entry = { etag: cached.etag, flight: undefined, settled: undefined, backoff: undefined, retryAt: 0 };
      this.entries.set(hash, entry);
      if (this.entries.size > this.maxEntries) {
        const oldest = this.entries.keys().next().value as string;
        this.entries.delete(oldest);
      }
    }
    const current = entry;
    this.stats.started++;
    const flight = this.ask(ask).then((outcome) => {
      current.flight = undefined;
      if (outcome.state === 'stale') {
        this.stats.failed++;
        const step = (current.backoff ?? this.backoff).next();
        current.backoff = step.next;
        current.retryAt = this.clock.now() + step.delayMs;
        return outcome;
      }
      const pending = settledUntil?.();
      if (!pending) {
        if (this.entries.get(hash) === current) this.entries.delete(hash);
        return outcome;
      }
      current.settled = outcome;
      void pending
        .catch(() => undefined)
        .finally(() => {
          if (this.entries.get(hash) === current) this.entries.delete(hash);
        });
      return outcome;
    });
    current.flight = flight;
    return flight;
  }

  /** Objects with a revalidation in flight or backing off. */
  size(): number {
    return this.entries.size;
  }

  private ask(ask: (signal: AbortSignal) => Promise<T>): Promise<RevalidationOutcome<T>> {
    const controller = new AbortController();
    return new Promise((resolve) => {
      let done = false;
      const timer = this.clock.setTimer(this.timeoutMs, () => {
        if (done) return;
        done = true;
        const error = keelError('TIMEOUT', `revalidation took longer than ${this.timeoutMs} ms`, {
          timeoutMs: this.timeoutMs,
        });
        controller.abort(error);
        resolve({ state: 'stale', error });
      });
      ask(controller.signal).then(
        (value) => {
          if (done) return;
          done = true;
          timer.cancel();
          resolve({ state: 'fresh', value });
        },
        (err: unknown) => {
          if (done) return;
          done = true;
          timer.cancel();
          resolve({ state: 'stale', error: classify(err) });
        },
      );
    });
  }
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0)
    throw keelError(
      'INVALID_INPUT',
      `revalidation ${name} must be a positive number, got ${v}`,
      {},
      { stack: false },
    );
  return v;
}

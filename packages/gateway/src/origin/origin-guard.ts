import type { Readable } from 'node:stream';
import {
  bulkhead,
  circuitBreaker,
  classify,
  consecutive,
  exponential,
  keyed,
  keelError,
  retry,
  retryBudget,
  timeout,
  type BulkheadPolicy,
  type CircuitBreakerPolicy,
  type Clock,
  type KeelError,
  type KeyedRegistry,
  type RetryBudgetPolicy,
  type RetryPolicy,
  type TimeoutPolicy,
} from 'keel';
import type { OriginResponse } from './origin-client.js';

/** Options of {@link OriginGuard}. */
export interface OriginGuardOptions {
  /** Consecutive failed client requests that open a bucket's breaker (default 5). */
  breakerFailures?: number;
  /** How long a breaker stays open before a probe (default 10 s). */
  breakerHalfOpenAfterMs?: number;
  /** Attempts per origin call, the first included (default 3). */
  retryAttempts?: number;
  /** Retries earned per call (default 0.1), see retryBudget. */
  retryBudgetRatio?: number;
  /** Origin requests in flight at once (default 256); more wait in a queue of the same size. */
  maxConcurrent?: number;
  /**
   * Buckets with a breaker of their own (default 1,000); beyond it the least recently used is
   * forgotten. A bucket gets one once the origin has answered a request for it in a way that shows
   * it exists; until then its requests share the service breaker.
   */
  maxBuckets?: number;
  /**
   * Longest a guarded call may take until the origin's answer, retries and their waits included
   * (default 10 s); at the deadline it fails with TIMEOUT. Calls made with `deadline: false` (an
   * upload, whose answer comes after its body) have none.
   */
  deadlineMs?: number;
  clock?: Clock;
}

/** How one guarded call runs. */
export interface GuardedCall {
  /**
   * What the request asks about (its object key; for a bucket request, the request itself): one
   * whose requests keep failing with a 500 counts once (see {@link OriginGuard}).
   */
  key?: string | undefined;
  /** Retry failed attempts under the budget (default true; false for a body that cannot be sent again). */
  retry?: boolean;
  /** Bound the call by the guard's deadline (default true). */
  deadline?: boolean;
  /** Aborts the call (the origin request is cancelled). */
  signal?: AbortSignal | undefined;
  /**
   * Let the answer give the bucket a breaker of its own (default true). False for requests the
   * gateway did not authenticate (a CORS preflight, a forwarded unsigned request): what they name
   * must not make it keep anything.
   */
  confirm?: boolean;
}

/** An origin answer the guard counted as a failure, kept so it can still be relayed as it was. */
export interface OriginAnswer {
  status: number;
  headers: Record<string, string>;
  /** The body, when small enough to be an S3 error document (else empty). */
  body: Buffer;
}

/** Origin error documents are kept up to this size; a larger body is dropped. */
const MAX_ANSWER_BYTES = 64 * 1024;

/** Keys remembered per bucket as failing with a 500 (since its last success). */
const MAX_FAILING_KEYS = 64;

const answers = new WeakMap<object, OriginAnswer>();

/**
 * The origin's own answer behind a guarded call's failure (a 5xx or 429 after the retries), to be
 * relayed with its status, code and body; undefined when keel itself decided (breaker open,
 * deadline, origin unreachable).
 */
export function originAnswerOf(err: unknown): OriginAnswer | undefined {
  for (let e: unknown = err, depth = 0; e !== null && typeof e === 'object' && depth < 5; depth++) {
    const answer = answers.get(e);
    if (answer) return answer;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * A bucket's breaker, the keys whose last request failed with a 500 since its last success, and
 * whether this process is asking for (or holds) the right to probe it (see {@link ProbeGate}).
 */
interface BucketGuard {
  readonly bucket: string;
  readonly breaker: CircuitBreakerPolicy;
  readonly failingKeys: Set<string>;
  execute: CircuitBreakerPolicy['execute'];
  probing: boolean;
}

/**
 * Admits the probe of a half-open breaker across processes (several workers share one origin):
 * resolves with a release to call once the probe ended, or undefined when another process is
 * probing it now. `bucket` is the breaker's bucket (`''`: the service breaker).
 */
export type ProbeGate = (bucket: string) => Promise<((ok: boolean) => void) | undefined>;

/** Outcome of one request to the origin (one attempt), for metrics. */
export interface AttemptEvent {
  outcome: 'success' | 'failure';
  /** Time to the response headers (or to the failure). */
  durationMs: number;
}

async function readBounded(body: Readable, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > limit) {
        body.destroy();
        return Buffer.alloc(0);
      }
      parts.push(chunk);
    }
  } catch {
    return Buffer.alloc(0);
  }
  return Buffer.concat(parts);
}

/**
 * Every origin call goes through here. For one client request: the bucket's circuit breaker,
 * then the deadline, then retries (with backoff and a shared budget), and for each attempt the
 * bulkhead. So a breaker counts client requests, not attempts: a read that tried three times is
 * one failure. Retryable answers (5xx but 501 and 505, 429, 408) count as failures; every other
 * status is an answer. A key whose request failed with a 500 is not counted again until the
 * bucket sees a success: a 500 that follows from the request itself (a malformed key) cannot open
 * the breaker of a whole bucket by being asked again. Timeouts and unreachable origins always count.
 *
 * Breakers live in a bounded registry: a bucket gets its own once the origin showed it exists
 * (see {@link OriginGuard.noteAnswer}); until then, and for service-level calls, the service
 * breaker (bucket `''`) guards it.
 */
export class OriginGuard {
  readonly budget: RetryBudgetPolicy;
  readonly retry: RetryPolicy;
  private readonly bulk: BulkheadPolicy;
  private readonly deadline: TimeoutPolicy;
  private readonly buckets: KeyedRegistry<string, BucketGuard>;
  private readonly service: BucketGuard;
  private readonly options: OriginGuardOptions;
  private readonly added = new Set<(bucket: string, breaker: CircuitBreakerPolicy) => void>();
  private readonly removed = new Set<(bucket: string, breaker: CircuitBreakerPolicy) => void>();
  private readonly attempts = new Set<(event: AttemptEvent) => void>();
  private probeGate: ProbeGate | undefined;
  budgetExhausted = 0;

  constructor(options: OriginGuardOptions = {}) {
    this.options = options;
    const clock = options.clock ? { clock: options.clock } : {};
    this.budget = retryBudget({ ratio: options.retryBudgetRatio ?? 0.1, ...clock });
    this.retry = retry({
      maxAttempts: options.retryAttempts ?? 3,
      backoff: exponential({ initialMs: 50, maxMs: 1_000 }),
      budget: this.budget,
      onGiveUp: (e) => {
        if (e.reason === 'budget') this.budgetExhausted++;
      },
      ...clock,
    });
    const max = options.maxConcurrent ?? 256;
    this.bulk = bulkhead({ maxConcurrent: max, maxQueue: max, ...clock });
    this.deadline = timeout(options.deadlineMs ?? 10_000, { name: 'origin deadline', ...clock });
    this.service = this.bucketGuard('');
    this.buckets = keyed((bucket: string) => this.bucketGuard(bucket), {
      maxKeys: options.maxBuckets ?? 1_000,
      onEvict: (bucket, guard) => {
        for (const l of this.removed) l(bucket, guard.breaker);
      },
    });
  }

  private bucketGuard(bucket: string): BucketGuard {
    const breaker = circuitBreaker({
      name: bucket === '' ? 'origin' : `origin ${bucket}`,
      window: consecutive(this.options.breakerFailures ?? 5),
      halfOpenAfterMs: this.options.breakerHalfOpenAfterMs ?? 10_000,
      ...(this.options.clock ? { clock: this.options.clock } : {}),
    });
    return {
      bucket,
      breaker,
      failingKeys: new Set(),
      execute: breaker.execute.bind(breaker),
      probing: false,
    };
  }

  /**
   * Gives `bucket` a breaker of its own if it has none (as a confirming answer does): for a state
   * shared by another process that already confirmed it, or an answer that shows the bucket exists
   * without being a status {@link noteAnswer} can tell by (404 NoSuchCORSConfiguration). Bounded
   * like every bucket's breaker (`maxBuckets`, least recently used forgotten first).
   */
  adoptBucket(bucket: string): CircuitBreakerPolicy {
    if (bucket === '') return this.service.breaker;
    if (this.buckets.has(bucket)) return this.buckets.get(bucket).breaker;
    const guard = this.buckets.get(bucket);
    for (const l of this.added) l(bucket, guard.breaker);
    return guard.breaker;
  }

  /** The breaker of `bucket` if it has one of its own (`''`: the service breaker), else undefined. */
  ownBreakerOf(bucket: string): CircuitBreakerPolicy | undefined {
    if (bucket === '') return this.service.breaker;
    return this.buckets.has(bucket) ? this.buckets.get(bucket).breaker : undefined;
  }

  /**
   * From now on, a half-open breaker's probe runs only when `gate` admits it (one probe at a
   * time across processes); a request the gate turns away is rejected as an open breaker's is.
   */
  gateProbes(gate: ProbeGate | undefined): void {
    this.probeGate = gate;
  }

  /** The breaker that guards calls for `bucket` now: its own once confirmed, else the service breaker. */
  breakerOf(bucket: string): CircuitBreakerPolicy {
    return this.guardOf(bucket).breaker;
  }

  private guardOf(bucket: string): BucketGuard {
    return bucket !== '' && this.buckets.has(bucket) ? this.buckets.get(bucket) : this.service;
  }

  /**
   * Takes note of an origin answer for `bucket`: one that shows the bucket exists (below 400, or
   * a 4xx other than 400 and 404) gives it a breaker of its own, if it has none yet.
   */
  noteAnswer(bucket: string, status: number): void {
    if (bucket === '' || this.buckets.has(bucket)) return;
    if (status >= 500 || status === 400 || status === 404) return;
    const guard = this.buckets.get(bucket);
    for (const l of this.added) l(bucket, guard.breaker);
  }

  /**
   * Calls `added` with each breaker: at once for the service breaker and the buckets that have
   * one, then as each bucket gets its own; `removed` when a bucket's is forgotten (beyond
   * `maxBuckets`). Returns a remover.
   */
  onBreaker(
    added: (bucket: string, breaker: CircuitBreakerPolicy) => void,
    removed: (bucket: string, breaker: CircuitBreakerPolicy) => void = () => undefined,
  ): () => void {
    added('', this.service.breaker);
    for (const [bucket, guard] of this.buckets.entries()) added(bucket, guard.breaker);
    this.added.add(added);
    this.removed.add(removed);
    return () => {
      this.added.delete(added);
      this.removed.delete(removed);
    };
  }

  /** Calls `listener` after every request to the origin (each attempt). Returns a remover. */
  onAttempt(listener: (event: AttemptEvent) => void): () => void {
    this.attempts.add(listener);
    return () => this.attempts.delete(listener);
  }

  /**
   * True when an origin call made now would start at once: the bulkhead has a free slot and
   * nobody queued for one. Optional work (a read fetching ahead of its client) asks first.
   */
  hasRoom(): boolean {
    const s = this.bulk.stats();
    return s.queued === 0 && s.active < s.maxConcurrent;
  }

  /** Breaker states by bucket (`''`: the service breaker, once it was used), for metrics and status. */
  breakerStates(): Record<string, string> {
    const states: Record<string, string> = {};
    if (this.service.breaker.stats().calls > 0) states[''] = this.service.breaker.state;
    for (const [bucket, guard] of this.buckets.entries()) states[bucket] = guard.breaker.state;
    return states;
  }

  /**
   * One guarded origin call for one client request (see the class). Resolves with the origin's
   * answer, whatever its status, unless it counts as a failure: then it rejects with a KeelError
   * (the origin's own answer, if there was one, is {@link originAnswerOf} it). Rejects with
   * CIRCUIT_OPEN, BULKHEAD_FULL, TIMEOUT (the deadline) or a network error when keel decided.
   */
  async call(
    bucket: string,
    fn: (signal: AbortSignal | undefined) => Promise<OriginResponse>,
    options: GuardedCall = {},
  ): Promise<OriginResponse> {
    const guard = this.guardOf(bucket);
    const { key, signal } = options;
    const attempts =
      options.retry === false
        ? (s: AbortSignal | undefined) => this.attempt(fn, s)
        : (s: AbortSignal | undefined) =>
            this.retry.execute((ctx) => this.attempt(fn, s === undefined ? undefined : ctx.signal), {
              ...(s === undefined ? {} : { signal: s }),
            });
    const bounded =
      options.deadline === false
        ? attempts
        : (s: AbortSignal | undefined) =>
            this.deadline.execute((ctx) => attempts(ctx.signal), s === undefined ? undefined : { signal: s });
    // A key already failing with a 500 is asked again without counting (while the breaker is closed).
    const uncounted = key !== undefined && guard.failingKeys.has(key) && guard.breaker.state === 'closed';
    // Only a half-open breaker's request waits for the gate: the hot path pays one state read.
    const release =
      this.probeGate !== undefined && !uncounted && guard.breaker.state === 'halfOpen'
        ? await this.admitProbe(guard)
        : undefined;
    let ok = false;
    try {
      const res = uncounted
        ? await bounded(signal)
        : await guard.execute(() => bounded(signal), signal === undefined ? undefined : { signal });
      guard.failingKeys.clear();
      if (options.confirm !== false) this.noteAnswer(bucket, res.status);
      ok = true;
      return res;
    } catch (err) {
      const answer = originAnswerOf(err);
      if (key !== undefined && answer?.status === 500) {
        if (guard.failingKeys.size >= MAX_FAILING_KEYS) guard.failingKeys.clear();
        guard.failingKeys.add(key);
      }
      throw err;
    } finally {
      if (release !== undefined) {
        guard.probing = false;
        release(ok);
      }
    }
  }

  /**
   * With a probe gate, a half-open breaker's request asks it first: undefined when the breaker is
   * not half-open; a release when this request may probe; a CIRCUIT_OPEN rejection (as an open
   * breaker's, no stack) while this or another process probes.
   */
  private async admitProbe(guard: BucketGuard): Promise<((ok: boolean) => void) | undefined> {
    const gate = this.probeGate;
    if (gate === undefined || guard.breaker.state !== 'halfOpen') return undefined;
    if (!guard.probing) {
      guard.probing = true;
      let release: ((ok: boolean) => void) | undefined;
      try {
        release = await gate(guard.bucket);
      } catch {
        release = undefined;
      }
      if (release !== undefined) return release;
      guard.probing = false;
    }
    throw keelError(
      'CIRCUIT_OPEN',
      `${guard.bucket === '' ? 'the origin circuit breaker' : `the origin circuit breaker of bucket ${guard.bucket}`} ` +
        'is half-open and its probe is under way: calls are rejected without reaching the origin',
      { state: 'halfOpen', retryAfterMs: 1_000 },
      { stack: false },
    );
  }

  /** One request to the origin, under the bulkhead; a retryable status is thrown with its answer kept. */
  private attempt(
    fn: (signal: AbortSignal | undefined) => Promise<OriginResponse>,
    signal: AbortSignal | undefined,
  ): Promise<OriginResponse> {
    return this.bulk.execute(
      async () => {
        const began = performance.now();
        let res: OriginResponse;
        try {
          res = await fn(signal);
        } catch (err) {
          this.report('failure', began);
          throw err;
        }
        const failed = res.status >= 400 && classify({ status: res.status }).retryable;
        this.report(failed ? 'failure' : 'success', began);
        if (!failed) return res;
        const body = await readBounded(res.body, MAX_ANSWER_BYTES);
        const err: KeelError = classify({
          status: res.status,
          headers: res.headers,
          message: `origin answered HTTP ${res.status}`,
        });
        answers.set(err, { status: res.status, headers: res.headers, body });
        throw err;
      },
      signal ? { signal } : undefined,
    );
  }

  private report(outcome: AttemptEvent['outcome'], began: number): void {
    if (this.attempts.size === 0) return;
    const event = { outcome, durationMs: performance.now() - began };
    for (const l of this.attempts) l(event);
  }
}

/** Seconds a client should wait before retrying after `err` (Retry-After, breaker, default 1). */
export function retryAfterSeconds(err: KeelError): number {
  const ms = err.details.retryAfterMs;
  if (typeof ms === 'number' && ms > 0) return Math.max(1, Math.ceil(ms / 1000));
  return 1;
}

/** True when the origin told us to slow down (429/SlowDown/throttled). */
export function isThrottle(err: KeelError): boolean {
  return err.code === 'THROTTLED' || err.code === 'RATE_LIMITED' || err.details.s3Code === 'SlowDown';
}

export { keelError };

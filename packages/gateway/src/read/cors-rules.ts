import type { IncomingMessage, ServerResponse } from 'node:http';
import { classify, keelError, exponential, type Backoff } from 'keel';
import type { Clock } from 'keel';
import { s3Error } from '@keel/transfer';
import { corsHeaders, parseCorsConfiguration, type CorsRule } from './cors.js';
import type { OriginClient } from '../origin/origin-client.js';
import type { OriginGuard } from '../origin/origin-guard.js';
import { MAX_ERROR_BODY_BYTES, readAll } from '../origin/relay.js';

/** A GetBucketCors answer larger than this is not a CORS configuration (S3 allows 64 KiB). */
const MAX_CORS_BODY_BYTES = 1024 * 1024;

const NONE: readonly CorsRule[] = Object.freeze([]);

/** Options of {@link BucketCorsRules}. */
export interface BucketCorsRulesOptions {
  /** Asks the origin for a bucket's rules (`[]` when it has none); rejects when it cannot tell. */
  fetch: (bucket: string) => Promise<readonly CorsRule[]>;
  clock: Clock;
  /** Rules learnt are used this long before they are asked for again (ms). */
  ttlMs: number;
  /** Longest a read waits for the rules (default 1 s); it then goes on with the last known (or none). */
  waitMs?: number;
  /** Wait after a failed fetch before the bucket is asked again (default 1 s, doubling per failure). */
  backoffMs?: number;
  /** Longest wait between fetches for a bucket whose origin keeps failing (default 60 s). */
  maxBackoffMs?: number;
  /** Buckets remembered at once (default 1 000; the least recently used are forgotten). */
  maxBuckets?: number;
  /**
   * Whether the origin has shown that `bucket` exists. What is learnt of a bucket it has not is
   * not kept (the next read asks again), so names a client makes up leave nothing behind.
   * Default: every bucket is kept.
   */
  known?: (bucket: string) => boolean;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

interface Entry {
  /** The last rules learnt (`undefined`: none learnt yet). */
  rules: readonly CorsRule[] | undefined;
  /** When `rules` were learnt (clock ms). */
  learntAt: number;
  /** What reads arriving while a fetch runs get: its rules, or the last known once the wait ran out. */
  waiting: Promise<readonly CorsRule[]> | undefined;
  /** The backoff after the next failure (undefined: the first step). */
  backoff: Backoff | undefined;
  /** No new fetch before this time (clock ms), after a failure. */
  retryAt: number;
}

/**
 * Each bucket's CORS rules, as the origin last told them: fetched when a read first needs them,
 * one fetch per bucket at a time (shared by every read waiting for it), kept for `ttlMs`. When
 * the origin cannot tell, the last rules known are used (none when none are known) and the bucket
 * is not asked again before a backoff. A read never waits longer than `waitMs` for them.
 */
export class BucketCorsRules {
  private readonly entries = new Map<string, Entry>();
  private readonly waitMs: number;
  /** Waits after failed fetches of a bucket: backoffMs, doubling up to maxBackoffMs. */
  private readonly backoff: Backoff;
  private readonly maxBuckets: number;
  /** Fetches sent to the origin, and how many of them failed. */
  readonly stats = { fetched: 0, failed: 0 };

  constructor(private readonly options: BucketCorsRulesOptions) {
    this.waitMs = options.waitMs ?? 1_000;
    const backoffMs = options.backoffMs ?? 1_000;
    this.backoff = exponential({
      initialMs: backoffMs,
      maxMs: Math.max(backoffMs, options.maxBackoffMs ?? 60_000),
      jitter: 'none',
    });
    this.maxBuckets = options.maxBuckets ?? 1_000;
  }

  /** Buckets whose rules (or failures) are remembered now. */
  get size(): number {
    return this.entries.size;
  }

  /** The rules of `bucket` to apply now: at once when known and fresh, else after (at most) one fetch. */
  rules(bucket: string): readonly CorsRule[] | Promise<readonly CorsRule[]> {
    const now = this.options.clock.now();
    let entry = this.entries.get(bucket);
    if (entry) {
      // Least recently used first out: a bucket read again moves to the end.
      this.entries.delete(bucket);
      this.entries.set(bucket, entry);
    }
    if (entry?.rules && now - entry.learntAt < this.options.ttlMs) return entry.rules;
    if (entry?.waiting) return entry.waiting;
    if (entry && now < entry.retryAt) return entry.rules ?? NONE;
    if (!entry) {
      entry = { rules: undefined, learntAt: 0, waiting: undefined, backoff: undefined, retryAt: 0 };
      this.entries.set(bucket, entry);
      if (this.entries.size > this.maxBuckets)
        this.entries.delete(this.entries.keys().next().value as string);
    }
    entry.waiting = this.refresh(bucket, entry);
    return entry.waiting;
  }

  /**
   * Forgets what is known of `bucket` (its CORS configuration was just changed or deleted): the
   * next read asks the origin, and a fetch already running does not bring the old rules back.
   */
  invalidate(bucket: string): void {
    this.entries.delete(bucket);
  }

  private refresh(bucket: string, entry: Entry): Promise<readonly CorsRule[]> {
    const { clock } = this.options;
    this.stats.fetched++;
    // A bucket the origin has not shown to exist is not remembered once its fetch is done.
    const forgetUnknown = (): void => {
      if (this.options.known && !this.options.known(bucket) && this.entries.get(bucket) === entry)
        this.entries.delete(bucket);
    };
    const fetched = this.options.fetch(bucket).then(
      (rules) => {
        // An entry invalidated meanwhile is no longer in the map: what it learns is never used.
        entry.waiting = undefined;
        entry.rules = rules;
        entry.learntAt = clock.now();
        entry.backoff = undefined;
        entry.retryAt = 0;
        forgetUnknown();
        return rules;
      },
      (err: unknown) => {
        entry.waiting = undefined;
        this.stats.failed++;
        const step = (entry.backoff ?? this.backoff).next();
        entry.backoff = step.next;
        const backoff = step.delayMs;
        entry.retryAt = clock.now() + backoff;
        const e = classify(err);
        this.options.log?.(
          'warn',
          `could not read the CORS configuration of bucket ${bucket} from the origin: ${e.message}; ` +
            `${entry.rules ? 'using the rules last read' : 'answering reads without CORS headers'}, asking again in ${backoff} ms`,
          { code: e.code },
        );
        forgetUnknown();
        return entry.rules ?? NONE;
      },
    );
    return new Promise((resolve) => {
      const timer = clock.setTimer(this.waitMs, () => resolve(entry.rules ?? NONE));
      void fetched.then((rules) => {
        timer.cancel();
        resolve(rules);
      });
    });
  }
}

/**
 * Reads the CORS configuration of `bucket` from the origin (`GET /<bucket>?cors`, one attempt
 * through the guard: a failure waits for the next fetch after a backoff rather than being retried
 * at once, so a failing `?cors` adds little to the bucket's breaker): its rules, or `[]` when the
 * bucket has none (404 NoSuchCORSConfiguration, which also shows the guard that the bucket
 * exists, or no such bucket).
 * @throws KeelError when the origin fails, refuses (403 …) or answers something unreadable.
 */
export async function fetchBucketCors(
  origin: OriginClient,
  guard: OriginGuard,
  bucket: string,
): Promise<readonly CorsRule[]> {
  const up = await guard.call(
    bucket,
    (signal) => origin.request({ method: 'GET', bucket, rawQuery: 'cors', signal }),
    { retry: false },
  );
  if (up.status === 404) {
    // The bucket exists and has no CORS configuration (not NoSuchBucket): that confirms it.
    const body = await readAll(up.body, MAX_ERROR_BODY_BYTES).catch(() => undefined);
    if (body !== undefined && /<Code>NoSuchCORSConfiguration<\/Code>/.test(body.toString('utf8')))
      guard.adoptBucket(bucket);
    return NONE;
  }
  if (up.status !== 200) throw await s3Error(up, `GetBucketCors ${bucket}`);
  const body = await readAll(up.body, MAX_CORS_BODY_BYTES);
  if (body === undefined)
    throw keelError('INVALID_INPUT', `the origin's GetBucketCors answer for ${bucket} is over 1 MiB`);
  const text = body.toString('utf8');
  return parseCorsConfiguration(text);
}

/**
 * Sets on `res` the CORS headers S3 would add to this read of an object in `bucket`: only when
 * the request carries `Origin` (a read without it waits for nothing), from the bucket's rules.
 * Headers set here stay on whatever answer follows (object, 304 or error).
 */
export async function addCorsHeaders(
  rules: BucketCorsRules,
  req: IncomingMessage,
  res: ServerResponse,
  bucket: string,
): Promise<void> {
  const origin = req.headers.origin;
  if (!origin) return;
  const headers = corsHeaders(await rules.rules(bucket), origin, req.method ?? 'GET');
  if (headers) for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
}

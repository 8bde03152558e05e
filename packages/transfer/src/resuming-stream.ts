import { Readable } from 'node:stream';
import {
  classify,
  keelError,
  type KeelError,
  retry,
  deadlineScheduler,
  systemClock,
  type Clock,
  type DeadlineScheduler,
} from 'keel';
import type { TransferPolicy } from './policy.js';

/** What the request function returns: status, lower-case headers, and the body. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Readable;
}

/**
 * Makes one HTTP GET of the object from byte `start` (to `end`, inclusive, if given), with
 * `If-Match: ifMatch` when set. Must honour `signal`.
 */
export type RangeRequest = (
  range: { start: number; end?: number },
  ifMatch: string | undefined,
  signal: AbortSignal,
) => Promise<RawResponse>;

/** Options of {@link resumingGet}. */
export interface ResumingGetOptions {
  request: RangeRequest;
  /** First byte wanted (default 0). */
  start?: number;
  /** Last byte wanted, inclusive (default: the end of the object). */
  end?: number;
  /** ETag the bytes must have (a resumed download); otherwise the first answer's ETag is pinned. */
  ifMatch?: string;
  /**
   * The policy each (re)opening of the request runs under: a retry, or any policy or pipeline (a
   * retry with a circuit breaker, a retry budget, a timeout…) (default: 5 attempts, exponential
   * backoff).
   */
  policy?: TransferPolicy;
  /** Another name for {@link ResumingGetOptions.policy} (its name when it took only a retry policy). */
  retry?: TransferPolicy;
  /** Fail an attempt whose response headers take longer (default 30 s). */
  firstByteTimeoutMs?: number;
  /** Fail an attempt whose body stalls longer between chunks (default 30 s). */
  idleTimeoutMs?: number;
  /** Clock for the timeouts (default the system clock; a VirtualClock in tests). */
  clock?: Clock;
  /** Give up after this many resumes in a row that brought no new byte (default 5). */
  maxStalledResumes?: number;
  /** Told each time the body broke and is resumed from `offset`. */
  onResume?: (offset: number, error: KeelError) => void;
}

/** The answer: the first response's status and headers, and one uninterrupted body. */
export interface ResumingGetResult {
  status: number;
  headers: Record<string, string>;
  etag: string | undefined;
  /** The object's full size, when the response says (Content-Range or Content-Length of a 200). */
  objectSize: number | undefined;
  /** Bytes the body will deliver. */
  length: number | undefined;
  body: Readable;
  /** How many times the body was resumed so far. */
  resumes(): number;
}

/** Drops a response body; some clients (undici) emit an AbortError on destroy that nobody wants. */
function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

/**
 * Rejects (and aborts `controller`) when `promise` takes longer than `ms`. The deadline lives on
 * the shared scheduler: no timer of its own.
 */
function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  scheduler: DeadlineScheduler,
  controller: AbortController,
  what: string,
): Promise<T> {
  let deadline: { cancel(): void } | undefined;
  const timeout = new Promise<never>((_, reject) => {
    deadline = scheduler.schedule(ms, () => {
      const err = keelError('TIMEOUT', `${what} took longer than ${ms} ms`);
      controller.abort(err);
      reject(err);
    });
  });
  return Promise.race([promise, timeout]).finally(() => deadline?.cancel());
}

/**
 * Destroys `body` with a TIMEOUT error once no chunk has arrived for `ms` while the consumer was
 * waiting for one. One deadline per idle period, not one per chunk: when it falls due after
 * activity, it re-arms for the remainder.
 */
function idleWatchdog(
  body: Readable,
  ms: number,
  clock: Clock,
  scheduler: DeadlineScheduler,
  controller: AbortController,
  what: () => string,
): { touch(): void; pause(): void; stop(): void } {
  let last = clock.now();
  let paused = false;
  let deadline: { cancel(): void } | undefined;
  const arm = (delay: number): void => {
    deadline = scheduler.schedule(delay, () => {
      // Time the consumer spends with a chunk is not the origin stalling.
      const idle = paused ? 0 : clock.now() - last;
      if (idle < ms) {
        arm(ms - idle);
        return;
      }
      const err = keelError('TIMEOUT', `${what()} for longer than ${ms} ms`);
      controller.abort(err);
      body.destroy(err);
    });
  };
  arm(ms);
  return {
    touch: () => {
      last = clock.now();
      paused = false;
    },
    pause: () => {
      paused = true;
    },
    stop: () => deadline?.cancel(),
  };
}

function parseContentRange(
  value: string | undefined,
): { start: number; end: number; size: number | undefined } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value ?? '');
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), size: m[3] === '*' ? undefined : Number(m[3]) };
}

/**
 * GETs an object and, when the body breaks mid-way (reset, stall, premature end), asks again from
 * the next byte with `Range` and `If-Match` (the first answer's ETag) through a retry policy; the
 * consumer sees one uninterrupted, correct stream. If the object changed (412, or another ETag),
 * the body fails with an `OBJECT_CHANGED` KeelError instead of mixing versions.
 * @throws the classified error of the first request when it cannot be made to succeed.
 */
export async function resumingGet(options: ResumingGetOptions): Promise<ResumingGetResult> {
  const policy = options.policy ?? options.retry ?? retry({ maxAttempts: 5 });
  const firstByteMs = options.firstByteTimeoutMs ?? 30_000;
  const idleMs = options.idleTimeoutMs ?? 30_000;
  const maxStalled = options.maxStalledResumes ?? 5;
  const clock = options.clock ?? systemClock;
  const scheduler = deadlineScheduler(clock);
  const start = options.start ?? 0;
  let pinned = options.ifMatch;
  let resumes = 0;

  const open = (offset: number): Promise<{ res: RawResponse; controller: AbortController }> =>
    policy.execute(async () => {
      const controller = new AbortController();
      const res = await withTimeout(
        options.request(
          { start: offset, ...(options.end === undefined ? {} : { end: options.end }) },
          pinned,
          controller.signal,
        ),
        firstByteMs,
        scheduler,
        controller,
        `waiting for response headers from byte ${offset}`,
      );
      const etag = res.headers.etag;
      if (res.status === 412 || (pinned !== undefined && etag !== undefined && etag !== pinned)) {
        discard(res.body);
        throw keelError(
          'OBJECT_CHANGED',
          `the object changed (ETag ${pinned ?? '?'} is now ${etag ?? 'different'}); refusing to mix versions`,
          {
            expectedEtag: pinned,
            etag,
          },
        );
      }
      if (res.status !== 200 && res.status !== 206) {
        discard(res.body);
        throw classify({
          status: res.status,
          headers: res.headers,
          message: `GET from byte ${offset} answered HTTP ${res.status}`,
        });
      }
      return { res, controller };
    });

  const first = await open(start);
  const headers = first.res.headers;
  pinned ??= headers.etag;
  const range = parseContentRange(headers['content-range']);
  const contentLength =
    headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
  const objectSize = range?.size ?? (first.res.status === 200 ? contentLength : undefined);
  const length = range ? range.end - range.start + 1 : contentLength;

  async function* body(): AsyncGenerator<Buffer> {
    let current: { res: RawResponse; controller: AbortController } | undefined = first;
    let received = 0;
    let stalled = 0;
    let skip = 0;
    for (;;) {
      if (!current) {
        const offset = start + received;
        current = await open(offset);
        // A server that ignores Range answers 200 from byte 0: skip what we already have.
        skip = current.res.status === 200 ? offset : 0;
      }
      const { res, controller } = current;
      const before = received;
      let failure: unknown;
      const watchdog = idleWatchdog(
        res.body,
        idleMs,
        clock,
        scheduler,
        controller,
        () => `the body stalled at byte ${start + received}`,
      );
      try {
        for await (const value of res.body as AsyncIterable<Buffer>) {
          watchdog.touch();
          let chunk = value;
          if (skip > 0) {
            const drop = Math.min(skip, chunk.length);
            skip -= drop;
            chunk = chunk.subarray(drop);
            if (chunk.length === 0) continue;
          }
          if (length !== undefined && received + chunk.length > length)
            chunk = chunk.subarray(0, length - received);
          received += chunk.length;
          watchdog.pause();
          yield chunk;
          watchdog.touch();
          if (length !== undefined && received >= length) break;
        }
      } catch (err) {
        failure = err;
      } finally {
        watchdog.stop();
      }
      discard(res.body);
      if (failure === undefined && (length === undefined || received >= length)) return;
      const error =
        failure === undefined
          ? keelError(
              'NETWORK_RESET',
              `the body ended early at byte ${start + received} of ${start + (length ?? 0)}`,
              {},
              { retryable: true },
            )
          : classify(failure);
      if (!error.retryable && error.code !== 'NETWORK_RESET') throw error;
      stalled = received > before ? 0 : stalled + 1;
      if (stalled >= maxStalled) {
        throw keelError(
          'RETRIES_EXHAUSTED',
          `gave up after ${maxStalled} resumes without progress at byte ${start + received}`,
          {},
          { cause: error },
        );
      }
      resumes++;
      options.onResume?.(start + received, error);
      current = undefined;
    }
  }

  return {
    status: first.res.status,
    headers,
    etag: pinned,
    objectSize,
    length,
    body: Readable.from(body(), { objectMode: false }),
    resumes: () => resumes,
  };
}

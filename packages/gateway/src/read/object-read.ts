import type { IncomingMessage, ServerResponse } from 'node:http';
import { classify, type KeelError } from 'keel';
import type { ObjectIdentity, RangeCache } from 'keel/cache';
import { evaluateConditions } from './conditional.js';
import { resolveObject } from './object-lookup.js';
import { isThrottle, retryAfterSeconds } from '../origin/origin-guard.js';
import { evaluateRange } from './range.js';
import { safe, type ReadContext } from './read-context.js';
import { relayAnswer } from '../origin/relay.js';
import { S3Errors, sendS3Error, type S3ErrorSpec } from '../s3/s3-error.js';
import { SliceReadError } from './slice-fill.js';
import { fillKey, openFill, streamSlice } from './slice-stream.js';

export { revalidationStats } from './object-lookup.js';
export { invalidateReads, type ReadContext } from './read-context.js';

/** What a read was: the `x-keel-cache` header. */
export type CacheOutcome = 'HIT' | 'MISS' | 'PARTIAL' | 'STALE' | 'BYPASS';

/** Cached ranges up to this size are read into memory and verified whole before the answer starts. */
const BUFFERED_HIT_BYTES = 2 * 1024 * 1024;

/**
 * Serves GET or HEAD of one object from the cache and the origin: revalidation, conditionals,
 * ranges, slice by slice with single-flight fills, stale serving when the origin fails.
 */
export async function serveObject(
  ctx: ReadContext,
  req: IncomingMessage,
  res: ServerResponse,
  id: ObjectIdentity,
  rawQuery: string,
  requestId: string,
  attempt = 0,
): Promise<CacheOutcome | 'ERROR' | 'PASS'> {
  const method = req.method ?? 'GET';
  const base = { 'x-request-id': requestId, 'x-amz-request-id': requestId };
  /** Answers the S3 error `spec` with the request's ids (and `headers`) added to its headers. */
  const fail = (spec: S3ErrorSpec, headers: Record<string, string> = {}): 'ERROR' => {
    sendS3Error(res, method, { ...spec, headers: { ...spec.headers, ...base, ...headers } }, requestId);
    return 'ERROR';
  };
  const bypass = ctx.cache === undefined || ctx.cache.bypassed;
  const rangeHeader = req.headers.range;
  const firstMatch = rangeHeader === undefined ? undefined : /^bytes=(\d+)-(\d*)$/.exec(rangeHeader.trim());
  const firstByte = rangeHeader === undefined ? 0 : firstMatch ? Number(firstMatch[1]) : undefined;
  const plainGet =
    method === 'GET' &&
    firstByte !== undefined &&
    req.headers['if-match'] === undefined &&
    req.headers['if-none-match'] === undefined &&
    req.headers['if-modified-since'] === undefined &&
    req.headers['if-unmodified-since'] === undefined;
  const resolved = await resolveObject(ctx, id, rawQuery, method === 'GET' ? firstByte : undefined, plainGet);
  if ('error' in resolved) {
    const err = resolved.error;
    return fail(originUnavailable(err, `the origin is unavailable (${err.code}); please retry`), {
      'x-keel-cache': 'MISS',
    });
  }
  if ('passthrough' in resolved) {
    // Not an object we can serve (404, 403 …): ask the origin the client's own question.
    try {
      const up = await ctx.guard.once(id.bucket, (signal) =>
        ctx.origin.request({
          method,
          bucket: id.bucket,
          key: id.key,
          rawQuery,
          headers: pick(req.headers, [
            'range',
            'if-match',
            'if-none-match',
            'if-modified-since',
            'if-unmodified-since',
          ]),
          signal,
        }),
      );
      await relayAnswer(res, method, up, requestId);
      return 'PASS';
    } catch (err) {
      return fail(S3Errors.serviceUnavailable(retryAfterSeconds(classify(err))));
    }
  }
  const { meta, stale } = resolved;
  const objectHeaders: Record<string, string> = {
    ...base,
    etag: meta.etag,
    'accept-ranges': 'bytes',
    ...(meta.lastModified === undefined ? {} : { 'last-modified': meta.lastModified }),
    ...meta.headers,
  };
  const condition = evaluateConditions(
    {
      'if-match': req.headers['if-match'],
      'if-none-match': req.headers['if-none-match'],
      'if-modified-since': req.headers['if-modified-since'],
      'if-unmodified-since': req.headers['if-unmodified-since'],
    },
    meta,
  );
  if (condition === 'not-modified') {
    res.writeHead(304, { ...objectHeaders, 'x-keel-cache': stale ? 'STALE' : 'HIT' });
    res.end();
    return stale ? 'STALE' : 'HIT';
  }
  if (condition === 'precondition-failed') return fail(S3Errors.preconditionFailed());
  const range = evaluateRange(req.headers.range, meta.size);
  if (range.kind === 'unsatisfiable') return fail(S3Errors.invalidRange(meta.size));
  const start = range.kind === 'partial' ? range.start : 0;
  const end = range.kind === 'partial' ? range.end : meta.size - 1;
  const status = range.kind === 'partial' ? 206 : 200;
  const answerHeaders = (outcome: CacheOutcome): Record<string, string> => ({
    ...objectHeaders,
    'content-length': String(end - start + 1),
    ...(meta.contentType === undefined ? {} : { 'content-type': meta.contentType }),
    ...(status === 206 ? { 'content-range': `bytes ${start}-${end}/${meta.size}` } : {}),
    'x-keel-cache': outcome,
  });
  if (method === 'HEAD') {
    // Answered from the object's metadata alone: a hit when that came from the cache.
    const outcome: CacheOutcome = bypass ? 'BYPASS' : !('version' in meta) ? 'MISS' : stale ? 'STALE' : 'HIT';
    res.writeHead(status, answerHeaders(outcome));
    res.end();
    return outcome;
  }
  const cached = new Set(meta.slices.map((s) => s.index));
  const needed: number[] = [];
  for (
    let i = Math.floor(start / meta.sliceBytes);
    end >= start && i <= Math.floor(end / meta.sliceBytes);
    i++
  )
    needed.push(i);
  if (ctx.cache && end >= start && end - start < BUFFERED_HIT_BYTES) {
    if (needed.every((i) => cached.has(i))) {
      const cache = ctx.cache;
      // A hit that fits in memory is read and verified whole before a byte goes out.
      const hit = await safe(ctx, 'read', () =>
        cache.readBuffer(id, start, end, 'version' in meta ? { meta } : {}),
      );
      if (hit?.hit && hit.meta.etag === meta.etag) {
        const outcome: CacheOutcome = bypass ? 'BYPASS' : stale ? 'STALE' : 'HIT';
        res.writeHead(status, answerHeaders(outcome));
        const n = hit.bytes.length;
        // The cache may reuse the memory once the bytes are with the OS, not before.
        res.end(hit.bytes, hit.release);
        ctx.onBytes('cache', n);
        return outcome;
      }
      // A fault (the cache has repaired it): what is still cached of this version decides.
      const now = await safe(ctx, 'metadata read', () => cache.getMeta(id));
      for (const i of needed) cached.delete(i);
      if (now?.etag === meta.etag) for (const sl of now.slices) cached.add(sl.index);
    }
  }
  const missing = needed.filter((i) => !cached.has(i));
  const outcome: CacheOutcome = bypass
    ? 'BYPASS'
    : needed.length === 0 && !('version' in meta)
      ? 'MISS' // an empty object, just asked of the origin
      : missing.length === 0
        ? stale
          ? 'STALE'
          : 'HIT'
        : missing.length === needed.length
          ? 'MISS'
          : 'PARTIAL';
  if (stale && missing.length > 0)
    return fail(
      S3Errors.serviceUnavailable(1, 'the origin is unavailable and the range is not cached; please retry'),
      { 'x-keel-cache': 'STALE' },
    );
  const headers = answerHeaders(outcome);
  if (end < start) {
    res.writeHead(status, headers);
    res.end();
    return outcome;
  }
  // Open the first missing slice before answering, so a changed object is noticed before a byte goes out.
  const first = needed[0] as number;
  if (!cached.has(first) && ctx.cache && !ctx.fills.has(fillKey(id, meta.etag, first))) {
    const now = await safe(ctx, 'metadata read', () => (ctx.cache as RangeCache).getMeta(id));
    if (now?.etag === meta.etag) for (const sl of now.slices) cached.add(sl.index);
  }
  if (!cached.has(first)) {
    try {
      await openFill(ctx, id, rawQuery, meta, first);
    } catch (err) {
      const e = classify(err);
      if (e.code === 'OBJECT_CHANGED' && attempt === 0) {
        if (ctx.cache) await safe(ctx, 'invalidate', () => (ctx.cache as RangeCache).invalidate(id));
        return serveObject(ctx, req, res, id, rawQuery, requestId, 1);
      }
      return fail(originUnavailable(e), { 'x-keel-cache': outcome });
    }
  }
  res.writeHead(status, headers);
  try {
    for (const index of needed) {
      if (res.destroyed) break;
      const a = Math.max(start, index * meta.sliceBytes);
      const b = Math.min(end, (index + 1) * meta.sliceBytes - 1);
      await streamSlice(ctx, res, id, rawQuery, meta, index, a, b, cached.has(index));
    }
    res.end();
  } catch (err) {
    const e = classify(err instanceof SliceReadError ? err.error : err);
    ctx.log('error', `read of ${id.bucket}/${id.key} broke after the headers went out: ${e.message}`, {
      requestId,
    });
    if (e.code === 'OBJECT_CHANGED' && ctx.cache)
      await safe(ctx, 'invalidate', () => (ctx.cache as RangeCache).invalidate(id));
    res.destroy();
  }
  return outcome;
}

/** The answer to a read the origin failed: 503 SlowDown when it throttled, else ServiceUnavailable. */
function originUnavailable(err: KeelError, message?: string): S3ErrorSpec {
  return isThrottle(err)
    ? S3Errors.slowDown(retryAfterSeconds(err))
    : S3Errors.serviceUnavailable(retryAfterSeconds(err), message);
}

function pick(headers: IncomingMessage['headers'], names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = headers[n];
    if (typeof v === 'string') out[n] = v;
  }
  return out;
}

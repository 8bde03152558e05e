import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { classify, isKeelError, type KeelError } from '../errors/index.js';
import {
  identityHash,
  type CacheMeta,
  type ObjectIdentity,
  type ObjectInfo,
  type RangeCache,
} from '../cache/index.js';
import type { Clock } from '../time/index.js';
import { resumingGet } from '../transfer/index.js';
import { evaluateConditions } from './conditional.js';
import type { OriginClient, OriginResponse } from './origin-client.js';
import { isThrottle, retryAfterSeconds, type OriginGuard } from './origin-guard.js';
import { evaluateRange } from './range.js';
import { S3Errors, sendS3Error } from './s3-error.js';
import { relayAnswer } from './relay.js';
import { Revalidator, type RevalidatorOptions } from './revalidation.js';
import { SliceFill, SliceReadError } from './slice-fill.js';

/** What a read was: the `x-keel-cache` header. */
export type CacheOutcome = 'HIT' | 'MISS' | 'PARTIAL' | 'STALE' | 'BYPASS';

/** Response headers of an object that are replayed from the origin as they were. */
const REPLAYED =
  /^(x-amz-meta-.*|cache-control|content-encoding|content-disposition|content-language|expires|x-amz-version-id|x-amz-storage-class|x-amz-server-side-encryption.*|x-amz-tagging-count|x-amz-website-redirect-location|x-amz-restore|x-amz-object-lock-.*|x-amz-replication-status|x-amz-expiration)$/;

/** Cached ranges up to this size are read into memory and verified whole before the answer starts. */
const BUFFERED_HIT_BYTES = 2 * 1024 * 1024;

/** Everything the read path needs from the gateway. */
export interface ReadContext {
  origin: OriginClient;
  guard: OriginGuard;
  cache: RangeCache | undefined;
  clock: Clock;
  /** Serve cached metadata this long before revalidating (ms). */
  ttlMs: number;
  /** Slice size used when the cache is off. */
  sliceBytes: number;
  fills: Map<string, SliceFill>;
  /** Origin lookups of uncached objects in flight, shared by concurrent requests for one object. */
  heads: Map<string, Promise<Lookup>>;
  /** Revalidation timeout and backoff (defaults: see {@link RevalidatorOptions}). */
  revalidation?: RevalidatorOptions;
  /** Objects (by hash) this process looked up at the origin (created on first use). */
  lookedUp?: Set<string>;
  /**
   * Per object (by hash), how many writes through the gateway changed it (created on first use).
   * What an origin answer obtained before a write brings back is not cached after it.
   */
  generations?: Map<string, number>;
  /** Revalidations in flight and backing off, per object (created on first use). */
  revalidator?: Revalidator<Resolved | { passthrough: true }>;
  /** Metadata writes in flight by object hash; slice writes of the object wait for them. */
  metaWrites: Map<string, Promise<unknown>>;
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
  onBytes(source: 'cache' | 'origin', n: number): void;
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

/** The identity plus the object info the read is served from. */
export interface Resolved {
  meta: CacheMeta | (ObjectInfo & { sliceBytes: number; slices: { index: number }[] });
  stale: boolean;
}

function infoFrom(headers: Record<string, string>): ObjectInfo | undefined {
  const etag = headers.etag;
  const range = headers['content-range'];
  const size = range ? Number(range.split('/')[1]) : Number(headers['content-length']);
  if (etag === undefined || !Number.isSafeInteger(size)) return undefined;
  const replay: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (REPLAYED.test(k)) replay[k] = v;
  return {
    etag,
    size,
    ...(headers['last-modified'] === undefined ? {} : { lastModified: headers['last-modified'] }),
    ...(headers['content-type'] === undefined ? {} : { contentType: headers['content-type'] }),
    headers: replay,
  };
}

async function safe<T>(ctx: ReadContext, what: string, fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    ctx.log('warn', `cache ${what} failed; serving from the origin`, { error: classify(err).message });
    return undefined;
  }
}

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
    const spec = isThrottle(err)
      ? S3Errors.slowDown(retryAfterSeconds(err))
      : S3Errors.serviceUnavailable(
          retryAfterSeconds(err),
          `the origin is unavailable (${err.code}); please retry`,
        );
    sendS3Error(
      res,
      method,
      { ...spec, headers: { ...spec.headers, ...base, 'x-keel-cache': 'MISS' } },
      requestId,
    );
    return 'ERROR';
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
      const e = classify(err);
      sendS3Error(
        res,
        method,
        {
          ...S3Errors.serviceUnavailable(retryAfterSeconds(e)),
          headers: { 'retry-after': String(retryAfterSeconds(e)), ...base },
        },
        requestId,
      );
      return 'ERROR';
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
  if (condition === 'precondition-failed') {
    sendS3Error(res, method, { ...S3Errors.preconditionFailed(), headers: { ...base } }, requestId);
    return 'ERROR';
  }
  const range = evaluateRange(req.headers.range, meta.size);
  if (range.kind === 'unsatisfiable') {
    const spec = S3Errors.invalidRange(meta.size);
    sendS3Error(res, method, { ...spec, headers: { ...spec.headers, ...base } }, requestId);
    return 'ERROR';
  }
  const start = range.kind === 'partial' ? range.start : 0;
  const end = range.kind === 'partial' ? range.end : meta.size - 1;
  const cached = new Set(meta.slices.map((s) => s.index));
  const needed: number[] = [];
  for (
    let i = Math.floor(start / meta.sliceBytes);
    end >= start && i <= Math.floor(end / meta.sliceBytes);
    i++
  )
    needed.push(i);
  if (method === 'GET' && ctx.cache && end >= start && end - start < BUFFERED_HIT_BYTES) {
    if (needed.every((i) => cached.has(i))) {
      const cache = ctx.cache;
      // A hit that fits in memory is read and verified whole before a byte goes out.
      const hit = await safe(ctx, 'read', () =>
        cache.readBuffer(id, start, end, 'version' in meta ? { meta } : {}),
      );
      if (hit?.hit && hit.meta.etag === meta.etag) {
        const outcome: CacheOutcome = bypass ? 'BYPASS' : stale ? 'STALE' : 'HIT';
        res.writeHead(range.kind === 'partial' ? 206 : 200, {
          ...objectHeaders,
          'content-length': String(hit.bytes.length),
          ...(meta.contentType === undefined ? {} : { 'content-type': meta.contentType }),
          ...(range.kind === 'partial' ? { 'content-range': `bytes ${start}-${end}/${meta.size}` } : {}),
          'x-keel-cache': outcome,
        });
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
  let outcome: CacheOutcome = bypass
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
  if (stale && missing.length > 0) {
    const spec = S3Errors.serviceUnavailable(
      1,
      'the origin is unavailable and the range is not cached; please retry',
    );
    sendS3Error(
      res,
      method,
      { ...spec, headers: { ...spec.headers, ...base, 'x-keel-cache': 'STALE' } },
      requestId,
    );
    return 'ERROR';
  }
  if (bypass) outcome = 'BYPASS';
  const status = range.kind === 'partial' ? 206 : 200;
  const headers: Record<string, string> = {
    ...objectHeaders,
    'content-length': String(end - start + 1),
    ...(meta.contentType === undefined ? {} : { 'content-type': meta.contentType }),
    ...(status === 206 ? { 'content-range': `bytes ${start}-${end}/${meta.size}` } : {}),
    'x-keel-cache': outcome,
  };
  if (method === 'HEAD' || end < start) {
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
      const spec = isThrottle(e)
        ? S3Errors.slowDown(retryAfterSeconds(e))
        : S3Errors.serviceUnavailable(retryAfterSeconds(e));
      sendS3Error(
        res,
        method,
        { ...spec, headers: { ...spec.headers, ...base, 'x-keel-cache': outcome } },
        requestId,
      );
      return 'ERROR';
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

function pick(headers: IncomingMessage['headers'], names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = headers[n];
    if (typeof v === 'string') out[n] = v;
  }
  return out;
}

function write(res: ServerResponse, chunk: Buffer): Promise<void> | undefined {
  if (res.write(chunk) || res.destroyed) return undefined;
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

async function streamSlice(
  ctx: ReadContext,
  res: ServerResponse,
  id: ObjectIdentity,
  rawQuery: string,
  meta: Resolved['meta'],
  index: number,
  a: number,
  b: number,
  isCached: boolean,
): Promise<void> {
  let pos = a;
  // A slice missing when the request began may have been filled since (by another request).
  const mayBeCached = isCached || (ctx.cache !== undefined && !ctx.fills.has(fillKey(id, meta.etag, index)));
  if (mayBeCached && ctx.cache) {
    const hit = await safe(ctx, 'read', () =>
      (ctx.cache as RangeCache).read(id, a, b, 'version' in meta ? { meta } : {}),
    );
    if (hit?.hit && hit.meta.etag !== meta.etag) {
      // The cache holds another version (its new metadata is still being written): never mix.
      hit.stream.destroy();
    } else if (hit?.hit) {
      try {
        for await (const chunk of hit.stream as AsyncIterable<Buffer>) {
          if (res.destroyed) {
            hit.stream.destroy();
            return;
          }
          await write(res, chunk);
          pos += chunk.length;
          ctx.onBytes('cache', chunk.length);
        }
        return;
      } catch (err) {
        // A slice failed verification mid-read (already repaired by the cache): the origin continues.
        ctx.log(
          'warn',
          `cached slice of ${id.bucket}/${id.key} failed mid-read at ${pos}; continuing from the origin`,
          {
            error: classify(err).message,
          },
        );
      }
    }
  }
  const fill = startFill(ctx, id, rawQuery, meta, index);
  try {
    for await (const chunk of fill.read(pos, b)) {
      if (res.destroyed) return;
      await write(res, chunk);
      pos += chunk.length;
      ctx.onBytes('origin', chunk.length);
    }
    return;
  } catch (err) {
    if (!(err instanceof SliceReadError) || err.error.code === 'OBJECT_CHANGED') throw err;
    pos = err.offset;
    ctx.log(
      'info',
      `shared fetch of slice ${index} of ${id.bucket}/${id.key} failed at byte ${pos}; fetching the rest for this request`,
      { error: err.error.message },
    );
  }
  // The shared fetch failed: fetch the rest of this slice for ourselves.
  const own = await openRange(ctx, id, rawQuery, meta.etag, pos, b);
  for await (const chunk of own.body as AsyncIterable<Buffer>) {
    if (res.destroyed) {
      own.body.destroy();
      return;
    }
    await write(res, chunk);
    ctx.onBytes('origin', chunk.length);
  }
}

function openRange(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  etag: string,
  start: number,
  end: number,
) {
  return resumingGet({
    start,
    end,
    ifMatch: etag,
    retry: ctx.guard.retry,
    firstByteTimeoutMs: ctx.firstByteTimeoutMs,
    idleTimeoutMs: ctx.idleTimeoutMs,
    request: (range, ifMatch, signal) =>
      ctx.guard.once(
        id.bucket,
        (s) =>
          ctx.origin.request({
            method: 'GET',
            bucket: id.bucket,
            key: id.key,
            rawQuery,
            headers: {
              range: `bytes=${range.start}-${range.end ?? ''}`,
              ...(ifMatch === undefined ? {} : { 'if-match': ifMatch }),
            },
            signal: AbortSignal.any([s, signal]),
          }),
        signal,
      ),
  });
}

/**
 * Waits until the origin answered for slice `index` (the shared fill's, started if none runs).
 * A request that joined a fill someone else started and that failed tries once more for itself
 * (joining a newer fill if another waiter got there first), unless the object changed or the
 * breaker is open.
 * @throws the fill's KeelError when the origin did not answer.
 */
async function openFill(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  meta: Resolved['meta'],
  index: number,
): Promise<void> {
  const joined = ctx.fills.has(fillKey(id, meta.etag, index));
  try {
    await startFill(ctx, id, rawQuery, meta, index).opened;
  } catch (err) {
    const e = classify(err);
    if (!joined || e.code === 'OBJECT_CHANGED' || e.code === 'CIRCUIT_OPEN') throw e;
    ctx.log(
      'info',
      `shared fetch of slice ${index} of ${id.bucket}/${id.key} failed; fetching it for this request`,
      { error: e.message },
    );
    await startFill(ctx, id, rawQuery, meta, index).opened;
  }
}

/** The key of the shared fill of slice `index` of this version of the object. */
function fillKey(id: ObjectIdentity, etag: string, index: number): string {
  return `${identityHash(id)}:${etag}:${index}`;
}

/** The shared fill of slice `index` (started if none is running), from `initial` when the origin already answered. */
function startFill(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  meta: Resolved['meta'],
  index: number,
  initial?: OriginResponse,
  gen = generation(ctx, identityHash(id)),
): SliceFill {
  const key = fillKey(id, meta.etag, index);
  const existing = ctx.fills.get(key);
  if (existing) return existing;
  const start = index * meta.sliceBytes;
  const end = Math.min(meta.size, start + meta.sliceBytes) - 1;
  const fill = new SliceFill(start, end - start + 1);
  ctx.fills.set(key, fill);
  // An answer already in hand was checked by the caller (206 of this slice, or 200 of all of it):
  // readers need not wait for the resuming stream around it to say so.
  if (initial) fill.markOpened();
  void (async () => {
    let body: Readable | undefined;
    try {
      // The answer in hand is read as it is (its idle timeout is the connection pool's); only
      // when it breaks does a resuming request take over from the byte reached.
      const received = initial ? await drain(initial.body, fill) : 0;
      if (received < fill.length) {
        const got = await openRange(ctx, id, rawQuery, meta.etag, start + received, end);
        body = got.body;
        fill.markOpened();
        for await (const chunk of got.body as AsyncIterable<Buffer>) fill.push(chunk);
      }
      fill.finish();
    } catch (err) {
      body?.destroy();
      fill.fail(err);
      ctx.fills.delete(key);
      return;
    }
    // The fill stays findable until the slice is in the cache, so no request refetches it meanwhile.
    const cache = ctx.cache;
    if (cache && !cache.bypassed && meta.sliceBytes === cache.sliceBytes) {
      await ctx.metaWrites.get(identityHash(id));
      const result = await writeUnlessChanged(ctx, id, gen, () =>
        safe(ctx, 'write', () => cache.writeSlice(id, index, fill.bytes(), meta.etag)),
      );
      if (result && !result.stored && result.reason !== 'bypass')
        ctx.log('warn', `slice ${index} of ${id.bucket}/${id.key} not cached: ${result.message}`);
    }
    ctx.fills.delete(key);
  })();
  return fill;
}

/**
 * Pushes `body` into `fill` up to the slice's length; resolves with the bytes pushed, fewer than
 * the length when the body broke or ended early (the caller resumes from there).
 */
async function drain(body: Readable, fill: SliceFill): Promise<number> {
  let received = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      const piece = received + chunk.length > fill.length ? chunk.subarray(0, fill.length - received) : chunk;
      fill.push(piece);
      received += piece.length;
      if (received >= fill.length) break;
    }
  } catch {
    // Broken mid-way: the resuming request continues from `received`.
  }
  if (received < fill.length) discard(body);
  return received;
}

/** What the origin said about an object: serve it, pass the request through, or fail. */
export type Lookup = Resolved | { passthrough: true } | { error: KeelError };

/** Objects remembered as asked about (beyond this, the set starts again). */
const MAX_LOOKED_UP = 100_000;

function lookedUp(ctx: ReadContext): Set<string> {
  ctx.lookedUp ??= new Set();
  return ctx.lookedUp;
}

function generation(ctx: ReadContext, hash: string): number {
  return ctx.generations?.get(hash) ?? 0;
}

/**
 * A write through the gateway changed `id`: reads that start from now on neither join an origin
 * lookup that began before it nor see what such a lookup, a fill or a revalidation brings back
 * (it is not cached, or dropped again if it was being written). Call before invalidating the cache.
 */
export function invalidateReads(ctx: ReadContext, id: ObjectIdentity): void {
  const hash = identityHash(id);
  ctx.generations ??= new Map();
  // Bounded: a hash whose count is dropped only loses protection against a write long past.
  if (ctx.generations.size >= MAX_LOOKED_UP && !ctx.generations.has(hash)) ctx.generations.clear();
  ctx.generations.set(hash, generation(ctx, hash) + 1);
  ctx.heads.delete(hash);
}

/**
 * Runs a cache write of what was learned at generation `gen`: skipped when a write through the
 * gateway came since, and undone when one came while it ran.
 */
async function writeUnlessChanged<T>(
  ctx: ReadContext,
  id: ObjectIdentity,
  gen: number,
  write: () => Promise<T>,
): Promise<T | undefined> {
  const hash = identityHash(id);
  if (generation(ctx, hash) !== gen) return undefined;
  const result = await write();
  if (generation(ctx, hash) !== gen && ctx.cache) {
    const cache = ctx.cache;
    await safe(ctx, 'invalidate', () => cache.invalidate(id));
  }
  return result;
}

/** Revalidation counts so far (zeros before the first). */
export function revalidationStats(ctx: ReadContext): {
  started: number;
  failed: number;
  servedStaleWithoutAsking: number;
} {
  return ctx.revalidator?.stats ?? { started: 0, failed: 0, servedStaleWithoutAsking: 0 };
}

function revalidatorOf(ctx: ReadContext): Revalidator<Resolved | { passthrough: true }> {
  ctx.revalidator ??= new Revalidator(ctx.clock, ctx.revalidation);
  return ctx.revalidator;
}

/** Finds the object's info: cached and fresh, revalidated, or asked of the origin. */
async function resolveObject(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  firstByte: number | undefined,
  plainGet = false,
): Promise<Lookup> {
  const cache = ctx.cache;
  const hash = identityHash(id);
  // A plain GET of an object with no cached slice is a miss whatever its metadata says: straight
  // to the origin, without reading the metadata first. Not for an object this process already
  // asked about: its fill may be under way, and its metadata is in memory (no system call).
  const certainMiss = cache !== undefined && plainGet && !cache.mayHaveSlices(id) && !lookedUp(ctx).has(hash);
  // From memory when remembered: the read that follows checks meta.json on the cache's own thread.
  const cachedMeta =
    cache && !certainMiss
      ? await safe(ctx, 'metadata read', () => cache.getMeta(id, { lazy: true }))
      : undefined;
  if (cachedMeta && ctx.clock.now() - cachedMeta.cachedAt < ctx.ttlMs)
    return { meta: cachedMeta, stale: false };
  if (cachedMeta) {
    // One revalidation per object, shared and bounded; the cached copy when it cannot confirm.
    const outcome = await revalidatorOf(ctx).revalidate(
      hash,
      cachedMeta,
      (signal) => revalidate(ctx, id, rawQuery, cachedMeta, signal),
      () => ctx.metaWrites.get(hash),
    );
    return outcome.state === 'fresh' ? outcome.value : { meta: cachedMeta, stale: true };
  }
  let flight = ctx.heads.get(hash);
  if (!flight) {
    const asked = lookedUp(ctx);
    if (asked.size >= MAX_LOOKED_UP) asked.clear();
    asked.add(hash);
    flight = lookupOrigin(ctx, id, rawQuery, firstByte);
    ctx.heads.set(hash, flight);
    // Shared until the metadata is on disk, so later requests do not ask the origin again meanwhile.
    void flight
      .finally(async () => {
        await ctx.metaWrites.get(hash);
        ctx.heads.delete(hash);
      })
      .catch(() => undefined);
  }
  return flight;
}

/**
 * Asks the origin whether the cached copy is current (HEAD with If-None-Match). A 304 refreshes
 * it; another ETag replaces the metadata, which drops every slice of the old version.
 * @throws when the origin fails or `signal` aborts (the caller serves the cached copy stale).
 */
async function revalidate(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  cachedMeta: CacheMeta,
  signal: AbortSignal,
): Promise<Resolved | { passthrough: true }> {
  const gen = generation(ctx, identityHash(id));
  let up: OriginResponse;
  try {
    up = await ctx.guard.call(
      id.bucket,
      (s) =>
        ctx.origin.request({
          method: 'HEAD',
          bucket: id.bucket,
          key: id.key,
          rawQuery,
          headers: { 'if-none-match': cachedMeta.etag },
          signal: AbortSignal.any([s, signal]),
        }),
      signal,
    );
  } catch (err) {
    const e = classify(signal.aborted ? (signal.reason ?? err) : err);
    ctx.log('warn', `could not revalidate ${id.bucket}/${id.key} with the origin; serving it stale`, {
      error: e.message,
      code: e.code,
    });
    throw e;
  }
  discard(up.body);
  const info = up.status === 200 ? infoFrom(up.headers) : undefined;
  if (up.status === 304 || (info && info.etag === cachedMeta.etag && info.size === cachedMeta.size)) {
    const refreshed = { ...cachedMeta, cachedAt: ctx.clock.now() };
    storeMeta(ctx, id, refreshed, gen);
    return { meta: refreshed, stale: false };
  }
  if (!info) {
    if (ctx.cache && (up.status === 404 || up.status === 403)) {
      const cache = ctx.cache;
      await safe(ctx, 'invalidate', () => cache.invalidate(id));
    }
    return { passthrough: true };
  }
  ctx.log('info', `${id.bucket}/${id.key} changed at the origin; dropping its cached slices`, {
    etag: info.etag,
    was: cachedMeta.etag,
  });
  storeMeta(ctx, id, info, gen);
  return { meta: { ...info, sliceBytes: ctx.sliceBytes, slices: [] }, stale: false };
}

/** The first origin request for an uncached object, shared by concurrent requests for it. */
async function lookupOrigin(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  firstByte: number | undefined,
): Promise<Lookup> {
  const gen = generation(ctx, identityHash(id));
  // A miss with a known first byte asks for that slice straight away: its answer carries the
  // object's ETag, size and headers, so the client's first byte costs one origin round trip.
  const sliceIndex = firstByte !== undefined ? Math.floor(firstByte / ctx.sliceBytes) : undefined;
  const sliceStart = sliceIndex === undefined ? 0 : sliceIndex * ctx.sliceBytes;
  let up: OriginResponse;
  try {
    up = await ctx.guard.call(id.bucket, (signal) =>
      ctx.origin.request({
        method: sliceIndex === undefined ? 'HEAD' : 'GET',
        bucket: id.bucket,
        key: id.key,
        rawQuery,
        headers:
          sliceIndex === undefined ? {} : { range: `bytes=${sliceStart}-${sliceStart + ctx.sliceBytes - 1}` },
        signal,
      }),
    );
  } catch (err) {
    return { error: isKeelError(err) ? err : classify(err) };
  }
  if (up.status === 416 && sliceIndex === 0) {
    // S3 answers any range of an empty object with 416: ask what the object is without one.
    discard(up.body);
    return lookupOrigin(ctx, id, rawQuery, undefined);
  }
  const usable = up.status === 206 || (up.status === 200 && (sliceIndex ?? 0) === 0);
  const info = usable ? infoFrom(up.headers) : undefined;
  if (!info) {
    discard(up.body);
    return { passthrough: true };
  }
  const meta = { ...info, sliceBytes: ctx.sliceBytes, slices: [] };
  storeMeta(ctx, id, info, gen);
  if (info.size === 0) {
    // Nothing to fetch; do not wait for a body (some S3 implementations announce a byte they never send).
    up.body.on('error', () => undefined);
    up.body.destroy();
    return { meta, stale: false };
  }
  const bodyIsSlice =
    sliceIndex !== undefined &&
    (up.status === 206
      ? up.headers['content-range']?.startsWith(`bytes ${sliceStart}-`) === true
      : info.size <= ctx.sliceBytes);
  if (bodyIsSlice && !ctx.fills.has(fillKey(id, info.etag, sliceIndex)))
    startFill(ctx, id, rawQuery, meta, sliceIndex, up, gen);
  else {
    // Someone is already fetching this slice: stop this transfer rather than read it to the end.
    up.body.on('error', () => undefined);
    up.body.destroy();
  }
  return { meta, stale: false };
}

function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.resume();
}

/** Writes the object's metadata in the background; slice writes wait for it. */
function storeMeta(ctx: ReadContext, id: ObjectIdentity, info: ObjectInfo, gen: number): void {
  const cache = ctx.cache;
  if (!cache || cache.bypassed) return;
  const hash = identityHash(id);
  // Written once the answer being prepared had its turn, so its first byte does not wait behind
  // the write's work; the fill's slice write waits for it (through metaWrites) all the same.
  const write = new Promise<void>((resolve) => setImmediate(resolve)).then(() =>
    writeUnlessChanged(ctx, id, gen, () =>
      safe(ctx, 'metadata write', () =>
        cache.putMeta(id, {
          etag: info.etag,
          size: info.size,
          ...(info.lastModified === undefined ? {} : { lastModified: info.lastModified }),
          ...(info.contentType === undefined ? {} : { contentType: info.contentType }),
          ...(info.headers === undefined ? {} : { headers: info.headers }),
        }),
      ),
    ),
  );
  ctx.metaWrites.set(hash, write);
  void write.finally(() => {
    if (ctx.metaWrites.get(hash) === write) ctx.metaWrites.delete(hash);
  });
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { classify, type KeelError } from 'keel';
import { identityHash, type CacheMeta, type ObjectIdentity, type RangeCache } from 'keel/cache';
import { evaluateConditions } from './conditional.js';
import { resolveObject } from './object-lookup.js';
import { isThrottle, originAnswerOf, retryAfterSeconds } from '../origin/origin-guard.js';
import { evaluateRange } from './range.js';
import { generation, safe, untilDeadline, type ReadContext, type Resolved } from './read-context.js';
import { relayAnswer, relayBuffered } from '../origin/relay.js';
import {
  REQUEST_ID_HEADERS,
  S3Errors,
  sendS3Error,
  stampRequestId,
  type S3ErrorSpec,
} from '../s3/s3-error.js';
import { SliceReadError, type SliceFill } from './slice-fill.js';
import { fillKey, openFill, streamCachedRun, streamSlice } from './slice-stream.js';
import { ReadAhead } from './read-ahead.js';
import { BUFFERED_HIT_BYTES, fromMemory, readTiered, sendTiered, type CacheTier } from './tiered-read.js';

export { revalidationStats } from './object-lookup.js';
export type { CacheTier } from './tiered-read.js';
export { invalidateReads, type ReadContext } from './read-context.js';

/** Where a read's bytes came from: the `x-keel-cache` header. */
export type CacheOutcome = 'HIT' | 'MISS' | 'PARTIAL' | 'STALE' | 'BYPASS';

/**
 * What the gateway did with a request, the same in `x-keel-cache`, the request's log line and the
 * `outcome` label: a cache outcome; `PASS`, an origin answer relayed as it was (writes, listings,
 * 404s, the origin's own errors); `ERROR`, an error keel answered itself (origin unreachable or
 * too slow, breaker open); `DENIED`, a request that failed authentication.
 */
export type RequestOutcome = CacheOutcome | 'PASS' | 'ERROR' | 'DENIED';

/** One object read: the request, its answer, and when the origin must have answered by. */
interface Read {
  ctx: ReadContext;
  req: IncomingMessage;
  res: ServerResponse;
  id: ObjectIdentity;
  rawQuery: string;
  requestId: string;
  method: string;
  /** Clock time by which the origin must have answered for this request (see GatewayOptions.deadlineMs). */
  deadline: number;
  hash: string;
  /** Writes through the gateway that had changed the object when the read began. */
  gen: number;
  /** The memory tier, when the object may use it (its cache rule allows it). */
  memory: ReadContext['memory'];
  /** The memory tier was asked for this read's blocks already (they count as asked for once). */
  memoryAsked: boolean;
  /** How long the cached copy is served without revalidation: its cache rule's TTL (HEAD TTL for a HEAD). */
  ttlMs: number;
}

/** How a read that is not answered from its metadata alone is answered. */
interface AnswerPlan {
  start: number;
  end: number;
  status: number;
  headers(outcome: CacheOutcome, tier: CacheTier): Record<string, string>;
}

/** The slices a GET needs, which the cache holds, and which it holds in memory only so far. */
interface SlicePlan {
  needed: number[];
  cached: Set<number>;
  /** Fills with every byte arrived, still being written to the cache. */
  inMemory: Map<number, SliceFill>;
}

/**
 * Serves GET or HEAD of one object from the cache and the origin: revalidation, conditionals,
 * ranges, slice by slice with single-flight fills, stale serving when the origin fails.
 *
 * The answer's label is decided before its first byte and is never contradicted by what follows:
 * a range up to 16 MiB that is all cached is read and verified whole first (a slice that fails is
 * fetched from the origin and the answer is PARTIAL); for a larger one, the slice files are
 * checked before the answer and the first bytes verified. Should a cached slice then fail its
 * check mid-stream, an answer labelled HIT or STALE ends there (the client retries and gets the
 * repaired state, correctly labelled) rather than go on with origin bytes under that label; a
 * PARTIAL or MISS answer goes on from the origin.
 */
export function serveObject(
  ctx: ReadContext,
  req: IncomingMessage,
  res: ServerResponse,
  id: ObjectIdentity,
  rawQuery: string,
  requestId: string,
  attempt = 0,
): RequestOutcome | Promise<RequestOutcome> {
  const method = req.method ?? 'GET';
  const hash = identityHash(id);
  // What the cache rules (--rules) say of this object: its TTLs, no-cache, the memory tier.
  const rule = ctx.rules.forObject(id.bucket, id.key);
  const r: Read = {
    ctx,
    req,
    res,
    id,
    rawQuery,
    requestId,
    method,
    deadline: ctx.clock.now() + ctx.deadlineMs,
    hash,
    gen: generation(ctx, hash),
    memory: ctx.memory && rule.memory ? ctx.memory : undefined,
    memoryAsked: false,
    ttlMs: method === 'HEAD' ? rule.headTtlMs : rule.ttlMs,
  };
  // A hit from memory is answered at once, without a promise: most of a small hit's cost otherwise.
  if (!rule.noCache && r.memory && (method === 'GET' || method === 'HEAD')) {
    const answered = answerFromMemory(r, r.memory);
    if (answered) return answered;
  }
  stampRequestId(res, requestId);
  // A cache rule may keep the object out of the cache: the origin answers, nothing is stored.
  return rule.noCache ? askOrigin(r, true) : serveFromCache(r, attempt);
}

/** A read the memory tier did not answer: the object's metadata from the disk cache or the origin, then the bytes. */
async function serveFromCache(r: Read, attempt: number): Promise<RequestOutcome> {
  const { ctx, req, id, rawQuery, method } = r;
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
  const resolved = await resolveObject(
    ctx,
    id,
    rawQuery,
    method === 'GET' ? firstByte : undefined,
    plainGet,
    r.deadline,
    r.ttlMs,
  );
  if ('error' in resolved) return originFailed(r, resolved.error);
  if ('passthrough' in resolved) return askOrigin(r);
  return answer(r, resolved, attempt);
}

/**
 * A fresh object the memory tier knows, answered from memory alone: a HEAD, a 304 or 412 from its
 * metadata, a GET when every byte it asks for is in memory. Undefined (nothing sent) otherwise:
 * the disk cache and the origin take it from there.
 */
function answerFromMemory(r: Read, memory: NonNullable<ReadContext['memory']>): RequestOutcome | undefined {
  const meta = memory.meta(r.hash);
  if (!meta || r.ctx.clock.now() - meta.cachedAt >= r.ttlMs) return undefined;
  const plan = planAnswer(r, meta, 'HIT', 'memory');
  if (!('status' in plan)) return plan.answered;
  const { start, end } = plan;
  const chunks = memory.read(r.hash, meta.etag, start, end);
  r.memoryAsked = true;
  if (!chunks) return undefined;
  sendTiered(r.ctx, r.res, fromMemory(chunks), plan.status, plan.headers('HIT', 'memory'));
  return 'HIT';
}

/** Remembers the metadata of an object read from the disk cache in the memory tier, unless a write changed it meanwhile. */
function remember(r: Read, meta: CacheMeta): void {
  if (r.memory && generation(r.ctx, r.hash) === r.gen) r.memory.rememberMeta(r.hash, meta);
}

/**
 * Conditionals, range and HEAD from the object's metadata: answered here (a 304, 412, 416, a
 * HEAD, an empty object) as `known` from `tier`, or what the answer with bytes is to be.
 */
function planAnswer(
  r: Read,
  meta: Resolved['meta'],
  known: CacheOutcome,
  tier: CacheTier,
): AnswerPlan | { answered: RequestOutcome } {
  const { req, res, method } = r;
  // The request's id goes with the rest of the headers unless the gateway sent it already: one
  // writeHead, no header set before it (Node's quick way).
  const ids = !res.hasHeader('x-amz-request-id');
  // Built by assignment, in this order (later ones win): a small hit's headers are a share of its cost.
  const objectHeaders = (): Record<string, string> => {
    const h: Record<string, string> = {};
    if (ids) for (const name of REQUEST_ID_HEADERS) h[name] = r.requestId;
    h.etag = meta.etag;
    h['accept-ranges'] = 'bytes';
    if (meta.lastModified !== undefined) h['last-modified'] = meta.lastModified;
    Object.assign(h, meta.headers);
    return h;
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
    const h = objectHeaders();
    h['x-keel-cache'] = known;
    if (known === 'HIT' || known === 'STALE') h['x-keel-cache-tier'] = tier;
    res.writeHead(304, h);
    res.end();
    return { answered: known };
  }
  if (condition === 'precondition-failed') return { answered: fail(r, S3Errors.preconditionFailed(), known) };
  const range = evaluateRange(req.headers.range, meta.size);
  if (range.kind === 'unsatisfiable') return { answered: fail(r, S3Errors.invalidRange(meta.size), known) };
  const start = range.kind === 'partial' ? range.start : 0;
  const end = range.kind === 'partial' ? range.end : meta.size - 1;
  const status = range.kind === 'partial' ? 206 : 200;
  const headers = (outcome: CacheOutcome, t: CacheTier): Record<string, string> => {
    const h = objectHeaders();
    h['content-length'] = String(end - start + 1);
    if (meta.contentType !== undefined) h['content-type'] = meta.contentType;
    if (status === 206) h['content-range'] = `bytes ${start}-${end}/${meta.size}`;
    h['x-keel-cache'] = outcome;
    if (outcome === 'HIT' || outcome === 'STALE') h['x-keel-cache-tier'] = t;
    return h;
  };
  if (method === 'HEAD' || end < start) {
    // A HEAD (or an empty object) is answered from the metadata alone.
    res.writeHead(status, headers(known, tier));
    res.end();
    return { answered: known };
  }
  return { start, end, status, headers };
}

/** Answers a read from the object's metadata: conditionals, range, HEAD, then the bytes. */
async function answer(r: Read, resolved: Resolved, attempt: number): Promise<RequestOutcome> {
  const { ctx, req, res } = r;
  const { meta, stale } = resolved;
  const bypass = ctx.cache === undefined || ctx.cache.bypassed;
  // Where the metadata came from: what a HEAD, a 304 or a 412 is.
  const known: CacheOutcome = bypass ? 'BYPASS' : !('version' in meta) ? 'MISS' : stale ? 'STALE' : 'HIT';
  if (known === 'HIT' && 'version' in meta) remember(r, meta);
  const prepared = planAnswer(r, meta, known, 'disk');
  if (!('status' in prepared)) return prepared.answered;
  const { start, end, status } = prepared;
  const answerHeaders = (outcome: CacheOutcome): Record<string, string> => prepared.headers(outcome, 'disk');
  const plan = planSlices(r, meta, start, end);
  const length = end - start + 1;
  // Whether the cache's metadata was read again below (after a failed slice, or a slice check).
  let replanned = false;
  if (!bypass && length <= BUFFERED_HIT_BYTES && plan.needed.every((i) => plan.cached.has(i))) {
    const outcome = stale ? 'STALE' : 'HIT';
    const served = await serveBuffered(r, meta, start, end, status, (tier) =>
      prepared.headers(outcome, tier),
    );
    if (served === true) return stale ? 'STALE' : 'HIT';
    // A slice failed (the cache repaired what it could): what is still cached decides, and the
    // slice that failed comes from the origin this time even if the cache still lists it (an
    // I/O error leaves it listed).
    await replan(r, meta, plan);
    if (served.failedSlice !== undefined) plan.cached.delete(served.failedSlice);
    replanned = true;
  } else if (!bypass && length > BUFFERED_HIT_BYTES && 'version' in meta) {
    // Slice files missing or cut short are found now, before the answer says where bytes come from.
    await safe(ctx, 'slice check', () => (ctx.cache as RangeCache).verifyAndFix(r.id));
    await replan(r, meta, plan);
    replanned = true;
  }
  const missingOf = (): number[] => plan.needed.filter((i) => !plan.cached.has(i) && !plan.inMemory.has(i));
  let missing = missingOf();
  if (missing.length > 0 && !replanned && !bypass && 'version' in meta) {
    // A fill that finished its cache write since the metadata was read is no longer findable as a
    // fill, and the metadata read before it does not list its slice: the cache's metadata as it is
    // now does, so that slice is not fetched again.
    await replan(r, meta, plan);
    missing = missingOf();
  }
  const outcome: CacheOutcome = bypass
    ? 'BYPASS'
    : missing.length === 0
      ? stale
        ? 'STALE'
        : 'HIT'
      : missing.length === plan.needed.length
        ? 'MISS'
        : 'PARTIAL';
  if (stale && missing.length > 0)
    return fail(
      r,
      S3Errors.serviceUnavailable(1, 'the origin is unavailable and the range is not cached; please retry'),
    );
  // Open the first missing slice before answering, so a changed object is noticed before a byte goes out.
  const first = plan.needed[0] as number;
  if (!plan.cached.has(first) && !plan.inMemory.has(first)) {
    try {
      await untilDeadline(ctx, openFill(ctx, r.id, r.rawQuery, meta, first), r.deadline);
    } catch (err) {
      const e = classify(err);
      if (e.code === 'OBJECT_CHANGED' && attempt === 0) {
        await forgetObject(ctx, r.id);
        return serveObject(ctx, req, res, r.id, r.rawQuery, r.requestId, 1);
      }
      return originFailed(r, e);
    }
  }
  res.writeHead(status, answerHeaders(outcome));
  await streamSlices(r, meta, plan, start, end, outcome === 'HIT' || outcome === 'STALE');
  return outcome;
}

/**
 * The slices of `start..end` and which are cached. A slice whose fill has every byte and is only
 * being written to the cache counts as cached: it is served from the fill's memory (so a read
 * right after a miss is a hit, and the origin sends nothing twice), without waiting for the disk.
 */
function planSlices(r: Read, meta: Resolved['meta'], start: number, end: number): SlicePlan {
  const needed: number[] = [];
  for (let i = Math.floor(start / meta.sliceBytes); i <= Math.floor(end / meta.sliceBytes); i++)
    needed.push(i);
  const plan: SlicePlan = { needed, cached: new Set(meta.slices.map((s) => s.index)), inMemory: new Map() };
  noteInMemory(r, meta, plan);
  return plan;
}

/** The needed slices not cached whose fill has every byte already. */
function noteInMemory(r: Read, meta: Resolved['meta'], plan: SlicePlan): void {
  plan.inMemory.clear();
  for (const i of plan.needed) {
    if (plan.cached.has(i)) continue;
    const fill = r.ctx.fills.get(fillKey(r.id, meta.etag, i));
    if (fill?.complete) plan.inMemory.set(i, fill);
  }
}

/** Takes the cached slices of `plan` from the cache's metadata as it is now (for this version). */
async function replan(r: Read, meta: Resolved['meta'], plan: SlicePlan): Promise<void> {
  const cache = r.ctx.cache;
  if (!cache) return;
  const now = await safe(r.ctx, 'metadata read', () => cache.getMeta(r.id));
  plan.cached.clear();
  if (now?.etag === meta.etag) for (const sl of now.slices) plan.cached.add(sl.index);
  noteInMemory(r, meta, plan);
}

/**
 * A hit read into memory and verified whole before a byte goes out (from the memory tier when it
 * holds every byte). Returns true once sent; when the cache could not serve it (too many bytes
 * buffered at once, a slice failed), nothing is sent and the slice that failed, if one did, is named.
 */
async function serveBuffered(
  r: Read,
  meta: Resolved['meta'],
  start: number,
  end: number,
  status: number,
  headers: (tier: CacheTier) => Record<string, string>,
): Promise<true | { failedSlice?: number }> {
  if (!('version' in meta)) return {};
  const bytes = await readTiered(r.ctx, r.ctx.cache as RangeCache, {
    id: r.id,
    hash: r.hash,
    meta,
    start,
    end,
    memory: r.memory,
    gen: r.gen,
    memoryAsked: r.memoryAsked,
  });
  r.memoryAsked = true;
  if (!('chunks' in bytes)) return bytes;
  sendTiered(r.ctx, r.res, bytes, status, headers(bytes.tier));
  return true;
}

/**
 * Streams the slices of `start..end` (the headers are out): cached ones from the cache, the others
 * from their shared fills. `cutOnCacheFault`: the answer said every byte comes from the cache, so
 * a cached slice that fails its check ends the answer instead of going on from the origin.
 */
async function streamSlices(
  r: Read,
  meta: Resolved['meta'],
  plan: SlicePlan,
  start: number,
  end: number,
  cutOnCacheFault: boolean,
): Promise<void> {
  const { ctx, res, id } = r;
  const ahead = new ReadAhead(
    ctx,
    id,
    r.rawQuery,
    meta,
    plan.needed,
    (i) => plan.cached.has(i) || plan.inMemory.has(i),
    res,
  );
  const { needed } = plan;
  const first = needed[0] as number;
  try {
    // `from`: the next byte to send; a run of cached slices that came up short is not tried again.
    let from = start;
    let runsFrom = 0;
    for (let at = 0; at < needed.length && !res.destroyed;) {
      const index = needed[at] as number;
      let last = at;
      while (at >= runsFrom && last + 1 < needed.length && plan.cached.has(needed[last + 1] as number))
        last++;
      if (last > at && plan.cached.has(index)) {
        // Several cached slices in a row: one cache read across them.
        const b = Math.min(end, ((needed[last] as number) + 1) * meta.sliceBytes - 1);
        const reached = await streamCachedRun(ctx, res, id, meta, from, b, cutOnCacheFault);
        if (reached > b) {
          at = last + 1;
          from = b + 1;
          continue;
        }
        // The rest of the run slice by slice, from the slice the cache stopped in.
        at = Math.floor(reached / meta.sliceBytes) - first;
        runsFrom = at + 1;
        from = reached;
        continue;
      }
      ahead.advance(at);
      const a = Math.max(from, index * meta.sliceBytes);
      const b = Math.min(end, (index + 1) * meta.sliceBytes - 1);
      await streamSlice(ctx, res, id, r.rawQuery, meta, index, a, b, {
        cached: plan.cached.has(index),
        inMemory: plan.inMemory.get(index),
        cutOnCacheFault,
        onFill: (fill) => ahead.adopt(index, fill),
      });
      ahead.done(index);
      at++;
      from = b + 1;
    }
    res.end();
  } catch (err) {
    const e = classify(err instanceof SliceReadError ? err.error : err);
    ctx.log('error', `read of ${id.bucket}/${id.key} broke after the headers went out: ${e.message}`, {
      requestId: r.requestId,
    });
    if (e.code === 'OBJECT_CHANGED') await forgetObject(ctx, id);
    res.destroy();
  } finally {
    ahead.close();
  }
}

/** The origin said the object changed: the cache and the memory tier forget what they hold of it. */
async function forgetObject(ctx: ReadContext, id: ObjectIdentity): Promise<void> {
  ctx.memory?.forget(identityHash(id));
  const cache = ctx.cache;
  if (cache) await safe(ctx, 'invalidate', () => cache.invalidate(id));
}

/**
 * The origin did not give what the read needs: its own error answer is relayed as it was (PASS);
 * when keel decided (breaker open, deadline passed, origin unreachable) it answers 503 (ERROR).
 */
function originFailed(r: Read, err: KeelError): RequestOutcome {
  const answered = originAnswerOf(err);
  if (answered) {
    relayBuffered(r.res, r.method, answered, r.requestId, r.ctx.log);
    return 'PASS';
  }
  return fail(r, originUnavailable(err, `the origin is unavailable (${err.code}); please retry`));
}

/**
 * Not an object the cache can serve (404, 403 …), or one a cache rule keeps out of the cache
 * (`uncached`: its answers are labelled BYPASS, the origin's errors PASS): asks the origin the
 * client's own question and relays its answer.
 */
async function askOrigin(r: Read, uncached = false): Promise<RequestOutcome> {
  const { ctx, req, id } = r;
  let up;
  try {
    up = await untilDeadline(
      ctx,
      ctx.guard.call(
        id.bucket,
        (signal) =>
          ctx.origin.request({
            method: r.method,
            bucket: id.bucket,
            key: id.key,
            rawQuery: r.rawQuery,
            headers: pick(req.headers, [
              'range',
              'if-match',
              'if-none-match',
              'if-modified-since',
              'if-unmodified-since',
            ]),
            signal,
          }),
        { key: id.key },
      ),
      r.deadline,
    );
  } catch (err) {
    return originFailed(r, classify(err));
  }
  const outcome = uncached && up.status < 400 ? 'BYPASS' : 'PASS';
  await relayAnswer(r.res, r.method, up, r.requestId, ctx.log, outcome);
  return outcome;
}

/** Answers the S3 error `spec` (ERROR), or `outcome` when the answer comes from the object's metadata. */
function fail(r: Read, spec: S3ErrorSpec, outcome: CacheOutcome | 'ERROR' = 'ERROR'): RequestOutcome {
  stampRequestId(r.res, r.requestId);
  sendS3Error(
    r.res,
    r.method,
    { ...spec, headers: { ...spec.headers, 'x-keel-cache': outcome } },
    r.requestId,
  );
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

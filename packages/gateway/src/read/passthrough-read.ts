import type { IncomingMessage, ServerResponse } from 'node:http';
import { classify } from 'keel';
import {
  identityHash,
  type CacheMeta,
  type ObjectIdentity,
  type ObjectInfo,
  type RangeCache,
} from 'keel/cache';
import type { SignedRequest } from '../auth/signed-forward.js';
import type { OriginResponse } from '../origin/origin-client.js';
import { isThrottle, originAnswerOf, retryAfterSeconds } from '../origin/origin-guard.js';
import { forwardHeaders, relayAnswer, relayBuffered } from '../origin/relay.js';
import { S3Errors, sendS3Error } from '../s3/s3-error.js';
import { infoFrom } from './object-lookup.js';
import type { RequestOutcome } from './object-read.js';
import { evaluateRange } from './range.js';
import { discard, generation, safe, writeUnlessChanged, type ReadContext } from './read-context.js';
import { BUFFERED_HIT_BYTES, readTiered, sendTiered } from './tiered-read.js';
import { write } from './slice-stream.js';

/*
 * Reads in `passthrough` auth: the origin authorises every read, the cache serves the bytes.
 * A cached object is asked about with the client's own signed request plus an unsigned
 * `If-None-Match: <cached ETag>`: the origin checks the signature and its policies first, then
 * answers 304 (serve from the cache: no body crossed the wire), 200/206 (the object changed:
 * serve and cache the new body) or 403 (the client gets the origin's refusal, the cache is left
 * as it is). The gateway never serves a cached byte the origin did not authorise.
 */

/**
 * What the origin said about a passthrough request, the same in `x-keel-authorization`, the log
 * line's `authorization` and `keel_gateway_origin_authorizations_total{result}`:
 * `authorized-hit` (304 to the cached ETag: bytes from the cache), `trusted-hit` (served within
 * `--auth-cache-seconds` of an authorised read by the same access key id, without asking),
 * `changed` (200/206 to the cached ETag: a new version, served and cached), `denied` (401/403
 * from the origin), `miss` (not cached: the client's request forwarded, what came back cached),
 * `forwarded` (relayed as it was: writes, listings, the client's own conditionals, 404s),
 * `unavailable` (the origin could not be asked: 503, never a cached copy), `refused` (not for
 * the origin: a forward-proxy request for another host, a malformed path).
 */
export type AuthorizationResult =
  'authorized-hit' | 'trusted-hit' | 'changed' | 'denied' | 'miss' | 'forwarded' | 'unavailable' | 'refused';

/** Every {@link AuthorizationResult}, for metrics. */
export const AUTHORIZATION_RESULTS: readonly AuthorizationResult[] = [
  'authorized-hit',
  'trusted-hit',
  'changed',
  'denied',
  'miss',
  'forwarded',
  'unavailable',
  'refused',
];

/** How a passthrough request was answered: its outcome (x-keel-cache) and what the origin said. */
export interface PassthroughAnswer {
  outcome: RequestOutcome;
  authorization: AuthorizationResult;
}

/**
 * `--auth-cache-seconds`: reads of (access key id, bucket, key, version) the origin authorised
 * are trusted this long without asking it. An access key id is not a secret: within the window,
 * anyone who sends a request naming it (any signature) gets the cached bytes. Off unless asked for.
 */
export class AuthTrust {
  private readonly until = new Map<string, number>();

  /**
   * @param ttlMs how long an authorised read is trusted
   * @param now the clock (ms)
   * @param maxEntries entries kept at most; beyond it the oldest are forgotten (asked again)
   */
  constructor(
    readonly ttlMs: number,
    private readonly now: () => number,
    private readonly maxEntries = 100_000,
  ) {}

  private static keyOf(accessKeyId: string, id: ObjectIdentity): string {
    return `${accessKeyId}\n${id.bucket}\n${id.key}\n${id.versionId ?? ''}`;
  }

  /** True while a read of `id` by `accessKeyId` was authorised less than `ttlMs` ago. */
  allows(accessKeyId: string | undefined, id: ObjectIdentity): boolean {
    if (accessKeyId === undefined) return false;
    const key = AuthTrust.keyOf(accessKeyId, id);
    const until = this.until.get(key);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.until.delete(key);
    return false;
  }

  /** The origin authorised a read of `id` by `accessKeyId` just now. */
  note(accessKeyId: string | undefined, id: ObjectIdentity): void {
    if (accessKeyId === undefined) return;
    const key = AuthTrust.keyOf(accessKeyId, id);
    this.until.delete(key);
    if (this.until.size >= this.maxEntries) {
      const oldest = this.until.keys().next();
      if (!oldest.done) this.until.delete(oldest.value);
    }
    this.until.set(key, this.now() + this.ttlMs);
  }
}

/** One passthrough read of an object. */
export interface PassthroughRead {
  ctx: ReadContext;
  req: IncomingMessage;
  res: ServerResponse;
  id: ObjectIdentity;
  signed: SignedRequest;
  requestId: string;
  trust?: AuthTrust | undefined;
  /** Bytes served from the cache that the origin would otherwise have sent (authorised hits). */
  onSaved(bytes: number): void;
}

/** Conditional headers: a client that sends one of its own gets the origin's answer as it is. */
const CONDITIONALS = ['if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since'];

/** Slices of one read being written to the cache at once, at most; more are not cached (bounded memory). */
const MAX_PENDING_SLICE_WRITES = 4;

/** What a cached answer sends: a HEAD, an unsatisfiable range, or bytes start..end. */
type CachedPlan =
  | { kind: 'head' }
  | { kind: 'unsatisfiable' }
  | { kind: 'bytes'; status: 200 | 206; start: number; end: number };

/**
 * Serves GET or HEAD of an object in `passthrough` auth (see the file's comment). A request with
 * conditionals of its own, or with `Origin` (CORS headers are the origin's to add), goes to the
 * origin as it is; so does one whose range is not all cached. What a 200/206 brings back is
 * cached, slice by slice, where whole slices came.
 */
export async function servePassthroughRead(r: PassthroughRead): Promise<PassthroughAnswer> {
  const { ctx, req, id, signed } = r;
  const hash = identityHash(id);
  const rule = ctx.rules.forObject(id.bucket, id.key);
  if (rule.noCache) return forwardUncached(r);
  const cache = ctx.cache !== undefined && !ctx.cache.bypassed ? ctx.cache : undefined;
  const ownConditions =
    CONDITIONALS.some((h) => signed.headers[h] !== undefined || signed.signedHeaders.has(h)) ||
    req.headers.origin !== undefined;
  // The metadata the memory tier holds, when it covers the read, spares a file-system call before
  // the origin is asked: the origin's answer to If-None-Match says whether that version is still
  // the object's (a changed object is forgotten by the memory tier, below).
  let meta = cache && !ownConditions && rule.memory ? ctx.memory?.meta(hash) : undefined;
  let plan = meta ? cachedPlan(r, meta) : undefined;
  if (!plan && cache && !ownConditions) {
    meta = await safe(ctx, 'metadata read', () => cache.getMeta(id));
    plan = meta ? cachedPlan(r, meta) : undefined;
  }
  if (!meta || !plan) return forward(r, meta, ownConditions ? 'forwarded' : 'miss');
  if (r.trust?.allows(signed.accessKeyId, id) && (await serveCached(r, meta, plan, 'trusted-hit')))
    return { outcome: 'HIT', authorization: 'trusted-hit' };
  let up: OriginResponse;
  try {
    up = await ask(r, { 'if-none-match': meta.etag });
  } catch (err) {
    return originFailed(r, err);
  }
  if (up.status !== 304) {
    // Not the version remembered (or gone): memory lets go of it, the disk cache decides below.
    if (up.status !== 401 && up.status !== 403) ctx.memory?.forget(hash);
    return answerFromOrigin(r, up, meta, 'changed');
  }
  discard(up.body);
  r.trust?.note(signed.accessKeyId, id);
  if (await serveCached(r, meta, plan, 'authorized-hit')) {
    if (plan.kind === 'bytes') r.onSaved(plan.end - plan.start + 1);
    return { outcome: 'HIT', authorization: 'authorized-hit' };
  }
  // Authorised, but the cached copy failed its check (the cache repaired it): the client's own
  // request again, without the condition, and what it brings back is cached.
  return forward(r, undefined, 'miss');
}

/** What the cache would answer for this read, or undefined when the range is not all cached. */
function cachedPlan(r: PassthroughRead, meta: CacheMeta): CachedPlan | undefined {
  if (r.req.method === 'HEAD') return { kind: 'head' };
  const range = evaluateRange(r.req.headers.range, meta.size);
  if (range.kind === 'unsatisfiable') return { kind: 'unsatisfiable' };
  const start = range.kind === 'partial' ? range.start : 0;
  const end = range.kind === 'partial' ? range.end : meta.size - 1;
  const cached = new Set(meta.slices.map((s) => s.index));
  for (
    let i = Math.floor(start / meta.sliceBytes);
    end >= start && i <= Math.floor(end / meta.sliceBytes);
    i++
  )
    if (!cached.has(i)) return undefined;
  return { kind: 'bytes', status: range.kind === 'partial' ? 206 : 200, start, end };
}

/** The client's signed request to the origin, with `extra` headers (unsigned) added. */
function ask(r: PassthroughRead, extra: Record<string, string>): Promise<OriginResponse> {
  const { ctx, signed, id } = r;
  return ctx.guard.call(
    id.bucket,
    (signal) =>
      ctx.origin.request({
        method: signed.method,
        target: signed.target,
        host: signed.host,
        headers: { ...signed.headers, ...extra },
        unsigned: true,
        signal,
      }),
    // Only an answer that shows the client was authorised gives the bucket a breaker of its own.
    { key: id.key, confirm: false },
  );
}

/** Forwards the client's request as it is and answers with what the origin said. */
async function forward(
  r: PassthroughRead,
  meta: CacheMeta | undefined,
  result: 'miss' | 'forwarded',
): Promise<PassthroughAnswer> {
  let up: OriginResponse;
  try {
    up = await ask(r, {});
  } catch (err) {
    return originFailed(r, err);
  }
  return answerFromOrigin(r, up, meta, result);
}

/**
 * A read a cache rule keeps out of the cache (`noCache`): the client's request forwarded as it is
 * and the origin's answer relayed, labelled BYPASS (its errors PASS, a refusal DENIED); nothing
 * is cached and no cached copy is served.
 */
async function forwardUncached(r: PassthroughRead): Promise<PassthroughAnswer> {
  const { ctx, res, requestId, id } = r;
  let up: OriginResponse;
  try {
    up = await ask(r, {});
  } catch (err) {
    return originFailed(r, err);
  }
  const denied = up.status === 401 || up.status === 403;
  if (up.status < 400) ctx.guard.noteAnswer(id.bucket, up.status);
  const outcome: RequestOutcome = denied ? 'DENIED' : up.status < 400 ? 'BYPASS' : 'PASS';
  const authorization: AuthorizationResult = denied ? 'denied' : 'forwarded';
  res.setHeader('x-keel-authorization', authorization);
  await relayAnswer(res, r.req.method ?? 'GET', up, requestId, ctx.log, outcome);
  return { outcome, authorization };
}

/** The origin's answer to a passthrough read: refused, a body to serve and cache, or relayed as it is. */
async function answerFromOrigin(
  r: PassthroughRead,
  up: OriginResponse,
  meta: CacheMeta | undefined,
  result: 'changed' | 'miss' | 'forwarded',
): Promise<PassthroughAnswer> {
  const { ctx, res, requestId, id } = r;
  const method = r.req.method ?? 'GET';
  if (up.status === 401 || up.status === 403) {
    // The cache is left as it is: another client may well be allowed to read it.
    res.setHeader('x-keel-authorization', 'denied');
    await relayAnswer(res, method, up, requestId, ctx.log, 'DENIED');
    return { outcome: 'DENIED', authorization: 'denied' };
  }
  if (up.status < 400) ctx.guard.noteAnswer(id.bucket, up.status);
  if (up.status === 200 || up.status === 206) {
    r.trust?.note(r.signed.accessKeyId, id);
    const info = infoFrom(up.headers);
    // The origin sent the version the cache holds (it ignored the condition): not a change.
    const authorization = result === 'changed' && info?.etag === meta?.etag ? 'miss' : result;
    await relayAndCache(r, up, info, meta, authorization);
    return { outcome: 'MISS', authorization };
  }
  if (up.status === 404 && ctx.cache) {
    const cache = ctx.cache;
    await safe(ctx, 'invalidate', () => cache.invalidate(id));
  }
  res.setHeader('x-keel-authorization', 'forwarded');
  await relayAnswer(res, method, up, requestId, ctx.log);
  return { outcome: 'PASS', authorization: 'forwarded' };
}

/**
 * The origin could not be asked: its own error answer (after the guard's retries) is relayed,
 * else 503 with Retry-After. Never a cached copy: nothing authorised it.
 */
function originFailed(r: PassthroughRead, err: unknown): PassthroughAnswer {
  const method = r.req.method ?? 'GET';
  const answered = originAnswerOf(err);
  r.res.setHeader('x-keel-authorization', 'unavailable');
  if (answered) {
    relayBuffered(r.res, method, answered, r.requestId, r.ctx.log);
    return { outcome: 'PASS', authorization: 'unavailable' };
  }
  const e = classify(err);
  const after = retryAfterSeconds(e);
  const spec = isThrottle(e)
    ? S3Errors.slowDown(after)
    : S3Errors.serviceUnavailable(
        after,
        `the origin is unavailable (${e.code}) and only it can authorise this read; please retry`,
      );
  sendS3Error(r.res, method, { ...spec, headers: { ...spec.headers, 'x-keel-cache': 'ERROR' } }, r.requestId);
  return { outcome: 'ERROR', authorization: 'unavailable' };
}

/** Headers of an answer served from the cached metadata. */
function cachedHeaders(meta: CacheMeta, authorization: AuthorizationResult): Record<string, string> {
  return {
    etag: meta.etag,
    'accept-ranges': 'bytes',
    ...(meta.lastModified === undefined ? {} : { 'last-modified': meta.lastModified }),
    ...meta.headers,
    ...(meta.contentType === undefined ? {} : { 'content-type': meta.contentType }),
    'x-keel-cache': 'HIT',
    'x-keel-authorization': authorization,
  };
}

/**
 * Answers from the cache (the origin authorised the read). False when the cached bytes could not
 * be served (missing or failing their check, since repaired by the cache): nothing was sent.
 */
async function serveCached(
  r: PassthroughRead,
  meta: CacheMeta,
  plan: CachedPlan,
  authorization: 'authorized-hit' | 'trusted-hit',
): Promise<boolean> {
  const { ctx, res, id } = r;
  const cache = ctx.cache as RangeCache;
  const headers = cachedHeaders(meta, authorization);
  if (plan.kind === 'head') {
    res.writeHead(200, { ...headers, 'content-length': String(meta.size) });
    res.end();
    return true;
  }
  if (plan.kind === 'unsatisfiable') {
    const spec = S3Errors.invalidRange(meta.size);
    sendS3Error(res, 'GET', { ...spec, headers: { ...spec.headers, ...headers } }, r.requestId);
    return true;
  }
  const { start, end, status } = plan;
  const length = end - start + 1;
  const answerHeaders = {
    ...headers,
    'content-length': String(length),
    ...(status === 206 ? { 'content-range': `bytes ${start}-${end}/${meta.size}` } : {}),
  };
  if (length === 0) {
    res.writeHead(status, answerHeaders);
    res.end();
    return true;
  }
  if (length <= BUFFERED_HIT_BYTES) {
    // From the memory tier when it holds every byte (the origin authorised the read all the same).
    const hash = identityHash(id);
    const bytes = await readTiered(ctx, cache, {
      id,
      hash,
      meta,
      start,
      end,
      memory: ctx.memory && ctx.rules.forObject(id.bucket, id.key).memory ? ctx.memory : undefined,
      gen: generation(ctx, hash),
    });
    if (!('chunks' in bytes)) return false;
    sendTiered(ctx, res, bytes, status, { ...answerHeaders, 'x-keel-cache-tier': bytes.tier });
    return true;
  }
  const hit = await safe(ctx, 'read', () => cache.read(id, start, end, { meta }));
  if (!hit?.hit || hit.meta.etag !== meta.etag) {
    if (hit?.hit) hit.stream.destroy();
    return false;
  }
  res.writeHead(status, answerHeaders);
  try {
    for await (const chunk of hit.stream as AsyncIterable<Buffer>) {
      if (res.destroyed) break;
      ctx.onBytes('cache', chunk.length);
      await write(res, chunk, true);
    }
    res.end();
  } catch (err) {
    // A later slice failed its check: an answer that said HIT ends here rather than go on with other bytes.
    ctx.log('error', `cached read of ${id.bucket}/${id.key} failed after the headers went out`, {
      requestId: r.requestId,
      error: classify(err).message,
    });
    res.destroy();
  }
  return true;
}

/** The first byte a 200/206 answer's body starts at. */
function bodyStart(up: OriginResponse): number | undefined {
  if (up.status === 200) return 0;
  const m = /^bytes (\d+)-\d+\/\d+$/.exec(up.headers['content-range'] ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * Relays a 200/206 answer to the client labelled MISS, and caches its object info and every
 * whole slice it carries (the object's metadata replaced when its ETag changed, which drops the
 * old version's slices).
 */
async function relayAndCache(
  r: PassthroughRead,
  up: OriginResponse,
  info: ObjectInfo | undefined,
  meta: CacheMeta | undefined,
  authorization: AuthorizationResult,
): Promise<void> {
  const { ctx, res, id } = r;
  const method = r.req.method ?? 'GET';
  const cache = ctx.cache !== undefined && !ctx.cache.bypassed ? ctx.cache : undefined;
  const start = bodyStart(up);
  const storing = cache !== undefined && info !== undefined && start !== undefined;
  const gen = generation(ctx, identityHash(id));
  if (storing && (meta?.etag !== info.etag || meta.size !== info.size)) storeMeta(ctx, id, info, gen);
  res.writeHead(up.status, {
    ...forwardHeaders(up.headers, r.requestId, 'MISS'),
    'x-keel-authorization': authorization,
  });
  if (method === 'HEAD') {
    discard(up.body);
    res.end();
    return;
  }
  const cachedSlices = new Set(meta?.etag === info?.etag ? (meta?.slices ?? []).map((s) => s.index) : []);
  let pending = 0;
  const collector = storing
    ? new SliceCollector(start, info.size, cache.sliceBytes, (index, bytes) => {
        if (cachedSlices.has(index) || pending >= MAX_PENDING_SLICE_WRITES) return;
        pending++;
        // Listed with the metadata writes (under a key of its own), so the gateway's idle() and
        // close() wait for it as for a fill's slice write.
        const key = `${identityHash(id)}:passthrough:${index}`;
        const write = writeSlice(ctx, cache, id, gen, index, bytes, info.etag).finally(() => {
          pending--;
          if (ctx.metaWrites.get(key) === write) ctx.metaWrites.delete(key);
        });
        ctx.metaWrites.set(key, write);
      })
    : undefined;
  try {
    for await (const chunk of up.body as AsyncIterable<Buffer>) {
      if (res.destroyed) {
        up.body.destroy();
        return;
      }
      collector?.push(chunk);
      ctx.onBytes('origin', chunk.length);
      await write(res, chunk);
    }
    res.end();
  } catch (err) {
    ctx.log('warn', `origin body of ${id.bucket}/${id.key} broke mid-answer`, {
      requestId: r.requestId,
      error: classify(err).message,
    });
    res.destroy();
  }
}

/** Writes the object's metadata in the background; slice writes wait for it. */
function storeMeta(ctx: ReadContext, id: ObjectIdentity, info: ObjectInfo, gen: number): void {
  const cache = ctx.cache as RangeCache;
  const hash = identityHash(id);
  const write = writeUnlessChanged(ctx, id, gen, () =>
    safe(ctx, 'metadata write', () => cache.putMeta(id, info)),
  );
  ctx.metaWrites.set(hash, write);
  void write.finally(() => {
    if (ctx.metaWrites.get(hash) === write) ctx.metaWrites.delete(hash);
  });
}

async function writeSlice(
  ctx: ReadContext,
  cache: RangeCache,
  id: ObjectIdentity,
  gen: number,
  index: number,
  bytes: Buffer,
  etag: string,
): Promise<void> {
  await ctx.metaWrites.get(identityHash(id));
  const result = await writeUnlessChanged(ctx, id, gen, () =>
    safe(ctx, 'write', () => cache.writeSlice(id, index, bytes, etag)),
  );
  if (result && !result.stored && result.reason !== 'bypass')
    ctx.log('warn', `slice ${index} of ${id.bucket}/${id.key} not cached: ${result.message}`);
}

/**
 * Gathers the whole slices that pass through a body starting at byte `start` of an object of
 * `size` bytes, and hands each over once complete (a slice cut by the start or the end of the
 * body is not).
 */
export class SliceCollector {
  private pos: number;
  private index: number;
  private parts: Buffer[] = [];

  constructor(
    start: number,
    private readonly size: number,
    private readonly sliceBytes: number,
    private readonly onSlice: (index: number, bytes: Buffer) => void,
  ) {
    this.pos = start;
    this.index = Math.ceil(start / sliceBytes);
  }

  push(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      const sliceStart = this.index * this.sliceBytes;
      if (sliceStart >= this.size) return;
      const sliceEnd = Math.min(this.size, sliceStart + this.sliceBytes);
      if (this.pos < sliceStart) {
        const skip = Math.min(chunk.length - off, sliceStart - this.pos);
        off += skip;
        this.pos += skip;
        continue;
      }
      const take = Math.min(chunk.length - off, sliceEnd - this.pos);
      this.parts.push(chunk.subarray(off, off + take));
      off += take;
      this.pos += take;
      if (this.pos === sliceEnd) {
        this.onSlice(this.index, Buffer.concat(this.parts));
        this.parts = [];
        this.index++;
      }
    }
  }
}

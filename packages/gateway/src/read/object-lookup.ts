import { classify, isKeelError } from 'keel';
import { identityHash, type CacheMeta, type ObjectIdentity, type ObjectInfo } from 'keel/cache';
import type { OriginResponse } from '../origin/origin-client.js';
import {
  discard,
  generation,
  MAX_LOOKED_UP,
  safe,
  untilDeadline,
  writeUnlessChanged,
  type HeadLookup,
  type Lookup,
  type ReadContext,
  type Resolved,
} from './read-context.js';
import { Revalidator } from './revalidation.js';
import { fillKey, startFill } from './slice-stream.js';
import { lookupFromPeer } from './shared-fill.js';

/*
 * What a read is served from: the cached metadata while fresh, a revalidation when expired, or the
 * origin's first answer for an object not cached (shared by concurrent requests, and already the
 * first slice's body when the read starts at a known byte).
 */

/** Response headers of an object that are replayed from the origin as they were. */
const REPLAYED =
  /^(x-amz-meta-.*|cache-control|content-encoding|content-disposition|content-language|expires|x-amz-version-id|x-amz-storage-class|x-amz-server-side-encryption.*|x-amz-tagging-count|x-amz-website-redirect-location|x-amz-restore|x-amz-object-lock-.*|x-amz-replication-status|x-amz-expiration)$/;

/** The object info in an origin answer's headers; undefined without an ETag or a size. */
export function infoFrom(headers: Record<string, string>): ObjectInfo | undefined {
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

/**
 * Finds the object's info: cached and fresh (for `ttlMs`, default the gateway's: a cache rule may
 * set another), revalidated, or asked of the origin.
 */
export async function resolveObject(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  firstByte: number | undefined,
  plainGet: boolean,
  deadline: number,
  ttlMs = ctx.ttlMs,
): Promise<Lookup> {
  const cache = ctx.cache;
  const hash = identityHash(id);
  // A plain GET of an object with no cached slice is a miss whatever its metadata says: straight
  // to the origin, without reading the metadata first. Not for an object this process already
  // asked about (its fill may be under way) nor one whose metadata it holds (an empty object has
  // no slice): its metadata is in memory (no system call).
  const certainMiss =
    cache !== undefined &&
    plainGet &&
    !cache.mayHaveSlices(id) &&
    !cache.remembers(id) &&
    !ctx.lookedUp.has(hash);
  // An origin lookup under way now is this request's to join, even if it completes (and leaves
  // the map) while the metadata is being read: asking the origin again would fetch its first
  // slice a second time.
  const inFlight = ctx.heads.get(hash);
  // From memory when remembered: the read that follows checks meta.json on the cache's own thread.
  const cachedMeta =
    cache && !certainMiss
      ? await safe(ctx, 'metadata read', () => cache.getMeta(id, { lazy: true }))
      : undefined;
  if (cachedMeta && ctx.clock.now() - cachedMeta.cachedAt < ttlMs) return { meta: cachedMeta, stale: false };
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
  const joined = ctx.heads.get(hash) ?? inFlight;
  if (joined?.settled) {
    // The origin answered an earlier request; only its metadata write may be under way. Once it
    // is done, this request is answered from the cache (a HEAD right after a HEAD is a hit).
    await joined.lookup;
    await ctx.metaWrites.get(hash);
    const now = cache ? await safe(ctx, 'metadata read', () => cache.getMeta(id)) : undefined;
    if (now) return { meta: now, stale: false };
    return joined.lookup;
  }
  let flight = joined;
  if (!flight) {
    if (ctx.lookedUp.size >= MAX_LOOKED_UP) ctx.lookedUp.clear();
    ctx.lookedUp.add(hash);
    const started: HeadLookup = { lookup: lookupOrigin(ctx, id, rawQuery, firstByte), settled: false };
    flight = started;
    ctx.heads.set(hash, started);
    // Shared until the metadata is on disk, so later requests do not ask the origin again meanwhile.
    void started.lookup
      .finally(async () => {
        started.settled = true;
        await ctx.metaWrites.get(hash);
        if (ctx.heads.get(hash) === started) ctx.heads.delete(hash);
      })
      .catch(() => undefined);
  }
  // The lookup may have started for an earlier request: this one waits no longer than its own deadline.
  return untilDeadline(ctx, flight.lookup, deadline).catch((err: unknown) => ({ error: classify(err) }));
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
          // The guard's signal follows `signal`.
          signal: s ?? signal,
        }),
      { key: id.key, signal },
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

/**
 * The first origin request for an uncached object, shared by concurrent requests for it, and
 * by the other workers of this host: while one of them looks it up, the others wait for its
 * metadata to reach the cache instead of asking the origin too.
 */
async function lookupOrigin(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  firstByte: number | undefined,
): Promise<Lookup> {
  const peer = await lookupFromPeer(ctx, id);
  if (peer.found) return { meta: peer.found, stale: false };
  const result = await lookupOriginHere(ctx, id, rawQuery, firstByte);
  peer.done('meta' in result, ctx.metaWrites.get(identityHash(id)));
  return result;
}

/** {@link lookupOrigin} by this process. */
async function lookupOriginHere(
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
    up = await ctx.guard.call(
      id.bucket,
      (signal) =>
        ctx.origin.request({
          method: sliceIndex === undefined ? 'HEAD' : 'GET',
          bucket: id.bucket,
          key: id.key,
          rawQuery,
          headers:
            sliceIndex === undefined
              ? {}
              : { range: `bytes=${sliceStart}-${sliceStart + ctx.sliceBytes - 1}` },
          signal,
        }),
      { key: id.key },
    );
  } catch (err) {
    return { error: isKeelError(err) ? err : classify(err) };
  }
  if (up.status === 416 && sliceIndex === 0) {
    // S3 answers any range of an empty object with 416: ask what the object is without one.
    discard(up.body);
    return lookupOriginHere(ctx, id, rawQuery, undefined);
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

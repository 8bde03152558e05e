import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { classify, keelError, retry } from 'keel';
import { identityHash, releaseChunk, type ObjectIdentity, type RangeCache } from 'keel/cache';
import { resumingGet } from '@keel/transfer';
import type { OriginResponse } from '../origin/origin-client.js';
import {
  discard,
  generation,
  safe,
  writeUnlessChanged,
  type ReadContext,
  type Resolved,
} from './read-context.js';
import { SliceFill, SliceReadError } from './slice-fill.js';
import { fillFromPeer } from './shared-fill.js';

/*
 * Slices on their way to a client: read from the cache, from a fill shared by every request for
 * the slice (the origin's answer, written to the cache once whole), or fetched for one request.
 */

/**
 * Writes `chunk`; when the socket is full, resolves once it drained (or closed). `fromCache`: the
 * chunk came from a streamed cache read, and its memory goes back to the cache once the socket
 * took it (the next read reuses it: no garbage to collect).
 */
export function write(res: ServerResponse, chunk: Buffer, fromCache = false): Promise<void> | undefined {
  const written = fromCache
    ? res.write(chunk, (err) => {
        if (!err) releaseChunk(chunk);
      })
    : res.write(chunk);
  if (written || res.destroyed) return undefined;
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

/** Where {@link streamSlice} takes a slice from, as the read's plan decided before its answer. */
export interface SliceSource {
  /** The cache's metadata listed the slice. */
  cached: boolean;
  /**
   * A fill of the slice whose every byte had arrived (its cache write still under way): served
   * from its memory and counted as served by the cache, as the slice will be once written.
   */
  inMemory?: SliceFill | undefined;
  /** The answer promised every byte from the cache: a cached slice that fails ends it. */
  cutOnCacheFault: boolean;
  /** Told of the shared fill the slice is streamed from, when it is (the read holds it meanwhile). */
  onFill?: ((fill: SliceFill) => void) | undefined;
}

/**
 * Streams bytes `a`–`b` of slice `index` to `res`: from the cache when there, else from the
 * slice's shared fill, else (the shared fill failed) from the origin for this request alone.
 * A cached slice that fails its check mid-read goes on from the origin, unless
 * `source.cutOnCacheFault`: then it throws.
 */
export async function streamSlice(
  ctx: ReadContext,
  res: ServerResponse,
  id: ObjectIdentity,
  rawQuery: string,
  meta: Resolved['meta'],
  index: number,
  a: number,
  b: number,
  source: SliceSource,
): Promise<void> {
  const { cached: isCached, cutOnCacheFault } = source;
  if (source.inMemory) {
    for await (const chunk of source.inMemory.read(a, b)) {
      if (res.destroyed) return;
      await write(res, chunk);
      ctx.onBytes('cache', chunk.length);
    }
    return;
  }
  let pos = a;
  // A slice missing when the request began may have been filled since (by another request).
  const mayBeCached = isCached || (ctx.cache !== undefined && !ctx.fills.has(fillKey(id, meta.etag, index)));
  if (mayBeCached && ctx.cache) {
    const hit = await safe(ctx, 'read', () =>
      (ctx.cache as RangeCache).read(id, a, b, 'version' in meta ? { meta } : {}),
    );
    if (isCached && cutOnCacheFault && !hit?.hit)
      throw keelError(
        'CHECKSUM_MISMATCH',
        `cached slice ${index} of ${id.bucket}/${id.key} could not be served (${hit?.reason ?? 'cache read failed'}); ending an answer labelled as all from the cache`,
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
          await write(res, chunk, true);
          pos += chunk.length;
          ctx.onBytes('cache', chunk.length);
        }
        return;
      } catch (err) {
        // A slice failed verification mid-read (already repaired by the cache): the origin continues,
        // unless the answer said every byte comes from the cache.
        if (cutOnCacheFault) throw err;
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
  source.onFill?.(fill);
  try {
    for await (const chunk of fill.read(pos, b)) {
      if (res.destroyed) return;
      await write(res, chunk);
      pos += chunk.length;
      ctx.onBytes('origin', chunk.length);
    }
    return;
  } catch (err) {
    // A client that went away cancelled the fills it alone waited for: nothing more to send.
    if (res.destroyed) return;
    if (!(err instanceof SliceReadError) || err.error.code === 'OBJECT_CHANGED') throw err;
    pos = err.offset;
    ctx.log(
      'info',
      `shared fetch of slice ${index} of ${id.bucket}/${id.key} failed at byte ${pos}; fetching the rest for this request`,
      { error: err.error.message },
    );
  }
  // The shared fetch failed: fetch the rest of this slice for ourselves, for as long as the client stays.
  const gone = new AbortController();
  const onClose = (): void => gone.abort();
  res.once('close', onClose);
  try {
    await streamOwn(ctx, res, id, rawQuery, meta.etag, pos, b, gone.signal);
  } finally {
    res.off('close', onClose);
  }
}

/** Streams bytes `pos..b` fetched for this request alone. */
async function streamOwn(
  ctx: ReadContext,
  res: ServerResponse,
  id: ObjectIdentity,
  rawQuery: string,
  etag: string,
  pos: number,
  b: number,
  signal: AbortSignal,
): Promise<void> {
  if (res.destroyed) return;
  const own = await openRange(ctx, id, rawQuery, etag, pos, b, signal);
  for await (const chunk of own.body as AsyncIterable<Buffer>) {
    if (res.destroyed) {
      own.body.destroy();
      return;
    }
    await write(res, chunk);
    ctx.onBytes('origin', chunk.length);
  }
}

/**
 * Streams bytes `a`–`b`, which span several slices the read's plan found cached, with one cache
 * read: the cache reads and verifies ahead of the socket across slice boundaries instead of
 * starting again at each one. Resolves with the offset reached: `b + 1` when every byte went out
 * (or the client went away), less when the cache could not serve the rest (not cached after all,
 * another version, or a slice that failed its check and was repaired): the caller goes on from
 * there slice by slice.
 * @throws the cache's error when `cutOnCacheFault` and a slice failed after bytes went out.
 */
export async function streamCachedRun(
  ctx: ReadContext,
  res: ServerResponse,
  id: ObjectIdentity,
  meta: Resolved['meta'],
  a: number,
  b: number,
  cutOnCacheFault: boolean,
): Promise<number> {
  const cache = ctx.cache;
  if (!cache) return a;
  const hit = await safe(ctx, 'read', () => cache.read(id, a, b, 'version' in meta ? { meta } : {}));
  if (!hit?.hit) return a;
  if (hit.meta.etag !== meta.etag) {
    hit.stream.destroy();
    return a;
  }
  let pos = a;
  try {
    for await (const chunk of hit.stream as AsyncIterable<Buffer>) {
      if (res.destroyed) {
        hit.stream.destroy();
        return b + 1;
      }
      await write(res, chunk, true);
      pos += chunk.length;
      ctx.onBytes('cache', chunk.length);
    }
  } catch (err) {
    if (cutOnCacheFault) throw err;
    ctx.log(
      'warn',
      `cached slices of ${id.bucket}/${id.key} failed mid-read at ${pos}; continuing from the origin`,
      {
        error: classify(err).message,
      },
    );
  }
  return pos;
}

/** resumingGet's own retries are off: the guard retries each opening. */
const ONE_ATTEMPT = retry({ maxAttempts: 1 });

/** A GET of bytes `start..end` of this version, resumed where it breaks; `cancel` stops it for good. */
function openRange(
  ctx: ReadContext,
  id: ObjectIdentity,
  rawQuery: string,
  etag: string,
  start: number,
  end: number,
  cancel: AbortSignal,
) {
  return resumingGet({
    start,
    end,
    ifMatch: etag,
    // Each (re)opening is one guarded call: breaker, deadline and retries are the guard's.
    retry: ONE_ATTEMPT,
    firstByteTimeoutMs: ctx.deadlineMs,
    idleTimeoutMs: ctx.idleTimeoutMs,
    request: (range, ifMatch, signal) =>
      ctx.guard.call(
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
            // The guard's signal follows `signal`; `cancel` reaches the body too, once it streams.
            signal: AbortSignal.any([s ?? signal, cancel]),
          }),
        { key: id.key, signal: AbortSignal.any([signal, cancel]) },
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
export async function openFill(
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
export function fillKey(id: ObjectIdentity, etag: string, index: number): string {
  return `${identityHash(id)}:${etag}:${index}`;
}

/** The shared fill of slice `index` (started if none is running), from `initial` when the origin already answered. */
export function startFill(
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
  ctx.fetching.count++;

  // An answer already in hand was checked by the caller (206 of this slice, or 200 of all of it):
  // readers need not wait for the resuming stream around it to say so.
  if (initial) fill.markOpened();
  const forget = (): void => {
    if (ctx.fills.get(key) === fill) ctx.fills.delete(key);
  };
  // Cancelled (every reader went away): readers that come later start a fetch of their own.
  fill.signal.addEventListener('abort', forget, { once: true });
  void (async () => {
    let body: Readable | undefined;
    // Another worker of this host may be fetching the slice: then its bytes come from the cache.
    const peer = await fillFromPeer(ctx, key, id, meta, fill, initial?.body);
    try {
      // The answer in hand is read as it is (its idle timeout is the connection pool's); only
      // when it breaks does a resuming request take over from the byte reached.
      const received = initial && !peer.droppedInitial ? await drain(initial.body, fill) : fill.receivedBytes;
      if (received < fill.length && fill.filling) {
        const got = await openRange(ctx, id, rawQuery, meta.etag, start + received, end, fill.signal);
        body = got.body;
        fill.markOpened();
        for await (const chunk of got.body as AsyncIterable<Buffer>) {
          if (!fill.filling) break;
          fill.push(chunk);
        }
      }
      fill.finish();
    } catch (err) {
      fill.fail(err);
    } finally {
      ctx.fetching.count--;
    }
    if (!fill.complete) {
      body?.destroy();
      forget();
      peer.done(false);
      return;
    }
    // The fill stays findable until the slice is in the cache, so no request refetches it meanwhile.
    await cacheSlice(ctx, id, meta, index, fill, gen);
    forget();
    peer.done(true);
  })();
  return fill;
}

/**
 * Complete fills waiting for their cache write hold at most this many bytes: beyond it, a slice
 * is served from memory to the readers that have it and not cached (a slow or full disk slows
 * caching, never a client, and never grows memory without bound).
 */
export const MAX_UNWRITTEN_BYTES = 256 * 1024 * 1024;

/** Writes a complete fill's bytes to the cache, behind the stream; the slice is a hit once durable. */
async function cacheSlice(
  ctx: ReadContext,
  id: ObjectIdentity,
  meta: Resolved['meta'],
  index: number,
  fill: SliceFill,
  gen: number,
): Promise<void> {
  const cache = ctx.cache;
  if (!cache || cache.bypassed || meta.sliceBytes !== cache.sliceBytes) return;
  if (ctx.unwritten.bytes + fill.length > MAX_UNWRITTEN_BYTES) {
    ctx.log(
      'warn',
      `slice ${index} of ${id.bucket}/${id.key} not cached: ${ctx.unwritten.bytes} bytes are already waiting for the disk (limit ${MAX_UNWRITTEN_BYTES})`,
    );
    return;
  }
  ctx.unwritten.bytes += fill.length;
  try {
    await ctx.metaWrites.get(identityHash(id));
    const result = await writeUnlessChanged(ctx, id, gen, () =>
      safe(ctx, 'write', () => cache.writeSlice(id, index, fill.bytes(), meta.etag)),
    );
    if (result && !result.stored && result.reason !== 'bypass')
      ctx.log('warn', `slice ${index} of ${id.bucket}/${id.key} not cached: ${result.message}`);
  } finally {
    ctx.unwritten.bytes -= fill.length;
  }
}

/**
 * Pushes `body` into `fill` up to the slice's length; resolves with the bytes pushed, fewer than
 * the length when the body broke or ended early (the caller resumes from there).
 */
async function drain(body: Readable, fill: SliceFill): Promise<number> {
  let received = 0;
  const cancel = (): void => {
    body.destroy();
  };
  fill.signal.addEventListener('abort', cancel, { once: true });
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      const piece = received + chunk.length > fill.length ? chunk.subarray(0, fill.length - received) : chunk;
      fill.push(piece);
      received += piece.length;
      if (received >= fill.length) break;
    }
  } catch {
    // Broken mid-way: the resuming request continues from `received`.
  } finally {
    fill.signal.removeEventListener('abort', cancel);
  }
  if (received < fill.length) discard(body);
  return received;
}

import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { classify } from 'keel';
import { identityHash, type ObjectIdentity, type ObjectInfo, type RangeCache } from 'keel/cache';
import type { OriginResponse } from '../origin/origin-client.js';
import { infoFrom } from '../read/object-lookup.js';
import {
  discard,
  generation,
  invalidateReads,
  safe,
  writeUnlessChanged,
  type ReadContext,
} from '../read/read-context.js';
import { StagingTap } from './staging-tap.js';

/*
 * Write-through: a PUT's body goes to the origin and, at the same time, to a staging file beside
 * the cache. Only once the origin accepted it with the ETag keel computed (the body's MD5), and a
 * HEAD confirms that object is the one now stored, is the staged copy committed to the cache
 * (metadata, then slice by slice), so the read after the write is a hit. Nothing staged is ever
 * served: a crash leaves a staging file (removed at the next start) and at most metadata of the
 * new version with some of its slices, whose other slices are then fetched with If-Match on it.
 */

/** Staging files live here, under the cache directory (outside `objects/`, which the cache owns). */
export const STAGING_DIR = 'write-through';

/** What became of a write staged for the cache: committed, or why not. */
export type WriteThroughResult = { cached: true } | { cached: false; reason: string };

/**
 * An upload being staged: `body` is what to send the origin (the client's bytes, passed on as they
 * are staged); `settle` is told the origin's answer (undefined: the write failed or was refused)
 * and answers what became of the write, or undefined when there is nothing to report yet (a part).
 * `settle` never throws, and removes what it does not keep.
 */
export interface Staged {
  readonly body: Readable;
  settle(
    answer: Pick<OriginResponse, 'status' | 'headers'> | undefined,
  ): Promise<WriteThroughResult | undefined>;
}

/**
 * Write-through for one gateway: stages eligible uploads and commits them. Bytes staged at once
 * (uploads in flight and parts waiting for their CompleteMultipartUpload) are bounded by the
 * cache's size limit: an upload that would pass it is forwarded only.
 */
export class WriteThrough {
  /** Bytes announced by what is being staged or kept staged now. */
  private stagedBytes = 0;

  private constructor(
    readonly ctx: ReadContext,
    readonly cache: RangeCache,
    private readonly dir: string,
  ) {}

  /**
   * Prepares the staging directory and removes what processes that are gone left in it (a crash
   * mid-upload). Undefined, with a warning, when it cannot be created: writes are then only
   * forwarded.
   */
  static async open(ctx: ReadContext, cache: RangeCache): Promise<WriteThrough | undefined> {
    const dir = path.join(cache.dir, STAGING_DIR);
    try {
      await mkdir(dir, { recursive: true });
      for (const name of await readdir(dir)) {
        const pid = Number(name.split('.')[0]);
        if (!Number.isInteger(pid) || pid === process.pid || !alive(pid))
          await rm(path.join(dir, name), { force: true });
      }
    } catch (err) {
      ctx.log('warn', `write-through is off: staging directory ${dir} is unusable`, {
        error: classify(err).message,
      });
      return undefined;
    }
    return new WriteThrough(ctx, cache, dir);
  }

  /**
   * Starts staging a PutObject of `declaredBytes` to `id`: its cached copy is dropped first (so a
   * crash before the commit cannot leave the old version served after the new one was stored).
   * Undefined when it is not written through (the cache is bypassed, or the staging bound is reached).
   */
  async begin(id: ObjectIdentity, declaredBytes: number, body: Readable): Promise<Staged | undefined> {
    if (!this.reserve(declaredBytes)) return undefined;
    await this.dropCached(id);
    const tap = this.stage(body);
    const done = async (): Promise<void> => {
      await tap.remove();
      this.release(declaredBytes);
    };
    return {
      body: tap,
      settle: async (answer) => {
        try {
          if (!answer) return { cached: false, reason: 'the write failed' };
          if (answer.status !== 200) return { cached: false, reason: `the origin answered ${answer.status}` };
          const why = await tap.whole(declaredBytes);
          if (why !== undefined) return { cached: false, reason: why };
          const etag = `"${tap.digest().toString('hex')}"`;
          if (answer.headers.etag !== etag)
            return {
              cached: false,
              reason: `the origin's ETag ${answer.headers.etag ?? '(none)'} is not the body's MD5 ${etag}`,
            };
          return await commitStaged(this.ctx, this.cache, id, etag, [tap]);
        } catch (err) {
          return { cached: false, reason: `the commit failed: ${classify(err).message}` };
        } finally {
          await done();
        }
      },
    };
  }

  /** Takes `bytes` from the staging bound; false when they do not fit (or the cache is bypassed). */
  reserve(bytes: number): boolean {
    if (this.cache.bypassed || bytes > this.cache.maxBytes - this.stagedBytes) return false;
    this.stagedBytes += bytes;
    return true;
  }

  /** Gives back what {@link reserve} took. */
  release(bytes: number): void {
    this.stagedBytes -= bytes;
  }

  /** Drops the cached copy of an object about to be written, in this process and on disk. */
  async dropCached(id: ObjectIdentity): Promise<void> {
    const { ctx, cache } = this;
    invalidateReads(ctx, id);
    await safe(ctx, 'invalidate', () => cache.invalidate(id));
  }

  /** Stages `body` into a new file: the returned stream passes it on. */
  stage(body: Readable): StagingTap {
    const file = path.join(this.dir, `${process.pid}.${randomBytes(8).toString('hex')}.tmp`);
    const tap = new StagingTap(file);
    pipeline(body, tap, () => undefined);
    return tap;
  }
}

/** True when a process with this id exists (one we may not signal exists too). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Commits staged files, one after the other the object's bytes, as object `id` with ETag `etag`
 * (checked by the caller against what keel computed), once a HEAD to the origin answers that ETag
 * and their total size: the metadata cached is the HEAD's, what a read's miss would have stored.
 * Call after the write's invalidation. Skipped, or undone, when another write changes the object
 * meanwhile. The files are left to the caller to remove.
 */
export async function commitStaged(
  ctx: ReadContext,
  cache: RangeCache,
  id: ObjectIdentity,
  etag: string,
  files: StagingTap[],
): Promise<WriteThroughResult> {
  const hash = identityHash(id);
  const gen = generation(ctx, hash);
  const size = files.reduce((n, f) => n + f.bytes, 0);
  const info = await confirm(ctx, id, etag, size);
  if (typeof info === 'string') return { cached: false, reason: info };
  const reader = new StagedReader(files);
  const stored = await writeUnlessChanged(ctx, id, gen, async () => {
    const meta = await cache.putMeta(id, info);
    if (!meta.stored) return meta.message;
    for (let index = 0, at = 0; at < size; index++, at += cache.sliceBytes) {
      const slice = await reader.read(Math.min(cache.sliceBytes, size - at));
      if (typeof slice === 'string') return slice;
      const written = await cache.writeSlice(id, index, slice, info.etag);
      if (!written.stored) return written.message;
    }
    return undefined;
  });
  if (generation(ctx, hash) !== gen)
    return { cached: false, reason: 'another write changed the object meanwhile' };
  return stored === undefined ? { cached: true } : { cached: false, reason: stored };
}

/** Reads staged files in order as one stream of bytes, a slice at a time. */
class StagedReader {
  private file = 0;
  private offset = 0;

  constructor(private readonly files: StagingTap[]) {}

  /** The next `length` bytes, or why they cannot be read. */
  async read(length: number): Promise<Buffer | string> {
    const out = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      const tap = this.files[this.file];
      if (!tap) return 'the staged files are shorter than the object';
      if (this.offset >= tap.bytes) {
        // Done with it: its descriptor is not held while the other files are read.
        await tap.closeFile();
        this.file++;
        this.offset = 0;
        continue;
      }
      const fh = await tap.opened();
      if (!fh) return 'a staging file is unusable';
      const want = Math.min(length - filled, tap.bytes - this.offset);
      const { bytesRead } = await fh.read(out, filled, want, this.offset);
      if (bytesRead === 0) return `staging file ${tap.file} is short at byte ${this.offset}`;
      filled += bytesRead;
      this.offset += bytesRead;
    }
    return out;
  }
}

/**
 * The object's info as the origin answers a HEAD now, when it is the object just written (its
 * ETag and size); otherwise why not. The honest source of Last-Modified, Content-Type and the
 * headers replayed to readers.
 */
async function confirm(
  ctx: ReadContext,
  id: ObjectIdentity,
  etag: string,
  size: number,
): Promise<ObjectInfo | string> {
  let head: OriginResponse;
  try {
    head = await ctx.guard.call(
      id.bucket,
      (signal) =>
        ctx.origin.request({
          method: 'HEAD',
          bucket: id.bucket,
          key: id.key,
          rawQuery: '',
          headers: {},
          signal,
        }),
      { key: id.key },
    );
  } catch (err) {
    return `the HEAD after the write failed: ${classify(err).message}`;
  }
  discard(head.body);
  const info = head.status === 200 ? infoFrom(head.headers) : undefined;
  if (!info) return `the HEAD after the write answered ${head.status}`;
  if (info.etag !== etag || info.size !== size)
    return `the origin now holds another object (ETag ${info.etag}, ${info.size} bytes)`;
  return info;
}

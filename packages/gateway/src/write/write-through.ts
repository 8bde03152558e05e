import { createHash, randomBytes, type Hash } from 'node:crypto';
import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
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

/** Why a PUT was not written through to the cache, or that it was. */
export type WriteThroughResult = { cached: true } | { cached: false; reason: string };

/**
 * Write-through for one gateway: starts staging eligible uploads and commits them. Staged bytes in
 * flight are bounded by the cache's size limit: an upload that would pass it is forwarded only.
 */
export class WriteThrough {
  /** Bytes announced by the uploads being staged now. */
  private stagedBytes = 0;

  private constructor(
    private readonly ctx: ReadContext,
    private readonly cache: RangeCache,
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
   * Starts staging an upload of `declaredBytes` to `id`: its cached copy is dropped first (so a
   * crash before the commit cannot leave the old version served after the new one was stored),
   * and the returned upload's `body` is what to send the origin. Undefined when it is not written
   * through (the cache is bypassed, or the upload does not fit the staging bound).
   */
  async begin(id: ObjectIdentity, declaredBytes: number, body: Readable): Promise<StagedUpload | undefined> {
    const { cache, ctx } = this;
    if (cache.bypassed || declaredBytes > cache.maxBytes - this.stagedBytes) return undefined;
    invalidateReads(ctx, id);
    await safe(ctx, 'invalidate', () => cache.invalidate(id));
    this.stagedBytes += declaredBytes;
    const file = path.join(this.dir, `${process.pid}.${randomBytes(8).toString('hex')}.tmp`);
    const tap = new StagingTap(file);
    pipeline(body, tap, () => undefined);
    return new StagedUpload(ctx, cache, id, declaredBytes, tap, () => {
      this.stagedBytes -= declaredBytes;
    });
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
 * Passes an upload's bytes on unchanged while hashing them (MD5) and appending them to a staging
 * file. A staging failure (disk full …) never fails the upload: the copy is given up, and the
 * write is forwarded only.
 */
class StagingTap extends Transform {
  readonly md5: Hash = createHash('md5');
  bytes = 0;
  /** Every byte passed through, and the stream ended (not cut). */
  complete = false;
  /** Why the staged copy is unusable, once it is. */
  failed: string | undefined;
  private readonly handle: Promise<FileHandle | undefined>;

  constructor(readonly file: string) {
    super();
    this.handle = open(file, 'wx+').catch((err: unknown) => {
      this.failed = `could not create the staging file: ${classify(err).message}`;
      return undefined;
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.md5.update(chunk);
    const at = this.bytes;
    this.bytes += chunk.length;
    void this.handle
      .then(async (fh) => {
        if (fh && this.failed === undefined) await writeAll(fh, chunk, at);
      })
      .catch((err: unknown) => {
        this.failed = `could not write the staging file: ${classify(err).message}`;
      })
      .finally(() => {
        done(null, chunk);
      });
  }

  override _flush(done: TransformCallback): void {
    this.complete = true;
    done();
  }

  /** The open staging file, or undefined when staging failed. */
  async opened(): Promise<FileHandle | undefined> {
    const fh = await this.handle;
    return this.failed === undefined ? fh : undefined;
  }

  /** Closes and removes the staging file. */
  async remove(): Promise<void> {
    const fh = await this.handle;
    await fh?.close().catch(() => undefined);
    await rm(this.file, { force: true }).catch(() => undefined);
  }
}

async function writeAll(fh: FileHandle, chunk: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, position + done);
    done += bytesWritten;
  }
}

/** An upload being staged: committed to the cache once the origin accepted it, else dropped. */
export class StagedUpload {
  constructor(
    private readonly ctx: ReadContext,
    private readonly cache: RangeCache,
    private readonly id: ObjectIdentity,
    private readonly declaredBytes: number,
    private readonly tap: StagingTap,
    private readonly release: () => void,
  ) {}

  /** What to send the origin: the client's body, passed on as it is staged. */
  get body(): Readable {
    return this.tap;
  }

  /**
   * Commits the staged copy when `put` (the origin's answer to the PUT) is a 200 whose ETag is
   * the MD5 keel computed, and a HEAD to the origin answers that ETag and size: the metadata
   * cached is the HEAD's, what a read's miss would have stored. Call after the write's
   * invalidation. Never throws; the staging file is removed whatever happens.
   */
  async commit(put: Pick<OriginResponse, 'status' | 'headers'>): Promise<WriteThroughResult> {
    try {
      return await this.tryCommit(put);
    } catch (err) {
      return { cached: false, reason: `the commit failed: ${classify(err).message}` };
    } finally {
      await this.abandon();
    }
  }

  /** Drops the staged copy (the write failed or was refused). */
  async abandon(): Promise<void> {
    if (!this.tap.destroyed) this.tap.destroy();
    await this.tap.remove();
    this.releaseOnce();
  }

  private released = false;
  private releaseOnce(): void {
    if (this.released) return;
    this.released = true;
    this.release();
  }

  private async tryCommit(put: Pick<OriginResponse, 'status' | 'headers'>): Promise<WriteThroughResult> {
    const { ctx, cache, id, tap } = this;
    if (put.status !== 200) return { cached: false, reason: `the origin answered ${put.status}` };
    if (!tap.complete || tap.bytes !== this.declaredBytes)
      return { cached: false, reason: 'the body did not arrive whole' };
    const fh = await tap.opened();
    if (!fh) return { cached: false, reason: tap.failed ?? 'staging failed' };
    const etag = `"${tap.md5.digest('hex')}"`;
    if (put.headers.etag !== etag)
      return {
        cached: false,
        reason: `the origin's ETag ${put.headers.etag ?? '(none)'} is not the body's MD5 ${etag}`,
      };
    const gen = generation(ctx, identityHash(id));
    const info = await this.confirm(etag);
    if (typeof info === 'string') return { cached: false, reason: info };
    const stored = await writeUnlessChanged(ctx, id, gen, async () => {
      const meta = await cache.putMeta(id, info);
      if (!meta.stored) return meta.message;
      const slice = Buffer.allocUnsafe(Math.min(cache.sliceBytes, info.size));
      for (let index = 0, at = 0; at < info.size; index++, at += cache.sliceBytes) {
        const length = Math.min(cache.sliceBytes, info.size - at);
        const { bytesRead } = await fh.read(slice, 0, length, at);
        if (bytesRead !== length) return `the staging file is short at byte ${at + bytesRead}`;
        const written = await cache.writeSlice(id, index, slice.subarray(0, length), info.etag);
        if (!written.stored) return written.message;
      }
      return undefined;
    });
    if (stored === undefined && generation(ctx, identityHash(id)) !== gen)
      return { cached: false, reason: 'another write changed the object meanwhile' };
    return stored === undefined ? { cached: true } : { cached: false, reason: stored };
  }

  /**
   * The object's info as the origin answers a HEAD now, when it is the object just written (its
   * ETag and size); otherwise why not. The honest source of Last-Modified, Content-Type and the
   * headers replayed to readers.
   */
  private async confirm(etag: string): Promise<ObjectInfo | string> {
    const { ctx, id } = this;
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
    if (info.etag !== etag || info.size !== this.declaredBytes)
      return `the origin now holds another object (ETag ${info.etag}, ${info.size} bytes)`;
    return info;
  }
}

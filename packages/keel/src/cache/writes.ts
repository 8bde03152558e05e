import { classify, keelError } from '../errors/index.js';
import { writeTmpFile } from './atomic-write.js';
import type { Bypass } from './bypass.js';
import type { CacheCounts, CacheReporter } from './counters.js';
import type { Evictor, SliceIndex } from './eviction.js';
import { describeIdentity, identityHash, type ObjectIdentity } from './identity.js';
import type { CacheLocks } from './file-lock.js';
import { slicePath } from './layout.js';
import {
  META_VERSION,
  sliceChecksums,
  sliceLength,
  type CacheMeta,
  type ObjectInfo,
  type SliceInfo,
} from './metadata.js';
import type { LoadedMeta, ObjectStore } from './object-store.js';
import type { CacheSettings } from './options.js';

/** A write: stored, or why not (none of these is an error for the caller: it just serves the origin's bytes). */
export type WriteResult =
  | { stored: true }
  | {
      stored: false;
      reason: 'bypass' | 'no-metadata' | 'etag-mismatch' | 'disk-full' | 'io-error';
      message: string;
    };

/** What {@link CacheWriter} needs from the cache. */
export interface CacheWriterParts extends Pick<CacheSettings, 'dir' | 'sliceBytes' | 'clock' | 'fs'> {
  objectsRoot: string;
  index: SliceIndex;
  store: ObjectStore;
  locks: CacheLocks;
  evictor: Evictor;
  bypass: Bypass;
  /** Paths being written: cleanup leaves them alone. */
  inFlight: Set<string>;
  counts: CacheCounts;
  report: CacheReporter;
  /** Writes after close are refused like writes in bypass mode. */
  isClosed(): boolean;
}

/**
 * The write side of the cache: what the origin said about an object and the slices it sent,
 * each write atomic and durable before the metadata refers to it. A full disk evicts and retries
 * once, then enters bypass mode; no failure here is an error for the caller.
 */
export class CacheWriter {
  constructor(private readonly parts: CacheWriterParts) {}

  /** See {@link RangeCache.putMeta}. */
  async putMeta(id: ObjectIdentity, info: ObjectInfo): Promise<WriteResult> {
    const refused = this.refusal();
    if (refused) return refused;
    const { store, locks, clock, sliceBytes } = this.parts;
    const hash = identityHash(id);
    return locks.run(hash, async () => {
      const loaded = await store.load(hash, id);
      const keep = loaded.state === 'ok' && loaded.meta.etag === info.etag && loaded.meta.size === info.size;
      if (loaded.state === 'ok' && !keep)
        await store.dropSlices(
          hash,
          loaded.meta.slices.map((s) => s.index),
        );
      const meta: CacheMeta = {
        version: META_VERSION,
        identity: { bucket: id.bucket, key: id.key, versionId: id.versionId ?? null },
        etag: info.etag,
        size: info.size,
        ...(info.lastModified === undefined ? {} : { lastModified: info.lastModified }),
        ...(info.contentType === undefined ? {} : { contentType: info.contentType }),
        ...(info.headers === undefined ? {} : { headers: info.headers }),
        sliceBytes,
        cachedAt: clock.now(),
        slices: keep ? loaded.meta.slices : [],
      };
      if (keep) meta.sliceBytes = loaded.meta.sliceBytes;
      return this.storeWithRetry(() => store.write(hash, meta), `metadata of ${describeIdentity(id)}`, hash);
    });
  }

  /**
   * See {@link RangeCache.writeSlice}. The slice goes to a temporary file and is fsynced without
   * any lock; only its rename into place and the metadata that then lists it run under the
   * object's lock, shared by every process that opens this directory, and against the metadata
   * as it is on disk then: processes adding slices of one object at once lose none of them.
   */
  async writeSlice(
    id: ObjectIdentity,
    index: number,
    data: Uint8Array,
    expected: string | { etag: string },
  ): Promise<WriteResult> {
    const etag = typeof expected === 'string' ? expected : expected.etag;
    const refused = this.refusal();
    if (refused) return refused;
    const { store, locks, clock, fs, objectsRoot, inFlight, index: sliceIndex, counts } = this.parts;
    const hash = identityHash(id);
    // Checked once before the bytes are written, and again under the lock before they are kept.
    const before = await store.load(hash, id);
    const refusedBy = (loaded: LoadedMeta): WriteResult | 'present' | undefined => {
      if (loaded.state !== 'ok')
        return { stored: false, reason: 'no-metadata', message: `no metadata for ${describeIdentity(id)}` };
      const meta = loaded.meta;
      if (meta.etag !== etag)
        return {
          stored: false,
          reason: 'etag-mismatch',
          message: `slice of ${describeIdentity(id)} has ETag ${etag}, cached version is ${meta.etag}`,
        };
      const length = sliceLength(meta.size, meta.sliceBytes, index);
      if (!Number.isSafeInteger(index) || index < 0 || length === 0 || data.byteLength !== length) {
        throw keelError(
          'INVALID_INPUT',
          `slice ${index} of ${describeIdentity(id)} must be ${length} bytes, got ${data.byteLength}`,
        );
      }
      return meta.slices.some((s) => s.index === index) ? 'present' : undefined;
    };
    const early = refusedBy(before);
    if (early === 'present') return { stored: true };
    if (early) return early;
    await this.parts.evictor.makeRoom(data.byteLength);
    const file = slicePath(objectsRoot, hash, index);
    const slice: SliceInfo = {
      index,
      length: data.byteLength,
      ...sliceChecksums(data),
      lastAccess: clock.now(),
    };
    // The object was removed (invalidated, evicted, cleaned) by this or another process while
    // its slice was being written: nothing to keep it for, and no fault of the disk.
    const removedMeanwhile: WriteResult = {
      stored: false,
      reason: 'no-metadata',
      message: `${describeIdentity(id)} was removed from the cache while slice ${index} was written`,
    };
    const result = await this.storeWithRetry(
      async () => {
        await store.ensureDir(hash);
        let tmp: string;
        try {
          tmp = await writeTmpFile(fs, file, data, inFlight);
        } catch (err) {
          if (isEnoent(err)) return removedMeanwhile;
          throw err;
        }
        try {
          return await locks.run(hash, async (): Promise<WriteResult> => {
            const now = await store.load(hash, id);
            const refusal = refusedBy(now);
            if (refusal === 'present') return { stored: true };
            if (refusal || now.state !== 'ok') return refusal ?? removedMeanwhile;
            await fs.rename(tmp, file);
            try {
              await store.writeInDir(hash, { ...now.meta, slices: [...now.meta.slices, slice] });
            } catch (err) {
              await fs.rm(file, { force: true }).catch(() => undefined);
              throw err;
            }
            sliceIndex.add(hash, slice);
            counts.bytesWritten += data.byteLength;
            counts.slicesWritten++;
            return { stored: true };
          });
        } finally {
          // Renamed into place, or not wanted: either way no temporary file is left.
          await fs.rm(tmp, { force: true }).catch(() => undefined);
          inFlight.delete(tmp);
        }
      },
      `slice ${index} of ${describeIdentity(id)}`,
      hash,
    );
    return result;
  }

  /** Why writes are refused now (bypass mode or a closed cache), or undefined. */
  private refusal(): WriteResult | undefined {
    const { bypass } = this.parts;
    if (bypass.active || this.parts.isClosed())
      return { stored: false, reason: 'bypass', message: bypass.reason ?? 'cache closed' };
    return undefined;
  }

  /**
   * Runs a write of `what` to object `hash`; on a full disk, evicts and retries once, then
   * bypasses. Other errors are reported and give up on caching this write.
   */
  private async storeWithRetry(
    write: () => Promise<WriteResult | void>,
    what: string,
    hash: string,
  ): Promise<WriteResult> {
    const { dir, report } = this.parts;
    for (let attempt = 1; ; attempt++) {
      try {
        return (await write()) ?? { stored: true };
      } catch (err) {
        const e = classify(err);
        if (e.code !== 'DISK_FULL') {
          report.fault(`could not write ${what} to ${dir}: ${e.message}; serving from origin`, err);
          return { stored: false, reason: 'io-error', message: e.message };
        }
        report.repair(
          'disk_full_events_total',
          `could not write ${what} to ${dir}: disk full; ${attempt === 1 ? 'evicting and retrying once' : 'entering bypass mode'}`,
        );
        if (attempt >= 2) {
          this.parts.bypass.enter(`disk full while writing ${what}`);
          return { stored: false, reason: 'disk-full', message: e.message };
        }
        await this.parts.evictor.emergencyEvict(hash).catch(() => 0);
      }
    }
  }
}

function isEnoent(err: unknown): boolean {
  return (err as { code?: unknown } | undefined)?.code === 'ENOENT';
}

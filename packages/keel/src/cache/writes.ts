import { classify, keelError } from '../errors/index.js';
import { writeFileAtomic } from './atomic-write.js';
import type { Bypass } from './bypass.js';
import type { CacheCounts, CacheReporter } from './counters.js';
import type { Evictor, SliceIndex } from './eviction.js';
import { describeIdentity, identityHash, type ObjectIdentity } from './identity.js';
import type { KeyedLock } from './keyed-lock.js';
import { slicePath } from './layout.js';
import {
  META_VERSION,
  sliceChecksums,
  sliceLength,
  type CacheMeta,
  type ObjectInfo,
  type SliceInfo,
} from './metadata.js';
import type { ObjectStore } from './object-store.js';
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
  locks: KeyedLock;
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

  /** See {@link RangeCache.writeSlice}. */
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
    await this.parts.evictor.makeRoom(data.byteLength);
    return locks.run(hash, async () => {
      const loaded = await store.load(hash, id);
      if (loaded.state !== 'ok')
        return { stored: false, reason: 'no-metadata', message: `no metadata for ${describeIdentity(id)}` };
      const meta = loaded.meta;
      if (meta.etag !== etag) {
        return {
          stored: false,
          reason: 'etag-mismatch',
          message: `slice of ${describeIdentity(id)} has ETag ${etag}, cached version is ${meta.etag}`,
        };
      }
      const expected = sliceLength(meta.size, meta.sliceBytes, index);
      if (!Number.isSafeInteger(index) || index < 0 || expected === 0 || data.byteLength !== expected) {
        throw keelError(
          'INVALID_INPUT',
          `slice ${index} of ${describeIdentity(id)} must be ${expected} bytes, got ${data.byteLength}`,
        );
      }
      if (meta.slices.some((s) => s.index === index)) return { stored: true };
      const file = slicePath(objectsRoot, hash, index);
      const slice: SliceInfo = {
        index,
        length: data.byteLength,
        ...sliceChecksums(data),
        lastAccess: clock.now(),
      };
      inFlight.add(file);
      try {
        const result = await this.storeWithRetry(
          async () => {
            // Once per attempt: the slice file and then meta.json go into this directory.
            await store.ensureDir(hash);
            await writeFileAtomic(fs, file, data, inFlight);
            try {
              await store.writeInDir(hash, { ...meta, slices: [...meta.slices, slice] });
            } catch (err) {
              await fs.rm(file, { force: true }).catch(() => undefined);
              throw err;
            }
          },
          `slice ${index} of ${describeIdentity(id)}`,
          hash,
        );
        if (result.stored) {
          sliceIndex.add(hash, slice);
          counts.bytesWritten += data.byteLength;
          counts.slicesWritten++;
        }
        return result;
      } finally {
        inFlight.delete(file);
      }
    });
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
  private async storeWithRetry(write: () => Promise<void>, what: string, hash: string): Promise<WriteResult> {
    const { dir, report } = this.parts;
    for (let attempt = 1; ; attempt++) {
      try {
        await write();
        return { stored: true };
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

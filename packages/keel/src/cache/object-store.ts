import { classify, type KeelError } from '../errors/index.js';
import type { AccessTimes } from './access-times.js';
import { writeFileAtomic } from './atomic-write.js';
import type { CacheReporter } from './counters.js';
import type { SliceIndex } from './eviction.js';
import type { CacheFs } from './fs.js';
import { describeIdentity, sameIdentity, type ObjectIdentity } from './identity.js';
import type { CacheLocks } from './file-lock.js';
import { metaPath, objectDir, slicePath } from './layout.js';
import { sameStamp, stampOf, type FileStamp, type MetaMemo } from './meta-memo.js';
import { decodeMeta, encodeMeta, type CacheMeta } from './metadata.js';

/** metadata.json as found on disk. */
export type LoadedMeta =
  | { state: 'ok'; meta: CacheMeta }
  | { state: 'missing' }
  | { state: 'corrupt'; reason: string }
  | { state: 'error'; error: KeelError };

/** What {@link ObjectStore} works with; the memo, index and locks are the cache's own. */
export interface ObjectStoreParts {
  fs: CacheFs;
  /** `<dir>/objects` ({@link objectsRootOf}). */
  objectsRoot: string;
  memo: MetaMemo;
  index: SliceIndex;
  access: AccessTimes;
  locks: CacheLocks;
  /** Paths being written in this process: cleanup leaves them alone. */
  inFlight: Set<string>;
  /** Repairs, and faults of writes and removals. */
  report: CacheReporter;
  /** Faults of metadata reads. */
  readReport: CacheReporter;
}

/**
 * The files of cached objects: each object's meta.json (read through the memo, written
 * atomically) and its slice files, kept in step with the slice index. Corrupted metadata and
 * missing or corrupt slices are repaired here, each with its counter.
 */
export class ObjectStore {
  /** Counts starts and ends of metadata writes and removals (see load). */
  private metaWrites = 0;

  constructor(private readonly parts: ObjectStoreParts) {}

  /**
   * The object's metadata: from memory when meta.json is the file it was read from or written as
   * (one `stat`), else read, checked and remembered. Corrupted metadata is repaired (a miss).
   */
  async load(hash: string, id?: ObjectIdentity): Promise<LoadedMeta> {
    const file = metaPath(this.parts.objectsRoot, hash);
    // A metadata write or removal while this load runs may leave its stamp and bytes from two
    // different files: then the result is used but not remembered.
    const writesBefore = this.metaWrites;
    let bytes: Buffer;
    let stamp: FileStamp;
    const unreadable = (err: unknown): LoadedMeta => {
      // Not cached is the common case (every first write of an object): no KeelError built for it.
      const e = (err as { code?: unknown } | undefined)?.code === 'ENOENT' ? undefined : classify(err);
      if (e === undefined || e.code === 'NOT_FOUND') {
        this.parts.memo.delete(hash);
        // Another process may have removed it (evicted, invalidated): its slices are gone too.
        this.parts.index.removeObject(hash);
        return { state: 'missing' };
      }
      this.parts.readReport.fault(
        `could not read metadata of ${id ? describeIdentity(id) : hash}: ${e.message}; serving from origin`,
        err,
      );
      return { state: 'error', error: e };
    };
    try {
      stamp = stampOf(await this.parts.fs.stat(file));
    } catch (err) {
      return unreadable(err);
    }
    const known = this.parts.memo.get(hash);
    if (known && sameStamp(known.stamp, stamp) && (!id || sameIdentity(known.meta.identity, id)))
      return { state: 'ok', meta: known.meta };
    try {
      bytes = await this.parts.fs.readFile(file);
    } catch (err) {
      return unreadable(err);
    }
    const decoded = decodeMeta(bytes);
    if (!decoded.ok || (id && !sameIdentity(decoded.meta.identity, id))) {
      const reason = decoded.ok ? 'metadata belongs to another object' : decoded.reason;
      await this.remove(hash).catch((err: unknown) => {
        this.parts.report.fault(`could not remove corrupted entry ${hash}`, err);
      });
      this.parts.report.repair(
        'corruption_metadata_total',
        `metadata of ${id ? describeIdentity(id) : hash} was corrupted (${reason}); entry deleted`,
      );
      return { state: 'corrupt', reason };
    }
    // Stat came first: if the file changed in between, the stamp is older than the bytes and the
    // next load reads the file again.
    if (this.metaWrites === writesBefore) {
      this.parts.memo.set(hash, decoded.meta, stamp);
      // Read from disk: another process may have added or dropped slices since this one looked.
      this.parts.index.syncObject(hash, decoded.meta.slices);
    }
    return { state: 'ok', meta: decoded.meta };
  }

  /** {@link load} without its repairs and memo when not fixing (a report-only verify). */
  async peek(hash: string, fix: boolean): Promise<LoadedMeta> {
    if (fix) return this.load(hash);
    try {
      const decoded = decodeMeta(await this.parts.fs.readFile(metaPath(this.parts.objectsRoot, hash)));
      return decoded.ok ? { state: 'ok', meta: decoded.meta } : { state: 'corrupt', reason: decoded.reason };
    } catch (err) {
      const e = classify(err);
      return e.code === 'NOT_FOUND' ? { state: 'missing' } : { state: 'error', error: e };
    }
  }

  /**
   * Replaces meta.json atomically (creating the object's directory if it is missing) and remembers
   * what was written. Slices carry their latest access times from the index, so eviction order
   * survives a restart.
   */
  async write(hash: string, meta: CacheMeta): Promise<void> {
    await this.ensureDir(hash);
    await this.writeInDir(hash, meta);
  }

  /**
   * Creates the object's directory if it is missing (cleanup and eviction remove it with the
   * object's last file). A writer that puts a slice file in it first calls this once and then
   * {@link writeInDir}, so one write of a slice creates the directory once.
   */
  async ensureDir(hash: string): Promise<void> {
    await this.parts.fs.mkdir(objectDir(this.parts.objectsRoot, hash), { recursive: true });
  }

  /**
   * {@link write} into a directory the caller has just made sure of with {@link ensureDir}.
   * Should it be gone after all, this fails (ENOENT) rather than writing metadata into a new,
   * empty directory without the files it refers to.
   */
  async writeInDir(hash: string, meta: CacheMeta): Promise<void> {
    const written = this.parts.access.latest(hash, meta);
    const file = metaPath(this.parts.objectsRoot, hash);
    this.parts.memo.delete(hash);
    this.metaWrites++;
    await writeFileAtomic(this.parts.fs, file, encodeMeta(written), this.parts.inFlight);
    this.metaWrites++;
    this.parts.access.clean(hash);
    // Remember it only with the stamp of the file as renamed into place.
    const stamp = await this.parts.fs.stat(file).then(stampOf, () => undefined);
    if (stamp) this.parts.memo.set(hash, written, stamp);
  }

  /** Forgets an object: its directory, its metadata in memory and its slices in the index. */
  async remove(hash: string): Promise<void> {
    this.parts.memo.delete(hash);
    this.parts.access.clean(hash);
    this.metaWrites++;
    await this.parts.fs.rm(objectDir(this.parts.objectsRoot, hash), { recursive: true, force: true });
    this.metaWrites++;
    this.parts.index.removeObject(hash);
  }

  /**
   * Removes slices from the metadata (atomically) and then their files; without `meta`, only the
   * files. Caller holds the object's lock.
   */
  async dropSlices(hash: string, indexes: number[], meta?: CacheMeta): Promise<void> {
    if (meta) {
      const remaining = meta.slices.filter((s) => !indexes.includes(s.index));
      if (remaining.length === 0) {
        await this.remove(hash);
        return;
      }
      await this.write(hash, { ...meta, slices: remaining });
    }
    for (const i of indexes) {
      await this.parts.fs.rm(slicePath(this.parts.objectsRoot, hash, i), { force: true });
      this.parts.index.remove(hash, i);
    }
  }

  /**
   * Drops a slice that is missing or failed verification, keeping the others, and counts
   * `corruption_missing_range_total`. Takes the object's lock unless `locked`.
   */
  async dropCorruptSlice(
    hash: string,
    id: ObjectIdentity,
    index: number,
    why: string,
    locked = false,
  ): Promise<void> {
    const drop = async (): Promise<void> => {
      const loaded = await this.load(hash, id);
      if (loaded.state === 'ok' && loaded.meta.slices.some((s) => s.index === index)) {
        await this.dropSlices(hash, [index], loaded.meta);
      }
    };
    await (locked ? drop() : this.parts.locks.run(hash, drop)).catch((err: unknown) => {
      this.parts.report.fault(`could not repair slice ${index} of ${describeIdentity(id)}`, err);
    });
    this.parts.report.repair(
      'corruption_missing_range_total',
      `slice ${index} of ${describeIdentity(id)} ${why}; dropped, other slices kept`,
    );
  }

  /**
   * Removes references to slice files that do not exist (or have the wrong size), counting
   * `inconsistency_fixed_total` per reference. Caller holds the object's lock.
   */
  async fixReferences(hash: string, id?: ObjectIdentity): Promise<{ removed: number; remaining: number }> {
    const loaded = await this.load(hash, id);
    if (loaded.state !== 'ok') return { removed: 0, remaining: 0 };
    const meta = loaded.meta;
    const missing: number[] = [];
    for (const s of meta.slices) {
      try {
        const st = await this.parts.fs.stat(slicePath(this.parts.objectsRoot, hash, s.index));
        if (st.size !== s.length) missing.push(s.index);
      } catch {
        missing.push(s.index);
      }
    }
    if (missing.length === 0) return { removed: 0, remaining: meta.slices.length };
    await this.dropSlices(hash, missing, meta);
    this.parts.report.repair(
      'inconsistency_fixed_total',
      `metadata of ${describeIdentity(meta.identity)} referred to ${missing.length} missing slice(s); references removed`,
      missing.length,
    );
    return { removed: missing.length, remaining: meta.slices.length - missing.length };
  }
}

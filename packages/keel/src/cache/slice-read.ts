import type { FileHandle } from 'node:fs/promises';
import { crc32 } from './crc32.js';
import { classify } from '../errors/index.js';
import type { AccessTimes } from './access-times.js';
import type { CacheReporter } from './counters.js';
import type { CacheFs } from './fs.js';
import { describeIdentity, type ObjectIdentity } from './identity.js';
import { metaPath, slicePath } from './layout.js';
import type { MetaMemo } from './meta-memo.js';
import { blocksOf, type SliceInfo } from './metadata.js';
import type { ObjectStore } from './object-store.js';
import type { ReadUnit } from './read-plan.js';
import type { UnitReader } from './read-stream.js';
import type { VerifyOutcome, VerifyPool, VerifyRequest } from './verify-pool.js';

/** Verified bytes of a slice; `release` hands their memory back for reuse. */
export interface SliceBytes {
  bytes: Buffer;
  release: () => void;
}

/** What {@link SliceReader} needs from the cache. */
export interface SliceReaderParts {
  fs: CacheFs;
  objectsRoot: string;
  /** Verifying threads; none with an injected `fs` (then reads go through it on the event loop). */
  verifier: VerifyPool | undefined;
  memo: MetaMemo;
  access: AccessTimes;
  store: ObjectStore;
  report: CacheReporter;
}

/**
 * Reads slices for the hit path: only bytes that match their checksums come out, each read is
 * recorded for eviction order, and a slice that is missing or fails verification is dropped.
 */
export class SliceReader {
  constructor(private readonly parts: SliceReaderParts) {}

  /**
   * Reads the units of one streamed read of the object: on verifying threads each read opens its
   * file there, so there is nothing to share; on the event loop the reads of one slice share one
   * file handle. `checkMeta`: the first read checks meta.json (see {@link read}).
   */
  unitReader(hash: string, id: ObjectIdentity, checkMeta: boolean): UnitReader {
    return this.parts.verifier
      ? new ThreadUnitReader(this, hash, id, checkMeta)
      : new SharedHandleUnitReader(this, this.parts.fs, this.parts.objectsRoot, hash, id);
  }

  /**
   * Reads bytes `[from, to)` of one slice, verifying every block they touch (the whole slice when
   * it has no block checksums), on a verifying thread when there are any. On any failure repairs
   * and returns undefined. `handle` is the slice's file opened by a caller that shares it between
   * reads on the event loop (and closes it); without verifying threads only. `checkMeta`: the
   * verifying thread also checks that meta.json is still the file the metadata in memory came
   * from (one per read of an object whose metadata was not just checked on the event loop).
   */
  async read(
    hash: string,
    id: ObjectIdentity,
    slice: SliceInfo,
    from = 0,
    to = slice.length,
    { handle, checkMeta = false }: { handle?: Promise<FileHandle>; checkMeta?: boolean } = {},
  ): Promise<SliceBytes | undefined> {
    const { blockBytes, blocks } = blocksOf(slice);
    const firstBlock = Math.floor(from / blockBytes);
    const lastBlock = Math.floor((to - 1) / blockBytes);
    const readFrom = firstBlock * blockBytes;
    const readTo = Math.min(slice.length, (lastBlock + 1) * blockBytes);
    // At the slice's end, one byte more: a slice file longer than recorded is corrupt too.
    const atEnd = readTo === slice.length;
    const crcs = blocks.subarray(firstBlock, lastBlock + 1);
    const { verifier, memo, objectsRoot } = this.parts;
    const known = verifier && checkMeta ? memo.peek(hash) : undefined;
    const request = {
      path: slicePath(objectsRoot, hash, slice.index),
      position: readFrom,
      length: readTo - readFrom,
      atEnd,
      blockBytes,
      crcs,
      meta: known && { path: metaPath(objectsRoot, hash), stamp: known.stamp },
    };
    const outcome = verifier
      ? await verifier.verify(request)
      : await readAndVerify(this.parts.fs, request, handle);
    if (outcome.ok) {
      // The bytes match the checksums they were read against; a changed meta.json is read anew
      // by the next lookup.
      if (outcome.metaChanged && memo.peek(hash) === known) memo.delete(hash);
      this.parts.access.touch(hash, slice.index);
      return { bytes: outcome.bytes.subarray(from - readFrom, to - readFrom), release: outcome.release };
    }
    if (outcome.kind === 'error') {
      const e = classify(outcome.error);
      if (e.code !== 'NOT_FOUND') {
        this.parts.report.fault(
          `could not read slice ${slice.index} of ${describeIdentity(id)}: ${e.message}; serving from origin`,
          outcome.error,
        );
        return undefined;
      }
    }
    const why =
      outcome.kind === 'error'
        ? 'missing'
        : outcome.kind === 'checksum'
          ? 'failed its checksum'
          : 'has the wrong length';
    await this.parts.store.dropCorruptSlice(hash, id, slice.index, why);
    return undefined;
  }
}

/** How to hand back the memory of each chunk a streamed read gave out, until released or collected. */
const chunkReleases = new WeakMap<Buffer, () => void>();

/**
 * Hands back the memory of a chunk of a streamed `RangeCache.read` once nothing reads it any
 * more (for a response: in the socket write's callback, once the bytes are with the OS), so the
 * next read reuses it instead of allocating a new buffer for each chunk. A chunk that is not
 * released is garbage-collected as before; one the stream did not give out as it is (or released
 * already) is ignored. Releasing a chunk still being read or
 * written is a mistake: its memory may be reused for other bytes (old views of it read as empty).
 */
export function releaseChunk(chunk: Buffer): void {
  const release = chunkReleases.get(chunk);
  if (release === undefined) return;
  chunkReleases.delete(chunk);
  release();
}

/** Units of a stream read on verifying threads, each read opening its file there. */
class ThreadUnitReader implements UnitReader {
  constructor(
    private readonly slices: SliceReader,
    private readonly hash: string,
    private readonly id: ObjectIdentity,
    /** Until the first unit is read: meta.json is checked once per stream. */
    private checkMeta: boolean,
  ) {}

  read(u: ReadUnit): Promise<Buffer | undefined> {
    const checkMeta = this.checkMeta;
    this.checkMeta = false;
    return this.slices.read(this.hash, this.id, u.slice, u.from, u.to, { checkMeta }).then(releasable);
  }

  doneBefore(): void {
    // Nothing is held between reads.
  }
}

/** Units of a stream read on the event loop: the reads of one slice share one file handle. */
class SharedHandleUnitReader implements UnitReader {
  private readonly handles = new Map<number, Promise<FileHandle>>();

  constructor(
    private readonly slices: SliceReader,
    private readonly fs: CacheFs,
    private readonly root: string,
    private readonly hash: string,
    private readonly id: ObjectIdentity,
  ) {}

  read(u: ReadUnit): Promise<Buffer | undefined> {
    const index = u.slice.index;
    let handle = this.handles.get(index);
    if (!handle) {
      handle = this.fs.open(slicePath(this.root, this.hash, index), 'r');
      // A failed open is the read's outcome (a miss), reported there.
      handle.catch(() => undefined);
      this.handles.set(index, handle);
    }
    return this.slices.read(this.hash, this.id, u.slice, u.from, u.to, { handle }).then(releasable);
  }

  doneBefore(keepFrom: number): void {
    for (const [index, handle] of this.handles) {
      if (index >= keepFrom) continue;
      this.handles.delete(index);
      // close() waits for reads still in flight on the handle.
      void handle.then((h) => h.close()).catch(() => undefined);
    }
  }
}

/** The bytes, whose memory its consumer may hand back with {@link releaseChunk}. */
function releasable(read: SliceBytes | undefined): Buffer | undefined {
  if (read) chunkReleases.set(read.bytes, read.release);
  return read?.bytes;
}

/**
 * Reads and verifies on the event loop, through the cache's file system (the path taken with an
 * injected `fs`, or without verifying threads). With `shared`, reads through that handle and
 * leaves it open (whoever passed it closes it); else opens and closes the file.
 */
async function readAndVerify(
  fs: CacheFs,
  r: VerifyRequest,
  shared?: Promise<FileHandle>,
): Promise<VerifyOutcome> {
  const buffer = Buffer.allocUnsafe(r.length + (r.atEnd ? 1 : 0));
  let got = 0;
  try {
    const handle = shared ? await shared : await fs.open(r.path, 'r');
    try {
      while (got < buffer.length) {
        const { bytesRead } = await handle.read(buffer, got, buffer.length - got, r.position + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    } finally {
      if (!shared) await handle.close();
    }
  } catch (err) {
    return { ok: false, kind: 'error', error: err as NodeJS.ErrnoException };
  }
  if (got !== r.length) return { ok: false, kind: 'wrong-length', message: `read ${got} bytes` };
  for (let b = 0, at = 0; at < r.length; b++, at += r.blockBytes) {
    if (crc32(buffer.subarray(at, Math.min(r.length, at + r.blockBytes))) !== r.crcs[b])
      return { ok: false, kind: 'checksum', message: 'a block failed its CRC32' };
  }
  return { ok: true, bytes: buffer.subarray(0, r.length), release: () => undefined, metaChanged: false };
}

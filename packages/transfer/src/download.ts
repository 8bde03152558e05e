import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat, truncate } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { keelError, retry } from 'keel';
import type { TransferPolicy } from './policy.js';
import { ProgressTracker } from './progress.js';
import { resumingGet } from './resuming-stream.js';
import { s3Error, type S3Client } from './s3-client.js';
import { loadState, removeState, saveState } from './state-file.js';

/** Options of {@link downloadFile}. */
export interface DownloadOptions {
  client: S3Client;
  bucket: string;
  key: string;
  /** Destination path; the data goes to `<file>.part` until it is complete and verified. */
  file: string;
  /**
   * The policy each request runs under: a retry, or any policy or pipeline (a retry with a circuit
   * breaker, a retry budget…) (default 5 attempts, exponential backoff).
   */
  policy?: TransferPolicy;
  /** Another name for {@link DownloadOptions.policy} (its name when it took only a retry policy). */
  retry?: TransferPolicy;
  /** Persist progress (after fsync) every this many bytes (default 8 MiB). */
  checkpointBytes?: number;
  firstByteTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Receives progress; its total is set once known. */
  progress?: ProgressTracker;
  signal?: AbortSignal;
}

/** What a download did. */
export interface DownloadResult {
  file: string;
  size: number;
  etag: string;
  /** Bytes already on disk from an earlier run, checked against the state file's CRC32 and kept. */
  resumedFrom: number;
  /**
   * Bytes of an earlier run that were thrown away: past the last checkpoint (never vouched for),
   * or the whole partial file when it did not match the state (shorter, or another CRC32).
   */
  discardedBytes: number;
  /** Bytes fetched over the network in this run. */
  bytesFetched: number;
  /** Times the body broke and was resumed in this run. */
  resumes: number;
  /** Whether the content was checked against an MD5 ETag. */
  checksumVerified: boolean;
}

interface DownloadState {
  version: 1;
  bucket: string;
  key: string;
  etag: string;
  size: number;
  bytesDone: number;
  /** CRC32 of the first `bytesDone` bytes of the `.part` file. */
  crc32: number;
}

const isState = (v: unknown): v is DownloadState => {
  const s = v as Partial<DownloadState> | null;
  return (
    typeof s === 'object' &&
    s !== null &&
    s.version === 1 &&
    typeof s.bucket === 'string' &&
    typeof s.key === 'string' &&
    typeof s.etag === 'string' &&
    Number.isSafeInteger(s.size) &&
    Number.isSafeInteger(s.bytesDone) &&
    Number.isSafeInteger(s.crc32)
  );
};

/** CRC32 of the first `length` bytes of `file`. */
async function crc32Of(file: string, length: number): Promise<number> {
  if (length === 0) return 0;
  let crc = 0;
  for await (const chunk of createReadStream(file, { start: 0, end: length - 1 }))
    crc = crc32(chunk as Buffer, crc);
  return crc;
}

/**
 * Downloads an S3 object to a file, surviving broken connections (the body is resumed from the
 * next byte, pinned to the ETag) and restarts (a second run continues from the bytes on disk that
 * the state file vouches for: its size, ETag and the CRC32 of the bytes kept must match, otherwise
 * the download starts over). Verifies the size and, for a single-part ETag, the MD5; renames
 * into place atomically.
 * @throws KeelError `OBJECT_CHANGED` when the object changed mid-way (the partial file is kept for
 *   nothing: it is removed and the next run starts over), `CHECKSUM_MISMATCH`, or the classified
 *   S3 error.
 */
export async function downloadFile(options: DownloadOptions): Promise<DownloadResult> {
  const { client, bucket, key, file } = options;
  const partFile = `${file}.part`;
  const stateFile = `${file}.keel-download.json`;
  const policy = options.policy ?? options.retry ?? retry({ maxAttempts: 5 });
  const head = await policy.execute(
    async (ctx) => {
      const res = await client.send({ method: 'HEAD', bucket, key, signal: ctx.signal });
      res.body.resume();
      if (res.status !== 200) throw await s3Error(res, `HEAD ${bucket}/${key}`);
      return res;
    },
    { signal: options.signal },
  );
  const etag = head.headers.etag ?? '';
  const size = Number(head.headers['content-length'] ?? NaN);
  if (!Number.isSafeInteger(size))
    throw keelError('BAD_GATEWAY', `HEAD ${bucket}/${key} gave no usable Content-Length`);

  let offset = 0;
  let crc = 0;
  let discarded = 0;
  const previous = await loadState(stateFile, isState);
  const onDisk = await stat(partFile).then(
    (s) => s.size,
    () => 0,
  );
  if (
    previous &&
    previous.bucket === bucket &&
    previous.key === key &&
    previous.etag === etag &&
    previous.size === size &&
    onDisk >= previous.bytesDone &&
    (await crc32Of(partFile, previous.bytesDone)) === previous.crc32
  ) {
    offset = previous.bytesDone;
    crc = previous.crc32;
    // Bytes past the last checkpoint were never vouched for (not fsynced): drop them.
    discarded = onDisk - offset;
    if (discarded > 0) await truncate(partFile, offset);
  } else {
    // No state, another object or version, or bytes on disk that do not match: start over.
    discarded = onDisk;
    await rm(partFile, { force: true });
  }
  const state: DownloadState = { version: 1, bucket, key, etag, size, bytesDone: offset, crc32: crc };
  await saveState(stateFile, state);

  const progress = options.progress;
  progress?.setTotal(size);
  progress?.set(offset);
  let fetched = 0;
  let resumes = 0;
  const handle = await open(partFile, offset === 0 ? 'w' : 'r+');
  try {
    if (offset < size) {
      const got = await resumingGet({
        start: offset,
        ifMatch: etag,
        policy,
        ...(options.firstByteTimeoutMs === undefined
          ? {}
          : { firstByteTimeoutMs: options.firstByteTimeoutMs }),
        ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
        request: async (range, ifMatch, signal) => {
          const res = await client.send({
            method: 'GET',
            bucket,
            key,
            headers: { range: `bytes=${range.start}-`, ...(ifMatch ? { 'if-match': ifMatch } : {}) },
            signal: options.signal ? AbortSignal.any([signal, options.signal]) : signal,
          });
          return res;
        },
      });
      const checkpoint = options.checkpointBytes ?? 8 * 1024 * 1024;
      let position = offset;
      let sinceCheckpoint = 0;
      for await (const chunk of got.body as AsyncIterable<Buffer>) {
        await handle.write(chunk, 0, chunk.length, position);
        position += chunk.length;
        fetched += chunk.length;
        crc = crc32(chunk, crc);
        sinceCheckpoint += chunk.length;
        progress?.set(position);
        if (sinceCheckpoint >= checkpoint) {
          await handle.sync();
          state.bytesDone = position;
          state.crc32 = crc;
          await saveState(stateFile, state);
          sinceCheckpoint = 0;
        }
      }
      resumes = got.resumes();
      await handle.sync();
    }
  } catch (err) {
    await handle.close();
    if ((err as { code?: unknown }).code === 'OBJECT_CHANGED') {
      await rm(partFile, { force: true });
      await removeState(stateFile);
    }
    throw err;
  }
  await handle.close();
  const finalSize = (await stat(partFile)).size;
  if (finalSize !== size) {
    throw keelError(
      'CHECKSUM_MISMATCH',
      `downloaded ${finalSize} bytes of ${bucket}/${key}, expected ${size}; run again to resume`,
    );
  }
  const md5 = /^"?([0-9a-f]{32})"?$/.exec(etag)?.[1];
  if (md5) {
    const hash = createHash('md5');
    for await (const chunk of createReadStream(partFile)) hash.update(chunk as Buffer);
    if (hash.digest('hex') !== md5) {
      await rm(partFile, { force: true });
      await removeState(stateFile);
      throw keelError(
        'CHECKSUM_MISMATCH',
        `the MD5 of ${bucket}/${key} does not match its ETag ${etag}; the partial file was removed`,
      );
    }
  }
  await rename(partFile, file);
  await removeState(stateFile);
  progress?.finish();
  return {
    file,
    size,
    etag,
    resumedFrom: offset,
    discardedBytes: discarded,
    bytesFetched: fetched,
    resumes,
    checksumVerified: md5 !== undefined,
  };
}

import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { classify, keelError, retry as retryPolicy } from 'keel';
import type { TransferPolicy } from './policy.js';
import { ProgressTracker } from './progress.js';
import type { S3Client } from './s3-client.js';
import { loadState, removeState, saveState } from './state-file.js';

/** Options of {@link uploadFile}. */
export interface UploadOptions {
  client: S3Client;
  bucket: string;
  key: string;
  file: string;
  /** Part size (default 8 MiB; S3's minimum is 5 MiB for all parts but the last). */
  partBytes?: number;
  /** Parts in flight at once (default 4). */
  concurrency?: number;
  /**
   * The policy each part and call runs under: a retry, or any policy or pipeline (a retry with a
   * circuit breaker, a retry budget…) (default 5 attempts, exponential backoff).
   */
  policy?: TransferPolicy;
  /** Another name for {@link UploadOptions.policy} (its name when it took only a retry policy). */
  retry?: TransferPolicy;
  progress?: ProgressTracker;
  contentType?: string;
}

/** What an upload did. */
export interface UploadResult {
  etag: string;
  size: number;
  parts: number;
  /** Parts found already uploaded by an earlier run and not sent again. */
  partsReused: number;
  /** Bytes sent in this run. */
  bytesSent: number;
}

interface UploadSession {
  version: 1;
  bucket: string;
  key: string;
  uploadId: string;
  size: number;
  mtimeMs: number;
  partBytes: number;
  parts: Record<string, string>;
}

const isSession = (v: unknown): v is UploadSession => {
  const s = v as Partial<UploadSession> | null;
  return (
    typeof s === 'object' &&
    s !== null &&
    s.version === 1 &&
    typeof s.uploadId === 'string' &&
    typeof s.bucket === 'string' &&
    typeof s.key === 'string' &&
    typeof s.parts === 'object' &&
    s.parts !== null
  );
};

const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/**
 * Uploads a file to S3 as a multipart upload that survives failures and restarts: parts go with a
 * retry policy and bounded concurrency, the session (upload id, part ETags) is saved after each
 * part, and a second run lists the uploaded parts and sends only the rest. When it fails for good,
 * the multipart upload is aborted so nothing is left behind at the origin.
 */
export async function uploadFile(options: UploadOptions): Promise<UploadResult> {
  const { client, bucket, key, file } = options;
  const partBytes = options.partBytes ?? 8 * 1024 * 1024;
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const policy = options.policy ?? options.retry ?? retryPolicy({ maxAttempts: 5 });
  const sessionFile = `${file}.keel-upload.json`;
  const info = await stat(file);
  const size = info.size;
  const partCount = Math.max(1, Math.ceil(size / partBytes));

  let session = await loadState(sessionFile, isSession);
  const parts = new Map<number, string>();
  if (
    session &&
    session.bucket === bucket &&
    session.key === key &&
    session.size === size &&
    session.mtimeMs === info.mtimeMs &&
    session.partBytes === partBytes
  ) {
    try {
      const listed = await policy.execute(() =>
        client.callXml({
          method: 'GET',
          bucket,
          key,
          query: { uploadId: (session as UploadSession).uploadId },
        }),
      );
      const result = listed.ListPartsResult as
        { Part?: { PartNumber: string; ETag: string } | { PartNumber: string; ETag: string }[] } | undefined;
      for (const p of asArray(result?.Part)) parts.set(Number(p.PartNumber), p.ETag);
    } catch (err) {
      if (classify(err).code !== 'NOT_FOUND') throw err;
      session = undefined; // the upload is gone (aborted or expired): start a new one
    }
  } else {
    session = undefined;
  }
  if (!session) {
    const created = await policy.execute(() =>
      client.callXml({
        method: 'POST',
        bucket,
        key,
        query: { uploads: '' },
        ...(options.contentType ? { headers: { 'content-type': options.contentType } } : {}),
      }),
    );
    const uploadId = (created.InitiateMultipartUploadResult as { UploadId?: string } | undefined)?.UploadId;
    if (!uploadId)
      throw keelError('BAD_GATEWAY', `CreateMultipartUpload for ${bucket}/${key} returned no UploadId`);
    session = { version: 1, bucket, key, uploadId, size, mtimeMs: info.mtimeMs, partBytes, parts: {} };
    await saveState(sessionFile, session);
  }
  const active: UploadSession = session;
  const reused = parts.size;
  const progress = options.progress;
  progress?.setTotal(size);
  let done = [...parts.keys()].reduce((n, p) => n + Math.min(partBytes, size - (p - 1) * partBytes), 0);
  progress?.set(done);
  let sent = 0;

  const handle = await open(file, 'r');
  try {
    const todo = Array.from({ length: partCount }, (_, i) => i + 1).filter((p) => !parts.has(p));
    let saving = Promise.resolve();
    // The first part that fails for good stops the others: no new part starts, and the ones in
    // flight are cancelled, so the abort below is not raced by a part landing after it.
    const stop = new AbortController();
    const worker = async (): Promise<void> => {
      for (
        let partNumber = todo.shift();
        partNumber !== undefined && !stop.signal.aborted;
        partNumber = todo.shift()
      ) {
        const offset = (partNumber - 1) * partBytes;
        const length = Math.min(partBytes, size - offset);
        const body = Buffer.alloc(length);
        await handle.read(body, 0, length, offset);
        // S3 checks the part against its MD5 and refuses it (BadDigest) if a byte changed on the way.
        const md5 = createHash('md5').update(body).digest('base64');
        const current = partNumber;
        const res = await policy.execute(
          () =>
            client.call({
              method: 'PUT',
              bucket,
              key,
              query: { partNumber: String(current), uploadId: active.uploadId },
              headers: { 'content-md5': md5 },
              body,
              signal: stop.signal,
            }),
          { signal: stop.signal },
        );
        res.body.resume();
        const etag = res.headers.etag;
        if (!etag)
          throw keelError('BAD_GATEWAY', `UploadPart ${current} of ${bucket}/${key} returned no ETag`);
        parts.set(current, etag);
        active.parts[String(current)] = etag;
        sent += length;
        done += length;
        progress?.set(done);
        saving = saving.then(() => saveState(sessionFile, active));
        await saving;
      }
    };
    let firstFailure: { error: unknown } | undefined;
    const workers = Array.from({ length: Math.min(concurrency, Math.max(1, todo.length)) }, () =>
      worker().catch((err: unknown) => {
        firstFailure ??= { error: err };
        stop.abort(err);
      }),
    );
    await Promise.all(workers);
    if (firstFailure) throw firstFailure.error;
    const xml = `<CompleteMultipartUpload>${[...parts.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([n, e]) => `<Part><PartNumber>${n}</PartNumber><ETag>${e}</ETag></Part>`)
      .join('')}</CompleteMultipartUpload>`;
    const completed = await policy.execute(() =>
      client.callXml({ method: 'POST', bucket, key, query: { uploadId: active.uploadId }, body: xml }),
    );
    const etag = (completed.CompleteMultipartUploadResult as { ETag?: string } | undefined)?.ETag ?? '';
    await removeState(sessionFile);
    progress?.finish();
    return { etag, size, parts: parts.size, partsReused: reused, bytesSent: sent };
  } catch (err) {
    const error = classify(err);
    // Failing for good: leave nothing behind at the origin.
    await client
      .send({ method: 'DELETE', bucket, key, query: { uploadId: active.uploadId } })
      .then((r) => r.body.resume())
      .catch(() => undefined);
    await removeState(sessionFile);
    throw keelError(
      error.code,
      `upload of ${file} to ${bucket}/${key} failed and was aborted: ${error.message}`,
      error.details,
      {
        cause: err,
      },
    );
  } finally {
    await handle.close();
  }
}

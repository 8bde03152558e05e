import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { classify } from '../errors/index.js';
import type { RangeCache } from '../cache/index.js';
import type { OriginClient } from './origin-client.js';
import type { OriginGuard } from './origin-guard.js';
import { relay } from './object-read.js';
import { retryAfterSeconds } from './origin-guard.js';
import type { S3Target } from './s3-request.js';
import { S3Errors, sendS3Error } from './s3-error.js';
import { decodeAwsChunked } from './aws-chunked.js';
import {
  deleteObjectsKeys,
  invalidatedBy,
  isDeleteObjects,
  MAX_DELETE_BODY_BYTES,
} from './write-invalidation.js';

/** Client headers that are about this hop or the client's signature, never forwarded. */
const DROPPED = new Set([
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'authorization',
  'x-amz-date',
  'x-amz-security-token',
  'x-amz-content-sha256',
  'x-amz-decoded-content-length',
  'x-amz-trailer',
  // Node answered `100 Continue` itself; the origin request is sent whole.
  'expect',
]);

/** What {@link passthrough} needs besides the origin. */
export interface PassthroughOptions {
  /** The cache whose entries successful writes drop (none: nothing to invalidate). */
  cache?: RangeCache | undefined;
  /** Called once per cache entry dropped. */
  onInvalidate?: () => void;
}

async function readAll(body: Readable, limit: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) return undefined;
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

/**
 * Forwards any other S3 request (PUT, DELETE, multipart, List, bucket operations) to the origin,
 * re-signed, with its body streamed and its answer relayed as it is. A streaming (aws-chunked)
 * body is decoded, since its chunk signatures are the client's. When the origin accepts a write,
 * the cached copies it changed are dropped before the answer goes out, so the client's next read
 * cannot see the old bytes. Returns the status answered.
 */
export async function passthrough(
  origin: OriginClient,
  guard: OriginGuard,
  req: IncomingMessage,
  res: ServerResponse,
  target: S3Target,
  requestId: string,
  options: PassthroughOptions = {},
): Promise<number> {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || DROPPED.has(k)) continue;
    headers[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  const sha = req.headers['x-amz-content-sha256'];
  let body: Readable = req;
  if (typeof sha === 'string' && sha.startsWith('STREAMING-')) {
    const decoded = req.headers['x-amz-decoded-content-length'];
    if (decoded !== undefined) headers['content-length'] = String(decoded);
    const enc = (headers['content-encoding'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== 'aws-chunked' && s !== '');
    if (enc.length) headers['content-encoding'] = enc.join(', ');
    else delete headers['content-encoding'];
    body = req.pipe(decodeAwsChunked());
  } else if (typeof sha === 'string' && /^[0-9a-f]{64}$/.test(sha)) headers['x-amz-content-sha256'] = sha;
  const method = req.method ?? 'GET';
  const hasBody = method !== 'GET' && method !== 'HEAD';
  let upload: Readable | Buffer = body;
  let deleted: { key: string; versionId: string | undefined }[] = [];
  if (isDeleteObjects(method, target) && options.cache) {
    // The keys to drop are in the body: read it (it is small), pass the same bytes on.
    const whole = await readAll(body, MAX_DELETE_BODY_BYTES);
    if (whole === undefined) {
      sendS3Error(
        res,
        method,
        {
          ...S3Errors.badRequest(`a DeleteObjects body is at most ${MAX_DELETE_BODY_BYTES} bytes`),
          headers: { connection: 'close' },
        },
        requestId,
      );
      return 400;
    }
    deleted = deleteObjectsKeys(whole);
    upload = whole;
    headers['content-length'] = String(whole.length);
  }
  try {
    // Bodies cannot be replayed: one attempt through the breaker, no retry.
    const up = await guard.once(target.bucket ?? '', (signal) =>
      origin.request({
        method,
        bucket: target.bucket,
        key: target.key,
        rawQuery: target.rawQuery,
        headers,
        body: hasBody ? upload : undefined,
        signal,
      }),
    );
    if (up.status < 300 && options.cache) {
      const cache = options.cache;
      for (const id of invalidatedBy(method, target, deleted)) {
        await cache.invalidate(id).catch(() => undefined);
        options.onInvalidate?.();
      }
    }
    relay(res, up, { 'x-request-id': requestId, 'x-keel-cache': 'BYPASS' });
    return up.status;
  } catch (err) {
    const e = classify(err);
    const after = retryAfterSeconds(e);
    const spec = S3Errors.serviceUnavailable(after, `the origin is unavailable (${e.code}); please retry`);
    sendS3Error(res, method, { ...spec, headers: { ...spec.headers, 'x-request-id': requestId } }, requestId);
    return 503;
  }
}

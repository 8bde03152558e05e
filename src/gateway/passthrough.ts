import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { classify } from '../errors/index.js';
import type { OriginClient } from './origin-client.js';
import type { OriginGuard } from './origin-guard.js';
import { relay } from './object-read.js';
import { retryAfterSeconds } from './origin-guard.js';
import type { S3Target } from './s3-request.js';
import { S3Errors, sendS3Error } from './s3-error.js';
import { decodeAwsChunked } from './aws-chunked.js';

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
]);

/**
 * Forwards any other S3 request (PUT, DELETE, multipart, List, bucket operations) to the origin,
 * re-signed, with its body streamed and its answer relayed as it is. A streaming (aws-chunked)
 * body is decoded, since its chunk signatures are the client's.
 */
export async function passthrough(
  origin: OriginClient,
  guard: OriginGuard,
  req: IncomingMessage,
  res: ServerResponse,
  target: S3Target,
  requestId: string,
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
  try {
    // Bodies cannot be replayed: one attempt through the breaker, no retry.
    const up = await guard.once(target.bucket ?? '', (signal) =>
      origin.request({
        method,
        bucket: target.bucket,
        key: target.key,
        rawQuery: target.rawQuery,
        headers,
        body: hasBody ? body : undefined,
        signal,
      }),
    );
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

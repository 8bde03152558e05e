import type { IncomingMessage } from 'node:http';
import { PassThrough, type Readable, type Transform } from 'node:stream';
import { BodyRejectedError, decodeAwsChunked } from './aws-chunked.js';
import { verifyPayloadSha256 } from './payload-verify.js';
import type { VerifiedRequest } from './sigv4-verify.js';

/** The `x-amz-content-sha256` values of streaming (aws-chunked) uploads keel decodes. */
const STREAMING = new Set([
  'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
  'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER',
  'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
]);

/**
 * The body to send the origin and the stream between it and the client (which checks it, and
 * through which a client hanging up is noticed), or why it is refused.
 */
export type BodyPlan = { body: Readable; verifier: Transform | undefined } | { refuse: BodyRejectedError };

/**
 * How the client's body goes to the origin: a streaming body decoded with its chunk signatures
 * (gateway auth), length and trailer checksum checked; a hashed body checked against its
 * `x-amz-content-sha256`; an `UNSIGNED-PAYLOAD` body as it is.
 */
export function planBody(
  req: IncomingMessage,
  headers: Record<string, string>,
  verified: VerifiedRequest | undefined,
): BodyPlan {
  const sha = req.headers['x-amz-content-sha256'];
  const method = req.method ?? 'GET';
  if (typeof sha === 'string' && sha.startsWith('STREAMING-')) {
    if (!STREAMING.has(sha))
      return {
        refuse: new BodyRejectedError({
          status: 400,
          code: 'InvalidArgument',
          message: `x-amz-content-sha256 ${sha} is not supported by this gateway; use ${[...STREAMING].join(', ')}, UNSIGNED-PAYLOAD or a sha256`,
        }),
      };
    const declared = req.headers['x-amz-decoded-content-length'];
    const decodedLength = Number(declared);
    if (typeof declared !== 'string' || !/^\d+$/.test(declared) || !Number.isSafeInteger(decodedLength))
      return {
        refuse: new BodyRejectedError({
          status: 411,
          code: 'MissingContentLength',
          message: 'A streaming upload needs a valid x-amz-decoded-content-length header.',
        }),
      };
    headers['content-length'] = String(decodedLength);
    const enc = (headers['content-encoding'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== 'aws-chunked' && s !== '');
    if (enc.length) headers['content-encoding'] = enc.join(', ');
    else delete headers['content-encoding'];
    const trailer = req.headers['x-amz-trailer'];
    // The trailer is checked here and not forwarded: S3 refuses an algorithm with no checksum.
    if (typeof trailer === 'string') delete headers['x-amz-sdk-checksum-algorithm'];
    const verifier = decodeAwsChunked({
      signing:
        verified && sha.startsWith('STREAMING-AWS4-HMAC-SHA256-PAYLOAD') ? verified.signing : undefined,
      decodedLength,
      trailer: sha.endsWith('-TRAILER') && typeof trailer === 'string' ? trailer : undefined,
    });
    return { body: verifier, verifier };
  }
  if (typeof sha === 'string' && /^[0-9a-fA-F]{64}$/.test(sha)) {
    headers['x-amz-content-sha256'] = sha.toLowerCase();
    if (method === 'GET' || method === 'HEAD') return { body: req, verifier: undefined };
    const verifier = verifyPayloadSha256(sha);
    return { body: verifier, verifier };
  }
  if (method === 'GET' || method === 'HEAD') return { body: req, verifier: undefined };
  // Unchecked, but still between the client and the origin: a client hanging up is then told
  // apart from an origin failure (and never counted against the origin's breaker).
  const watch = new PassThrough();
  return { body: watch, verifier: watch };
}

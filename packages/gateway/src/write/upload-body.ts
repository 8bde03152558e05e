import type { IncomingMessage } from 'node:http';
import { PassThrough, type Readable, type Transform } from 'node:stream';
import { BodyRejectedError, decodeAwsChunked } from '../auth/aws-chunked.js';
import { verifyPayloadSha256 } from '../auth/payload-verify.js';
import type { VerifiedRequest } from '../auth/sigv4-verify.js';

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
export type BodyPlan =
  | { body: Readable; verifier: Transform | undefined; trailer?: ForwardedTrailer }
  | { refuse: BodyRejectedError };

/**
 * A small streaming upload's checksum trailer, to forward as a header once the body is read
 * whole, so the origin checks and stores the checksum the client sent.
 */
export interface ForwardedTrailer {
  /** The trailer's value, known once the body has been read to its end. */
  value(): string | undefined;
  name: string;
  /** The client's `x-amz-sdk-checksum-algorithm`, sent again with the checksum. */
  algorithm: string | undefined;
}

/** Streaming uploads up to this size are read whole so their checksum trailer can be forwarded. */
export const MAX_FORWARDED_TRAILER_BODY_BYTES = 1024 * 1024;

/**
 * How the client's body goes to the origin: a PUT without Content-Length or chunked encoding
 * refused (411 `MissingContentLength`); a streaming body decoded with its chunk signatures
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
  // A message with neither Content-Length nor chunked encoding has an empty body: passed on, it
  // would replace the object with nothing. S3 refuses such a PUT; so does keel.
  if (
    method === 'PUT' &&
    req.headers['content-length'] === undefined &&
    req.headers['transfer-encoding'] === undefined
  )
    return {
      refuse: new BodyRejectedError({
        status: 411,
        code: 'MissingContentLength',
        message: 'You must provide the Content-Length HTTP header.',
      }),
    };
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
    const declaredTrailer = req.headers['x-amz-trailer'];
    const trailer =
      sha.endsWith('-TRAILER') && typeof declaredTrailer === 'string'
        ? declaredTrailer.trim().toLowerCase()
        : undefined;
    // A trailer cannot follow a body sent with Content-Length: a small body's checksum is sent as
    // a header once the body is read; a larger body's is checked here and not forwarded (S3
    // refuses an algorithm named with no checksum).
    const algorithm = headers['x-amz-sdk-checksum-algorithm'];
    if (declaredTrailer !== undefined) delete headers['x-amz-sdk-checksum-algorithm'];
    let trailerValue: string | undefined;
    const verifier = decodeAwsChunked({
      signing:
        verified && sha.startsWith('STREAMING-AWS4-HMAC-SHA256-PAYLOAD') ? verified.signing : undefined,
      decodedLength,
      trailer,
      onTrailer: (_name, value) => {
        trailerValue = value;
      },
    });
    const forward =
      trailer !== undefined &&
      /^x-amz-checksum-[a-z0-9]+$/.test(trailer) &&
      decodedLength <= MAX_FORWARDED_TRAILER_BODY_BYTES;
    return {
      body: verifier,
      verifier,
      ...(forward ? { trailer: { name: trailer, algorithm, value: () => trailerValue } } : {}),
    };
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

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ChunkSigning } from './aws-chunked.js';
import { buildCanonicalRequest } from './sigv4-canonical.js';
import { rfc3986 } from '../s3/s3-request.js';
import { S3Errors, type S3ErrorSpec } from '../s3/s3-error.js';

/** An access key clients may sign with. */
export interface ClientKey {
  accessKeyId: string;
  secretAccessKey: string;
}

/** A request whose signature holds: who signed it, the payload hash it signed, and what chunk signatures chain from. */
export interface VerifiedRequest {
  ok: true;
  accessKeyId: string;
  /** The signed `x-amz-content-sha256`: a hex sha256, `UNSIGNED-PAYLOAD` or a `STREAMING-*` value. */
  payloadHash: string;
  signing: ChunkSigning;
}

/** Outcome of verifying a request's SigV4 signature. */
export type AuthResult = VerifiedRequest | { ok: false; error: S3ErrorSpec };

/** Allowed clock difference for header-signed requests (S3: 15 minutes). */
const MAX_SKEW_MS = 15 * 60 * 1000;

function decode(s: string): string {
  return decodeURIComponent(s.replace(/\+/g, '%20'));
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function parseAmzDate(s: string | undefined): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s ?? '');
  if (!m) return undefined;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** The SigV4 signing key of a scope (`date/region/service/aws4_request`). */
export function signingKey(secretAccessKey: string, scope: string): Buffer {
  const [date = '', region = '', service = ''] = scope.split('/');
  let key = hmac(`AWS4${secretAccessKey}`, date);
  key = hmac(key, region);
  key = hmac(key, service);
  return hmac(key, 'aws4_request');
}

/**
 * The SigV4 signature of a canonical request, hex. The canonical request is hashed as the bytes
 * on the wire: its path and query are percent-encoded ASCII, and its header values are strings as
 * node:http reads them and undici writes them, one character per byte (latin1), so a UTF-8
 * `x-amz-meta-*` value a client signed is hashed as the bytes it signed.
 */
export function sigv4Signature(
  secretAccessKey: string,
  amzDate: string,
  scope: string,
  canonicalRequest: string,
  key: Buffer = signingKey(secretAccessKey, scope),
): string {
  const stringToSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    scope,
    createHash('sha256').update(canonicalRequest, 'latin1').digest('hex'),
  ].join('\n');
  return hmac(key, stringToSign).toString('hex');
}

/**
 * The canonical request of S3's SigV4 for a request as received: the path and query are decoded
 * and encoded again the RFC 3986 way (paths are not encoded twice).
 * @param dropQuery a query parameter left out (the signature of a presigned URL)
 */
export function canonicalRequest(
  method: string,
  rawUrl: string,
  headers: IncomingHttpHeaders,
  signedHeaders: string[],
  payloadHash: string,
  dropQuery: string | undefined,
): string {
  const q = rawUrl.indexOf('?');
  const rawPath = q === -1 ? rawUrl : rawUrl.slice(0, q);
  // In a path '+' is a plus (only query strings are form-encoded).
  const path = rawPath
    .split('/')
    .map((seg) => rfc3986(decodeURIComponent(seg)))
    .join('/');
  const pairs: string[] = [];
  if (q !== -1)
    for (const p of rawUrl.slice(q + 1).split('&')) {
      if (p === '') continue;
      const eq = p.indexOf('=');
      const k = rfc3986(decode(eq === -1 ? p : p.slice(0, eq)));
      if (k !== dropQuery) pairs.push(`${k}=${eq === -1 ? '' : rfc3986(decode(p.slice(eq + 1)))}`);
    }
  return buildCanonicalRequest(method, path, pairs, headers, signedHeaders, payloadHash);
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Verifies a client's SigV4 signature, from the Authorization header or a presigned URL, against
 * the configured keys. The payload hash is the client's `x-amz-content-sha256` (a hex hash,
 * `UNSIGNED-PAYLOAD` or a `STREAMING-*` value). The body itself is checked while it streams: see `passthrough`, which
 * verifies a hex payload hash and every chunk signature of a streaming upload from the result.
 */
export function verifySigV4(
  method: string,
  rawUrl: string,
  headers: IncomingHttpHeaders,
  keys: ReadonlyMap<string, string>,
  nowMs: number,
): AuthResult {
  const auth = headers.authorization;
  const q = rawUrl.indexOf('?');
  const query = new URLSearchParams(q === -1 ? '' : rawUrl.slice(q + 1));
  let credential: string;
  let signedHeaders: string[];
  let signature: string;
  let amzDate: string | undefined;
  let payloadHash: string;
  let presigned = false;
  if (typeof auth === 'string') {
    const m =
      /^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})\s*$/.exec(
        auth,
      );
    if (!m)
      return {
        ok: false,
        error: {
          status: 400,
          code: 'AuthorizationHeaderMalformed',
          message: 'The authorization header is malformed; use AWS4-HMAC-SHA256.',
        },
      };
    credential = m[1] as string;
    signedHeaders = (m[2] as string).split(';');
    signature = m[3] as string;
    amzDate = (headers['x-amz-date'] as string | undefined) ?? undefined;
    const sha = headers['x-amz-content-sha256'];
    if (typeof sha !== 'string')
      return {
        ok: false,
        error: {
          status: 400,
          code: 'InvalidRequest',
          message: 'Missing required header for this request: x-amz-content-sha256',
        },
      };
    payloadHash = sha;
    const t = parseAmzDate(amzDate);
    if (t === undefined)
      return {
        ok: false,
        error: S3Errors.accessDenied('AWS authentication requires a valid Date or x-amz-date header'),
      };
    if (Math.abs(nowMs - t) > MAX_SKEW_MS)
      return {
        ok: false,
        error: {
          status: 403,
          code: 'RequestTimeTooSkewed',
          message: 'The difference between the request time and the current time is too large.',
        },
      };
  } else if (query.get('X-Amz-Algorithm') === 'AWS4-HMAC-SHA256') {
    presigned = true;
    credential = query.get('X-Amz-Credential') ?? '';
    signedHeaders = (query.get('X-Amz-SignedHeaders') ?? '').split(';');
    signature = query.get('X-Amz-Signature') ?? '';
    amzDate = query.get('X-Amz-Date') ?? undefined;
    payloadHash = (headers['x-amz-content-sha256'] as string | undefined) ?? 'UNSIGNED-PAYLOAD';
    const t = parseAmzDate(amzDate);
    const expires = Number(query.get('X-Amz-Expires'));
    if (t === undefined || !Number.isSafeInteger(expires) || expires < 1 || expires > 604_800)
      return { ok: false, error: S3Errors.accessDenied('Presigned URL parameters are invalid') };
    if (nowMs > t + expires * 1000) return { ok: false, error: S3Errors.accessDenied('Request has expired') };
    if (t - nowMs > MAX_SKEW_MS)
      return { ok: false, error: S3Errors.accessDenied('Request is not valid yet') };
  } else {
    return {
      ok: false,
      error: S3Errors.accessDenied('Access Denied: this gateway requires signed requests'),
    };
  }
  const [accessKeyId = '', ...scopeParts] = credential.split('/');
  const scope = scopeParts.join('/');
  const secret = keys.get(accessKeyId);
  if (secret === undefined) return { ok: false, error: S3Errors.invalidAccessKey() };
  if (
    scopeParts.length !== 4 ||
    scopeParts[3] !== 'aws4_request' ||
    !amzDate?.startsWith(scopeParts[0] ?? '-')
  )
    return { ok: false, error: S3Errors.signatureMismatch() };
  if (!signedHeaders.includes('host'))
    return { ok: false, error: S3Errors.accessDenied('SignedHeaders must include host') };
  const canonical = canonicalRequest(
    method,
    rawUrl,
    headers,
    signedHeaders,
    payloadHash,
    presigned ? 'X-Amz-Signature' : undefined,
  );
  const key = signingKey(secret, scope);
  const expected = sigv4Signature(secret, amzDate, scope, canonical, key);
  if (!same(expected, signature)) return { ok: false, error: S3Errors.signatureMismatch() };
  return {
    ok: true,
    accessKeyId,
    payloadHash,
    signing: { signingKey: key, amzDate, scope, seedSignature: signature },
  };
}

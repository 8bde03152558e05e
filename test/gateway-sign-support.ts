/**
 * SigV4 signing for the gateway tests, built with @smithy/signature-v4 rather than the gateway's
 * own signer so the tests check it against an independent implementation: header-signed
 * requests, presigned URLs, and aws-chunked (streaming) upload bodies with their chunk and
 * trailer signatures.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function signer(credentials: Credentials): SignatureV4 {
  return new SignatureV4({
    credentials,
    region: 'us-east-1',
    service: 's3',
    sha256: Sha256,
    uriEscapePath: false,
  });
}

function encodeSegment(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Signs a request with SigV4 (header auth) for `baseUrl`. `pathAndQuery` is sent as it is; the
 * signer sees it decoded, as S3 canonicalises it. `payloadHash` defaults to the body's sha256.
 */
export async function signedHeaders(
  baseUrl: string,
  credentials: Credentials,
  method: string,
  pathAndQuery: string,
  headers: Record<string, string> = {},
  payloadHash?: string,
  body: Buffer = Buffer.alloc(0),
  signingDate?: Date,
): Promise<Record<string, string>> {
  const u = new URL(baseUrl);
  const q = pathAndQuery.indexOf('?');
  const rawPath = q === -1 ? pathAndQuery : pathAndQuery.slice(0, q);
  const query: Record<string, string> = {};
  if (q !== -1) for (const [k, v] of new URLSearchParams(pathAndQuery.slice(q + 1))) query[k] = v;
  const signed = await signer(credentials).sign(
    new HttpRequest({
      method,
      protocol: u.protocol,
      hostname: u.hostname,
      port: Number(u.port),
      path: rawPath.split('/').map(decodeURIComponent).map(encodeSegment).join('/'),
      query,
      headers: {
        host: u.host,
        'x-amz-content-sha256': payloadHash ?? sha(body),
        ...headers,
      },
    }),
    signingDate ? { signingDate } : {},
  );
  return signed.headers;
}

/**
 * A presigned URL of `path` on `baseUrl`, as @aws-sdk/s3-request-presigner builds one: the
 * canonical request's payload is UNSIGNED-PAYLOAD. Answers the path with its query (to send) and
 * the query's parameters (to look at).
 */
export async function presign(
  baseUrl: string,
  credentials: Credentials,
  method: string,
  path: string,
  options: { signingDate?: Date; expiresIn?: number; query?: Record<string, string> } = {},
): Promise<{ pathAndQuery: string; query: Record<string, string> }> {
  const u = new URL(baseUrl);
  const signed = await signer(credentials).presign(
    new HttpRequest({
      method,
      protocol: u.protocol,
      hostname: u.hostname,
      port: Number(u.port),
      path,
      query: options.query ?? {},
      headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
    }),
    {
      ...(options.signingDate ? { signingDate: options.signingDate } : {}),
      expiresIn: options.expiresIn ?? 300,
      unhoistableHeaders: new Set(['x-amz-content-sha256']),
      unsignableHeaders: new Set(['x-amz-content-sha256']),
    },
  );
  const query = signed.query as Record<string, string>;
  return { pathAndQuery: `${path}?${new URLSearchParams(query).toString()}`, query };
}

/** The trailer checksums the gateway checks itself. */
export type ChecksumAlgorithm = 'crc32' | 'sha1' | 'sha256';

/** The base64 checksum S3 expects in `x-amz-checksum-<algorithm>`. */
export function checksumOf(algorithm: ChecksumAlgorithm, data: Buffer): string {
  if (algorithm === 'crc32') {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(crc32(data));
    return out.toString('base64');
  }
  return createHash(algorithm).update(data).digest('base64');
}

/** Options of {@link chunkedUpload}. */
export interface ChunkedUploadOptions {
  /** Payload bytes per chunk (default 64 KiB). */
  chunkBytes?: number;
  /**
   * Signed chunks (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, `-TRAILER` with a trailer; the default)
   * or unsigned ones (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
   */
  signed?: boolean;
  /** A checksum trailer, `x-amz-checksum-<algorithm>`; `value` defaults to the payload's checksum. */
  trailer?: { algorithm: ChecksumAlgorithm; value?: string | undefined };
  /** Sends a trailer signature that does not match. */
  badTrailerSignature?: boolean | undefined;
  /** The `x-amz-decoded-content-length` to declare (default: the payload's length). */
  decodedLength?: number;
  /** The Content-Length to sign, from the full encoded length (to send a cut body as a whole message). */
  contentLength?: (full: number) => number;
  /** More headers to sign and send. */
  headers?: Record<string, string>;
}

/**
 * An aws-chunked PUT of `data` to `path` on `baseUrl`, built as the SigV4 streaming spec says: the
 * seed signature over the headers, then each chunk's signature chained from it (for a signed
 * upload), a zero-length final chunk, the trailer and its signature, and a blank line.
 */
export async function chunkedUpload(
  baseUrl: string,
  credentials: Credentials,
  path: string,
  data: Buffer,
  options: ChunkedUploadOptions = {},
): Promise<{ headers: Record<string, string>; body: Buffer }> {
  const chunkBytes = options.chunkBytes ?? 64 * 1024;
  const signed = options.signed ?? true;
  const trailer = options.trailer;
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunkBytes) chunks.push(data.subarray(i, i + chunkBytes));
  chunks.push(Buffer.alloc(0));
  const trailerName = trailer ? `x-amz-checksum-${trailer.algorithm}` : undefined;
  const trailerLine = trailer
    ? `${trailerName}:${trailer.value ?? checksumOf(trailer.algorithm, data)}`
    : undefined;
  const frame = (chunkSignatures: string[], trailerSignature: string): Buffer => {
    const parts: Buffer[] = [];
    for (const [i, c] of chunks.entries()) {
      const ext = signed ? `;chunk-signature=${chunkSignatures[i] ?? ''}` : '';
      parts.push(Buffer.from(`${c.length.toString(16)}${ext}\r\n`), c);
      if (c.length > 0) parts.push(Buffer.from('\r\n'));
    }
    if (trailerLine !== undefined) {
      parts.push(Buffer.from(`${trailerLine}\r\n`));
      if (signed) parts.push(Buffer.from(`x-amz-trailer-signature:${trailerSignature}\r\n`));
    }
    parts.push(Buffer.from('\r\n'));
    return Buffer.concat(parts);
  };
  // Signatures are 64 hex digits: the length is known before the seed signature is.
  const placeholder = '0'.repeat(64);
  const fullLength = frame(
    chunks.map(() => placeholder),
    placeholder,
  ).length;
  const signingDate = new Date();
  const headers = await signedHeaders(
    baseUrl,
    credentials,
    'PUT',
    path,
    {
      'content-encoding': 'aws-chunked',
      'x-amz-decoded-content-length': String(options.decodedLength ?? data.length),
      ...(trailerName ? { 'x-amz-trailer': trailerName } : {}),
      'content-length': String((options.contentLength ?? ((n: number) => n))(fullLength)),
      ...options.headers,
    },
    signed
      ? `STREAMING-AWS4-HMAC-SHA256-PAYLOAD${trailer ? '-TRAILER' : ''}`
      : 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
    undefined,
    signingDate,
  );
  if (!signed) return { headers, body: frame([], '') };
  const amzDate = headers['x-amz-date'] as string;
  const scope = `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
  const chunkSigner = signer(credentials);
  let previous = /Signature=([0-9a-f]{64})/.exec(headers.authorization ?? '')?.[1] as string;
  const signatures: string[] = [];
  for (const c of chunks) {
    previous = await chunkSigner.sign(
      ['AWS4-HMAC-SHA256-PAYLOAD', amzDate, scope, previous, sha(Buffer.alloc(0)), sha(c)].join('\n'),
      { signingDate },
    );
    signatures.push(previous);
  }
  let trailerSignature = '';
  if (trailerLine !== undefined) {
    trailerSignature = await chunkSigner.sign(
      ['AWS4-HMAC-SHA256-TRAILER', amzDate, scope, previous, sha(Buffer.from(`${trailerLine}\n`))].join('\n'),
      { signingDate },
    );
    if (options.badTrailerSignature)
      trailerSignature = trailerSignature.replace(/^./, (c) => (c === '0' ? '1' : '0'));
  }
  return { headers, body: frame(signatures, trailerSignature) };
}

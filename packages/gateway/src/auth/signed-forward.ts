import type { IncomingMessage } from 'node:http';

/*
 * `passthrough` auth: a client's request goes to the origin as the client signed it. The gateway
 * holds no credentials; the origin checks the signature and its own policies.
 */

/**
 * Headers about this hop only, never forwarded: a signer leaves them unsigned (the AWS SDKs and
 * botocore do), and undici refuses to send most of them. `proxy-authorization` is for a proxy,
 * never for the origin.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  // Node answered `100 Continue` itself; the origin gets the body at once.
  'expect',
]);

/** A client's request as it goes to the origin: target, host and headers exactly as signed. */
export interface SignedRequest {
  method: string;
  /** Path and query as the client sent them (origin-form). */
  target: string;
  /** The Host the client sent, and signed. */
  host: string;
  /** Every header but the hop-by-hop ones, as received (several values of one joined with `, `). */
  headers: Record<string, string>;
  /** Names the client signed (lower case), from its Authorization header or presigned URL. */
  signedHeaders: ReadonlySet<string>;
  /** The access key id the request names (not verified by the gateway: an id is not a secret). */
  accessKeyId: string | undefined;
}

/** The header names a SigV4 request signed, and the access key id it names; empty when unsigned. */
function signatureParts(
  authorization: string | undefined,
  query: URLSearchParams,
): { signedHeaders: Set<string>; accessKeyId: string | undefined } {
  if (authorization !== undefined) {
    const names = /SignedHeaders=([^,\s]+)/.exec(authorization)?.[1];
    const credential = /Credential=([^,\s]+)/.exec(authorization)?.[1];
    return {
      signedHeaders: new Set((names ?? '').toLowerCase().split(';')),
      accessKeyId: credential?.split('/')[0],
    };
  }
  const names = query.get('X-Amz-SignedHeaders');
  const credential = query.get('X-Amz-Credential');
  return {
    signedHeaders: new Set((names ?? '').toLowerCase().split(';')),
    accessKeyId: credential?.split('/')[0],
  };
}

/**
 * The client's request as it is to be forwarded: its target (origin-form, from an origin-form or
 * absolute-form request line), its Host and every header but the hop-by-hop ones, unchanged.
 */
export function signedRequestOf(req: IncomingMessage, target: string, host: string): SignedRequest {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || k === 'host') continue;
    headers[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  const q = target.indexOf('?');
  const parts = signatureParts(
    req.headers.authorization,
    new URLSearchParams(q === -1 ? '' : target.slice(q + 1)),
  );
  return { method: req.method ?? 'GET', target, host, headers, ...parts };
}

/** True when the request carries a SigV4 signature (header or presigned URL), valid or not. */
export function carriesSignature(signed: SignedRequest): boolean {
  return signed.headers.authorization !== undefined || signed.signedHeaders.has('host');
}

import { buildCanonicalRequest } from './sigv4-canonical.js';
import { signingKey, sigv4Signature } from './sigv4-verify.js';

/** Credentials a {@link SigV4HeaderSigner} signs with. */
export interface SigningCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Headers the signer leaves unsigned (as the AWS SDK does); everything else sent is signed. */
const UNSIGNABLE = new Set([
  'authorization',
  'cache-control',
  'connection',
  'expect',
  'from',
  'keep-alive',
  'max-forwards',
  'pragma',
  'referer',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'user-agent',
  'x-amzn-trace-id',
]);

/**
 * AWS Signature Version 4 in the Authorization header for requests whose payload is not signed
 * (`x-amz-content-sha256` already set, e.g. `UNSIGNED-PAYLOAD`), with node:crypto and the
 * signing key kept per day. Signs the same way as `@smithy/signature-v4` with `uriEscapePath:
 * false`, at a fraction of its cost: signing is on every origin request, misses included.
 */
export class SigV4HeaderSigner {
  private keyDay = '';
  private key: Buffer | undefined;

  constructor(
    private readonly credentials: SigningCredentials,
    private readonly region: string,
    private readonly service = 's3',
  ) {}

  /**
   * Adds `x-amz-date`, `x-amz-security-token` (with a session token) and `authorization` to
   * `headers` (lower-case names, `host` and `x-amz-content-sha256` included).
   * @param path the request path as sent (already percent-encoded)
   * @param pairs the query as sent: `key=value` pairs, RFC 3986 encoded (a bare `key` allowed)
   */
  sign(
    method: string,
    path: string,
    pairs: string[],
    headers: Record<string, string>,
    now = new Date(),
  ): void {
    const longDate = now.toISOString().replace(/[-:]|\.\d{3}/g, '');
    const shortDate = longDate.slice(0, 8);
    headers['x-amz-date'] = longDate;
    if (this.credentials.sessionToken) headers['x-amz-security-token'] = this.credentials.sessionToken;
    const names = Object.keys(headers)
      .map((n) => n.toLowerCase())
      .filter((n) => !UNSIGNABLE.has(n) && !n.startsWith('proxy-') && !n.startsWith('sec-'))
      .sort();
    const signedHeaders = names.join(';');
    const query = pairs
      .map((p) => (p.includes('=') ? p : `${p}=`))
      .filter((p) => !p.toLowerCase().startsWith('x-amz-signature='));
    const canonicalRequest = buildCanonicalRequest(
      method,
      path,
      query,
      headers,
      names,
      headers['x-amz-content-sha256'] ?? 'UNSIGNED-PAYLOAD',
      signedHeaders,
    );
    const scope = `${shortDate}/${this.region}/${this.service}/aws4_request`;
    const signature = sigv4Signature(
      this.credentials.secretAccessKey,
      longDate,
      scope,
      canonicalRequest,
      this.keyOf(shortDate, scope),
    );
    headers.authorization = `AWS4-HMAC-SHA256 Credential=${this.credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
  }

  /** The signing key of `scope`, derived once per day. */
  private keyOf(day: string, scope: string): Buffer {
    if (this.key && this.keyDay === day) return this.key;
    this.key = signingKey(this.credentials.secretAccessKey, scope);
    this.keyDay = day;
    return this.key;
  }
}

import type { Readable } from 'node:stream';
import { keelError } from 'keel';
import { Pool } from 'undici';
import { encodeKey, rfc3986 } from '../s3/s3-request.js';
import { SigV4HeaderSigner } from '../auth/sigv4-sign.js';

/** Credentials the gateway signs its origin requests with. */
export interface OriginCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Options of {@link OriginClient}. */
export interface OriginClientOptions {
  /** Base URL of the S3 origin, e.g. `https://s3.amazonaws.com`. */
  url: string;
  /** Sign requests with these (SigV4); unsigned when absent. */
  credentials?: OriginCredentials | undefined;
  /** Region for signing (default `us-east-1`). */
  region?: string;
  /** Connections per origin host (default 64). */
  connections?: number;
  /** Fail a request whose response headers take longer (default 5 s; for an upload, counted from its end). */
  firstByteTimeoutMs?: number;
  /** Fail a response whose body stalls longer between chunks (default 30 s). */
  idleTimeoutMs?: number;
}

/** One request to the origin; the path is built from bucket and key. */
export interface OriginRequest {
  method: string;
  bucket?: string | undefined;
  key?: string | undefined;
  /** Raw query string, without `?`. */
  rawQuery?: string;
  /** Lower-case request headers to send (besides host and signing headers). */
  headers?: Record<string, string>;
  body?: Readable | Buffer | undefined;
  signal?: AbortSignal | undefined;
  /** Send it without the gateway's signature (a CORS preflight; an anonymous client's request). */
  unsigned?: boolean;
  /**
   * The request target (path and query) to send exactly as it is, instead of one built from
   * bucket, key and rawQuery: a client's signed request forwarded in `passthrough` auth, whose
   * signature covers the path and query as the client sent them.
   */
  target?: string;
  /** The Host header to send instead of the origin's own (the host a client signed, in `passthrough` auth). */
  host?: string;
  /**
   * Wait this long for the response headers, counted from the end of the request's body (default:
   * the client's first-byte timeout). An upload's answer comes only after its body, however long
   * the client takes to send it.
   */
  firstByteTimeoutMs?: number;
}

/** The origin's answer: status, lower-case headers, body. */
export interface OriginResponse {
  status: number;
  headers: Record<string, string>;
  body: Readable;
}

/**
 * The gateway's HTTP client to the S3 origin (undici), re-signing every request with the
 * gateway's own credentials. First-byte and idle timeouts are the connection pool's, not timers
 * per call.
 */
export class OriginClient {
  readonly url: URL;
  private readonly pool: Pool;
  private readonly signer: SigV4HeaderSigner | undefined;
  private readonly firstByteTimeoutMs: number;
  /** The origin URL's path, without a trailing slash: every request path starts with it. */
  private readonly basePath: string;

  constructor(options: OriginClientOptions) {
    this.url = new URL(options.url);
    this.basePath = this.url.pathname.replace(/\/$/, '');
    this.firstByteTimeoutMs = options.firstByteTimeoutMs ?? 5_000;
    this.pool = new Pool(this.url.origin, {
      connections: options.connections ?? 64,
      headersTimeout: this.firstByteTimeoutMs,
      bodyTimeout: options.idleTimeoutMs ?? 30_000,
      keepAliveTimeout: 10_000,
    });
    this.signer = options.credentials
      ? new SigV4HeaderSigner(options.credentials, options.region ?? 'us-east-1')
      : undefined;
  }

  /** Sends one request; never throws for an HTTP status (only for network failures and timeouts). */
  async request(req: OriginRequest): Promise<OriginResponse> {
    let path = this.basePath;
    if (req.bucket !== undefined) path += `/${rfc3986(req.bucket)}`;
    if (req.key !== undefined) path += `/${encodeKey(req.key)}`;
    if (path === '') path = '/';
    const pairs: string[] = [];
    const rawQuery = req.rawQuery ?? '';
    if (rawQuery !== '')
      for (const [k, v] of new URLSearchParams(rawQuery))
        pairs.push(v === '' && !rawQuery.includes(`${k}=`) ? rfc3986(k) : `${rfc3986(k)}=${rfc3986(v)}`);
    const headers: Record<string, string> = { ...req.headers, host: req.host ?? this.url.host };
    if (this.signer && req.unsigned !== true && req.target === undefined) {
      headers['x-amz-content-sha256'] ??= 'UNSIGNED-PAYLOAD';
      this.signer.sign(req.method, path, pairs, headers);
    }
    const streamed = req.body !== undefined && !Buffer.isBuffer(req.body) ? req.body : undefined;
    // undici counts its headers timeout from the start of the request (refreshed only while the
    // socket is full): for a streamed body, the first-byte timeout starts once the body has ended.
    let signal = req.signal;
    const cleanups: (() => void)[] = [];
    if (streamed) {
      const controller = new AbortController();
      const outer = req.signal;
      if (outer) {
        const forward = (): void => controller.abort(outer.reason);
        outer.addEventListener('abort', forward, { once: true });
        cleanups.push(() => outer.removeEventListener('abort', forward));
      }
      const ms = req.firstByteTimeoutMs ?? this.firstByteTimeoutMs;
      const onEnd = (): void => {
        const timer = setTimeout(() => {
          controller.abort(
            keelError('TIMEOUT', `the origin did not answer within ${ms} ms of the end of the upload`),
          );
        }, ms);
        timer.unref();
        cleanups.push(() => clearTimeout(timer));
      };
      streamed.once('end', onEnd);
      cleanups.push(() => streamed.off('end', onEnd));
      signal = controller.signal;
    }
    let res;
    try {
      res = await this.pool.request({
        path: req.target ?? (pairs.length ? `${path}?${pairs.join('&')}` : path),
        method: req.method,
        headers,
        body: req.body ?? null,
        ...(signal ? { signal } : {}),
        ...(streamed ? { headersTimeout: 0 } : {}),
      });
    } finally {
      for (const c of cleanups) c();
    }
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) {
      if (v === undefined) continue;
      out[k] = Array.isArray(v) ? v.join(', ') : v;
    }
    return { status: res.statusCode, headers: out, body: res.body };
  }

  /** Closes the connections (requests still running are aborted). */
  async close(): Promise<void> {
    await this.pool.destroy();
  }
}

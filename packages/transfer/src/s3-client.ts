import type { Readable } from 'node:stream';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { XMLParser } from 'fast-xml-parser';
import { request, type Dispatcher } from 'undici';
import { classify, keelError } from 'keel';

/** AWS credentials; `sessionToken` for temporary ones. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Options of {@link S3Client}. */
export interface S3ClientOptions {
  /** Base URL of the S3 endpoint, e.g. `https://s3.us-east-1.amazonaws.com` or `http://127.0.0.1:9000`. */
  endpoint: string;
  region?: string;
  /** Without credentials requests are sent unsigned. */
  credentials?: S3Credentials;
  /** undici dispatcher (connection pool) to use. */
  dispatcher?: Dispatcher;
}

/** One S3 call. */
export interface S3Request {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';
  bucket: string;
  key?: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Buffer | string;
  signal?: AbortSignal;
  /** Abort if no response headers arrive in time (ms). */
  headersTimeoutMs?: number;
  /** Abort if the body stalls for this long between chunks (ms). */
  bodyTimeoutMs?: number;
}

/** An S3 response; `body` must be consumed or destroyed. */
export interface S3Response {
  status: number;
  headers: Record<string, string>;
  body: Readable;
}

const xml = new XMLParser({ ignoreAttributes: true, parseTagValue: false });

/** Reads credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN. */
export function credentialsFromEnv(env: NodeJS.ProcessEnv = process.env): S3Credentials | undefined {
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) return undefined;
  return {
    accessKeyId,
    secretAccessKey,
    ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
  };
}

function encodeKey(key: string): string {
  return key
    .split('/')
    .map((p) =>
      encodeURIComponent(p).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
    )
    .join('/');
}

/**
 * A small S3 REST client (path-style, SigV4 via @smithy/signature-v4, HTTP via undici): just what
 * resumable transfers need. Errors are KeelErrors classified from the S3 error code and status.
 */
export class S3Client {
  private readonly base: URL;
  private readonly signer: SignatureV4 | undefined;

  constructor(private readonly options: S3ClientOptions) {
    try {
      this.base = new URL(options.endpoint);
    } catch {
      throw keelError('INVALID_CONFIG', `S3 endpoint ${JSON.stringify(options.endpoint)} is not a URL`);
    }
    this.signer = options.credentials
      ? new SignatureV4({
          credentials: options.credentials,
          region: options.region ?? 'us-east-1',
          service: 's3',
          sha256: Sha256,
        })
      : undefined;
  }

  /** Sends a request and returns the raw response (any status). */
  async send(req: S3Request): Promise<S3Response> {
    const path = `${this.base.pathname.replace(/\/$/, '')}/${req.bucket}${req.key === undefined ? '' : `/${encodeKey(req.key)}`}`;
    const headers: Record<string, string> = { host: this.base.host, ...(req.headers ?? {}) };
    let signedHeaders = headers;
    if (this.signer) {
      headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      const signed = await this.signer.sign(
        new HttpRequest({
          method: req.method,
          protocol: this.base.protocol,
          hostname: this.base.hostname,
          ...(this.base.port ? { port: Number(this.base.port) } : {}),
          path,
          query: req.query ?? {},
          headers,
        }),
      );
      signedHeaders = signed.headers;
    }
    const qs = new URLSearchParams(req.query ?? {}).toString();
    const url = `${this.base.protocol}//${this.base.host}${path}${qs ? `?${qs}` : ''}`;
    try {
      const res = await request(url, {
        method: req.method,
        headers: signedHeaders,
        ...(req.body === undefined ? {} : { body: req.body }),
        ...(req.signal ? { signal: req.signal } : {}),
        ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
        headersTimeout: req.headersTimeoutMs ?? 30_000,
        bodyTimeout: req.bodyTimeoutMs ?? 30_000,
      });
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers))
        if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
      return { status: res.statusCode, headers: out, body: res.body };
    } catch (err) {
      throw classify(err);
    }
  }

  /** Sends a request and fails with a classified KeelError on a non-2xx status. */
  async call(req: S3Request): Promise<S3Response> {
    const res = await this.send(req);
    if (res.status >= 200 && res.status < 300) return res;
    throw await s3Error(res, `${req.method} ${req.bucket}/${req.key ?? ''}`);
  }

  /** Calls and parses an XML body. */
  async callXml(req: S3Request): Promise<Record<string, unknown>> {
    const res = await this.call(req);
    const text = await res.body
      .setEncoding('utf8')
      .toArray()
      .then((parts) => parts.join(''));
    return xml.parse(text) as Record<string, unknown>;
  }
}

/** Turns an error response into a KeelError (S3 code, status and Retry-After read). */
export async function s3Error(res: S3Response, what: string): Promise<Error> {
  let text = '';
  try {
    text = (await res.body.setEncoding('utf8').toArray()).join('').slice(0, 4096);
  } catch {
    // the body is only for the message
  }
  let code: string | undefined;
  let message = '';
  try {
    const parsed = xml.parse(text) as { Error?: { Code?: string; Message?: string } };
    code = parsed.Error?.Code;
    message = parsed.Error?.Message ?? '';
  } catch {
    // not XML
  }
  return classify({
    name: code ?? `HTTP ${res.status}`,
    ...(code ? { Code: code } : {}),
    status: res.status,
    headers: res.headers,
    message: `${what}: ${code ?? `HTTP ${res.status}`}${message ? ` (${message})` : ''}`,
  });
}

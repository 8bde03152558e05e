/**
 * Shared setup of the gateway protocol tests: s3rver as the origin, a gateway in `gateway` auth
 * mode with a cache, SDK clients for both, and a raw signed request helper for what the SDK will
 * not send (tampered bodies, odd ranges, hand-built URLs).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { expect } from 'vitest';
import { chaos, type HttpFaultProxy } from 'keel/chaos';
import { createGateway, type Gateway, type GatewayOptions } from '@keel/gateway';
import { signedHeaders } from './gateway-sign-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

export const CLIENT_KEY = { accessKeyId: 'CLIENTKEY', secretAccessKey: 'client-secret-key' };
export const SLICE = 64 * 1024;
export const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export interface Harness {
  origin: S3Origin;
  gateway: Gateway;
  cacheDir: string;
  /** SDK client of the gateway, signing with the client key. */
  client: S3Client;
  /** SDK client of the origin itself. */
  direct: S3Client;
  /** What the gateway logged, as JSON text per line (request lines included). */
  logged: string[];
  /** The object `key` of bucket `b` at the origin (the sha256 of its bytes), or its error's name. */
  atOrigin(key: string): Promise<string>;
  close(): Promise<void>;
}

export function s3(
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
): S3Client {
  return new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials, maxAttempts: 1 });
}

/**
 * The options of a test gateway in front of `upstream`: the origin's credentials, `gateway` auth
 * with {@link CLIENT_KEY}, nothing logged, `extra` on top.
 */
export function gatewayOptions(upstream: string, extra: Partial<GatewayOptions> = {}): GatewayOptions {
  return {
    upstream,
    originCredentials: TEST_CREDENTIALS,
    auth: 'gateway',
    clientKeys: [CLIENT_KEY],
    log: () => undefined,
    ...extra,
  };
}

/**
 * A gateway (listening, slices of {@link SLICE}) whose origin answers 500 to `method` on `path`:
 * a chaos HTTP proxy, rule `name`, in front of the harness's origin. The caller closes both.
 */
export async function gatewayWithFailing(
  h: Harness,
  rule: { name: string; method: string; path: string },
  cacheDir: string,
): Promise<{ gateway: Gateway; faults: HttpFaultProxy }> {
  const faults = await chaos.httpProxy({
    upstream: h.origin.url,
    rules: [{ ...rule, action: { type: 'status', status: 500 } }],
  });
  const gateway = await createGateway(
    gatewayOptions(`http://127.0.0.1:${String(faults.port)}`, { cacheDir, sliceBytes: SLICE }),
  );
  await gateway.listen(0);
  return { gateway, faults };
}

/**
 * An SDK client of `origin` itself with the origin's credentials and the SDK's default retries,
 * for putting the objects a test reads.
 */
export function originClient(origin: { url: string }): S3Client {
  return new S3Client({
    endpoint: origin.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: TEST_CREDENTIALS,
  });
}

export async function startHarness(extra: Partial<GatewayOptions> = {}): Promise<Harness> {
  const origin = await startS3Origin(['b']);
  // The cache in a directory of its own, so the caches tests derive from its name
  // (`${cacheDir}-…`) are removed with it.
  const root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-proto-'));
  const cacheDir = path.join(root, 'cache');
  const logged: string[] = [];
  const gateway = await createGateway(
    gatewayOptions(origin.url, {
      cacheDir,
      sliceBytes: SLICE,
      log: (level, msg, fields) => {
        if (logged.length < 10_000) logged.push(JSON.stringify({ level, msg, ...fields }));
      },
      ...extra,
    }),
  );
  await gateway.listen(0);
  const client = s3(gateway.url(), CLIENT_KEY);
  const direct = s3(origin.url, TEST_CREDENTIALS);
  return {
    origin,
    gateway,
    cacheDir,
    client,
    direct,
    logged,
    atOrigin: async (key) => {
      try {
        return sha(await bodyOf(await direct.send(new GetObjectCommand({ Bucket: 'b', Key: key }))));
      } catch (err) {
        return (err as Error).name;
      }
    },
    close: async () => {
      client.destroy();
      direct.destroy();
      await gateway.close(1000);
      await origin.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

export async function bodyOf(out: { Body?: unknown }): Promise<Buffer> {
  return Buffer.from(
    await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
  );
}

export interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** The text of element `name` in an answer's XML body. */
export function xmlField(a: RawAnswer, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(a.body.toString())?.[1];
}

/** Expects an S3 error document with `code`, whose RequestId is the answer's `x-request-id`. */
export function expectS3Error(a: RawAnswer, status: number, code: string): void {
  expect(a.status).toBe(status);
  expect(String(a.headers['content-type'])).toContain('xml');
  expect(xmlField(a, 'Code')).toBe(code);
  expect(xmlField(a, 'RequestId')).toBe(a.headers['x-request-id']);
  expect(a.headers['x-request-id']).toMatch(/^[0-9A-F]{16}$/);
}

/** A request exactly as given (path not re-encoded), answered whole. */
export function rawRequest(
  baseUrl: string,
  method: string,
  pathAndQuery: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<RawAnswer> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, method, path: pathAndQuery, headers, agent: false },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Signs with `credentials` and sends. */
export async function signedRequest(
  baseUrl: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  method: string,
  pathAndQuery: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<RawAnswer> {
  const h = await signedHeaders(baseUrl, credentials, method, pathAndQuery, headers, undefined, body);
  return rawRequest(baseUrl, method, pathAndQuery, h, body);
}

/** Every file under `dir` with its size and mtime, to tell whether anything was written. */
export async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const s = await stat(p);
        out.push(`${path.relative(dir, p)} ${s.size} ${s.mtimeMs}`);
      }
    }
  };
  await walk(dir);
  return out.sort();
}

export { TEST_CREDENTIALS };

/** What a {@link Recorder} saw of one request. */
export interface Recorded {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** An HTTP proxy to `upstream` that records every request it forwards. */
export interface Recorder {
  url: string;
  seen: Recorded[];
  /** Response body bytes the origin sent back through the recorder so far. */
  bodyBytes(): number;
  close(): Promise<void>;
}

export async function startRecorder(upstream: string): Promise<Recorder> {
  const up = new URL(upstream);
  const seen: Recorded[] = [];
  let bodyBytes = 0;
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const fwd = http.request(
        { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.on('data', (d: Buffer) => (bodyBytes += d.length));
          r.pipe(res);
        },
      );
      fwd.on('error', () => res.destroy());
      fwd.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    bodyBytes: () => bodyBytes,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A gateway whose origin is a {@link Recorder} in front of the harness's origin. */
export interface RecordedGateway {
  /** What reached the origin through `gateway`. */
  recorder: Recorder;
  gateway: Gateway;
}

/**
 * Starts a recorder of `h`'s origin and a gateway in front of it (gateway auth with
 * {@link CLIENT_KEY}, its cache at `${h.cacheDir}-${cacheSuffix}` (none without a suffix), nothing
 * logged, `extra` on top), listening on a free port. The caller closes both, the gateway first.
 */
export async function startRecordedGateway(
  h: Harness,
  cacheSuffix: string | undefined,
  extra: Partial<GatewayOptions> = {},
): Promise<RecordedGateway> {
  const recorder = await startRecorder(h.origin.url);
  const gateway = await createGateway(
    gatewayOptions(recorder.url, {
      ...(cacheSuffix === undefined ? {} : { cacheDir: `${h.cacheDir}-${cacheSuffix}` }),
      ...extra,
    }),
  );
  await gateway.listen(0);
  return { recorder, gateway };
}

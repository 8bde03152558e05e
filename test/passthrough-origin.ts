/**
 * An S3 origin that really checks SigV4, for the passthrough tests: keel's own verifier (header
 * signatures, presigned URLs, aws-chunked chunk signatures and trailers) and per-key bucket
 * policies in front of s3rver (which checks only part of SigV4), with the object bytes it sent
 * counted so a test can show an authorised hit cost the origin no body.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import { verifySigV4 } from '../packages/gateway/src/auth/sigv4-verify.js';
import { BodyRejectedError } from '../packages/gateway/src/auth/aws-chunked.js';
import { readAll } from '../packages/gateway/src/origin/relay.js';
import { s3ErrorXml, type S3ErrorSpec } from '../packages/gateway/src/s3/s3-error.js';
import { planBody } from '../packages/gateway/src/write/upload-body.js';
import { withoutPresignParams } from '../packages/gateway/src/write/passthrough.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createGateway, type Gateway, type GatewayOptions } from '@keel/gateway';
import { originClient } from './gateway-protocol-support.js';
import { startS3Origin, type S3Origin } from './s3-origin.js';

/** Key A may read and write bucket `x`; key B only bucket `y`. */
export const KEY_A = { accessKeyId: 'AKIAPASSTHROUGHA', secretAccessKey: 'secret-of-key-a' };
export const KEY_B = { accessKeyId: 'AKIAPASSTHROUGHB', secretAccessKey: 'secret-of-key-b' };

/** One request the origin judged. */
export interface Judged {
  method: string;
  url: string;
  status: number;
  ifNoneMatch: string | undefined;
  /** Object body bytes sent back (GET answers). */
  bodyBytes: number;
}

export interface CheckingOrigin {
  url: string;
  port: number;
  /** s3rver behind the checks (put objects there directly with TEST_CREDENTIALS). */
  s3: S3Origin;
  /** Every request judged, oldest first. */
  judged: Judged[];
  /** Object body bytes sent in answers to GETs so far. */
  bodyBytes(): number;
  close(): Promise<void>;
}

/** Headers that are about the signature, the hop or the encoding: not passed on to s3rver. */
const NOT_FORWARDED = new Set([
  'authorization',
  'x-amz-date',
  'x-amz-content-sha256',
  'x-amz-decoded-content-length',
  'x-amz-trailer',
  'x-amz-security-token',
  'host',
  'connection',
  'transfer-encoding',
  'expect',
]);

export async function startCheckingOrigin(
  policies: Record<string, string[]> = { [KEY_A.accessKeyId]: ['x'], [KEY_B.accessKeyId]: ['y'] },
  buckets: string[] = ['x', 'y'],
): Promise<CheckingOrigin> {
  const s3 = await startS3Origin(buckets);
  const keys = new Map([KEY_A, KEY_B].map((k) => [k.accessKeyId, k.secretAccessKey]));
  const agent = new http.Agent({ keepAlive: true });
  const judged: Judged[] = [];
  let bodyBytes = 0;

  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const note = (status: number, bytes = 0): void => {
      const inm = req.headers['if-none-match'];
      judged.push({ method, url: req.url ?? '/', status, ifNoneMatch: inm, bodyBytes: bytes });
    };
    const refuse = (spec: S3ErrorSpec): void => {
      note(spec.status);
      req.resume();
      const xml = s3ErrorXml(spec, 'ORIGIN');
      res.writeHead(spec.status, {
        'content-type': 'application/xml',
        'content-length': Buffer.byteLength(xml),
      });
      res.end(method === 'HEAD' ? undefined : xml);
    };
    const auth = verifySigV4(method, req.url ?? '/', req.headers, keys, Date.now());
    if (!auth.ok) return refuse(auth.error);
    // Virtual-host style: `<bucket>.localhost`.
    const vhost = /^([a-z0-9.-]+)\.localhost(?::\d+)?$/.exec(req.headers.host ?? '')?.[1];
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const rawPath = q === -1 ? rawUrl : rawUrl.slice(0, q);
    const rawQuery = withoutPresignParams(q === -1 ? '' : rawUrl.slice(q + 1));
    const bucket = vhost ?? decodeURIComponent(rawPath.split('/')[1] ?? '');
    if (!(policies[auth.accessKeyId] ?? []).includes(bucket))
      return refuse({ status: 403, code: 'AccessDenied', message: 'Access Denied' });
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers))
      if (v !== undefined && !NOT_FORWARDED.has(k)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    const plan = planBody(req, headers, auth);
    if ('refuse' in plan) return refuse(plan.refuse.s3);
    if (plan.verifier) req.pipe(plan.verifier);
    void (async () => {
      let body: Buffer;
      try {
        body = (await readAll(plan.body, 1024 ** 3)) ?? Buffer.alloc(0);
      } catch (err) {
        return refuse(
          err instanceof BodyRejectedError
            ? err.s3
            : { status: 400, code: 'IncompleteBody', message: String(err) },
        );
      }
      const checksum = plan.trailer?.value();
      if (plan.trailer && checksum !== undefined) headers[plan.trailer.name] = checksum;
      if (method !== 'GET' && method !== 'HEAD') headers['content-length'] = String(body.length);
      const path = `${vhost === undefined ? rawPath : `/${vhost}${rawPath}`}${rawQuery ? `?${rawQuery}` : ''}`;
      const up = http.request({ agent, host: '127.0.0.1', port: s3.port, method, path, headers }, (upRes) => {
        const status = upRes.statusCode ?? 502;
        let sent = 0;
        upRes.on('data', (d: Buffer) => {
          if (method === 'GET' && status < 300) sent += d.length;
        });
        upRes.on('end', () => {
          bodyBytes += sent;
          note(status, sent);
        });
        res.writeHead(status, upRes.headers);
        upRes.pipe(res);
      });
      up.on('error', () => res.destroy());
      up.end(method === 'GET' || method === 'HEAD' ? undefined : body);
    })();
  });
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  let closed = false;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    s3,
    judged,
    bodyBytes: () => bodyBytes,
    close: async () => {
      if (closed) return;
      closed = true;
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
      agent.destroy();
      await s3.close();
    },
  };
}

/** Slice size of the test gateways. */
export const SLICE = 64 * 1024;

/** A checking origin and a gateway in passthrough auth in front of it. */
export interface Setup {
  origin: CheckingOrigin;
  gateway: Gateway;
  logged: Record<string, unknown>[];
  put(key: string, body: Buffer): Promise<string>;
  metric(name: string, labels?: string): Promise<number>;
  close(): Promise<void>;
}

/** Starts a checking origin and a passthrough gateway (with `extra` options) in front of it. */
export async function setup(extra: Partial<GatewayOptions> = {}): Promise<Setup> {
  const origin = await startCheckingOrigin();
  const root = await mkdtemp(path.join(os.tmpdir(), 'keel-passthrough-'));
  const logged: Record<string, unknown>[] = [];
  const gateway = await createGateway({
    upstream: origin.url,
    auth: 'passthrough',
    cacheDir: path.join(root, 'cache'),
    sliceBytes: SLICE,
    defaultMetrics: false,
    log: (level, msg, fields) => {
      if (logged.length < 10_000) logged.push({ level, msg, ...fields });
    },
    ...extra,
  });
  await gateway.listen(0);
  const direct = originClient(origin.s3);
  return {
    origin,
    gateway,
    logged,
    put: async (key, body) => {
      const out = await direct.send(new PutObjectCommand({ Bucket: 'x', Key: key, Body: body }));
      return out.ETag as string;
    },
    metric: async (name, labels = '') => {
      const text = await gateway.metrics.ops.render();
      const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
      return Number(line?.split(' ')[1] ?? NaN);
    },
    close: async () => {
      direct.destroy();
      await gateway.close(1000);
      await origin.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

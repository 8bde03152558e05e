import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bodyOf, sha } from './gateway-protocol-support.js';
import { signedHeaders } from './gateway-sign-support.js';
import { KEY_A, KEY_B, setup, SLICE, type Setup } from './passthrough-origin.js';

const run = promisify(execFile);

let s: Setup;
beforeAll(async () => {
  s = await setup();
});
afterAll(async () => {
  await s.close();
});

/** Sends `GET <absoluteUrl>` (absolute-form, as to an HTTP proxy) to `proxy`. */
function viaProxy(
  proxy: string,
  method: string,
  absoluteUrl: string,
  headers: Record<string, string>,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  const p = new URL(proxy);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: p.hostname, port: p.port, method, path: absoluteUrl, headers, agent: false },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Sends CONNECT `target` to `proxy`; resolves with the status line's code and the socket. */
function connect(proxy: string, target: string): Promise<{ status: number; socket: net.Socket }> {
  const p = new URL(proxy);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: p.hostname,
      port: p.port,
      method: 'CONNECT',
      path: target,
      agent: false,
    });
    req.on('connect', (res, socket) => resolve({ status: res.statusCode ?? 0, socket }));
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, socket: res.socket });
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * An http.Agent that sends every request to an HTTP proxy in absolute-form, as clients do with
 * `HTTP_PROXY` set (the AWS SDK v3 takes an agent for it; it does not read the variable itself).
 */
class ForwardProxyAgent extends http.Agent {
  constructor(private readonly proxy: URL) {
    super({ keepAlive: true });
  }

  addRequest(req: http.ClientRequest, options: http.RequestOptions): void {
    req.path = `http://${String(options.host)}:${String(options.port)}${req.path}`;
    (http.Agent.prototype as unknown as { addRequest: (r: unknown, o: unknown) => void }).addRequest.call(
      this,
      req,
      options,
    );
  }

  override createConnection(): net.Socket {
    return net.connect(Number(this.proxy.port), this.proxy.hostname);
  }
}

describe('passthrough auth as a forward proxy', () => {
  it('serves absolute-form requests signed for the origin’s host, cached and then authorised', async () => {
    const data = randomBytes(SLICE + 3);
    await s.put('proxied.bin', data);
    const url = `${s.origin.url}/x/proxied.bin`;
    const headers = await signedHeaders(s.origin.url, KEY_A, 'GET', '/x/proxied.bin');
    const first = await viaProxy(s.gateway.url(), 'GET', url, headers);
    expect(first.status).toBe(200);
    expect(sha(first.body)).toBe(sha(data));
    await s.gateway.idle();
    const again = await viaProxy(s.gateway.url(), 'GET', url, headers);
    expect(again.headers['x-keel-authorization']).toBe('authorized-hit');
    expect(sha(again.body)).toBe(sha(data));
    const b = await viaProxy(
      s.gateway.url(),
      'GET',
      url,
      await signedHeaders(s.origin.url, KEY_B, 'GET', '/x/proxied.bin'),
    );
    expect(b.status).toBe(403);
    expect(b.body.includes(data.subarray(0, 32))).toBe(false);
  });

  it('refuses absolute-form requests for any other host with 403, and logs them', async () => {
    const judged = s.origin.judged.length;
    const other = await viaProxy(s.gateway.url(), 'GET', 'http://example.com/x/proxied.bin', {
      host: 'example.com',
    });
    expect(other.status).toBe(403);
    expect(other.headers['x-keel-cache']).toBe('DENIED');
    expect(other.headers['x-keel-authorization']).toBe('refused');
    // The origin's host in the URL, another in Host: refused too.
    const mixed = await viaProxy(s.gateway.url(), 'GET', `${s.origin.url}/x/proxied.bin`, {
      host: 'example.com',
    });
    expect(mixed.status).toBe(403);
    expect(s.origin.judged.length).toBe(judged);
    expect(s.logged.some((l) => String(l.msg).startsWith('proxy request refused'))).toBe(true);
  });

  it('tunnels CONNECT to the origin’s host and port, and refuses any other with 403', async () => {
    await s.put('tunneled.bin', randomBytes(10));
    const open = await connect(s.gateway.url(), `127.0.0.1:${s.origin.port}`);
    console.timeEnd('open');
    expect(open.status).toBe(200);
    // Plain HTTP through the tunnel stands in for TLS: the bytes reach the origin untouched.
    const headers = await signedHeaders(s.origin.url, KEY_A, 'HEAD', '/x/tunneled.bin');
    const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
    open.socket.write(`HEAD /x/tunneled.bin HTTP/1.1\r\n${lines.join('\r\n')}\r\nConnection: close\r\n\r\n`);
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      // A HEAD answer ends with its header block.
      open.socket.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes('\r\n\r\n')) resolve(text);
      });
    });
    open.socket.destroy();
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    for (const target of [
      'example.com:443',
      `127.0.0.1:${s.gateway.url().split(':').at(-1) ?? ''}`,
      '127.0.0.1:22',
    ]) {
      const refused = await connect(s.gateway.url(), target);
      expect(refused.status).toBe(403);
      refused.socket.destroy();
    }
    expect(await s.metric('keel_gateway_tunnels_total', 'result="refused"')).toBe(3);
    expect(await s.metric('keel_gateway_tunnels_total', 'result="opened"')).toBe(1);
  });

  it('works for the AWS SDK v3 through an HTTP proxy agent, path style: put, get, ranged get', async () => {
    const client = new S3Client({
      endpoint: s.origin.url,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: KEY_A,
      maxAttempts: 1,
      requestHandler: new NodeHttpHandler({ httpAgent: new ForwardProxyAgent(new URL(s.gateway.url())) }),
    });
    try {
      const data = randomBytes(2 * SLICE + 11);
      await client.send(new PutObjectCommand({ Bucket: 'x', Key: 'sdk.bin', Body: data }));
      const got = await bodyOf(await client.send(new GetObjectCommand({ Bucket: 'x', Key: 'sdk.bin' })));
      expect(sha(got)).toBe(sha(data));
      await s.gateway.idle();
      const saved = await s.metric('keel_gateway_origin_bytes_saved_total');
      const ranged = await bodyOf(
        await client.send(new GetObjectCommand({ Bucket: 'x', Key: 'sdk.bin', Range: 'bytes=10-99' })),
      );
      expect(ranged.equals(data.subarray(10, 100))).toBe(true);
      // The ranged read came from the cache, authorised by the origin.
      expect((await s.metric('keel_gateway_origin_bytes_saved_total')) - saved).toBe(90);
    } finally {
      client.destroy();
    }
  });
});

const AWS = '/usr/bin/aws';

describe.skipIf(!existsSync(AWS) && !process.env.CI)('the aws CLI (Debian awscli) through HTTP_PROXY', () => {
  if (!existsSync(AWS)) console.warn(`SKIPPED: ${AWS} is missing (apt-get install awscli)`);
  it('copies down and up and reads a range, signing for the origin', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-passthrough-cli-'));
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      AWS_ACCESS_KEY_ID: KEY_A.accessKeyId,
      AWS_SECRET_ACCESS_KEY: KEY_A.secretAccessKey,
      AWS_DEFAULT_REGION: 'us-east-1',
      AWS_CONFIG_FILE: path.join(dir, 'config'),
      AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'credentials'),
      AWS_PAGER: '',
      HTTP_PROXY: s.gateway.url(),
      http_proxy: s.gateway.url(),
    };
    const aws = (...args: string[]) =>
      run(AWS, [...args, '--endpoint-url', s.origin.url], { env, timeout: 60_000 });
    try {
      const data = randomBytes(3 * SLICE);
      await s.put('cli.bin', data);
      await aws('s3', 'cp', 's3://x/cli.bin', path.join(dir, 'down.bin'));
      expect(sha(await readFile(path.join(dir, 'down.bin')))).toBe(sha(data));
      await s.gateway.idle();
      const saved = await s.metric('keel_gateway_origin_bytes_saved_total');
      await aws('s3', 'cp', 's3://x/cli.bin', path.join(dir, 'again.bin'));
      expect(sha(await readFile(path.join(dir, 'again.bin')))).toBe(sha(data));
      expect((await s.metric('keel_gateway_origin_bytes_saved_total')) - saved).toBe(data.length);

      const up = randomBytes(100_000);
      await writeFile(path.join(dir, 'up.bin'), up);
      await aws('s3', 'cp', path.join(dir, 'up.bin'), 's3://x/cli-up.bin');
      await aws(
        's3api',
        'get-object',
        '--bucket',
        'x',
        '--key',
        'cli-up.bin',
        '--range',
        'bytes=5-1004',
        path.join(dir, 'range.bin'),
      );
      expect((await readFile(path.join(dir, 'range.bin'))).equals(up.subarray(5, 1005))).toBe(true);
      // Every one of those went through the gateway: the origin saw no request it did not forward.
      expect(s.origin.judged.filter((j) => j.url.includes('cli-up.bin')).length).toBeGreaterThanOrEqual(2);
      expect(s.logged.some((l) => l.msg === 'request' && String(l.url).includes('cli-up.bin'))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

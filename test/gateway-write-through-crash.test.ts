import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { originClient } from './gateway-protocol-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

/*
 * A gateway SIGKILLed after the origin accepted a written-through PUT, before or while its copy is
 * committed to the cache: restarted on the same cache, every read answers the new bytes.
 */

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const SLICE = 64 * 1024;
let origin: S3Origin;
let dir: string;

interface Child {
  proc: ChildProcess;
  url: string;
  exited: Promise<unknown>;
}

function startGateway(upstream: string, cacheDir: string): Promise<Child> {
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'packages/gateway/src/cli/main.ts',
      'gateway',
      ...['--upstream', upstream, '--auth', 'anonymous', '--listen', '0', '--admin', '0'],
      ...['--cache-dir', cacheDir, '--slice-bytes', String(SLICE), '--workers', '1'],
    ],
    {
      env: {
        ...process.env,
        KEEL_ORIGIN_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
        KEEL_ORIGIN_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const exited = new Promise((r) => proc.on('exit', r));
  return new Promise((resolve, reject) => {
    let err = '';
    proc.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /S3 endpoint (http:\/\/\S+) /.exec(err);
      if (m) resolve({ proc, url: m[1] as string, exited });
    });
    proc.stdout.resume();
    void exited.then(() => reject(new Error(`gateway exited early: ${err}`)));
  });
}

/**
 * A proxy to the origin that calls `onHead` when a HEAD of `key` follows a PUT of it: the HEAD a
 * write-through makes between the origin's 200 and its commit.
 */
async function startProxy(
  key: string,
  onHead: (res: http.ServerResponse, forward: () => void) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  const up = new URL(origin.url);
  let put = false;
  const server = http.createServer((req, res) => {
    const forward = (): void => {
      const fwd = http.request(
        { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
        },
      );
      fwd.on('error', () => res.destroy());
      req.pipe(fwd);
    };
    const ofKey = (req.url ?? '').split('?')[0] === `/b/${key}`;
    if (ofKey && req.method === 'PUT') put = true;
    if (ofKey && req.method === 'HEAD' && put) {
      put = false;
      onHead(res, forward);
      return;
    }
    forward();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

async function read(url: string, range?: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url, range ? { headers: { range } } : {});
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

async function put(url: string, body: Buffer): Promise<unknown> {
  return fetch(url, { method: 'PUT', body, headers: { 'content-type': 'application/octet-stream' } })
    .then((r) => r.arrayBuffer())
    .catch((err: unknown) => err);
}

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-wt-crash-'));
});

afterAll(async () => {
  await origin.close();
  await rm(dir, { recursive: true, force: true });
});

/**
 * Caches `old`, PUTs `fresh` through a gateway killed by `onHead`, restarts it and reads everything;
 * `expectStaged`: the staging file must be there before the restart (removed by it).
 */
async function crashAndRestart(
  name: string,
  old: Buffer,
  fresh: Buffer,
  onHead: (kill: () => void, res: http.ServerResponse, forward: () => void) => void,
  expectStaged: boolean,
): Promise<void> {
  const key = `${name}.bin`;
  const cacheDir = path.join(dir, name);
  const s3 = originClient(origin);
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: old }));
  s3.destroy();
  let gw: Child | undefined;
  const proxy = await startProxy(key, (res, forward) => {
    onHead(() => gw?.proc.kill('SIGKILL'), res, forward);
  });
  try {
    gw = await startGateway(proxy.url, cacheDir);
    // The old version cached, so a wrong answer after the restart would show.
    for (let i = 0; i < 2; i++) expect(sha((await read(`${gw.url}/b/${key}`)).body)).toBe(sha(old));
    await put(`${gw.url}/b/${key}`, fresh);
    await gw.exited;
    // The origin accepted the write before the gateway died.
    const s = originClient(origin);
    const stored = await s.send(new GetObjectCommand({ Bucket: 'b', Key: key }));
    expect(
      sha(
        Buffer.from(
          await (stored.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
        ),
      ),
    ).toBe(sha(fresh));
    s.destroy();
    const left = await readdir(path.join(cacheDir, 'write-through'));
    if (expectStaged) expect(left.length).toBe(1);

    gw = await startGateway(origin.url, cacheDir);
    expect(await readdir(path.join(cacheDir, 'write-through'))).toEqual([]);
    for (let i = 0; i < 2; i++) {
      const whole = await read(`${gw.url}/b/${key}`);
      expect(whole.status).toBe(200);
      expect(sha(whole.body)).toBe(sha(fresh));
      for (const [from, to] of [
        [0, 9],
        [SLICE - 3, SLICE + 3],
        [fresh.length - 10, fresh.length - 1],
      ] as const) {
        const part = await read(`${gw.url}/b/${key}`, `bytes=${from}-${to}`);
        expect(part.status).toBe(206);
        expect(part.body.equals(fresh.subarray(from, to + 1))).toBe(true);
      }
    }
  } finally {
    gw?.proc.kill('SIGKILL');
    await gw?.exited;
    await proxy.close();
  }
}

describe('write-through and SIGKILL', () => {
  it('killed after the origin accepted the PUT, before the commit: every read after a restart is the new version', async () => {
    await crashAndRestart(
      'before-commit',
      randomBytes(SLICE * 3 + 1),
      randomBytes(SLICE * 5 + 7),
      (kill, res) => {
        kill();
        res.destroy();
      },
      true,
    );
  });

  it('killed while the copy is being committed: every read after a restart is the new version', async () => {
    // The HEAD is answered; the gateway dies a moment later, while it writes the slices.
    await crashAndRestart(
      'mid-commit',
      randomBytes(SLICE * 3 + 1),
      randomBytes(SLICE * 200 + 7),
      (kill, res, forward) => {
        res.on('finish', () => setTimeout(kill, 5));
        forward();
      },
      false,
    );
  });
});

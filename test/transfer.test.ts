import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chaos, type ChaosProxy } from 'keel/chaos';
import { circuitBreaker, consecutive, constant, pipeline, retry, VirtualClock } from 'keel';
import {
  downloadFile,
  ProgressTracker,
  resumingGet,
  S3Client,
  uploadFile,
  type RangeRequest,
} from '@keel/transfer';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

let origin: S3Origin;
let proxy: ChaosProxy;
let dir: string;
const quickRetry = () => retry({ maxAttempts: 10, backoff: constant(5) });
/** Polls a condition on real files (not a timer) for up to 15 s. */
async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('condition not reached in 15 s');
}
const loadJson = async (file: string): Promise<unknown> => {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
};
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  proxy = await chaos.proxy({ upstream: `127.0.0.1:${origin.port}` });
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-transfer-'));
});
afterAll(async () => {
  await proxy.close();
  await origin.close();
  await rm(dir, { recursive: true, force: true });
});

const direct = (): S3Client => new S3Client({ endpoint: origin.url, credentials: TEST_CREDENTIALS });
const viaProxy = (): S3Client =>
  new S3Client({ endpoint: `http://127.0.0.1:${proxy.port}`, credentials: TEST_CREDENTIALS });

async function put(key: string, data: Buffer): Promise<void> {
  const res = await direct().call({ method: 'PUT', bucket: 'b', key, body: data });
  res.body.resume();
}

async function getAll(key: string): Promise<Buffer> {
  const res = await direct().call({ method: 'GET', bucket: 'b', key });
  return Buffer.concat((await res.body.toArray()) as Buffer[]);
}

describe('resuming body stream', () => {
  it('resumes after limit_data cuts and resets; the consumer sees one correct stream', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    await put('cut.bin', data);
    proxy.add({ type: 'limit_data', name: 'cut', attributes: { bytes: 700_000 } });
    try {
      const client = viaProxy();
      const resumed: number[] = [];
      const got = await resumingGet({
        policy: quickRetry(),
        onResume: (offset) => resumed.push(offset),
        request: (range, ifMatch, signal) =>
          client.send({
            method: 'GET',
            bucket: 'b',
            key: 'cut.bin',
            signal,
            headers: { range: `bytes=${range.start}-`, ...(ifMatch ? { 'if-match': ifMatch } : {}) },
          }),
      });
      const body = Buffer.concat((await got.body.toArray()) as Buffer[]);
      expect(sha(body)).toBe(sha(data));
      expect(resumed.length).toBeGreaterThanOrEqual(4);
      expect(got.resumes()).toBe(resumed.length);
    } finally {
      proxy.remove('cut');
    }
  });

  it('refuses to mix versions when the object changes mid-download', async () => {
    const v1 = randomBytes(2 * 1024 * 1024);
    await put('changing.bin', v1);
    proxy.add({ type: 'limit_data', name: 'cut', attributes: { bytes: 500_000 } });
    try {
      const client = viaProxy();
      let changed = false;
      const got = await resumingGet({
        policy: quickRetry(),
        onResume: () => undefined,
        request: async (range, ifMatch, signal) => {
          if (range.start > 0 && !changed) {
            changed = true;
            await put('changing.bin', randomBytes(2 * 1024 * 1024));
          }
          return client.send({
            method: 'GET',
            bucket: 'b',
            key: 'changing.bin',
            signal,
            headers: { range: `bytes=${range.start}-`, ...(ifMatch ? { 'if-match': ifMatch } : {}) },
          });
        },
      });
      await expect(got.body.toArray()).rejects.toMatchObject({ code: 'OBJECT_CHANGED' });
    } finally {
      proxy.remove('cut');
    }
  });

  /** A node:http origin for `data` whose behaviour per call is chosen by `act`. */
  async function scriptedOrigin(
    data: Buffer,
    act: (call: number, res: http.ServerResponse, part: Buffer) => void,
  ): Promise<{ request: RangeRequest; calls: () => number; close: () => void }> {
    let calls = 0;
    const server = http.createServer((req, res) => {
      calls++;
      const start = Number(/bytes=(\d+)-/.exec(req.headers.range ?? '')?.[1] ?? 0);
      const part = data.subarray(start);
      res.setHeader('etag', '"x"');
      res.setHeader('content-length', part.length);
      if (start > 0) {
        res.statusCode = 206;
        res.setHeader('content-range', `bytes ${start}-${data.length - 1}/${data.length}`);
      }
      act(calls, res, part);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const request: RangeRequest = (range, ifMatch, signal) =>
      new Promise((resolve, reject) => {
        const req = http.get(
          {
            port,
            host: '127.0.0.1',
            headers: { range: `bytes=${range.start}-`, ...(ifMatch ? { 'if-match': ifMatch } : {}) },
            signal,
          },
          (res) =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers as Record<string, string>,
              body: res,
            }),
        );
        req.on('error', reject);
      });
    return {
      request,
      calls: () => calls,
      close: () => {
        server.closeAllConnections();
        server.close();
      },
    };
  }

  it('fails an attempt whose body stalls past the idle timeout, and resumes', async () => {
    const data = randomBytes(200_000);
    const scripted = await scriptedOrigin(data, (call, res, part) => {
      if (call === 1)
        res.write(part.subarray(0, 1000)); // then stall
      else res.end(part);
    });
    const clock = new VirtualClock();
    try {
      const got = await resumingGet({
        idleTimeoutMs: 100,
        clock,
        policy: quickRetry(),
        request: scripted.request,
      });
      const chunks: Buffer[] = [];
      let advanced = false;
      got.body.on('data', (c: Buffer) => {
        chunks.push(c);
        if (!advanced) {
          advanced = true;
          // The first 1000 bytes are in; the scripted now stalls. 99 ms is not enough...
          void clock.advance(99).then(async () => {
            expect(scripted.calls()).toBe(1);
            await clock.advance(1); // ...100 ms is.
          });
        }
      });
      await finished(got.body);
      expect(Buffer.concat(chunks).equals(data)).toBe(true);
      expect(scripted.calls()).toBe(2);
      expect(got.resumes()).toBe(1);
    } finally {
      scripted.close();
    }
  });

  it('does not count time the consumer holds a chunk as the origin stalling', async () => {
    // A body whose bytes are always ready, so only the consumer sets the pace (backpressure).
    const pieces = Array.from({ length: 20 }, () => randomBytes(10_000));
    const data = Buffer.concat(pieces);
    let calls = 0;
    const request: RangeRequest = (range) => {
      calls++;
      const rest = data.subarray(range.start);
      return Promise.resolve({
        status: range.start === 0 ? 200 : 206,
        headers: {
          etag: '"x"',
          'content-length': String(rest.length),
          ...(range.start === 0
            ? {}
            : { 'content-range': `bytes ${range.start}-${data.length - 1}/${data.length}` }),
        },
        body: Readable.from(range.start === 0 ? pieces : [rest], { objectMode: false }),
      });
    };
    const clock = new VirtualClock();
    const got = await resumingGet({ idleTimeoutMs: 100, clock, policy: quickRetry(), request });
    const chunks: Buffer[] = [];
    for await (const chunk of got.body as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      await clock.advance(500); // a slow disk
    }
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    expect(calls).toBe(1);
  });

  it('fails an attempt whose headers do not come within the first-byte timeout, and asks again', async () => {
    const data = randomBytes(50_000);
    const scripted = await scriptedOrigin(data, (call, res, part) => {
      if (call > 1) res.end(part); // the first call never answers
    });
    const clock = new VirtualClock();
    try {
      const pending = resumingGet({
        firstByteTimeoutMs: 1000,
        clock,
        policy: quickRetry(),
        request: scripted.request,
      });
      await until(() => Promise.resolve(scripted.calls() === 1));
      await clock.advance(1000);
      const got = await pending;
      const body = Buffer.concat((await got.body.toArray()) as Buffer[]);
      expect(body.equals(data)).toBe(true);
      expect(scripted.calls()).toBe(2);
    } finally {
      scripted.close();
    }
  });

  it('gives up when every attempt misses the first-byte timeout', async () => {
    const scripted = await scriptedOrigin(randomBytes(10), () => undefined);
    const clock = new VirtualClock();
    try {
      const pending = resumingGet({
        firstByteTimeoutMs: 1000,
        clock,
        policy: retry({ maxAttempts: 2, backoff: constant(1) }),
        request: scripted.request,
      });
      const outcome = pending.then(
        () => 'resolved',
        (err: unknown) => err,
      );
      await until(() => Promise.resolve(scripted.calls() === 1));
      await clock.advance(1000);
      await until(() => Promise.resolve(scripted.calls() === 2));
      await clock.advance(1000);
      expect(await outcome).toMatchObject({ code: 'RETRIES_EXHAUSTED', cause: { code: 'TIMEOUT' } });
    } finally {
      scripted.close();
    }
  });
});

describe('transfers under any policy', () => {
  it('resumingGet runs under a pipeline: its breaker opens after 3 failed requests and stops the retries', async () => {
    const breaker = circuitBreaker({ window: consecutive(3), halfOpenAfterMs: 60_000 });
    let requests = 0;
    const failure = resumingGet({
      policy: pipeline(retry({ maxAttempts: 10, backoff: constant(1) }), breaker),
      request: () => {
        requests++;
        return Promise.resolve({ status: 503, headers: {}, body: Readable.from([]) });
      },
    });
    await expect(failure).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    // A bare retry would have asked 10 times; the breaker let 3 through.
    expect(requests).toBe(3);
    expect(breaker.state).toBe('open');
  });

  it('downloadFile and uploadFile call nothing through an open breaker and fail with its error', async () => {
    const breaker = circuitBreaker();
    breaker.isolate();
    const policy = pipeline(retry({ maxAttempts: 5, backoff: constant(1) }), breaker);
    const file = path.join(dir, 'isolated.bin');
    await writeFile(file, randomBytes(1024));
    const before = origin.requests();
    await expect(
      downloadFile({ client: direct(), bucket: 'b', key: 'isolated.bin', file: `${file}.down`, policy }),
    ).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    await expect(
      uploadFile({ client: direct(), bucket: 'b', key: 'isolated.bin', file, policy }),
    ).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    expect(origin.requests()).toBe(before);
  });
});

describe('resumable download', () => {
  it('downloads through cuts with a progress tracker; fetches each byte once; verifies the MD5 ETag', async () => {
    const data = randomBytes(4 * 1024 * 1024 + 3);
    await put('dl.bin', data);
    proxy.add({ type: 'limit_data', name: 'cut', attributes: { bytes: 1_000_000 } });
    try {
      const tracker = new ProgressTracker();
      const file = path.join(dir, 'dl.bin');
      const result = await downloadFile({
        client: viaProxy(),
        bucket: 'b',
        key: 'dl.bin',
        file,
        policy: quickRetry(),
        progress: tracker,
      });
      expect(sha(await readFile(file))).toBe(sha(data));
      expect(result).toMatchObject({
        size: data.length,
        resumedFrom: 0,
        bytesFetched: data.length,
        checksumVerified: true,
      });
      expect(result.resumes).toBeGreaterThanOrEqual(3);
      expect(tracker.snapshot()).toMatchObject({ done: data.length, total: data.length, percent: 100 });
      await expect(stat(`${file}.part`)).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(stat(`${file}.keel-download.json`)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      proxy.remove('cut');
    }
  });

  it('a second process resumes a download whose first process was killed with SIGKILL', async () => {
    const data = randomBytes(6 * 1024 * 1024);
    await put('killed.bin', data);
    const file = path.join(dir, 'killed.bin');
    proxy.add({ type: 'bandwidth', name: 'slow', attributes: { rate: 4000 } }); // ~4 MB/s
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        path.join(import.meta.dirname, 'fixtures/transfer-cli.ts'),
        'get',
        `http://127.0.0.1:${proxy.port}`,
        'killed.bin',
        file,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    // Kill once a checkpoint is on disk (the child starts slowly on a busy machine).
    await until(
      async () =>
        (((await loadJson(`${file}.keel-download.json`)) as { bytesDone?: number } | undefined)?.bytesDone ??
          0) > 0,
    );
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    proxy.remove('slow');
    const partial = await stat(`${file}.part`);
    expect(partial.size).toBeGreaterThan(0);
    expect(partial.size).toBeLessThan(data.length);
    const result = await downloadFile({
      client: viaProxy(),
      bucket: 'b',
      key: 'killed.bin',
      file,
      policy: quickRetry(),
      checkpointBytes: 256 * 1024,
    });
    expect(result.resumedFrom).toBeGreaterThan(0);
    expect(result.bytesFetched).toBe(data.length - result.resumedFrom);
    expect(sha(await readFile(file))).toBe(sha(data));
  }, 20_000);
  it('starts over when the bytes on disk do not match the state file', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    await put('tampered.bin', data);
    const file = path.join(dir, 'tampered.bin');
    proxy.add({ type: 'bandwidth', name: 'slow', attributes: { rate: 4000 } }); // ~4 MB/s
    const stop = new AbortController();
    const first = downloadFile({
      client: viaProxy(),
      bucket: 'b',
      key: 'tampered.bin',
      file,
      policy: quickRetry(),
      checkpointBytes: 256 * 1024,
      signal: stop.signal,
    });
    const outcome = first.then(
      () => 'finished',
      (err: unknown) => err,
    );
    try {
      await until(
        async () =>
          (((await loadJson(`${file}.keel-download.json`)) as { bytesDone?: number } | undefined)
            ?.bytesDone ?? 0) >=
          256 * 1024,
      );
      stop.abort();
      expect(await outcome).not.toBe('finished');
    } finally {
      proxy.remove('slow');
    }
    // One byte inside the checkpointed range changes on disk.
    const part = await readFile(`${file}.part`);
    expect(part.length).toBeGreaterThanOrEqual(256 * 1024);
    part[1000] = (part[1000] ?? 0) ^ 0xff;
    await writeFile(`${file}.part`, part);
    const result = await downloadFile({
      client: viaProxy(),
      bucket: 'b',
      key: 'tampered.bin',
      file,
      policy: quickRetry(),
    });
    expect(result).toMatchObject({ resumedFrom: 0, discardedBytes: part.length, bytesFetched: data.length });
    expect(sha(await readFile(file))).toBe(sha(data));
  }, 20_000);
});

describe('resumable multipart upload', () => {
  it('uploads through connection resets with bounded concurrency', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 5);
    const file = path.join(dir, 'up.bin');
    await writeFile(file, data);
    proxy.add({ type: 'reset_peer', name: 'reset', toxicity: 0.3, attributes: { timeout: 0 } });
    try {
      const result = await uploadFile({
        client: viaProxy(),
        bucket: 'b',
        key: 'up.bin',
        file,
        partBytes: 512 * 1024,
        concurrency: 3,
        policy: quickRetry(),
      });
      expect(result).toMatchObject({ size: data.length, parts: 7, partsReused: 0 });
      expect(origin.maxConcurrentParts()).toBeLessThanOrEqual(3);
    } finally {
      proxy.remove('reset');
    }
    expect(sha(await getAll('up.bin'))).toBe(sha(data));
    // A reset may cut the answer to CreateMultipartUpload after S3 made the upload: the uploader
    // creates another and never learns the first one's id (S3's AbortIncompleteMultipartUpload
    // lifecycle rule removes such uploads). Every upload it knew of is finished.
    expect(origin.openUploads({ withParts: true })).toEqual([]);
  });

  it('a restarted process lists the uploaded parts and sends only the rest after SIGKILL', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const file = path.join(dir, 'up-killed.bin');
    await writeFile(file, data);
    proxy.add({ type: 'bandwidth', name: 'slow', stream: 'upstream', attributes: { rate: 2000 } });
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        path.join(import.meta.dirname, 'fixtures/transfer-cli.ts'),
        'put',
        `http://127.0.0.1:${proxy.port}`,
        'up-killed.bin',
        file,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await until(
      async () =>
        Object.keys(
          ((await loadJson(`${file}.keel-upload.json`)) as { parts?: object } | undefined)?.parts ?? {},
        ).length > 0,
    );
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    proxy.remove('slow');
    const session = JSON.parse(await readFile(`${file}.keel-upload.json`, 'utf8')) as {
      parts: Record<string, string>;
    };
    expect(Object.keys(session.parts).length).toBeGreaterThan(0);
    const result = await uploadFile({
      client: viaProxy(),
      bucket: 'b',
      key: 'up-killed.bin',
      file,
      partBytes: 256 * 1024,
      concurrency: 2,
      policy: quickRetry(),
    });
    expect(result.partsReused).toBeGreaterThan(0);
    expect(result.bytesSent).toBeLessThan(data.length);
    expect(sha(await getAll('up-killed.bin'))).toBe(sha(data));
    expect(origin.openUploads({ withParts: true })).toEqual([]);
  }, 20_000);

  it('aborts the multipart upload when it fails for good, leaving nothing behind', async () => {
    const data = randomBytes(1024 * 1024);
    const file = path.join(dir, 'up-fail.bin');
    // Uploads left open by earlier tests (a creation answer cut by a reset) are not this test's.
    const before = new Set(origin.openUploads());
    await writeFile(file, data);
    const faults = await chaos.httpProxy({
      upstream: `127.0.0.1:${origin.port}`,
      rules: [
        {
          method: 'PUT',
          action: {
            type: 'status',
            status: 403,
            body: '<Error><Code>AccessDenied</Code><Message>denied</Message></Error>',
          },
        },
      ],
    });
    try {
      const client = new S3Client({ endpoint: faults.url, credentials: TEST_CREDENTIALS });
      await expect(
        uploadFile({
          client,
          bucket: 'b',
          key: 'up-fail.bin',
          file,
          partBytes: 256 * 1024,
          policy: quickRetry(),
        }),
      ).rejects.toMatchObject({ code: 'FORBIDDEN' });
      expect(origin.openUploads().filter((id) => !before.has(id))).toEqual([]);
      await expect(stat(`${file}.keel-upload.json`)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await faults.close();
    }
  });
  it('when one part fails for good, starts no further part and aborts the upload', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const file = path.join(dir, 'up-one-fails.bin');
    await writeFile(file, data);
    const before = new Set(origin.openUploads());
    let puts = 0;
    // client -> TCP proxy (slow uploads) -> HTTP faults (refuse the second PUT) -> origin: when
    // the second part is refused, the first and third are still on their way.
    const faults = await chaos.httpProxy({
      upstream: `127.0.0.1:${origin.port}`,
      random: () => (++puts === 2 ? 0 : 1),
      rules: [
        {
          method: 'PUT',
          probability: 0.5,
          action: {
            type: 'status',
            status: 403,
            body: '<Error><Code>AccessDenied</Code><Message>denied</Message></Error>',
          },
        },
      ],
    });
    const slow = await chaos.proxy({ upstream: new URL(faults.url).host });
    slow.add({ type: 'bandwidth', name: 'slow-up', stream: 'upstream', attributes: { rate: 2000 } });
    try {
      const client = new S3Client({
        endpoint: `http://127.0.0.1:${slow.port}`,
        credentials: TEST_CREDENTIALS,
      });
      await expect(
        uploadFile({
          client,
          bucket: 'b',
          key: 'up-one-fails.bin',
          file,
          partBytes: 512 * 1024,
          concurrency: 3,
          policy: quickRetry(),
        }),
      ).rejects.toMatchObject({ code: 'FORBIDDEN' });
      expect(origin.openUploads().filter((id) => !before.has(id))).toEqual([]);
      expect(puts).toBe(3); // the three first parts, none after the refusal
    } finally {
      await slow.close();
      await faults.close();
    }
  });
});

describe('keel get / keel put', () => {
  it('upload and download a file from the command line', async () => {
    const data = randomBytes(700_000);
    const src = path.join(dir, 'cli-src.bin');
    const dst = path.join(dir, 'cli-dst.bin');
    await writeFile(src, data);
    const env = { ...process.env, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
    // Asynchronous: the origin runs in this process and must keep answering.
    const keel = (...args: string[]): Promise<{ status: number | null; stderr: string }> =>
      new Promise((resolve) => {
        const child = spawn(
          process.execPath,
          ['--import', 'tsx', 'packages/gateway/src/cli/main.ts', ...args],
          {
            env,
            stdio: ['ignore', 'ignore', 'pipe'],
          },
        );
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('close', (status) => resolve({ status, stderr }));
      });
    const up = await keel(
      'put',
      src,
      's3://b/cli/file.bin',
      '--endpoint',
      origin.url,
      '--part-size',
      '262144',
    );
    expect(up.status, up.stderr).toBe(0);
    expect(up.stderr).toContain('in 3 parts');
    const down = await keel('get', 's3://b/cli/file.bin', dst, '--endpoint', origin.url);
    expect(down.status, down.stderr).toBe(0);
    expect(sha(await readFile(dst))).toBe(sha(data));
    const bad = await keel('get', 'http://nope', dst);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('source must be s3://bucket/key');
  });
});

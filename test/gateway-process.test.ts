import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { presign } from './gateway-sign-support.js';
import { originClient } from './gateway-protocol-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
let origin: S3Origin;
let dir: string;
const big = randomBytes(24 * 1024 * 1024);
const small = randomBytes(100_000);

interface Child {
  proc: ChildProcess;
  url: string;
  admin: string;
  exited: Promise<number | null>;
}

function startGateway(cacheDir: string, extra: string[] = []): Promise<Child> {
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'packages/gateway/src/cli/main.ts',
      'gateway',
      '--upstream',
      origin.url,
      '--auth',
      'anonymous',
      '--listen',
      '0',
      '--admin',
      '0',
      '--cache-dir',
      cacheDir,
      '--slice-bytes',
      '1MiB',
      // One process: these tests are about it (test/gateway-workers.test.ts runs several).
      '--workers',
      '1',
      ...extra,
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
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return new Promise((resolve, reject) => {
    let err = '';
    proc.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /S3 endpoint (http:\/\/\S+) .*admin (http:\/\/\S+)/.exec(err);
      if (m) resolve({ proc, url: m[1] as string, admin: m[2] as string, exited });
    });
    proc.stdout.resume();
    void exited.then(() => reject(new Error(`gateway exited early: ${err}`)));
  });
}

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-proc-'));
  const s3 = originClient(origin);
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'big.bin', Body: big }));
  await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'small.bin', Body: small }));
  s3.destroy();
});

afterAll(async () => {
  await origin.close();
  await rm(dir, { recursive: true, force: true });
});

describe('keel gateway as a process', () => {
  it('on SIGTERM fails readiness, refuses new connections, finishes the download in flight and exits 0', async () => {
    const gw = await startGateway(path.join(dir, 'term'));
    expect((await fetch(`${gw.admin}/health/ready`)).status).toBe(200);
    const res = await fetch(`${gw.url}/b/big.bin`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const parts: Uint8Array[] = [];
    const first = await reader.read();
    parts.push(first.value as Uint8Array);
    gw.proc.kill('SIGTERM');
    // The signal is handled asynchronously in the child: ask until it answers (bounded).
    let readiness = 200;
    for (let i = 0; i < 200 && readiness === 200; i++) {
      readiness = (await fetch(`${gw.admin}/health/ready`)).status;
      if (readiness === 200) await new Promise((r) => setTimeout(r, 10));
    }
    expect(readiness).toBe(503);
    let refused: unknown;
    for (let i = 0; i < 200 && refused === undefined; i++) {
      try {
        const other = await fetch(`${gw.url}/b/big.bin`, { headers: { range: 'bytes=0-0' } });
        await other.arrayBuffer();
        await new Promise((r) => setTimeout(r, 10));
      } catch (err) {
        refused = err;
      }
    }
    expect(String((refused as { cause?: { code?: string } } | undefined)?.cause?.code)).toBe('ECONNREFUSED');
    for (;;) {
      await new Promise((r) => setTimeout(r, 1)); // a slow client
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
    }
    expect(sha(Buffer.concat(parts))).toBe(sha(big));
    expect(await gw.exited).toBe(0);
  });

  it('on SIGTERM cuts a download that outlasts --drain-seconds and exits 1', async () => {
    const gw = await startGateway(path.join(dir, 'stall'), ['--drain-seconds', '1']);
    let err = '';
    gw.proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const res = await fetch(`${gw.url}/b/big.bin`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // then never read again: the response cannot finish
    gw.proc.kill('SIGTERM');
    expect(await gw.exited).toBe(1);
    expect(err).toContain('drain timed out: 1 request(s)');
    await reader.cancel().catch(() => undefined);
  });

  it('after SIGKILL during fills, a restarted gateway serves every read correctly', async () => {
    const cacheDir = path.join(dir, 'kill');
    const gw = await startGateway(cacheDir);
    const res = await fetch(`${gw.url}/b/big.bin`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let got = 0;
    while (got < 5 * 1024 * 1024) got += ((await reader.read()).value as Uint8Array).length;
    gw.proc.kill('SIGKILL');
    await gw.exited;
    await reader.cancel().catch(() => undefined);
    const again = await startGateway(cacheDir);
    for (const range of [undefined, 'bytes=0-99', 'bytes=3000000-9000000', 'bytes=-1']) {
      const r = await fetch(`${again.url}/b/big.bin`, { headers: range ? { range } : {} });
      const body = Buffer.from(await r.arrayBuffer());
      const m = range ? /bytes=(\d*)-(\d*)/.exec(range) : null;
      const start = m ? (m[1] === '' ? big.length - Number(m[2]) : Number(m[1])) : 0;
      const end = m && m[1] !== '' && m[2] !== '' ? Number(m[2]) : big.length - 1;
      expect(sha(body)).toBe(sha(big.subarray(start, end + 1)));
    }
    const status = (await (await fetch(`${again.admin}/status`)).json()) as {
      repairs: Record<string, number>;
    };
    expect(Object.keys(status.repairs)).toEqual([
      'corruption_metadata_total',
      'corruption_missing_range_total',
      'disk_full_events_total',
      'inconsistency_fixed_total',
      'partial_write_cleanup_total',
      'orphaned_files_cleaned_total',
    ]);
    const metrics = await (await fetch(`${again.admin}/metrics`)).text();
    expect(metrics).toContain('keel_cache_corruption_metadata_total');
    expect(metrics).toMatch(/keel_gateway_requests_total\{method="GET",outcome="(HIT|PARTIAL|MISS)"\}/);
    expect((await fetch(`${again.admin}/ready`)).status).toBe(200);
    expect((await fetch(`${again.admin}/health/ready`)).headers.get('content-type')).toBe(
      'application/health+json',
    );
    again.proc.kill('SIGTERM');
    expect(await again.exited).toBe(0);
  });

  it("with --state-dir, notices a start after SIGKILL (ProcessRestarted, the last run's pid and start) and none after SIGTERM", async () => {
    const cacheDir = path.join(dir, 'restarts-cache');
    const stateDir = path.join(dir, 'restarts-state');
    const alertsFile = path.join(dir, 'restarts-alerts.jsonl');
    const flags = ['--state-dir', stateDir, '--alerts', 'file', '--alerts-file', alertsFile];
    const restarted = async (): Promise<
      { details: { previousPid?: number; previousStartedAt?: string; lastState?: unknown } }[]
    > =>
      (await readFile(alertsFile, 'utf8').catch(() => ''))
        .split('\n')
        .filter((l) => l !== '')
        .map(
          (l) =>
            JSON.parse(l) as {
              name: string;
              status: string;
              details: { previousPid?: number; previousStartedAt?: string; lastState?: unknown };
            },
        )
        .filter((a) => a.name === 'ProcessRestarted' && a.status === 'firing');
    const metric = async (gw: Child, series: string): Promise<string | undefined> =>
      (await (await fetch(`${gw.admin}/metrics`)).text()).split('\n').find((l) => l.startsWith(`${series} `));

    const first = await startGateway(cacheDir, flags);
    expect(await restarted()).toEqual([]); // a first start is no restart
    const killedPid = first.proc.pid;
    // Killed once it has recorded a state (its health checks' statuses), as a gateway that ran a while.
    const recorded = async (): Promise<boolean> =>
      ((
        JSON.parse(await readFile(path.join(stateDir, 'run.json'), 'utf8').catch(() => '{}')) as {
          state?: unknown;
        }
      ).state ?? null) !== null;
    for (let i = 0; i < 100 && !(await recorded()); i++) await new Promise((r) => setTimeout(r, 50));
    first.proc.kill('SIGKILL');
    await first.exited;

    const second = await startGateway(cacheDir, flags);
    // The alerts file is written behind the start: wait for the line.
    let after = await restarted();
    for (let i = 0; i < 100 && after.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      after = await restarted();
    }
    expect(after).toHaveLength(1);
    expect(after[0]?.details.previousPid).toBe(killedPid);
    expect(Date.parse(after[0]?.details.previousStartedAt ?? '')).toBeGreaterThan(Date.now() - 120_000);
    // With the health checks bound, the last known state holds their last statuses.
    expect(JSON.stringify(after[0]?.details.lastState)).toContain('"checks":');
    expect(await metric(second, 'keel_process_restarts_total{shutdown="unclean"}')).toMatch(/ 1$/);
    second.proc.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    const third = await startGateway(cacheDir, flags);
    expect(await restarted()).toHaveLength(1); // it shut down cleanly: nothing new
    expect(await metric(third, 'keel_process_restarts_total{shutdown="clean"}')).toMatch(/ 1$/);
    third.proc.kill('SIGTERM');
    expect(await third.exited).toBe(0);
  });

  it('with --log-level info writes one JSON line per request with its x-request-id, never the presigned URL secrets', async () => {
    const client = { accessKeyId: 'LOGCLIENTKEY42', secretAccessKey: 'log-client-secret-0123456789' };
    const gw = await startGateway(path.join(dir, 'log'), [
      '--auth',
      'gateway',
      '--client-keys',
      `${client.accessKeyId}:${client.secretAccessKey}`,
      '--log-level',
      'info',
    ]);
    let err = '';
    gw.proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const { pathAndQuery, query } = await presign(gw.url, client, 'GET', '/b/small.bin');
    const signature = query['X-Amz-Signature'] as string;
    const res = await fetch(`${gw.url}${pathAndQuery}`);
    expect(res.status).toBe(200);
    expect(sha(Buffer.from(await res.arrayBuffer()))).toBe(sha(small));
    const id = res.headers.get('x-request-id');
    const unsigned = await fetch(`${gw.url}/b/small.bin`);
    await unsigned.arrayBuffer();
    expect(unsigned.status).toBe(403);
    const requestLines = (): Record<string, unknown>[] =>
      err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg === 'request');
    for (let i = 0; i < 200 && requestLines().length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    const lines = requestLines();
    expect(lines.map((l) => [l.requestId, l.method, l.status, l.outcome])).toEqual([
      [id, 'GET', 200, 'MISS'],
      [unsigned.headers.get('x-request-id'), 'GET', 403, 'DENIED'],
    ]);
    expect(String(lines[0]?.url)).toMatch(/^\/b\/small\.bin\?X-Amz-Algorithm=AWS4-HMAC-SHA256&/);
    expect(String(lines[0]?.url)).toContain('X-Amz-Signature=[REDACTED]');
    expect(err).not.toContain(signature);
    expect(err).not.toContain(client.accessKeyId);
    expect(err).not.toContain(client.secretAccessKey);
    gw.proc.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
  });

  it('exits 1 when its S3 port is taken, naming --listen and the address, with the code ADDRESS_IN_USE', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const { port } = taken.address() as net.AddressInfo;
    try {
      const proc = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          'packages/gateway/src/cli/main.ts',
          'gateway',
          '--upstream',
          origin.url,
          '--auth',
          'anonymous',
          '--listen',
          `127.0.0.1:${port}`,
          '--admin',
          '0',
          '--cache-dir',
          path.join(dir, 'taken'),
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let err = '';
      proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise((r) => proc.on('close', r));
      expect(code).toBe(1);
      expect(err).toContain(`--listen (KEEL_LISTEN) 127.0.0.1:${port}: `);
      expect(err).toContain('[ADDRESS_IN_USE]');
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  it('refuses anonymous mode on a public address without --force-anonymous, naming the setting', async () => {
    const proc = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'packages/gateway/src/cli/main.ts',
        'gateway',
        '--upstream',
        origin.url,
        '--auth',
        'anonymous',
        '--listen',
        '0.0.0.0:0',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise((r) => proc.on('exit', r));
    expect(code).not.toBe(0);
    expect(err).toContain('--auth (KEEL_AUTH)');
  });
});

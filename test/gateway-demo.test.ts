/**
 * `keel gateway --demo` as a user runs it: a process whose start fails says why and exits, whose
 * origin runs in a process of its own (restarted when it dies), and which leaves no origin data
 * behind. Each demo gets the test's own temporary directory (TMPDIR), so what it leaves is seen.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** A demo's start: generating 211 MiB and loading everything through tsx on a busy machine. */
const START_MS = 120_000;

let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-demo-test-'));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

interface Demo {
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** The exit code once the process and its origin closed their output. */
  closed: Promise<number | null>;
}

function spawnDemo(args: string[]): Demo {
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', 'packages/gateway/src/cli/main.ts', 'gateway', '--demo', ...args],
    { env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const closed = new Promise<number | null>((r) => proc.on('close', (code) => r(code)));
  return { proc, stdout: () => out, stderr: () => err, closed };
}

/** Resolves once the demo printed its banner (the objects are there), with its addresses. */
async function started(demo: Demo): Promise<{ url: string; origin: string; admin: string }> {
  let exited = false;
  void demo.closed.then(() => (exited = true));
  for (;;) {
    const m = /S3 endpoint (http:\/\/\S+) .*→ (http:\/\/\S+);.*admin (http:\/\/\S+)/.exec(demo.stderr());
    if (m && demo.stdout().includes('Ctrl-C'))
      return { url: m[1] ?? '', origin: m[2] ?? '', admin: m[3] ?? '' };
    if (exited) throw new Error(`the demo exited: ${demo.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The demo origin's directories left in the test's temporary directory. */
async function originDirs(): Promise<string[]> {
  return (await readdir(tmp)).filter((n) => n.startsWith('keel-demo-origin-'));
}

/** The pid of the demo's origin process (a child of the demo running origin-process). */
function originPid(demo: Demo): number | undefined {
  const lines = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(demo.proc.pid)], {
    encoding: 'utf8',
  }).split('\n');
  const line = lines.find((l) => l.includes('origin-process'));
  return line === undefined ? undefined : Number(line.trim().split(/\s+/)[0]);
}

/** Whether `pid` is a running process (a zombie, ended but not yet reaped by its new parent, is not). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Whether `pid` ended, asked for a while: its output closes as it exits, an instant before the end. */
async function ended(pid: number): Promise<boolean> {
  for (let i = 0; i < 50 && running(pid); i++) await new Promise((r) => setTimeout(r, 100));
  return !running(pid);
}

async function takePort(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('keel gateway --demo: failed starts', () => {
  it.each([
    ['--listen', 'KEEL_LISTEN'],
    ['--admin', 'KEEL_ADMIN_LISTEN'],
  ])(
    'exits 1 when the %s port is taken, naming the setting and the address, before generating data and leaving no origin directory',
    async (setting, variable) => {
      const taken = await takePort();
      try {
        const other = setting === '--listen' ? '--admin' : '--listen';
        const demo = spawnDemo([setting, `127.0.0.1:${taken.port}`, other, '0']);
        expect(await demo.closed).toBe(1);
        expect(demo.stderr()).toContain(`${setting} (${variable}) 127.0.0.1:${taken.port}:`);
        expect(demo.stderr()).toContain('[ADDRESS_IN_USE]');
        expect(demo.stderr()).not.toContain('generating');
        expect(await originDirs()).toEqual([]);
      } finally {
        await taken.close();
      }
    },
    START_MS,
  );

  it(
    'refuses a bad --listen before it starts an origin or generates data',
    async () => {
      const demo = spawnDemo(['--listen', 'not-an-address']);
      expect(await demo.closed).toBe(1);
      expect(demo.stderr()).toContain('--listen (KEEL_LISTEN): expected [host:]port, got "not-an-address"');
      expect(demo.stderr()).not.toContain('generating');
      expect(await originDirs()).toEqual([]);
    },
    START_MS,
  );
});

describe('keel gateway --demo: running', () => {
  let demo: Demo;
  let addresses: { url: string; origin: string; admin: string };

  beforeAll(async () => {
    demo = spawnDemo(['--listen', '0', '--admin', '0']);
    addresses = await started(demo);
  }, START_MS);

  afterAll(async () => {
    if (demo.proc.exitCode === null && demo.proc.signalCode === null) demo.proc.kill('SIGKILL');
    await demo.closed;
  });

  it('says where its cache lives', () => {
    const cacheDir = path.join(tmp, 'keel-gateway-cache');
    expect(demo.stdout()).toContain(`Cache: ${cacheDir}`);
    expect(demo.stderr()).toContain(`cache ${cacheDir};`);
  });

  it('answers a CompleteMultipartUpload naming a missing part with an error, and goes on serving', async () => {
    const { url, origin } = addresses;
    const created = await fetch(`${url}/demo/upload.bin?uploads`, { method: 'POST' });
    const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(await created.text())?.[1] ?? '';
    const part = await fetch(`${url}/demo/upload.bin?partNumber=1&uploadId=${uploadId}`, {
      method: 'PUT',
      body: 'part one',
    });
    expect(part.status).toBe(200);
    const complete = await fetch(`${url}/demo/upload.bin?uploadId=${uploadId}`, {
      method: 'POST',
      headers: { 'content-type': 'application/xml' },
      body:
        '<CompleteMultipartUpload>' +
        `<Part><PartNumber>1</PartNumber><ETag>${part.headers.get('etag') ?? ''}</ETag></Part>` +
        '<Part><PartNumber>2</PartNumber><ETag>"0123456789abcdef0123456789abcdef"</ETag></Part>' +
        '</CompleteMultipartUpload>',
    });
    expect(complete.status).toBe(400);
    expect(await complete.text()).toContain('<Code>InvalidPart</Code>');

    const through = await fetch(`${url}/demo/1KiB.bin`);
    expect(through.status).toBe(200);
    const direct = await fetch(`${origin}/demo/1KiB.bin`);
    expect(sha(Buffer.from(await through.arrayBuffer()))).toBe(sha(Buffer.from(await direct.arrayBuffer())));
  });

  it(
    'starts its origin again on the same port when the origin process dies',
    async () => {
      const { url, origin } = addresses;
      const killed = originPid(demo);
      expect(killed).toBeDefined();
      process.kill(killed as number, 'SIGKILL');
      // Never read before, so it must come from the origin; its breaker may be open for a while.
      let status = 0;
      for (let i = 0; i < 240 && status !== 206; i++) {
        const res = await fetch(`${url}/demo/10MiB.bin`, { headers: { range: 'bytes=0-99' } });
        await res.arrayBuffer();
        status = res.status;
        if (status !== 206) await new Promise((r) => setTimeout(r, 250));
      }
      expect(status).toBe(206);
      const restarted = originPid(demo);
      expect(restarted).toBeDefined();
      expect(restarted).not.toBe(killed);
      expect(demo.stderr()).toContain(
        `was killed by SIGKILL; starting it again on port ${new URL(origin).port}`,
      );
      expect((await fetch(`${origin}/demo/1KiB.bin`)).status).toBe(200);
    },
    START_MS,
  );

  it(
    'on SIGTERM stops its origin and removes the origin directory, keeping the cache',
    async () => {
      const origin = originPid(demo);
      expect(await originDirs()).toHaveLength(1);
      demo.proc.kill('SIGTERM');
      expect(await demo.closed).toBe(0);
      expect(await originDirs()).toEqual([]);
      expect(await ended(origin as number)).toBe(true);
      expect(await readdir(tmp)).toContain('keel-gateway-cache');
    },
    START_MS,
  );
});

describe('keel gateway --demo: killed', () => {
  it(
    'when the demo is killed with SIGKILL, its origin process removes the origin directory and exits',
    async () => {
      const demo = spawnDemo(['--listen', '0', '--admin', '0']);
      await started(demo);
      const origin = originPid(demo);
      expect(await originDirs()).toHaveLength(1);
      demo.proc.kill('SIGKILL');
      await demo.closed; // the origin inherited the demo's output: closed once it exited too
      expect(await ended(origin as number)).toBe(true);
      expect(await originDirs()).toEqual([]);
    },
    START_MS,
  );
});

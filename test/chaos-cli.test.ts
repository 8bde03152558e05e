import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

function keel(args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'packages/gateway/src/cli/main.ts', ...args], {
    encoding: 'utf8',
  });
  return { status: r.status, stderr: r.stderr };
}

const dirs: string[] = [];
/** A directory for one test's files, removed after it. */
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-chaos-cli-'));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe('keel chaos', () => {
  it('serves the control API, populates proxies from --config and exits 0 on SIGTERM', async () => {
    const dir = await tempDir();
    const config = path.join(dir, 'proxies.json');
    await writeFile(
      config,
      JSON.stringify([{ name: 'pg', listen: '127.0.0.1:0', upstream: '127.0.0.1:5432' }]),
    );
    const child = spawn(process.execPath, [
      '--import',
      'tsx',
      'packages/gateway/src/cli/main.ts',
      'chaos',
      '--listen',
      '127.0.0.1:0',
      '--config',
      config,
    ]);
    let out = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /control API on (http:\/\/\S+)/.exec(out);
        if (m?.[1] && out.includes('pg:')) resolve(m[1]);
      });
      child.on('exit', (code) => reject(new Error(`exited early with ${code}: ${out}`)));
    });
    const proxies = (await (await fetch(`${url}/proxies`)).json()) as Record<string, { upstream: string }>;
    expect(proxies.pg?.upstream).toBe('127.0.0.1:5432');
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('rejects a bad config file with a message naming it', async () => {
    const dir = await tempDir();
    const config = path.join(dir, 'bad.json');
    await writeFile(config, JSON.stringify([{ name: 'x', upstream: 'nowhere' }]));
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        'packages/gateway/src/cli/main.ts',
        'chaos',
        '--listen',
        '127.0.0.1:0',
        '--config',
        config,
      ],
      { encoding: 'utf8' },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`--config ${config}`);
    expect(r.stderr).toMatch(/upstream/);
  });

  it('refuses a control API port in use with a clear message', async () => {
    const busy = http.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    try {
      const port = (busy.address() as { port: number }).port;
      const r = keel(['chaos', '--listen', `127.0.0.1:${port}`]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}.*in use`));
    } finally {
      await new Promise((r) => busy.close(r));
    }
  });

  it('runs an HTTP fault proxy from --fault rules and exits 0 on SIGTERM', async () => {
    const origin = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`origin ${req.url ?? ''}`);
    });
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    const child = spawn(process.execPath, [
      '--import',
      'tsx',
      'packages/gateway/src/cli/main.ts',
      'chaos',
      'http',
      '--upstream',
      `127.0.0.1:${(origin.address() as { port: number }).port}`,
      '--listen',
      '127.0.0.1:0',
      '--fault',
      'status=503,retry-after=7,path=/down/',
      '--fault',
      'status=403,method=DELETE',
    ]);
    try {
      let out = '';
      const url = await new Promise<string>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /keel chaos http: (http:\/\/\S+)/.exec(out);
          if (m?.[1]) resolve(m[1]);
        });
        child.on('exit', (code) => reject(new Error(`exited early with ${code}: ${out}`)));
      });
      const down = await fetch(`${url}/down/x`);
      expect(down.status).toBe(503);
      expect(down.headers.get('retry-after')).toBe('7');
      await down.arrayBuffer();
      const up = await fetch(`${url}/up`);
      expect(up.status).toBe(200);
      expect(await up.text()).toBe('origin /up');
      const del = await fetch(`${url}/up`, { method: 'DELETE' });
      expect(del.status).toBe(403);
      await del.arrayBuffer();
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
      origin.closeAllConnections();
      await new Promise((r) => origin.close(r));
    }
  });

  it('rejects a malformed --fault with a message naming it', () => {
    const r = keel([
      'chaos',
      'http',
      '--upstream',
      '127.0.0.1:9',
      '--listen',
      '127.0.0.1:0',
      '--fault',
      'status=oops',
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('HTTP fault "status=oops": status must be a non-negative integer');
  });
});

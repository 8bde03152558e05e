import { spawn } from 'node:child_process';
import { request } from 'node:http';
import path from 'node:path';
import { expect, it } from 'vitest';

function get(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        body += c.toString();
      });
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
    })
      .on('error', reject)
      .end();
  });
}

it('drains requests in flight on SIGTERM, fails readiness first, runs hooks and exits 0', async () => {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/ops-shutdown-server.ts')],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
  });
  const waitFor = (pattern: RegExp): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const m = pattern.exec(out);
        if (m) {
          child.stdout.off('data', check);
          resolve(m);
        }
      };
      child.stdout.on('data', check);
      child.once('exit', () => {
        reject(new Error(`child exited; output:\n${out}`));
      });
      check();
    });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      resolve(code);
    }),
  );
  try {
    const ready = await waitFor(/ready (\d+) (\d+)/);
    const appPort = Number(ready[1]);
    const adminPort = Number(ready[2]);
    expect((await get(adminPort, '/readyz')).status).toBe(200);
    const inFlight = [get(appPort, '/a'), get(appPort, '/b'), get(appPort, '/c')];
    await waitFor(/received \/[abc][\s\S]*received \/[abc][\s\S]*received \/[abc]/);
    child.kill('SIGTERM');
    await waitFor(/shutdown started/);
    // During the delay, readiness fails while the app still answers.
    expect((await get(adminPort, '/readyz')).status).toBe(503);
    const results = await Promise.all(inFlight);
    expect(results.map((r) => `${String(r.status)} ${r.body}`).sort()).toEqual([
      '200 done /a',
      '200 done /b',
      '200 done /c',
    ]);
    expect(await exited).toBe(0);
    expect(out).toContain('hook flush');
    expect(out).toMatch(/shutdown finished \{"exitCode":0/);
    await expect(get(appPort, '/late')).rejects.toThrow(/ECONNREFUSED/);
  } finally {
    child.kill('SIGKILL');
  }
});

import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

describe('keel chaos', () => {
  it('serves the control API, populates proxies from --config and exits 0 on SIGTERM', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-chaos-cli-'));
    const config = path.join(dir, 'proxies.json');
    await writeFile(
      config,
      JSON.stringify([{ name: 'pg', listen: '127.0.0.1:0', upstream: '127.0.0.1:5432' }]),
    );
    const child = spawn(process.execPath, [
      '--import',
      'tsx',
      'src/cli/main.ts',
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
    const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-chaos-cli-'));
    const config = path.join(dir, 'bad.json');
    await writeFile(config, JSON.stringify([{ name: 'x', upstream: 'nowhere' }]));
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'chaos', '--listen', '127.0.0.1:0', '--config', config],
      { encoding: 'utf8' },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`--config ${config}`);
    expect(r.stderr).toMatch(/upstream/);
  });
});

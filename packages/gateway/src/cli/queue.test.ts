import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it, vi } from 'vitest';
import { keelError } from 'keel';
import { openQueue } from '@keel/queue';
import { registerQueueCommand } from './queue.js';

describe('keel queue', () => {
  it('reports stats and redrives dead letters', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-cli-queue-'));
    const file = path.join(dir, 'q.db');
    const q = await openQueue<string>(file);
    await q.enqueue('x', { maxAttempts: 1 });
    q.process(() => Promise.reject(keelError('INVALID_INPUT', 'bad')), { pollMs: 5 });
    while ((await q.stats()).dead === 0) await new Promise((r) => setTimeout(r, 5));
    await q.close();
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
      out.push(String(s));
      return true;
    });
    try {
      const run = (...args: string[]): Promise<Command> => {
        const program = new Command('keel').exitOverride();
        registerQueueCommand(program);
        return program.parseAsync(['node', 'keel', 'queue', ...args, '--store', file]);
      };
      await run('stats');
      await run('redrive');
      await run('stats');
    } finally {
      spy.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
    const [before, redrive, after] = out.map((s) => JSON.parse(s) as Record<string, unknown>);
    expect(before?.dead).toBe(1);
    expect(redrive).toEqual({ redriven: 1 });
    expect(after).toMatchObject({ dead: 0, pending: 1 });
  });
});

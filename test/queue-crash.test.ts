import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { openQueue } from '../src/queue/index.js';

const child = path.join(import.meta.dirname, 'fixtures', 'queue-crash-child.ts');

/**
 * Runs the child and kills it with SIGKILL `ms` after it has printed `after` lines matching
 * `signal` (counting from its own progress, not from spawn: start-up and fsync times vary with
 * machine load); returns the ids it acknowledged. A child that never gets there is killed after 30 s.
 */
function runAndKill(args: string[], signal: RegExp, after: number, ms: number): Promise<number[]> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', child, ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    let timer: NodeJS.Timeout | undefined;
    const backstop = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (timer === undefined && (out.match(signal)?.length ?? 0) >= after)
        timer = setTimeout(() => p.kill('SIGKILL'), ms);
    });
    p.on('exit', () => {
      clearTimeout(timer);
      clearTimeout(backstop);
      resolve([...out.matchAll(/^ack (\d+)$/gm)].map((m) => Number(m[1])));
    });
  });
}

describe('queue crash safety (SQLite, SIGKILL)', () => {
  it('handles every acknowledged enqueue exactly once in effect after repeated kills', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-queue-crash-'));
    const db = path.join(dir, 'q.db');
    const effectsDb = path.join(dir, 'effects.db');
    const acked = new Set<number>();
    const rounds = 6;
    for (let r = 0; r < rounds; r++) {
      // The producer dies at a random moment after its first 32 acknowledgements, the worker at a
      // random moment after it started, so kills land mid-enqueue and mid-handling.
      const [produced] = await Promise.all([
        runAndKill(['produce', db, String(r * 1_000_000)], /^ack /gm, 32, Math.floor(Math.random() * 500)),
        runAndKill(['work', db, effectsDb], /^ready$/gm, 1, 300 + Math.floor(Math.random() * 600)),
      ]);
      for (const n of produced) acked.add(n);
    }
    expect(acked.size).toBeGreaterThanOrEqual(rounds * 32);
    // A final worker in this process drains what the killed ones left, including expired leases.
    const effects = new Database(effectsDb);
    effects.exec('CREATE TABLE IF NOT EXISTS effects (n INTEGER PRIMARY KEY)');
    const insert = effects.prepare('INSERT OR IGNORE INTO effects(n) VALUES (?)');
    const q = await openQueue<{ n: number }>(db, { name: 'crash' });
    q.process(
      ({ payload }) => {
        insert.run(payload.n);
        return Promise.resolve();
      },
      { concurrency: 8, leaseMs: 300, pollMs: 5 },
    );
    const end = Date.now() + 60_000;
    const open = async (): Promise<number> => {
      const s = await q.stats();
      return s.pending + s.active;
    };
    while ((await open()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    const stats = await q.stats();
    await q.close();
    expect(stats.pending + stats.active).toBe(0);
    expect(stats.dead).toBe(0);
    const done = new Set((effects.prepare('SELECT n FROM effects').all() as { n: number }[]).map((r) => r.n));
    effects.close();
    const missing = [...acked].filter((n) => !done.has(n));
    expect(missing).toEqual([]);
  }, 120_000);
});

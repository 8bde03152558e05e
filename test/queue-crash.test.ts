import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { openQueue } from '@keel/queue';
import { PG_URL, postgresAvailable } from './queue-support.js';

const child = path.join(import.meta.dirname, 'fixtures', 'queue-crash-child.ts');
/** Directories the tests made, removed once the file is done (its processes are gone by then). */
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs the child and kills it with SIGKILL `ms` after it has printed `after` lines matching
 * `signal` (counting from its own progress, not from spawn: start-up and fsync times vary with
 * machine load); returns the ids it acknowledged. A child that never gets there is killed after 30 s.
 */
function runAndKill(
  args: string[],
  signal: RegExp,
  after: number,
  ms: number,
  env: NodeJS.ProcessEnv,
): Promise<number[]> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', child, ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env,
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

const withPg = await postgresAvailable();
const stores: ['sqlite' | 'postgres'][] = [['sqlite']];
if (withPg) stores.push(['postgres']);

describe.each(stores)('queue crash safety (%s, SIGKILL)', (kind) => {
  const schema = `keel_queue_crash_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  afterAll(async () => {
    if (kind !== 'postgres') return;
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });

  it('handles every acknowledged enqueue exactly once in effect after repeated kills', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-queue-crash-'));
    dirs.push(dir);
    const db = kind === 'postgres' ? PG_URL : path.join(dir, 'q.db');
    const env = { ...process.env, KEEL_QUEUE_SCHEMA: kind === 'postgres' ? schema : '' };
    const effectsDb = path.join(dir, 'effects.db');
    const acked = new Set<number>();
    const rounds = 6;
    for (let r = 0; r < rounds; r++) {
      // The producer dies at a random moment after its first 32 acknowledgements, the worker at a
      // random moment after it started, so kills land mid-enqueue and mid-handling.
      const [produced] = await Promise.all([
        runAndKill(
          ['produce', db, String(r * 1_000_000)],
          /^ack /gm,
          32,
          Math.floor(Math.random() * 500),
          env,
        ),
        runAndKill(['work', db, effectsDb], /^ready$/gm, 1, 300 + Math.floor(Math.random() * 600), env),
      ]);
      for (const n of produced) acked.add(n);
    }
    expect(acked.size).toBeGreaterThanOrEqual(rounds * 32);
    // A final worker in this process drains what the killed ones left, including expired leases.
    const effects = new Database(effectsDb);
    effects.exec('CREATE TABLE IF NOT EXISTS effects (n INTEGER PRIMARY KEY)');
    const insert = effects.prepare('INSERT OR IGNORE INTO effects(n) VALUES (?)');
    const q = await openQueue<{ n: number }>(db, {
      name: 'crash',
      ...(kind === 'postgres' ? { schema } : {}),
    });
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

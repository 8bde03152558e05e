import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { keelError, constant } from 'keel';
import { SQLITE_QUEUE_MIGRATIONS } from '@keel/store';
import { openQueue, type Queue } from './index.js';

const open: Queue[] = [];
const dirs: string[] = [];
/** A file named `name` in a directory of its own, removed after the test. */
function tempFile(name: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'keel-queue-'));
  dirs.push(dir);
  return path.join(dir, name);
}
async function fresh<T>(name = 'q'): Promise<{ q: Queue<T>; file: string }> {
  const file = tempFile('q.db');
  const q = await openQueue<T>(file, { name });
  open.push(q);
  return { q, file };
}
afterEach(async () => {
  await Promise.all(open.splice(0).map((q) => q.close(100)));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('queue on SQLite', () => {
  it('commits concurrent enqueues together and survives reopening', async () => {
    const { q, file } = await fresh<number>();
    const res = await Promise.all(Array.from({ length: 200 }, (_, i) => q.enqueue(i)));
    expect(new Set(res.map((r) => r.id)).size).toBe(200);
    await q.close();
    const again = await openQueue<number>(file, { name: 'q' });
    open.push(again);
    expect((await again.stats()).pending).toBe(200);
  });

  it('returns the first item for a repeated idempotency key', async () => {
    const { q } = await fresh<string>();
    const a = await q.enqueue('a', { idempotencyKey: 'k' });
    const b = await q.enqueue('b', { idempotencyKey: 'k' });
    expect(b).toEqual({ id: a.id, duplicate: true });
    expect((await q.stats()).pending).toBe(1);
  });

  it('processes items of one partition in order, one at a time', async () => {
    const { q } = await fresh<{ p: string; n: number }>();
    for (let n = 0; n < 20; n++)
      await q.enqueue({ p: n % 2 ? 'a' : 'b', n }, { partitionKey: n % 2 ? 'a' : 'b' });
    const seen: Record<string, number[]> = { a: [], b: [] };
    const running = new Set<string>();
    let overlap = false;
    q.process(
      async ({ payload }) => {
        if (running.has(payload.p)) overlap = true;
        running.add(payload.p);
        await new Promise((r) => setTimeout(r, 1));
        seen[payload.p]?.push(payload.n);
        running.delete(payload.p);
      },
      { concurrency: 4, pollMs: 5 },
    );
    await until(async () => (await q.stats()).completed === 20);
    expect(overlap).toBe(false);
    expect(seen.a).toEqual([1, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
    expect(seen.b).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
  });

  it('retries, then dead-letters with the error history, and redrives', async () => {
    const { q } = await fresh<string>();
    await q.enqueue('x', { maxAttempts: 3 });
    let calls = 0;
    let fail = true;
    q.process(
      () => {
        calls++;
        return fail
          ? Promise.reject(keelError('SERVICE_UNAVAILABLE', `down ${String(calls)}`))
          : Promise.resolve();
      },
      { pollMs: 5, backoff: constant(0) },
    );
    await until(async () => (await q.stats()).dead === 1);
    expect(calls).toBe(3);
    const [dead] = await q.deadLetters();
    expect(dead?.errors.map((e) => (e as { message: string }).message)).toEqual([
      'down 1',
      'down 2',
      'down 3',
    ]);
    fail = false;
    expect(await q.redrive()).toBe(1);
    await until(async () => (await q.stats()).completed === 1);
    expect((await q.stats()).dead).toBe(0);
  });

  it('dead-letters a non-retryable error at once', async () => {
    const { q } = await fresh<string>();
    await q.enqueue('x', { maxAttempts: 5 });
    q.process(() => Promise.reject(keelError('INVALID_INPUT', 'bad')), { pollMs: 5 });
    await until(async () => (await q.stats()).dead === 1);
    expect((await q.deadLetters())[0]?.attempts).toBe(1);
  });

  it('reclaims an expired lease and refuses the stale token', async () => {
    const { q } = await fresh<string>();
    await q.enqueue('x');
    const store = q.rawStore;
    const t = Date.now() + 60_000;
    const [first] = await store.claim('q', 1, 10, t);
    expect(first).toBeDefined();
    expect(await store.claim('q', 1, 10, t + 5)).toEqual([]);
    const [second] = await store.claim('q', 1, 10, t + 1_000);
    expect(second?.id).toBe(first?.id);
    expect(second?.attempts).toBe(2);
    const stale = { id: first?.id ?? 0, token: first?.token ?? '' };
    expect((await store.complete([stale], t + 1_001)).size).toBe(0);
    expect((await store.heartbeat([stale], t + 9_999)).size).toBe(0);
    expect(
      (await store.complete([{ id: second?.id ?? 0, token: second?.token ?? '' }], t + 1_001)).size,
    ).toBe(1);
  });

  it('pauses and resumes claiming', async () => {
    const { q } = await fresh<number>();
    let handled = 0;
    q.pause();
    q.process(
      () => {
        handled++;
        return Promise.resolve();
      },
      { pollMs: 5 },
    );
    await q.enqueue(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(handled).toBe(0);
    q.resume();
    await until(() => handled === 1);
  });

  it('purges old completed items and reports stats', async () => {
    const { q } = await fresh<number>();
    await q.enqueue(1);
    q.process(() => Promise.resolve(), { pollMs: 5 });
    await until(async () => (await q.stats()).completed === 1);
    expect((await q.stats()).completedTotal).toBe(1);
    expect(await q.purge(-1)).toBe(1);
    expect((await q.stats()).completed).toBe(0);
  });
});

describe('queue schema migrations on SQLite', () => {
  it('upgrades a version 1 store at open and keeps its items', async () => {
    const file = tempFile('old.db');
    const db = new Database(file);
    db.exec(`CREATE TABLE keel_migrations (module TEXT PRIMARY KEY, version INTEGER NOT NULL)`);
    for (const statement of SQLITE_QUEUE_MIGRATIONS[0] ?? []) db.exec(statement);
    db.prepare(`INSERT INTO keel_migrations VALUES ('queue', 1)`).run();
    db.prepare(
      `INSERT INTO keel_queue_items(queue, payload, status, max_attempts, run_at, created_at) VALUES ('q', '"old"', 'pending', 5, 0, 0)`,
    ).run();
    db.close();
    const q = await openQueue<string>(file, { name: 'q' });
    open.push(q);
    expect((await q.list('pending')).map((i) => i.payload)).toEqual(['old']);
    const check = new Database(file, { readonly: true });
    expect(check.prepare(`SELECT version FROM keel_migrations WHERE module = 'queue'`).get()).toEqual({
      version: SQLITE_QUEUE_MIGRATIONS.length,
    });
    check.close();
  });

  it('refuses a store from a newer keel with a clear error', async () => {
    const file = tempFile('new.db');
    const db = new Database(file);
    db.exec(`CREATE TABLE keel_migrations (module TEXT PRIMARY KEY, version INTEGER NOT NULL)`);
    db.prepare(`INSERT INTO keel_migrations VALUES ('queue', 99)`).run();
    db.close();
    await expect(openQueue(file)).rejects.toMatchObject({
      code: 'QUEUE_STORE_OPEN_FAILED',
      message: /version 99, newer than this keel knows/,
    });
  });

  it('names the setting for a bad store target', async () => {
    await expect(openQueue('')).rejects.toMatchObject({ code: 'INVALID_CONFIG', message: /queue store/ });
    await expect(openQueue('mysql://root:pw@db/app')).rejects.toMatchObject({
      code: 'INVALID_CONFIG',
      message: /unsupported scheme "mysql:"/,
    });
    await expect(openQueue(':memory:', { spool: '/tmp/spool.db' })).rejects.toMatchObject({
      code: 'INVALID_CONFIG',
      message: /spool applies to PostgreSQL stores only/,
    });
    const bad = await openQueue('postgres://user:s3cret@/').catch((e: unknown) => e);
    expect(bad).toMatchObject({ code: 'INVALID_CONFIG' });
    expect(JSON.stringify(bad) + String(bad)).not.toContain('s3cret');
  });
});

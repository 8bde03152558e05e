import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import {
  PG_URL,
  postgresAvailable,
  postgresQueueFixture,
  sqliteQueueFixture,
  type QueueFixture,
} from './queue-support.js';

const MAIN = path.join(import.meta.dirname, '..', 'packages', 'gateway', 'src', 'cli', 'main.ts');

/** Runs `keel queue ...` as a real process. */
function keel(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', MAIN, 'queue', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => {
      resolve({ code: code ?? -1, out, err });
    });
  });
}

const withPg = await postgresAvailable();
const stores: [string, () => Promise<QueueFixture>][] = [['sqlite', sqliteQueueFixture]];
if (withPg) stores.push(['postgres', postgresQueueFixture]);

describe.each(stores)('keel queue on %s', (_name, makeFixture) => {
  let fx: QueueFixture;
  let store: string[];
  beforeEach(async () => {
    fx = await makeFixture();
    store = [
      '--store',
      fx.target,
      '--queue',
      'q',
      ...(fx.isolation.schema ? ['--schema', fx.isolation.schema] : []),
    ];
  });
  afterEach(async () => {
    await fx.dispose();
  });

  it('shows stats, lists items, redrives chosen dead letters and purges by age', async () => {
    // Items finished an hour ago, by the producer's clock.
    const clock = new VirtualClock(Date.now() - 3_600_000);
    const q = await fx.open<string>({ clock, retention: false });
    const a = await q.enqueue('a', { maxAttempts: 1 });
    await q.enqueue('b', { maxAttempts: 1 });
    for (const row of await q.rawStore.claim('q', 2, 60_000, clock.now()))
      await q.rawStore.fail(
        { id: row.id, token: row.token ?? '' },
        { code: 'INVALID_INPUT', message: 'bad' },
        null,
        clock.now(),
      );
    await q.enqueue('c');
    await q.close();

    // Read-only commands run side by side (each is a process start: seconds on a busy machine).
    const [stats, list, dead] = await Promise.all([
      keel('stats', ...store),
      keel('list', '--state', 'dead', '--limit', '1', ...store),
      keel('dead', ...store),
    ]);
    expect(stats.code).toBe(0);
    expect(JSON.parse(stats.out)).toMatchObject({ pending: 1, active: 0, dead: 2, paused: false });
    const listed = JSON.parse(list.out) as {
      payload: string;
      state: string;
      errors: { message: string }[];
    }[];
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ payload: 'a', state: 'dead', errors: [{ message: 'bad' }] });
    expect((JSON.parse(dead.out) as { payload: string }[]).map((d) => d.payload)).toEqual(['a', 'b']);

    expect(JSON.parse((await keel('redrive', '--id', String(a.id), ...store)).out)).toEqual({ redriven: 1 });
    const [pending, purge] = await Promise.all([
      keel('list', ...store),
      keel('purge', '--dead-older-than', '30m', ...store),
    ]);
    expect((JSON.parse(pending.out) as { payload: string }[]).map((p) => p.payload)).toEqual(['a', 'c']);
    expect(JSON.parse(purge.out)).toEqual({ purged: 1 });
    expect(JSON.parse((await keel('stats', ...store)).out)).toMatchObject({ pending: 2, dead: 0 });
  }, 120_000);
});

describe('keel queue input errors', () => {
  it('names a bad --state, an unsupported scheme, and never prints the password of an unreachable store', async () => {
    const fx = await sqliteQueueFixture();
    try {
      const [state, scheme, down] = await Promise.all([
        keel('list', '--store', fx.target, '--state', 'bogus'),
        keel('stats', '--store', 'redis://127.0.0.1:6379'),
        keel('stats', '--store', 'postgres://keel:hunter2-secret@127.0.0.1:1/test'),
      ]);
      expect(state.code).toBe(1);
      expect(state.err).toMatch(/--state must be one of pending, active, completed, dead/);
      expect(scheme.code).toBe(1);
      expect(scheme.err).toMatch(/unsupported scheme "redis:".*\[INVALID_CONFIG\]/);
      expect(down.code).toBe(1);
      expect(down.err).toMatch(/127\.0\.0\.1:1\/test.*\[QUEUE_STORE_UNAVAILABLE\]/);
      expect(down.err + down.out).not.toContain('hunter2');
    } finally {
      await fx.dispose();
    }
  }, 60_000);
});

describe('keel queue on something that is not a queue store', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'keel-queue-cli-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('says so and exits 1 for a missing path, a text file and another application’s SQLite file, changing none', async () => {
    const missing = path.join(dir, 'missing.db');
    const text = path.join(dir, 'notes.txt');
    writeFileSync(text, 'shopping: milk, eggs\n');
    const foreign = path.join(dir, 'app.db');
    const db = new Database(foreign);
    db.exec(`CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)`);
    db.close();
    const [stats, list, redrive, onText, onForeign, purgeForeign] = await Promise.all([
      keel('stats', '--store', missing),
      keel('list', '--store', missing),
      keel('redrive', '--store', missing),
      keel('stats', '--store', text),
      keel('list', '--store', foreign),
      keel('purge', '--store', foreign),
    ]);
    for (const r of [stats, list, redrive]) {
      expect(r.code).toBe(1);
      expect(r.err).toContain(`no keel queue store at ${missing}: the file does not exist`);
      expect(r.err).toContain('[QUEUE_STORE_NOT_FOUND]');
    }
    expect(existsSync(missing)).toBe(false);
    expect(onText.code).toBe(1);
    expect(onText.err).toContain(`${text}: it is not a SQLite database`);
    expect(readFileSync(text, 'utf8')).toBe('shopping: milk, eggs\n');
    for (const r of [onForeign, purgeForeign]) {
      expect(r.code).toBe(1);
      expect(r.err).toContain(`${foreign}: it holds no keel queue tables`);
    }
    const check = new Database(foreign, { readonly: true });
    const tables = check.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all();
    check.close();
    expect(tables).toEqual([{ name: 'users' }]);
  }, 60_000);

  it.skipIf(!withPg)(
    'refuses a PostgreSQL schema without keel tables and creates nothing there',
    async () => {
      const schema = `keel_queue_none_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
      const [stats, purge] = await Promise.all([
        keel('stats', '--store', PG_URL, '--schema', schema),
        keel('purge', '--store', PG_URL, '--schema', schema),
      ]);
      for (const r of [stats, purge]) {
        expect(r.code).toBe(1);
        expect(r.err).toMatch(
          /no keel queue store at .* \(schema keel_queue_none_\w+\): it holds no keel queue tables/,
        );
      }
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      const found = await client.query(`SELECT 1 FROM information_schema.schemata WHERE schema_name = $1`, [
        schema,
      ]);
      await client.end();
      expect(found.rowCount).toBe(0);
    },
    60_000,
  );
});

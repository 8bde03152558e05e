import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Command } from 'commander';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { chaos, type ChaosProxy } from 'keel/chaos';
import { openGroupRepository, type GroupRepository } from '@keel/groups';
import { registerGroupsCommand } from '../packages/gateway/src/cli/groups.js';
import { PG_URL, postgresAvailable } from './groups-support.js';

const MAIN = path.join(import.meta.dirname, '..', 'packages', 'gateway', 'src', 'cli', 'main.ts');
const withPg = await postgresAvailable();

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'keel-groups-open-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs `keel groups …` in this process; resolves with what it printed, rejects with its error. */
async function groupsCli(...args: string[]): Promise<string> {
  const program = new Command('keel').exitOverride();
  registerGroupsCommand(program);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  try {
    await program.parseAsync(['node', 'keel', 'groups', ...args]);
  } finally {
    spy.mockRestore();
  }
  return out;
}

/** Runs the real `keel` binary from source. */
function keelProcess(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
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

/** Another application's SQLite file: one table of its own. */
function foreignSqlite(file: string): void {
  const db = new Database(file);
  db.exec(`CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)`);
  db.exec(`INSERT INTO users (name) VALUES ('ada')`);
  db.close();
}

const tablesOf = (file: string): string[] => {
  const db = new Database(file, { readonly: true });
  try {
    return (
      db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).all() as {
        name: string;
      }[]
    ).map((r) => r.name);
  } finally {
    db.close();
  }
};

describe('keel groups on something that is not a groups store', () => {
  it.each(['list', 'show g-1', 'pause g-1', 'cleanup'])(
    '%s on a path that does not exist says so and creates nothing',
    async (command) => {
      const store = path.join(dir, 'missing.db');
      await expect(groupsCli(...command.split(' '), '--store', store)).rejects.toMatchObject({
        code: 'GROUP_STORE_NOT_FOUND',
        message: expect.stringContaining(`no keel groups store at ${store}: the file does not exist`),
      });
      expect(existsSync(store)).toBe(false);
    },
  );

  it('refuses a text file without touching it', async () => {
    const store = path.join(dir, 'notes.txt');
    writeFileSync(store, 'shopping: milk, eggs\n');
    await expect(groupsCli('list', '--store', store)).rejects.toMatchObject({
      code: 'GROUP_STORE_NOT_FOUND',
      message: expect.stringContaining(`${store}: it is not a SQLite database`),
    });
    expect(readFileSync(store, 'utf8')).toBe('shopping: milk, eggs\n');
  });

  it.each(['list', 'show g-1', 'stop g-1'])(
    '%s on another application’s SQLite file adds no table to it',
    async (command) => {
      const store = path.join(dir, 'app.db');
      foreignSqlite(store);
      await expect(groupsCli(...command.split(' '), '--store', store)).rejects.toMatchObject({
        code: 'GROUP_STORE_NOT_FOUND',
        message: expect.stringContaining(`${store}: it holds no keel groups tables`),
      });
      expect(tablesOf(store)).toEqual(['users']);
    },
  );

  it('names the store when a group is not in it', async () => {
    const store = path.join(dir, 'groups.db');
    await (await openGroupRepository(store)).close();
    await expect(groupsCli('show', 'nope', '--store', store)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: `no group with id nope in the groups store at ${store}`,
    });
  });

  it('exits 1 with the message and code as a process', async () => {
    const store = path.join(dir, 'missing.db');
    const result = await keelProcess('groups', 'list', '--store', store);
    expect(result.code).toBe(1);
    expect(result.err).toContain(`no keel groups store at ${store}: the file does not exist`);
    expect(result.err).toContain('[GROUP_STORE_NOT_FOUND]');
    expect(existsSync(store)).toBe(false);
  });
});

describe('groups store on a PostgreSQL that never answers', () => {
  let server: Server;
  const sockets = new Set<Socket>();
  let accepted = 0;
  let port: number;
  beforeEach(async () => {
    // Accepts connections and never says a word.
    accepted = 0;
    server = createServer((socket) => {
      accepted++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterEach(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('gives up connecting after connectTimeoutMs with a retryable error naming the store', async () => {
    const started = performance.now();
    const err = await openGroupRepository(`postgres://keel:s3cret@127.0.0.1:${String(port)}/test`, {
      connectTimeoutMs: 200,
      startup: false,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      code: 'GROUP_STORE_UNAVAILABLE',
      retryable: true,
      message: expect.stringContaining(`the groups store at postgres://127.0.0.1:${String(port)}/test`),
    });
    expect((err as Error).message).not.toContain('s3cret');
    expect(accepted).toBeGreaterThan(0);
    // The connect timeout, not a hang: well under the 5 s default.
    expect(performance.now() - started).toBeLessThan(4000);
  });

  it('keel groups list fails after the default connect timeout instead of waiting for ever', async () => {
    await expect(
      groupsCli('list', '--store', `postgres://keel@127.0.0.1:${String(port)}/test`),
    ).rejects.toMatchObject({ code: 'GROUP_STORE_UNAVAILABLE' });
  }, 20_000);
});

describe.skipIf(!withPg)('groups store on PostgreSQL', () => {
  const schema = `keel_groups_open_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  let proxy: ChaosProxy | undefined;
  const repos: GroupRepository[] = [];
  afterEach(async () => {
    // The proxy first: it drops the held connection, so closing the pool cannot wait on it.
    await proxy?.close();
    proxy = undefined;
    for (const r of repos.splice(0)) await r.close().catch(() => undefined);
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });

  it('gives up on a query the server never answers after queryTimeoutMs', async () => {
    const u = new URL(PG_URL);
    proxy = await chaos.proxy({ upstream: `${u.hostname}:${u.port || '5432'}` });
    u.hostname = '127.0.0.1';
    u.port = String(proxy.port);
    const repo = await openGroupRepository(u.toString(), { schema, queryTimeoutMs: 300 });
    repos.push(repo);
    await expect(repo.listGroups()).resolves.toEqual([]);
    // From now on the proxy holds every byte: the connection stays open, answers never come.
    proxy.add({ type: 'timeout', attributes: { timeout: 0 } });
    await expect(repo.listGroups()).rejects.toThrow(/Query read timeout/);
  });

  it('list on a schema without keel tables says so and creates nothing', async () => {
    await expect(
      groupsCli(
        'list',
        '--store',
        `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=-c%20search_path%3D${schema}`,
      ),
    ).rejects.toMatchObject({ code: 'GROUP_STORE_NOT_FOUND' });
    await expect(openGroupRepository(PG_URL, { schema, access: 'read-only' })).rejects.toMatchObject({
      code: 'GROUP_STORE_NOT_FOUND',
      message: expect.stringContaining('it holds no keel groups tables'),
    });
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    const found = await client.query(`SELECT 1 FROM information_schema.schemata WHERE schema_name = $1`, [
      schema,
    ]);
    await client.end();
    expect(found.rowCount).toBe(0);
  });
});

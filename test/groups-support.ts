import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { PG_URL, postgresAvailable as pgAvailable } from './pg-support.js';
import { openGroupRepository, type GroupRepository } from '@keel/groups';

export { PG_URL } from './pg-support.js';

/** Whether PostgreSQL answers; without it the group tests skip loudly, and fail when CI is set. */
export const postgresAvailable = (url = PG_URL): Promise<boolean> =>
  pgAvailable('PostgreSQL group tests', url);

/** A store under test: `open()` gives another connection to the same data (another "process"). */
export interface StoreFixture {
  kind: 'sqlite' | 'postgres';
  url: string;
  open(): Promise<GroupRepository>;
  dispose(): Promise<void>;
}

export async function sqliteFixture(): Promise<StoreFixture> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keel-groups-'));
  const file = path.join(dir, 'groups.db');
  const opened: GroupRepository[] = [];
  return {
    kind: 'sqlite',
    url: file,
    async open() {
      const repo = await openGroupRepository(file);
      opened.push(repo);
      return repo;
    },
    async dispose() {
      for (const r of opened) await r.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function postgresFixture(): Promise<StoreFixture> {
  const schema = `keel_groups_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  const opened: GroupRepository[] = [];
  const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=-c%20search_path%3D${schema}`;
  return {
    kind: 'postgres',
    url,
    async open() {
      const repo = await openGroupRepository(PG_URL, { schema });
      opened.push(repo);
      return repo;
    },
    async dispose() {
      for (const r of opened) await r.close().catch(() => undefined);
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    },
  };
}

/** A promise with its resolve exposed, to hold an executor in the middle of an operation. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Waits (for real I/O, not timers) until `cond` holds; gives up after ~5 s. */
export async function until(cond: () => Promise<boolean> | boolean, what = 'condition'): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setImmediate(r));
    if (i > 50) await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

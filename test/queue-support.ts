import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { PG_URL, postgresAvailable as pgAvailable } from './pg-support.js';
import { openQueue, type Queue, type QueueOptions } from '@keel/queue';

export { PG_URL } from './pg-support.js';

/** Whether PostgreSQL answers; without it the PostgreSQL queue tests skip loudly, and fail when CI is set. */
export const postgresAvailable = (url = PG_URL): Promise<boolean> =>
  pgAvailable('PostgreSQL queue tests', url);

/** A queue store under test; `open()` gives another connection to the same data (another "process"). */
export interface QueueFixture {
  kind: 'sqlite' | 'postgres';
  /** What to pass to openQueue / `keel queue --store`. */
  target: string;
  /** Extra options that isolate this fixture (a PostgreSQL schema). */
  isolation: Pick<QueueOptions, 'schema'>;
  open<T>(options?: QueueOptions): Promise<Queue<T>>;
  dispose(): Promise<void>;
}

function fixture(
  kind: QueueFixture['kind'],
  target: string,
  isolation: QueueFixture['isolation'],
  cleanup: () => Promise<void>,
): QueueFixture {
  const opened: Queue[] = [];
  return {
    kind,
    target,
    isolation,
    async open<T>(options: QueueOptions = {}) {
      const q = await openQueue<T>(target, { name: 'q', ...isolation, ...options });
      opened.push(q);
      return q;
    },
    async dispose() {
      for (const q of opened) await q.close(50).catch(() => undefined);
      await cleanup();
    },
  };
}

export async function sqliteQueueFixture(): Promise<QueueFixture> {
  const dir = await mkdtemp(path.join(tmpdir(), 'keel-queue-'));
  return fixture('sqlite', path.join(dir, 'queue.db'), {}, () => rm(dir, { recursive: true, force: true }));
}

export function postgresQueueFixture(): Promise<QueueFixture> {
  const schema = `keel_queue_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  return Promise.resolve(
    fixture('postgres', PG_URL, { schema }, async () => {
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    }),
  );
}

/** Waits (for real I/O and poll loops, not for timers a test could advance) until `cond` holds; gives up after ~10 s. */
export async function until(cond: () => Promise<boolean> | boolean, what = 'condition'): Promise<void> {
  const end = Date.now() + 10_000;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

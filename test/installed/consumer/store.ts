/**
 * `@keel/store` as installed: a queue store on SQLite (better-sqlite3's native build, as installed)
 * and, when the script gives one, on PostgreSQL.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openQueueStore, type QueueStore } from '@keel/store';

async function roundTrip(store: QueueStore): Promise<void> {
  try {
    const now = Date.now();
    const [first] = await store.enqueue(
      'installed',
      [{ payload: '{"n":1}', priority: 0, maxAttempts: 3, runAt: now }],
      now,
    );
    assert.equal(first?.duplicate, false);
    const [claimed] = await store.claim('installed', 1, 30_000, now);
    assert.equal(claimed?.payload, '{"n":1}');
    assert.equal((await store.counts('installed')).active, 1);
  } finally {
    await store.close();
  }
}

const dir = await mkdtemp(path.join(tmpdir(), 'keel-installed-store-'));
try {
  await roundTrip(await openQueueStore(path.join(dir, 'queue.db')));
} finally {
  await rm(dir, { recursive: true, force: true });
}

const url = process.env.KEEL_INSTALLED_PG_URL;
const schema = process.env.KEEL_INSTALLED_PG_SCHEMA;
if (url !== undefined && schema !== undefined) {
  await roundTrip(await openQueueStore(url, { schema }));
  console.log('@keel/store: ok (SQLite, PostgreSQL)');
} else {
  console.log('@keel/store: ok (SQLite; PostgreSQL not given)');
}

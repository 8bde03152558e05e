/**
 * Versioned schema of the queue tables. Version n is `MIGRATIONS[n - 1]`; a store applies the
 * versions it has not seen yet, in one transaction each, when it opens. Never edit a released
 * version: add the next one.
 */

/** SQLite (recorded in `keel_migrations` under module 'queue'). */
export const SQLITE_QUEUE_MIGRATIONS: readonly (readonly string[])[] = [
  [
    `CREATE TABLE IF NOT EXISTS keel_queue_items (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       queue TEXT NOT NULL,
       payload TEXT NOT NULL,
       status TEXT NOT NULL,
       partition_key TEXT,
       idempotency_key TEXT,
       priority INTEGER NOT NULL DEFAULT 0,
       attempts INTEGER NOT NULL DEFAULT 0,
       max_attempts INTEGER NOT NULL,
       run_at INTEGER NOT NULL,
       lease_until INTEGER,
       token TEXT,
       errors TEXT NOT NULL DEFAULT '[]',
       created_at INTEGER NOT NULL,
       finished_at INTEGER
     )`,
    `CREATE UNIQUE INDEX IF NOT EXISTS keel_queue_idem ON keel_queue_items(queue, idempotency_key)
       WHERE idempotency_key IS NOT NULL`,
    `CREATE INDEX IF NOT EXISTS keel_queue_ready ON keel_queue_items(queue, status, run_at, priority)`,
  ],
  [
    `CREATE TABLE IF NOT EXISTS keel_queue_queues (queue TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0)`,
    `CREATE INDEX IF NOT EXISTS keel_queue_partition ON keel_queue_items(queue, partition_key, id)
       WHERE partition_key IS NOT NULL AND status IN ('pending', 'active')`,
    `CREATE INDEX IF NOT EXISTS keel_queue_finished ON keel_queue_items(queue, status, finished_at)
       WHERE status IN ('completed', 'dead')`,
  ],
  [
    // Claim order, so a claim reads the first due items instead of sorting the whole backlog.
    `CREATE INDEX IF NOT EXISTS keel_queue_claim_order ON keel_queue_items(queue, priority DESC, id)
       WHERE status = 'pending'`,
    `CREATE INDEX IF NOT EXISTS keel_queue_leases ON keel_queue_items(queue, lease_until) WHERE status = 'active'`,
  ],
  [
    // The correlation id of the request that enqueued an item, restored when it runs.
    `ALTER TABLE keel_queue_items ADD COLUMN correlation_id TEXT`,
  ],
];

/** PostgreSQL (recorded in `keel_queue_schema`). */
export const POSTGRES_QUEUE_MIGRATIONS: readonly (readonly string[])[] = [
  [
    `CREATE TABLE IF NOT EXISTS keel_queue_items (
       id BIGSERIAL PRIMARY KEY,
       queue TEXT NOT NULL,
       payload TEXT NOT NULL,
       status TEXT NOT NULL,
       partition_key TEXT,
       idempotency_key TEXT,
       priority INTEGER NOT NULL DEFAULT 0,
       attempts INTEGER NOT NULL DEFAULT 0,
       max_attempts INTEGER NOT NULL,
       run_at BIGINT NOT NULL,
       lease_until BIGINT,
       token TEXT,
       errors JSONB NOT NULL DEFAULT '[]',
       created_at BIGINT NOT NULL,
       finished_at BIGINT
     )`,
    `CREATE UNIQUE INDEX IF NOT EXISTS keel_queue_idem ON keel_queue_items(queue, idempotency_key)
       WHERE idempotency_key IS NOT NULL`,
    `CREATE INDEX IF NOT EXISTS keel_queue_ready ON keel_queue_items(queue, priority DESC, id)
       WHERE status = 'pending'`,
    `CREATE INDEX IF NOT EXISTS keel_queue_leases ON keel_queue_items(queue, lease_until)
       WHERE status = 'active'`,
    `CREATE INDEX IF NOT EXISTS keel_queue_partition ON keel_queue_items(queue, partition_key, id)
       WHERE partition_key IS NOT NULL AND status IN ('pending', 'active')`,
    `CREATE INDEX IF NOT EXISTS keel_queue_finished ON keel_queue_items(queue, status, finished_at)
       WHERE status IN ('completed', 'dead')`,
    `CREATE TABLE IF NOT EXISTS keel_queue_queues (queue TEXT PRIMARY KEY, paused BOOLEAN NOT NULL DEFAULT false)`,
  ],
  [
    // The correlation id of the request that enqueued an item, restored when it runs.
    `ALTER TABLE keel_queue_items ADD COLUMN IF NOT EXISTS correlation_id TEXT`,
  ],
];

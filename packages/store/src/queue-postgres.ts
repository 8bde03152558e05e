import pg from 'pg';
import { isKeelError, keelError, type KeelError } from 'keel';
import { checkAccess, notAStore, type StoreAccess } from './access.js';
import { POSTGRES_QUEUE_MIGRATIONS } from './queue-schema.js';
import {
  firstOfKey,
  toQueueRow,
  type ClaimRef,
  type EnqueueResult,
  type NewQueueRow,
  type QueueCounts,
  type QueueItemState,
  type QueueRow,
  type QueueStore,
} from './queue-store.js';

/** Options of {@link PostgresQueueStore.open}. */
export interface PostgresQueueStoreOptions {
  /** A schema to keep the tables in, created if missing (default: the connection's search_path). Tests use one each. */
  schema?: string;
  /** Connections in the pool (default 8). */
  maxConnections?: number;
  /** Give up connecting after this long, in ms (default 5000). */
  connectTimeoutMs?: number;
  /** Give up on one query after this long, in ms (default 30 000). */
  queryTimeoutMs?: number;
  /**
   * `create` (default), `existing` (the keel queue tables must already exist) or `read-only` (no
   * schema, table or migration is written); see {@link StoreAccess}.
   */
  access?: StoreAccess;
}

/** Expired leases are looked for at most this often (caller-clock ms); claims between skip that statement. */
const RECLAIM_EVERY_MS = 1000;

/** SQLSTATE classes and codes that mean "the server is not there right now", not "the query is wrong". */
const UNAVAILABLE_SQLSTATE = /^(08|57P0[123]|53300|53400)/;

/**
 * Claims up to $4 due items of queue $1 at time $2 with a lease until $3 (the caller adds
 * RETURNING). SKIP LOCKED lets concurrent claimers pass each other; the NOT EXISTS keeps one item
 * per partition active, in order.
 */
const CLAIM_SQL = `UPDATE keel_queue_items u
     SET status = 'active', token = gen_random_uuid()::text, lease_until = $3, attempts = u.attempts + 1
   FROM (
     SELECT id FROM keel_queue_items i
     WHERE queue = $1 AND status = 'pending' AND run_at <= $2
       AND NOT EXISTS (SELECT 1 FROM keel_queue_queues q WHERE q.queue = $1 AND q.paused)
       AND (partition_key IS NULL OR NOT EXISTS (
         SELECT 1 FROM keel_queue_items o WHERE o.queue = i.queue AND o.partition_key = i.partition_key
           AND o.status IN ('pending', 'active') AND (o.status = 'active' OR o.id < i.id)))
     ORDER BY priority DESC, id LIMIT $4
     FOR UPDATE SKIP LOCKED) c
   WHERE u.id = c.id`;

const claimOrder = (a: QueueRow, b: QueueRow): number => b.priority - a.priority || a.id - b.id;

/** `postgres://host:port/db` without user or password, for messages. */
export function redactPostgresUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.hostname}${u.port ? `:${u.port}` : ''}${u.pathname}`;
  } catch {
    return 'postgres://(unparseable URL)';
  }
}

/**
 * The queue's PostgreSQL store (pg). Claims use `FOR UPDATE SKIP LOCKED`, so any number of
 * workers in any number of processes share a queue; group commit turns a batch of enqueues into
 * one multi-row INSERT; retention sweeps run under `pg_try_advisory_xact_lock`, so one instance
 * does them. A lost connection rejects with `QUEUE_STORE_UNAVAILABLE` (retryable) and the pool
 * reconnects by itself on the next call.
 */
export class PostgresQueueStore implements QueueStore {
  readonly kind = 'postgres' as const;
  private lastReclaim = Number.NEGATIVE_INFINITY;

  private constructor(
    private readonly pool: pg.Pool,
    readonly location: string,
    private readonly lockKey: string,
  ) {}

  /**
   * Connects, creates the schema if asked, and applies the migrations (serialised across
   * processes by an advisory lock).
   * @throws KeelError `INVALID_CONFIG` for a bad URL or schema name, `QUEUE_STORE_UNAVAILABLE`
   *   when the server cannot be reached, `QUEUE_STORE_OPEN_FAILED` when migrating fails,
   *   `QUEUE_STORE_NOT_FOUND` (access `existing` or `read-only`) when the tables are not there.
   */
  static async open(url: string, options: PostgresQueueStoreOptions = {}): Promise<PostgresQueueStore> {
    const location = redactPostgresUrl(url);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw keelError(
        'INVALID_CONFIG',
        'queue store: the PostgreSQL URL is malformed; expected postgres://user@host:port/database',
      );
    }
    if (!/^postgres(ql)?:$/.test(parsed.protocol) || parsed.pathname.length <= 1) {
      throw keelError(
        'INVALID_CONFIG',
        `queue store: ${location} is not a usable PostgreSQL URL; expected postgres://user@host:port/database`,
      );
    }
    const access = checkAccess('queue store', options.access);
    const schema = options.schema;
    if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/i.test(schema)) {
      throw keelError(
        'INVALID_CONFIG',
        `queue store: schema must be letters, digits and _ (got "${schema}")`,
      );
    }
    const pool = new pg.Pool({
      connectionString: url,
      max: options.maxConnections ?? 8,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
      query_timeout: options.queryTimeoutMs ?? 30_000,
      ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
    });
    // An idle client that loses its server must not crash the process; the next query reports it.
    pool.on('error', () => undefined);
    const where = schema === undefined ? location : `${location} (schema ${schema})`;
    const store = new PostgresQueueStore(pool, where, `keel_queue:${schema ?? ''}`);
    try {
      await store.migrate(schema, access);
    } catch (err) {
      await pool.end().catch(() => undefined);
      const e = store.wrap(err);
      if (e.code === 'QUEUE_STORE_UNAVAILABLE' || e.code === 'QUEUE_STORE_NOT_FOUND') throw e;
      throw keelError(
        'QUEUE_STORE_OPEN_FAILED',
        `could not open the queue store at ${where}: ${e.message}`,
        { store: where },
        { cause: err },
      );
    }
    return store;
  }

  private async migrate(schema: string | undefined, access: StoreAccess): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      if (access !== 'create') {
        const found = await client.query<{ t: string | null }>(
          `SELECT to_regclass('keel_queue_schema')::text AS t`,
        );
        if ((found.rows[0]?.t ?? null) === null)
          throw notAStore('QUEUE_STORE_NOT_FOUND', 'queue', this.location, 'no-keel-tables');
      }
      if (access === 'read-only') {
        const res = await client.query<{ v: number | null }>(
          `SELECT MAX(version) AS v FROM keel_queue_schema`,
        );
        if ((res.rows[0]?.v ?? 0) < POSTGRES_QUEUE_MIGRATIONS.length)
          throw notAStore('QUEUE_STORE_NOT_FOUND', 'queue', this.location, 'old-schema');
        await client.query('COMMIT');
        return;
      }
      await client.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`${this.lockKey}:migrate`]);
      if (schema !== undefined && access === 'create')
        await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS keel_queue_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`,
      );
      const res = await client.query<{ v: number | null }>(`SELECT MAX(version) AS v FROM keel_queue_schema`);
      const from = res.rows[0]?.v ?? 0;
      if (from > POSTGRES_QUEUE_MIGRATIONS.length) {
        throw new Error(
          `the queue schema is version ${String(from)}, newer than this keel knows (${String(POSTGRES_QUEUE_MIGRATIONS.length)}): upgrade keel`,
        );
      }
      for (let v = from; v < POSTGRES_QUEUE_MIGRATIONS.length; v++) {
        for (const statement of POSTGRES_QUEUE_MIGRATIONS[v] ?? []) await client.query(statement);
        await client.query(`INSERT INTO keel_queue_schema(version) VALUES ($1)`, [v + 1]);
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /** Turns a pg failure into a KeelError: connection trouble is QUEUE_STORE_UNAVAILABLE (retryable). */
  private wrap(err: unknown): KeelError {
    if (isKeelError(err)) return err;
    const code = (err as { code?: unknown } | null)?.code;
    const message = err instanceof Error ? err.message : String(err);
    const sqlError =
      typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !UNAVAILABLE_SQLSTATE.test(code);
    if (sqlError) {
      return keelError(
        'QUEUE_STORE_FAILED',
        `the queue store at ${this.location} refused a statement: ${message}`,
        { store: this.location, sqlState: code },
        { cause: err },
      );
    }
    return keelError(
      'QUEUE_STORE_UNAVAILABLE',
      `the queue store at ${this.location} is unavailable (${message}); retry later, workers reconnect by themselves`,
      { store: this.location },
      { cause: err, retryable: true, kind: 'transient' },
    );
  }

  private async query(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
    try {
      return await this.pool.query(sql, params);
    } catch (err) {
      throw this.wrap(err);
    }
  }

  async enqueue(queue: string, items: readonly NewQueueRow[], now: number): Promise<EnqueueResult[]> {
    if (items.length === 0) return [];
    const first = firstOfKey(items);
    const unique = items.filter((_, i) => first[i] === i);
    const res = await this.query(
      `WITH input AS (
         SELECT nextval('keel_queue_items_id_seq') AS id, t.*
         FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::bigint[], $9::text[]) WITH ORDINALITY
           AS t(payload, partition_key, idempotency_key, priority, max_attempts, run_at, correlation_id, ord)),
       ins AS (
         INSERT INTO keel_queue_items(id, queue, payload, status, partition_key, idempotency_key, priority, max_attempts, run_at, created_at, correlation_id)
         SELECT id, $1, payload, 'pending', partition_key, idempotency_key, priority, max_attempts, run_at, $8, correlation_id
         FROM input ORDER BY ord ON CONFLICT DO NOTHING RETURNING id)
       SELECT input.ord, ins.id AS inserted, input.idempotency_key AS key, existing.id AS existing
       FROM input LEFT JOIN ins ON ins.id = input.id
       LEFT JOIN keel_queue_items existing
         ON ins.id IS NULL AND existing.queue = $1 AND existing.idempotency_key = input.idempotency_key
       ORDER BY input.ord`,
      [
        queue,
        unique.map((i) => i.payload),
        unique.map((i) => i.partitionKey ?? null),
        unique.map((i) => i.idempotencyKey ?? null),
        unique.map((i) => i.priority),
        unique.map((i) => i.maxAttempts),
        unique.map((i) => i.runAt),
        now,
        unique.map((i) => i.correlationId ?? null),
      ],
    );
    const results: EnqueueResult[] = [];
    for (const r of res.rows as { inserted: string | null; key: string | null; existing: string | null }[]) {
      if (r.inserted !== null) results.push({ id: Number(r.inserted), duplicate: false });
      else if (r.existing !== null) results.push({ id: Number(r.existing), duplicate: true });
      else {
        // The first item with this key was committed by another transaction after this statement's
        // snapshot was taken: read it now.
        const again = await this.query(
          `SELECT id FROM keel_queue_items WHERE queue = $1 AND idempotency_key = $2`,
          [queue, r.key],
        );
        results.push({
          id: Number((again.rows[0] as { id: string } | undefined)?.id ?? -1),
          duplicate: true,
        });
      }
    }
    const byUnique = new Map<number, EnqueueResult>();
    let u = 0;
    items.forEach((_, i) => {
      if (first[i] === i) byUnique.set(i, results[u++] ?? { id: -1, duplicate: false });
    });
    return items.map((_, i) => {
      const f = first[i] ?? i;
      const r = byUnique.get(f) ?? { id: -1, duplicate: false };
      return f === i ? r : { id: r.id, duplicate: true };
    });
  }

  /** Puts items whose lease expired back to pending (at most every RECLAIM_EVERY_MS of `now`). */
  private async reclaimExpired(queue: string, now: number): Promise<void> {
    if (now - this.lastReclaim < RECLAIM_EVERY_MS) return;
    await this.query(
      `UPDATE keel_queue_items SET status = 'pending', token = NULL, lease_until = NULL
       WHERE queue = $1 AND status = 'active' AND lease_until < $2`,
      [queue, now],
    );
    this.lastReclaim = now;
  }

  async claim(queue: string, limit: number, leaseMs: number, now: number): Promise<QueueRow[]> {
    await this.reclaimExpired(queue, now);
    const res = await this.query(`${CLAIM_SQL} RETURNING u.*`, [queue, now, now + leaseMs, limit]);
    return (res.rows as Record<string, unknown>[]).map(toQueueRow).sort(claimOrder);
  }

  /**
   * Completes `done` and claims in one statement (one round trip, one commit). The claim does not
   * see this statement's completions, so the next item of a just-completed partition comes with
   * the following claim.
   */
  async completeAndClaim(
    done: readonly ClaimRef[],
    queue: string,
    limit: number,
    leaseMs: number,
    now: number,
  ): Promise<{ completed: Set<number>; claimed: QueueRow[] }> {
    await this.reclaimExpired(queue, now);
    const res = await this.query(
      `WITH done AS (
         UPDATE keel_queue_items i SET status = 'completed', token = NULL, lease_until = NULL, finished_at = $2
         FROM unnest($5::bigint[], $6::text[]) AS r(id, token)
         WHERE i.id = r.id AND i.token = r.token AND i.status = 'active' RETURNING i.id),
       claimed AS (${CLAIM_SQL} RETURNING u.*)
       SELECT (SELECT coalesce(json_agg(id), '[]') FROM done) AS done,
              (SELECT coalesce(json_agg(claimed), '[]') FROM claimed) AS claimed`,
      [queue, now, now + leaseMs, limit, done.map((d) => d.id), done.map((d) => d.token)],
    );
    const row = res.rows[0] as { done: number[]; claimed: Record<string, unknown>[] } | undefined;
    return {
      completed: new Set((row?.done ?? []).map(Number)),
      claimed: (row?.claimed ?? []).map(toQueueRow).sort(claimOrder),
    };
  }

  async heartbeat(items: readonly ClaimRef[], leaseUntil: number): Promise<Set<number>> {
    if (items.length === 0) return new Set();
    const res = await this.query(
      `UPDATE keel_queue_items i SET lease_until = $1
       FROM unnest($2::bigint[], $3::text[]) AS r(id, token)
       WHERE i.id = r.id AND i.token = r.token AND i.status = 'active' RETURNING i.id`,
      [leaseUntil, items.map((i) => i.id), items.map((i) => i.token)],
    );
    return new Set((res.rows as { id: string }[]).map((r) => Number(r.id)));
  }

  async complete(items: readonly ClaimRef[], now: number): Promise<Set<number>> {
    if (items.length === 0) return new Set();
    const res = await this.query(
      `UPDATE keel_queue_items i SET status = 'completed', token = NULL, lease_until = NULL, finished_at = $1
       FROM unnest($2::bigint[], $3::text[]) AS r(id, token)
       WHERE i.id = r.id AND i.token = r.token AND i.status = 'active' RETURNING i.id`,
      [now, items.map((i) => i.id), items.map((i) => i.token)],
    );
    return new Set((res.rows as { id: string }[]).map((r) => Number(r.id)));
  }

  async fail(item: ClaimRef, error: unknown, runAt: number | null, now: number): Promise<boolean> {
    const res = await this.query(
      `UPDATE keel_queue_items SET status = $3, token = NULL, lease_until = NULL, run_at = COALESCE($4, run_at),
         errors = errors || jsonb_build_array($5::jsonb), finished_at = $6
       WHERE id = $1 AND token = $2 AND status = 'active'`,
      [
        item.id,
        item.token,
        runAt === null ? 'dead' : 'pending',
        runAt,
        JSON.stringify(error),
        runAt === null ? now : null,
      ],
    );
    return res.rowCount === 1;
  }

  async release(item: ClaimRef): Promise<boolean> {
    const res = await this.query(
      `UPDATE keel_queue_items SET status = 'pending', token = NULL, lease_until = NULL, attempts = GREATEST(attempts - 1, 0)
       WHERE id = $1 AND token = $2 AND status = 'active'`,
      [item.id, item.token],
    );
    return res.rowCount === 1;
  }

  async list(queue: string, state: QueueItemState, limit: number): Promise<QueueRow[]> {
    const res = await this.query(
      `SELECT * FROM keel_queue_items WHERE queue = $1 AND status = $2 ORDER BY id LIMIT $3`,
      [queue, state, limit],
    );
    return (res.rows as Record<string, unknown>[]).map(toQueueRow);
  }

  async redrive(queue: string, now: number, ids?: readonly number[]): Promise<number> {
    const res = await this.query(
      `UPDATE keel_queue_items SET status = 'pending', attempts = 0, run_at = $2, finished_at = NULL
       WHERE queue = $1 AND status = 'dead' AND ($3::bigint[] IS NULL OR id = ANY($3::bigint[]))`,
      [queue, now, ids ? [...ids] : null],
    );
    return res.rowCount ?? 0;
  }

  async setPaused(queue: string, paused: boolean): Promise<void> {
    await this.query(
      `INSERT INTO keel_queue_queues(queue, paused) VALUES ($1, $2) ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused`,
      [queue, paused],
    );
  }

  async sweep(queue: string, completedBefore: number, deadBefore: number): Promise<number | null> {
    let client: pg.PoolClient | undefined;
    try {
      client = await this.pool.connect();
      await client.query('BEGIN');
      const lock = await client.query<{ ok: boolean }>(
        `SELECT pg_try_advisory_xact_lock(hashtext($1)) AS ok`,
        [`${this.lockKey}:sweep:${queue}`],
      );
      if (!lock.rows[0]?.ok) {
        await client.query('ROLLBACK');
        return null;
      }
      const res = await client.query(
        `DELETE FROM keel_queue_items WHERE queue = $1
           AND ((status = 'completed' AND finished_at < $2) OR (status = 'dead' AND finished_at < $3))`,
        [queue, completedBefore, deadBefore],
      );
      await client.query('COMMIT');
      return res.rowCount ?? 0;
    } catch (err) {
      await client?.query('ROLLBACK').catch(() => undefined);
      throw this.wrap(err);
    } finally {
      client?.release();
    }
  }

  async counts(queue: string): Promise<QueueCounts> {
    const res = await this.query(
      `SELECT status, COUNT(*) AS n, MIN(created_at) AS oldest FROM keel_queue_items WHERE queue = $1 GROUP BY status
       UNION ALL SELECT 'paused', CASE WHEN paused THEN 1 ELSE 0 END, NULL FROM keel_queue_queues WHERE queue = $1`,
      [queue],
    );
    const out: QueueCounts = {
      pending: 0,
      active: 0,
      completed: 0,
      dead: 0,
      oldestPendingAt: null,
      paused: false,
    };
    for (const r of res.rows as { status: string; n: string; oldest: string | null }[]) {
      if (r.status === 'pending' || r.status === 'active' || r.status === 'completed' || r.status === 'dead')
        out[r.status] = Number(r.n);
      if (r.status === 'pending') out.oldestPendingAt = r.oldest === null ? null : Number(r.oldest);
      if (r.status === 'paused') out.paused = Number(r.n) === 1;
    }
    return out;
  }

  async queues(): Promise<string[]> {
    const res = await this.query(
      `SELECT DISTINCT queue FROM keel_queue_items UNION SELECT queue FROM keel_queue_queues ORDER BY queue`,
    );
    return (res.rows as { queue: string }[]).map((r) => r.queue);
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }
}

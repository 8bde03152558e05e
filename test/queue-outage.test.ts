import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chaos, type ChaosProxy } from 'keel/chaos';
import { PG_URL, postgresAvailable } from './pg-support.js';
import { keelError, circuitBreaker, consecutive, constant, pipeline, retry, timeout } from 'keel';
import { createOutageQueue, openQueue, type OutageQueue, type Queue, type RunOutcome } from '@keel/queue';

const available = await postgresAvailable('the queue outage test');

interface Write {
  p: string;
  seq: number;
}

/** pg reports a cut connection with plain Errors; say what they are so outage mode can queue them. */
function connectionLost(err: unknown): unknown {
  const message = err instanceof Error ? err.message : String(err);
  if (
    /Connection terminated|connection timeout|ECONNRESET|Client has encountered a connection error/i.test(
      message,
    )
  )
    return keelError(
      'NETWORK_RESET',
      `PostgreSQL connection lost: ${message}`,
      {},
      { cause: err, retryable: true, kind: 'transient' },
    );
  return err;
}

const PARTITIONS = ['alpha', 'beta', 'gamma'];

describe.skipIf(!available)('outage mode with PostgreSQL as the dependency behind the chaos proxy', () => {
  const table = `keel_outage_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  let admin: pg.Client;
  let proxy: ChaosProxy;
  let db: pg.Pool;
  let dir: string;
  let queue: Queue<Write>;
  let outage: OutageQueue<Write, number>;
  const next: Record<string, number> = {};

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    // `at` records arrival order; (p, seq) is unique, so a write applied twice would be refused.
    await admin.query(
      `CREATE TABLE ${table} (at BIGSERIAL PRIMARY KEY, p TEXT NOT NULL, seq INTEGER NOT NULL, UNIQUE (p, seq))`,
    );
    proxy = await chaos.proxy({ upstream: new URL(PG_URL).host || '127.0.0.1:5432' });
    const url = new URL(PG_URL);
    url.host = `127.0.0.1:${String(proxy.port)}`;
    db = new pg.Pool({ connectionString: url.toString(), max: 4, connectionTimeoutMillis: 500 });
    db.on('error', () => undefined); // idle clients cut by the proxy; the next query reconnects
    dir = await mkdtemp(path.join(tmpdir(), 'keel-outage-'));
    queue = await openQueue<Write>(path.join(dir, 'spool.db'));
    outage = createOutageQueue({
      queue,
      policy: pipeline(
        retry({ maxAttempts: 2, backoff: constant(20) }),
        circuitBreaker({ window: consecutive(3), halfOpenAfterMs: 300 }),
        timeout(2_000),
      ),
      // Idempotent: a replay of a write whose answer was lost is a no-op.
      operation: async (w) => {
        try {
          const res = await db.query(
            `INSERT INTO ${table}(p, seq) VALUES ($1, $2) ON CONFLICT (p, seq) DO NOTHING`,
            [w.p, w.seq],
          );
          return res.rowCount ?? 0;
        } catch (err) {
          throw connectionLost(err);
        }
      },
      concurrency: 4,
      retryEveryMs: 100,
      checkEveryMs: 100,
    });
    await outage.start();
  });

  afterAll(async () => {
    outage.close();
    await queue.close(1_000);
    await db.end().catch(() => undefined);
    await proxy.close();
    await admin.query(`DROP TABLE IF EXISTS ${table}`);
    await admin.end();
    await rm(dir, { recursive: true, force: true });
  });

  /** Writes `n` more rows to every partition: partitions concurrently, each in sequence. */
  async function writeRound(n: number): Promise<RunOutcome<number>[]> {
    const perPartition = await Promise.all(
      PARTITIONS.map(async (p) => {
        const outs: RunOutcome<number>[] = [];
        for (let i = 0; i < n; i++) {
          const seq = (next[p] = (next[p] ?? 0) + 1);
          outs.push(
            await outage.runOrQueue({ p, seq }, { partitionKey: p, idempotencyKey: `${p}:${String(seq)}` }),
          );
        }
        return outs;
      }),
    );
    return perPartition.flat();
  }

  async function rows(): Promise<{ p: string; seq: number }[]> {
    const res = await admin.query<{ p: string; seq: number }>(`SELECT p, seq FROM ${table} ORDER BY at`);
    return res.rows;
  }

  it('queues every write while PostgreSQL is unreachable and replays each exactly once, in order per partition', async () => {
    const before = await writeRound(5);
    expect(before.every((o) => o.status === 'done')).toBe(true);

    await proxy.disable();
    const during = await writeRound(10);
    expect(during.map((o) => o.status)).toEqual(during.map(() => 'queued'));
    const reasons = new Set(during.map((o) => (o.status === 'queued' ? o.reason : 'done')));
    expect(reasons).toEqual(new Set(['unavailable', 'backlog']));
    expect((await rows()).length).toBe(15); // nothing reached the table meanwhile

    await proxy.enable();
    // Writes go on while the replayer drains: they queue behind their partition's backlog.
    const after = await writeRound(5);
    expect(after).toHaveLength(15);

    const total = PARTITIONS.length * 20;
    const deadline = Date.now() + 30_000;
    let arrived = await rows();
    while (arrived.length < total && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      arrived = await rows();
    }
    expect(arrived).toHaveLength(total);
    for (const p of PARTITIONS) {
      expect(arrived.filter((r) => r.p === p).map((r) => r.seq)).toEqual(
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
    }
    // A replayed item's completion is committed just after its handler returns.
    let s = await queue.stats();
    while (s.pending + s.active > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      s = await queue.stats();
    }
    expect(s.pending + s.active).toBe(0);
    expect(s.dead).toBe(0);
    expect(outage.stats().replayed).toBe(during.length + after.filter((o) => o.status === 'queued').length);
  });
});

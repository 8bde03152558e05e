/**
 * Queue benchmark: keel on SQLite (synchronous=FULL) and on PostgreSQL against BullMQ 5 on the
 * local Redis and pg-boss 10 on the local PostgreSQL, in one process, paired rounds.
 *   node --import tsx bench/queue.ts [--quick]
 * Measures durable enqueue rate (1 and 64 producers), end-to-end rate (64 producers enqueue while
 * workers with concurrency 1 / 16 run a no-op handler, until every item is completed) and, for keel,
 * start-up recovery of 100,000 pending items left by a process killed with SIGKILL.
 * Writes bench/results/queue.json (medians of the rounds, ratios keel / peer taken per round);
 * `--quick` runs small counts and writes nothing. keel's workers poll every 10 ms when idle (an
 * enqueue in the same process wakes them at once).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue as BullQueue, Worker as BullWorker } from 'bullmq';
import pg from 'pg';
import PgBoss from 'pg-boss';
import { openQueue, type Queue } from '@keel/queue';

const PG_URL = process.env.KEEL_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };
const quick = process.argv.includes('--quick');
const ROUNDS = Number(process.env.ROUNDS ?? (quick ? 1 : 3));
const N_ENQ_1 = Number(process.env.N_ENQ_1 ?? (quick ? 200 : 1_000));
const N_ENQ_64 = Number(process.env.N_ENQ_64 ?? (quick ? 1_000 : 5_000));
const N_E2E_1 = Number(process.env.N_E2E_1 ?? (quick ? 200 : 1_000));
// 20,000 items: at ~15,000/s fewer would time a fraction of a second, mostly start-up.
const N_E2E_16 = Number(process.env.N_E2E_16 ?? (quick ? 1_000 : 20_000));
const N_RECOVER = Number(process.env.N_RECOVER ?? (quick ? 10_000 : 100_000));
const RECOVERY_ROUNDS = Number(process.env.RECOVERY_ROUNDS ?? (quick ? 1 : 3));
const N_DRAIN = Math.min(N_RECOVER, Number(process.env.N_DRAIN ?? 10_000));
/** For profiling one case: SYSTEMS=keel-sqlite METRICS=e2e1 (comma-separated; default all). */
const ONLY_SYSTEMS = process.env.SYSTEMS?.split(',');
const ONLY_METRICS = process.env.METRICS?.split(',');

interface Payload {
  i: number;
}

/** One queue system under test; `open` makes a fresh, empty queue for one measurement. */
interface System {
  name: string;
  open(): Promise<Instance>;
  dispose(): Promise<void>;
}

interface Instance {
  enqueue(i: number): Promise<void>;
  /** Starts workers running a no-op handler; resolves when `n` items are completed in the store. */
  work(concurrency: number, n: number): Promise<void>;
  close(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- keel -------------------------------------------------------------------------------------

function openKeel(target: string, name: string): Promise<Queue<Payload>> {
  return openQueue<Payload>(target, { name });
}

function keelInstance(q: Queue<Payload>, cleanup: () => Promise<void>, prefetch?: number): Instance {
  return {
    async enqueue(i) {
      await q.enqueue({ i });
    },
    async work(concurrency, n) {
      let handled = 0;
      q.process(
        () => {
          handled++;
          return Promise.resolve();
        },
        { concurrency, pollMs: 10, ...(prefetch === undefined ? {} : { prefetch }) },
      );
      while (handled < n) await sleep(2);
      // The handler ran for every item; wait for the last completions to be committed.
      while ((await q.stats()).completed < n) await sleep(2);
    },
    async close() {
      await q.close(1_000);
      await cleanup();
    },
  };
}

/** keel on SQLite; `prefetch` overrides the workers' default (for the prefetch comparison). */
async function keelSqlite(prefetch?: number): Promise<System> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-queue-'));
  return {
    name: 'keel-sqlite',
    async open() {
      const file = path.join(dir, `${randomUUID()}.db`);
      const q = await openKeel(file, 'bench');
      return keelInstance(
        q,
        () => rm(file, { force: true }).then(() => rm(`${file}-wal`, { force: true })),
        prefetch,
      );
    },
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

/** keel on PostgreSQL in a schema of its own (dropped at the end); a string says why it could not run. */
async function keelPostgres(): Promise<System | string> {
  const schema = `keel_bench_queue_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
  try {
    const probe = await openQueue<Payload>(PG_URL, { name: 'probe', schema });
    await probe.close();
  } catch (err) {
    return `openQueue could not open ${PG_URL}: ${err instanceof Error ? err.message : String(err)}`;
  }
  return {
    name: 'keel-postgres',
    async open() {
      const name = `bench_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
      return keelInstance(await openQueue<Payload>(PG_URL, { name, schema }), () => Promise.resolve());
    },
    async dispose() {
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    },
  };
}

// ---- peers ------------------------------------------------------------------------------------

function bullmq(): System {
  return {
    name: 'bullmq',
    open() {
      const name = `keel-bench-${randomUUID()}`;
      const queue = new BullQueue<Payload>(name, { connection: REDIS });
      let worker: BullWorker<Payload> | undefined;
      return Promise.resolve({
        async enqueue(i) {
          await queue.add('job', { i }, { removeOnComplete: false });
        },
        async work(concurrency, n) {
          let completed = 0;
          let done!: () => void;
          const all = new Promise<void>((r) => (done = r));
          worker = new BullWorker<Payload>(name, () => Promise.resolve(), { connection: REDIS, concurrency });
          worker.on('completed', () => {
            if (++completed === n) done();
          });
          await all;
        },
        async close() {
          await worker?.close();
          await queue.obliterate({ force: true });
          await queue.close();
        },
      });
    },
    dispose: () => Promise.resolve(),
  };
}

async function pgBoss(): Promise<System> {
  const schema = `keel_bench_pgboss_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
  const boss = new PgBoss({ connectionString: PG_URL, schema, max: 24, supervise: false, schedule: false });
  boss.on('error', () => undefined);
  await boss.start();
  return {
    name: 'pg-boss',
    async open() {
      const name = `bench_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
      await boss.createQueue(name);
      return {
        async enqueue(i) {
          await boss.send(name, { i });
        },
        async work(concurrency, n) {
          let handled = 0;
          // pg-boss 10 has no per-worker concurrency and each worker waits its polling interval (0.5 s
          // at least) after every fetch, so one job per fetch would cap it at 2 jobs/s per worker.
          // Its best setting here: `concurrency` workers, each fetching up to 50 jobs and running them
          // one after another (so at most `concurrency` handlers run at once).
          for (let w = 0; w < concurrency; w++)
            await boss.work<Payload>(name, { batchSize: 50, pollingIntervalSeconds: 0.5 }, async (jobs) => {
              for (const _job of jobs) {
                await Promise.resolve();
                handled++;
              }
            });
          while (handled < n) await sleep(2);
          while ((await boss.getQueueSize(name, { before: 'completed' })) > 0) await sleep(2);
        },
        async close() {
          // Its jobs go with the schema at the end (deleteQueue refuses a queue that still has jobs).
          await boss.offWork(name);
        },
      };
    },
    async dispose() {
      await boss.stop({ graceful: false, wait: true });
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    },
  };
}

// ---- measurements -----------------------------------------------------------------------------

async function produce(inst: Instance, producers: number, n: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: producers }, async () => {
      while (next < n) await inst.enqueue(next++);
    }),
  );
}

/** Items per second for `producers` concurrent producers, each awaiting its enqueue (durable) before the next. */
async function enqueueRate(sys: System, producers: number, n: number): Promise<number> {
  const inst = await sys.open();
  try {
    const t = performance.now();
    await produce(inst, producers, n);
    return (n / (performance.now() - t)) * 1000;
  } finally {
    await inst.close();
  }
}

/** Items per second from the first enqueue to the last completion: 64 producers, workers at `concurrency`. */
async function endToEndRate(sys: System, concurrency: number, n: number): Promise<number> {
  const inst = await sys.open();
  try {
    const t = performance.now();
    const worked = inst.work(concurrency, n);
    await produce(inst, 64, n);
    await worked;
    return (n / (performance.now() - t)) * 1000;
  } finally {
    await inst.close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
const round2 = (x: number): number => Math.round(x * 100) / 100;

// ---- recovery: a child fills the store and dies by SIGKILL; the parent times the reopening ----

if (process.argv[2] === '--fill') {
  const file = process.argv[3] ?? '';
  const n = Number(process.argv[4]);
  const q = await openKeel(file, 'bench');
  for (let at = 0; at < n; at += 10_000)
    await Promise.all(Array.from({ length: Math.min(10_000, n - at) }, (_, k) => q.enqueue({ i: at + k })));
  process.stdout.write('filled\n');
  process.kill(process.pid, 'SIGKILL');
  await new Promise(() => undefined); // the signal ends the process
}

async function fillAndKill(file: string, n: number): Promise<void> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', import.meta.filename, '--fill', file, String(n)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const signal = await new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_code, s) => r(s)));
  if (!out.includes('filled') || signal !== 'SIGKILL') throw new Error(`filling the store failed (${out})`);
}

interface Recovery {
  openMs: number;
  firstItemMs: number;
  statsMs: number;
  /** Completions per second over the first N_DRAIN items of the backlog. */
  drainItemsPerSecond?: number;
}

/**
 * openMs: openQueue on the killed process's file (WAL recovery, migrations check) until it returns.
 * firstItemMs: from the start of opening until a worker (concurrency 16) has the first item in its handler.
 * statsMs: one stats() call counting the 100k pending items (what a health check or metrics scrape pays).
 * drainItemsPerSecond: the first N_DRAIN items handled and completed, per second from the first one (first round only).
 */
async function recovery(dir: string, drain: boolean): Promise<Recovery> {
  const file = path.join(dir, `recover-${randomUUID()}.db`);
  await fillAndKill(file, N_RECOVER);
  const t = performance.now();
  const q = await openKeel(file, 'bench');
  const openMs = performance.now() - t;
  const ts = performance.now();
  const s = await q.stats();
  const statsMs = performance.now() - ts;
  if (s.pending !== N_RECOVER)
    throw new Error(`expected ${String(N_RECOVER)} pending items, found ${String(s.pending)}`);
  let first = 0;
  let handled = 0;
  q.process(
    () => {
      if (handled++ === 0) first = performance.now();
      return Promise.resolve();
    },
    { concurrency: 16, pollMs: 10 },
  );
  while (handled === 0) await sleep(1);
  const result: Recovery = { openMs, firstItemMs: first - t, statsMs };
  if (drain) {
    while (handled < N_DRAIN) await sleep(10);
    while ((await q.stats()).completed < N_DRAIN) await sleep(10);
    result.drainItemsPerSecond = (N_DRAIN / (performance.now() - first)) * 1000;
  }
  await q.close(1_000);
  await rm(file, { force: true });
  await rm(`${file}-wal`, { force: true });
  await rm(`${file}-shm`, { force: true });
  return result;
}

// ---- main -------------------------------------------------------------------------------------

const loadBefore = os.loadavg();
const started = Date.now();
const systems: System[] = [await keelSqlite()];
const pgKeel = await keelPostgres();
const notes: string[] = [];
if (typeof pgKeel === 'string') notes.push(`keel on PostgreSQL not measured: ${pgKeel}`);
else systems.push(pgKeel);
systems.push(bullmq(), await pgBoss());

type Metric = 'enqueue1' | 'enqueue64' | 'e2e1' | 'e2e16';
const METRICS: Record<Metric, (s: System) => Promise<number>> = {
  enqueue1: (s) => enqueueRate(s, 1, N_ENQ_1),
  enqueue64: (s) => enqueueRate(s, 64, N_ENQ_64),
  e2e1: (s) => endToEndRate(s, 1, N_E2E_1),
  e2e16: (s) => endToEndRate(s, 16, N_E2E_16),
};
const samples: Record<Metric, Record<string, number[]>> = {
  enqueue1: {},
  enqueue64: {},
  e2e1: {},
  e2e16: {},
};
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const metric of Object.keys(METRICS) as Metric[]) {
      if (ONLY_METRICS && !ONLY_METRICS.includes(metric)) continue;
      // Paired: every system once per round and metric, in an order rotated each round.
      const order = systems.map((_, k) => systems[(k + r) % systems.length] as System);
      for (const sys of order) {
        if (ONLY_SYSTEMS && !ONLY_SYSTEMS.includes(sys.name)) continue;
        const rate = await METRICS[metric](sys);
        (samples[metric][sys.name] ??= []).push(rate);
        console.log(`round ${String(r + 1)} ${metric} ${sys.name}: ${rate.toFixed(0)} items/s`);
      }
    }
  }
  // The workers' prefetch default (four times concurrency) against the earlier fixed 16, keel on
  // SQLite end to end at concurrency 16, paired rounds.
  const fixed16 = await keelSqlite(16);
  const prefetchDefault: number[] = [];
  const prefetch16: number[] = [];
  const comparePrefetch =
    (!ONLY_METRICS || ONLY_METRICS.includes('e2e16')) &&
    (!ONLY_SYSTEMS || ONLY_SYSTEMS.includes('keel-sqlite'));
  try {
    for (let r = 0; comparePrefetch && r < ROUNDS; r++) {
      prefetchDefault.push(await endToEndRate(systems[0] as System, 16, N_E2E_16));
      prefetch16.push(await endToEndRate(fixed16, 16, N_E2E_16));
    }
  } finally {
    await fixed16.dispose();
  }

  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-recover-'));
  const recoveries: Recovery[] = [];
  try {
    for (let r = 0; r < RECOVERY_ROUNDS; r++) {
      const rec = await recovery(dir, r === 0);
      recoveries.push(rec);
      console.log(`recovery ${String(r + 1)}: ${JSON.stringify(rec)}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  const rates: Record<string, Record<string, number>> = {};
  const ratios: Record<string, Record<string, number>> = {};
  for (const metric of Object.keys(METRICS) as Metric[]) {
    rates[metric] = {};
    ratios[metric] = {};
    for (const [name, xs] of Object.entries(samples[metric])) rates[metric][name] = round1(median(xs));
    for (const keel of ['keel-sqlite', 'keel-postgres'])
      for (const peer of ['bullmq', 'pg-boss']) {
        const k = samples[metric][keel];
        const p = samples[metric][peer];
        if (!k || !p) continue;
        ratios[metric][`${keel} / ${peer}`] = round2(median(k.map((x, i) => x / (p[i] ?? NaN))));
      }
  }
  const e2eRatio = (pair: string): number | null =>
    Math.min(ratios.e2e1?.[pair] ?? NaN, ratios.e2e16?.[pair] ?? NaN) || null;
  const loadAfter = os.loadavg();
  const result = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    loadAverage: { before: loadBefore.map(round2), after: loadAfter.map(round2) },
    note:
      'Measured on a 2-vCPU machine shared with other work (see loadAverage: above ~1 the figures are provisional). ' +
      'keel-sqlite uses synchronous=FULL (an fsync per commit, group-committed). BullMQ runs on the local Redis ' +
      'with appendonly=no, so its "durable" enqueue is acknowledged from memory, not from disk. pg-boss and keel ' +
      'on PostgreSQL commit to the local PostgreSQL (synchronous_commit as configured on the server).',
    durationSeconds: Math.round((Date.now() - started) / 1000),
    rounds: ROUNDS,
    counts: {
      enqueue1: N_ENQ_1,
      enqueue64: N_ENQ_64,
      e2e1: N_E2E_1,
      e2e16: N_E2E_16,
      recover: N_RECOVER,
      drain: N_DRAIN,
    },
    definitions: {
      enqueue1:
        'items/s, one producer awaiting each enqueue (resolved once the item is durable) before the next',
      enqueue64: 'items/s, 64 producers doing the same concurrently',
      e2e1: 'items/s from the first enqueue to the last completion in the store; 64 producers, workers with concurrency 1, no-op handler',
      e2e16:
        'the same with concurrency 16 (pg-boss: 16 workers, each fetching up to 50 jobs and running them one by one)',
      recovery:
        'keel on SQLite only: a child process enqueues the items and is killed with SIGKILL; openMs = openQueue on its file; ' +
        'firstItemMs = from the start of opening until a worker (concurrency 16) runs the first item; statsMs = one stats() over the backlog; ' +
        `drainItemsPerSecond = the first ${String(N_DRAIN)} items of the backlog handled and completed, per second from the first one (first round)`,
    },
    itemsPerSecond: rates,
    ratios,
    prefetch: {
      definition:
        'keel-sqlite end to end at concurrency 16: default prefetch (4 x concurrency = 64) against 16',
      defaultItemsPerSecond: round1(median(prefetchDefault)),
      prefetch16ItemsPerSecond: round1(median(prefetch16)),
      ratio: round2(median(prefetchDefault.map((x, i) => x / (prefetch16[i] ?? NaN)))),
    },
    recovery: {
      items: N_RECOVER,
      openMs: round1(median(recoveries.map((r) => r.openMs))),
      firstItemMs: round1(median(recoveries.map((r) => r.firstItemMs))),
      statsMs: round1(median(recoveries.map((r) => r.statsMs))),
      drainItemsPerSecond:
        recoveries[0]?.drainItemsPerSecond === undefined ? null : round1(recoveries[0].drainItemsPerSecond),
    },
    targets: {
      'keel-sqlite >= 2x bullmq end to end (lower of e2e1, e2e16)': {
        ratio: e2eRatio('keel-sqlite / bullmq'),
        met: (e2eRatio('keel-sqlite / bullmq') ?? 0) >= 2,
      },
      'keel-postgres >= 3x pg-boss end to end (lower of e2e1, e2e16)': {
        ratio: e2eRatio('keel-postgres / pg-boss'),
        met: (e2eRatio('keel-postgres / pg-boss') ?? 0) >= 3,
      },
    },
    notes,
  };
  if (!quick) {
    const out = path.join(import.meta.dirname, 'results');
    mkdirSync(out, { recursive: true });
    writeFileSync(path.join(out, 'queue.json'), `${JSON.stringify(result, null, 2)}\n`);
    console.log(`wrote ${path.join(out, 'queue.json')}`);
  }
  console.log(
    JSON.stringify(
      { itemsPerSecond: rates, ratios, recovery: result.recovery, targets: result.targets },
      null,
      2,
    ),
  );
} finally {
  for (const s of systems)
    await s.dispose().catch((err: unknown) => console.error(`cleanup of ${s.name}: ${String(err)}`));
}
process.exit(0);

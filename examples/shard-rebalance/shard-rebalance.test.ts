import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { chaos, type ChaosProxy } from 'keel/chaos';
import {
  ExecutorRegistry,
  GroupFailedError,
  GroupManager,
  openGroupRepository,
  type GroupRepository,
} from '@keel/groups';
import { constant, VirtualClock } from 'keel';
import { postgresAvailable, PG_URL } from '../../test/groups-support.js';
import { databaseUrl, seed, snapshot, withClient, type Nodes, type Snapshot } from './cluster.js';
import { registerShardExecutors, type BeforeOperation } from './executors.js';
import { planRebalance } from './plan.js';
import { startWorker } from './worker-process.js';

const withPg = await postgresAvailable();
const run = randomUUID().replaceAll('-', '').slice(0, 10);
const names = ['n1', 'n2', 'n3', 'n4'];
const databases = names.map((n) => `keel_shards_${run}_${n}`);
const PLACEMENT = { 1: 'n1', 2: 'n1', 3: 'n2', 4: 'n2', 5: 'n3', 6: 'n3' } as const;

let proxy: ChaosProxy;
let nodes: Nodes;
let dir: string;
let repo: GroupRepository;
let original: Snapshot;
let hook: BeforeOperation | undefined;

const manager = (owner = 'test'): GroupManager =>
  new GroupManager({
    repository: repo,
    executors: registerShardExecutors(new ExecutorRegistry(), nodes, (name, ctx) => hook?.(name, ctx)),
    owner,
    retry: { maxAttempts: 2, backoff: constant(0) },
  });

describe.skipIf(!withPg)('shard rebalance onto a fourth node', () => {
  beforeAll(async () => {
    await withClient(PG_URL, async (c) => {
      for (const db of databases) await c.query(`CREATE DATABASE ${db}`);
    });
    // n4 is reached through the chaos proxy, so the tests can cut it.
    const server = new URL(PG_URL);
    proxy = await chaos.proxy({ upstream: `${server.hostname}:${server.port || '5432'}` });
    nodes = Object.fromEntries(
      names.map((n, i) => [
        n,
        databaseUrl(PG_URL, databases[i] as string, n === 'n4' ? proxy.listen : undefined),
      ]),
    );
    dir = await mkdtemp(path.join(tmpdir(), 'keel-shards-'));
    repo = await openGroupRepository(path.join(dir, 'groups.db'));
  });

  afterAll(async () => {
    await repo.close();
    await proxy.close();
    await rm(dir, { recursive: true, force: true });
    await withClient(PG_URL, async (c) => {
      for (const db of databases) await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    });
  });

  beforeEach(async () => {
    hook = undefined;
    if (!proxy.enabled) await proxy.enable();
    await seed(nodes, PLACEMENT, 25);
    original = await snapshot(nodes);
  });

  const balanced = (s: Snapshot): void => {
    const counts = Object.values(s.tables).map((t) => Object.keys(t).length);
    expect(counts).toHaveLength(4);
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    expect(Object.keys(s.tables.n4 ?? {})).toHaveLength(1);
    // every shard is where the routing says, with all its rows, and nowhere else
    for (const [shard, node] of Object.entries(s.routing)) {
      expect(s.tables[node]?.[shard]).toEqual(original.tables[PLACEMENT[Number(shard) as 1]]?.[shard]);
      for (const other of names.filter((n) => n !== node)) expect(s.tables[other]?.[shard]).toBeUndefined();
    }
  };

  it('moves shards onto the new node: create, copy, switch routing, drop', async () => {
    const m = manager();
    const plan = planRebalance(original.routing, ['n1', 'n2', 'n3'], 'n4');
    expect(plan.steps).toHaveLength(4);
    const id = await m.create(plan);
    await expect(m.run(id)).resolves.toEqual({ id, status: 'completed' });
    const after = await snapshot(nodes);
    balanced(after);
    expect(after.routing['2']).toBe('n4');
  });

  it('restores the original state when the new node is cut mid-way, once it is reachable again', async () => {
    const m = manager();
    // two moves so the cut lands after one shard has fully moved
    const plan = planRebalance({ ...original.routing, 7: 'n1', 8: 'n1' }, ['n1', 'n2', 'n3'], 'n4');
    await seed(nodes, { ...PLACEMENT, 7: 'n1', 8: 'n1' }, 25);
    original = await snapshot(nodes);
    expect(plan.steps.length).toBeGreaterThanOrEqual(8);
    hook = async (_name, ctx) => {
      if (ctx.seq === 5 && ctx.attempt === 1) await proxy.disable(); // during the second move's copy
    };
    const id = await m.create(plan);
    const err = (await m.run(id).catch((e: unknown) => e)) as GroupFailedError;
    expect(err).toBeInstanceOf(GroupFailedError);
    expect(err.status).toBe('rollback_failed');
    expect(err.errors[0]?.code).toBe('CONNECTION_REFUSED');
    expect((await m.diagnose(id)).strategy).toBe('continue-rollback');
    // the routing rollback did not need n4 and already ran
    expect((await snapshot({ n1: nodes.n1 as string })).routing).toEqual(original.routing);

    await proxy.enable();
    await expect(m.rollback(id)).resolves.toEqual({ id, status: 'rolled_back' });
    expect(await snapshot(nodes)).toEqual(original);
  });

  it('pauses on request from another process, resumes, and stops with a rollback', async () => {
    const worker = manager('worker');
    const operator = manager('operator');
    const id = await worker.create(planRebalance(original.routing, ['n1', 'n2', 'n3'], 'n4'));
    hook = async (_name, ctx) => {
      if (ctx.seq === 2) await operator.pause(id);
    };
    await expect(worker.run(id)).resolves.toEqual({ id, status: 'paused' });
    expect(await worker.progress(id)).toMatchObject({ status: 'paused', done: 3, total: 4 });
    const mid = await snapshot(nodes);
    expect(mid.routing['2']).toBe('n4'); // switched, source not yet dropped
    expect(mid.tables.n1?.['2']).toEqual(original.tables.n1?.['2']);
    hook = undefined;
    await expect(worker.resume(id)).resolves.toEqual({ id, status: 'completed' });
    balanced(await snapshot(nodes));

    await seed(nodes, PLACEMENT, 25);
    const second = await worker.create(planRebalance(original.routing, ['n1', 'n2', 'n3'], 'n4'));
    hook = async (_name, ctx) => {
      if (ctx.seq === 3) await operator.stop(second, { mode: 'rollback' });
    };
    await expect(worker.run(second)).resolves.toEqual({ id: second, status: 'rolled_back' });
    expect(await snapshot(nodes)).toEqual(original);
  });

  /** Starts a worker process that hangs in operation `seq`; resolves once it got there. */
  async function hungWorker(id: string, seq: number) {
    const worker = startWorker(path.join(dir, 'groups.db'), id, nodes, seq);
    await new Promise<void>((resolve, reject) => {
      worker.child.stdout?.on('data', () => {
        if (worker.output.text.includes(`AT ${String(seq)}`)) resolve();
      });
      void worker.exited.then((code) => {
        reject(new Error(`worker exited early (${String(code)}): ${worker.output.text}`));
      });
    });
    return worker;
  }

  it('finds a live worker whose operation hangs stuck by its progress, takes the group over and finishes it', async () => {
    const id = await manager().create(planRebalance(original.routing, ['n1', 'n2', 'n3'], 'n4'));
    const worker = await hungWorker(id, 1);
    // The worker lives and renews its lease; only the lack of progress shows the hang.
    const rescuer = new GroupManager({
      repository: repo,
      executors: registerShardExecutors(new ExecutorRegistry(), nodes),
      owner: 'rescuer',
      stuckAfterMs: 1500,
    });
    expect(await rescuer.stuck()).toEqual([]);
    let diagnosis = await rescuer.diagnose(id);
    while (diagnosis.stuck === false) {
      expect((await repo.getGroup(id))?.leaseOwner).toBe(`worker-${String(worker.child.pid)}`);
      await new Promise((r) => setTimeout(r, 100));
      diagnosis = await rescuer.diagnose(id);
    }
    expect(diagnosis).toMatchObject({ stuck: 'no-progress', strategy: 'retry-with-backoff' });
    expect((await rescuer.healthCheck().check()).status).toBe('fail');
    const report = await rescuer.recover({ backoffMs: 0 });
    expect(report.actions).toEqual([
      { id, action: 'recovered', strategy: 'retry-with-backoff', status: 'completed' },
    ]);
    // The hung worker finds at its next heartbeat that the group was taken, cancels the operation and ends.
    expect(await worker.exited).toBe(0);
    expect(worker.output.text).toContain('LOST GROUP_LEASE_LOST');
    balanced(await snapshot(nodes));
    expect((await rescuer.logs(id)).map((l) => l.message)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^rescuer took the group over from worker-\d+/)]),
    );
  });

  it('recovers a group whose worker process was killed with SIGKILL', async () => {
    const id = await manager().create(planRebalance(original.routing, ['n1', 'n2', 'n3'], 'n4'));
    const { child } = await hungWorker(id, 2);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));

    // Another process comes along later: the dead worker's 1 s lease has expired on its clock.
    const clock = new VirtualClock(Date.now() + 1500);
    const rescuer = new GroupManager({
      repository: repo,
      executors: registerShardExecutors(new ExecutorRegistry(), nodes),
      clock,
      owner: 'rescuer',
    });
    expect((await rescuer.stuck()).map((g) => g.id)).toEqual([id]);
    expect(await rescuer.diagnose(id)).toMatchObject({ stuck: 'lease-expired', strategy: 'reset-and-retry' });
    expect((await rescuer.progress(id)).current).toMatchObject([
      { seq: 2, executor: 'routing.set', target: 'routing/2' },
    ]);
    const report = await rescuer.recover();
    expect(report.actions).toEqual([
      { id, action: 'recovered', strategy: 'reset-and-retry', status: 'completed' },
    ]);
    balanced(await snapshot(nodes));
  });

  it('the demo with --hang shows a hung operation found stuck by its progress and the group recovered', async () => {
    const demo = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(import.meta.dirname, 'demo.ts'), '--hang', PG_URL],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    demo.stdout.on('data', (d: Buffer) => (out += d.toString()));
    demo.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => demo.once('exit', resolve));
    expect(code, out).toBe(0);
    expect(out).toMatch(/made no progress for \d+ ms \(stuck after 2000 ms/);
    expect(out).toContain('recovery: recovered by retry-with-backoff');
    expect(out).toContain('worker said: AT 1 | LOST GROUP_LEASE_LOST');
    expect(out).toMatch(/: completed, 4\/4 operations/);
    expect(out).toContain('rows: 6000 before, 6000 after');
  }, 60_000);
});

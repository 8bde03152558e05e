import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { keelError, constant, VirtualClock } from 'keel';
import {
  ExecutorRegistry,
  GroupFailedError,
  GroupManager,
  reconcile,
  type GroupRepository,
} from '@keel/groups';
import {
  deferred,
  postgresAvailable,
  postgresFixture,
  sqliteFixture,
  until,
  type StoreFixture,
} from './groups-support.js';

const withPg = await postgresAvailable();

const stores: [string, () => Promise<StoreFixture>][] = [['sqlite', sqliteFixture]];
if (withPg) stores.push(['postgres', postgresFixture]);

describe.each(stores)('operation groups on %s', (_name, makeFixture) => {
  let fixture: StoreFixture;
  let repo: GroupRepository;
  let clock: VirtualClock;
  let executors: ExecutorRegistry;
  let journal: string[];
  let failing: Map<string, number>;
  let holds: Map<string, Promise<void>>;
  let manager: GroupManager;

  const newManager = (r: GroupRepository, owner: string): GroupManager =>
    new GroupManager({
      repository: r,
      executors,
      clock,
      leaseMs: 10_000,
      owner,
      retry: { maxAttempts: 2, backoff: constant(0) },
    });

  beforeEach(async () => {
    fixture = await makeFixture();
    repo = await fixture.open();
    clock = new VirtualClock(1_700_000_000_000);
    journal = [];
    failing = new Map();
    holds = new Map();
    executors = new ExecutorRegistry();
    // "note" records each call; a payload may fail N times (failing) or wait (holds) first.
    executors.register<string, string>('note', {
      async forward(payload) {
        await holds.get(payload);
        const left = failing.get(payload) ?? 0;
        if (left > 0) {
          failing.set(payload, left - 1);
          throw Object.assign(new Error(`connect ECONNREFUSED for ${payload}`), { code: 'ECONNREFUSED' });
        }
        if (payload.startsWith('bad')) throw keelError('INVALID_INPUT', `bad payload ${payload}`);
        journal.push(`+${payload}`);
      },
      rollback(payload) {
        const left = failing.get(payload) ?? 0;
        if (left > 0) {
          failing.set(payload, left - 1);
          return Promise.reject(Object.assign(new Error(`reset undoing ${payload}`), { code: 'ECONNRESET' }));
        }
        journal.push(`-${payload}`);
        return Promise.resolve();
      },
    });
    manager = newManager(repo, 'worker-a');
  });

  afterEach(async () => {
    await fixture.dispose();
  });

  const note = (name: string) => ({
    executor: 'note',
    target: `t/${name}`,
    forward: name,
    rollback: `undo-${name}`,
  });

  it('runs steps in order, persists each operation and completes', async () => {
    const id = await manager.create({ name: 'three', steps: [note('a'), note('b'), note('c')] });
    expect((await manager.progress(id)).status).toBe('pending');
    await expect(manager.run(id)).resolves.toEqual({ id, status: 'completed' });
    expect(journal).toEqual(['+a', '+b', '+c']);
    const ops = await manager.operations(id);
    expect(ops.map((o) => o.status)).toEqual(['done', 'done', 'done']);
    expect(ops.map((o) => o.forward)).toEqual(['a', 'b', 'c']);
    const progress = await manager.progress(id);
    expect(progress).toMatchObject({ status: 'completed', done: 3, total: 3, current: [] });
    expect(progress.startedAt).toBe(clock.now());
    expect(progress.finishedAt).toBe(clock.now());
    expect((await manager.logs(id)).map((l) => l.message)).toContain('running → completed');
  });

  it('runs the operations of a parallel step at the same time', async () => {
    const gate = deferred();
    holds.set('p1', gate.promise);
    holds.set('p2', gate.promise);
    const id = await manager.create({ name: 'par', steps: [[note('p1'), note('p2')], note('after')] });
    const run = manager.run(id);
    await until(
      async () => (await manager.progress(id)).current.length === 2,
      'both parallel operations running',
    );
    expect((await manager.progress(id)).current.map((c) => c.seq)).toEqual([0, 1]);
    gate.resolve();
    await run;
    expect(journal.slice(-1)).toEqual(['+after']);
    expect(journal.slice(0, 2).sort()).toEqual(['+p1', '+p2']);
  });

  it('retries a transient failure of an operation through the retry policy', async () => {
    failing.set('flaky', 1);
    const id = await manager.create({ name: 'retry', steps: [note('flaky')] });
    await manager.run(id);
    const [op] = await manager.operations(id);
    expect(op).toMatchObject({ status: 'done', attempts: 2 });
  });

  it('rolls back completed operations in reverse order and reports the failure as an AggregateError', async () => {
    const id = await manager.create({
      name: 'fails',
      steps: [note('a'), note('b'), note('bad-c'), note('d')],
    });
    const err = await manager.run(id).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GroupFailedError);
    expect(err).toBeInstanceOf(AggregateError);
    const failed = err as GroupFailedError;
    expect(failed.status).toBe('rolled_back');
    expect(failed.errors.map((e) => e.code)).toEqual(['INVALID_INPUT']);
    // the failed operation's own rollback runs too (executors are idempotent), then b, then a
    expect(journal).toEqual(['+a', '+b', '-undo-bad-c', '-undo-b', '-undo-a']);
    const group = await manager.get(id);
    expect(group).toMatchObject({
      status: 'rolled_back',
      lastError: { code: 'INVALID_INPUT', phase: 'forward', seq: 2 },
    });
    expect((await manager.operations(id)).map((o) => o.status)).toEqual([
      'rolled_back',
      'rolled_back',
      'rolled_back',
      'pending',
    ]);
  });

  it('keeps rolling back past a failing rollback, records every error, and can finish the rollback later', async () => {
    failing.set('undo-a', 5); // fails both attempts now
    const id = await manager.create({ name: 'rb', steps: [note('a'), note('b'), note('bad')] });
    const err = (await manager.run(id).catch((e: unknown) => e)) as GroupFailedError;
    expect(err.status).toBe('rollback_failed');
    expect(err.errors.map((e) => e.code)).toEqual(['INVALID_INPUT', 'NETWORK_RESET']);
    expect(journal).toEqual(['+a', '+b', '-undo-bad', '-undo-b']);
    const ops = await manager.operations(id);
    expect(ops[0]).toMatchObject({
      status: 'rollback_failed',
      attempts: 3,
      error: { code: 'NETWORK_RESET', phase: 'rollback' },
    });
    expect((await manager.diagnose(id)).strategy).toBe('continue-rollback');
    failing.set('undo-a', 0);
    await expect(manager.rollback(id)).resolves.toEqual({ id, status: 'rolled_back' });
    expect(journal.slice(-1)).toEqual(['-undo-a']);
    // b was already rolled back and is not undone twice
    expect(journal.filter((j) => j === '-undo-b')).toHaveLength(1);
  });

  it('pauses between operations on a request from another process, and resumes', async () => {
    const other = newManager(await fixture.open(), 'cli');
    const gate = deferred();
    holds.set('b', gate.promise);
    const id = await manager.create({ name: 'pause', steps: [note('a'), note('b'), note('c')] });
    const run = manager.run(id);
    await until(async () => (await other.progress(id)).current[0]?.seq === 1, 'operation b running');
    await other.pause(id);
    gate.resolve();
    await expect(run).resolves.toEqual({ id, status: 'paused' });
    expect(journal).toEqual(['+a', '+b']);
    expect(await other.progress(id)).toMatchObject({ status: 'paused', done: 2, total: 3 });
    await expect(other.resume(id)).resolves.toEqual({ id, status: 'completed' });
    expect(journal).toEqual(['+a', '+b', '+c']);
  });

  it('stops gracefully after the current operation, leaving the rest undone', async () => {
    const gate = deferred();
    holds.set('a', gate.promise);
    const id = await manager.create({ name: 'stop', steps: [note('a'), note('b')] });
    const run = manager.run(id);
    await until(async () => (await manager.progress(id)).current.length === 1, 'a running');
    await newManager(await fixture.open(), 'cli').stop(id, { mode: 'graceful' });
    expect((await manager.get(id))?.status).toBe('stopping');
    gate.resolve();
    await expect(run).resolves.toEqual({ id, status: 'stopped' });
    expect(journal).toEqual(['+a']);
    expect((await manager.operations(id)).map((o) => o.status)).toEqual(['done', 'pending']);
  });

  it('stops and rolls back on a rollback stop', async () => {
    const gate = deferred();
    holds.set('b', gate.promise);
    const id = await manager.create({ name: 'stop-rb', steps: [note('a'), note('b'), note('c')] });
    const run = manager.run(id);
    await until(async () => (await manager.progress(id)).current[0]?.seq === 1, 'b running');
    await manager.stop(id, { mode: 'rollback' });
    gate.resolve();
    await expect(run).resolves.toEqual({ id, status: 'rolled_back' });
    expect(journal).toEqual(['+a', '+b', '-undo-b', '-undo-a']);
  });

  it('stops groups nobody is running: pending ones at once, a paused one rolled back here', async () => {
    const a = await manager.create({ name: 'a', steps: [note('a')] });
    await expect(manager.stop(a, { mode: 'graceful' })).resolves.toEqual({ id: a, status: 'stopped' });
    const b = await manager.create({ name: 'b', steps: [note('b')] });
    await expect(manager.stop(b, { mode: 'rollback' })).resolves.toEqual({ id: b, status: 'rolled_back' });
    expect(journal).toEqual([]);
    const gate = deferred();
    holds.set('c2', gate.promise);
    const c = await manager.create({ name: 'c', steps: [note('c1'), note('c2'), note('c3')] });
    const run = manager.run(c);
    await until(async () => (await manager.progress(c)).current[0]?.seq === 1, 'c2 running');
    await manager.pause(c);
    gate.resolve();
    await expect(run).resolves.toEqual({ id: c, status: 'paused' });
    await expect(manager.stop(c, { mode: 'rollback' })).resolves.toEqual({ id: c, status: 'rolled_back' });
    expect(journal).toEqual(['+c1', '+c2', '-undo-c2', '-undo-c1']);
  });

  it('enforces the allowed transitions', async () => {
    const id = await manager.create({ name: 'done', steps: [note('a')] });
    await manager.run(id);
    await expect(manager.resume(id)).rejects.toMatchObject({ code: 'GROUP_INVALID_TRANSITION' });
    await expect(manager.pause(id)).rejects.toMatchObject({ code: 'GROUP_INVALID_TRANSITION' });
    await expect(manager.run(id)).rejects.toMatchObject({ code: 'GROUP_INVALID_TRANSITION' });
    await manager.rollback(id);
    await expect(manager.rollback(id)).rejects.toMatchObject({ code: 'GROUP_INVALID_TRANSITION' });
    expect((await manager.get(id))?.status).toBe('rolled_back');
  });

  it('runs operations appended while the group runs', async () => {
    const gate = deferred();
    holds.set('a', gate.promise);
    const id = await manager.create({ name: 'append', steps: [note('a')] });
    const run = manager.run(id);
    await until(async () => (await manager.progress(id)).current.length === 1, 'a running');
    expect(await manager.append(id, [note('b'), [note('c1'), note('c2')]])).toEqual([1, 2, 3]);
    gate.resolve();
    await run;
    expect(journal.slice(0, 2)).toEqual(['+a', '+b']);
    expect((await manager.progress(id)).total).toBe(4);
    await expect(manager.append(id, [note('late')])).rejects.toMatchObject({
      code: 'GROUP_INVALID_TRANSITION',
    });
  });

  it('refuses to run a group another process holds the lease of, and renews the lease by heartbeat', async () => {
    const gate = deferred();
    holds.set('a', gate.promise);
    const id = await manager.create({ name: 'lease', steps: [note('a')] });
    const run = manager.run(id);
    await until(async () => (await manager.progress(id)).current.length === 1, 'a running');
    const other = newManager(await fixture.open(), 'worker-b');
    await expect(other.drive(id)).rejects.toMatchObject({ code: 'GROUP_LEASED' });
    // well past the lease: heartbeats keep it, so the group is not stuck
    for (let i = 0; i < 6; i++) {
      await clock.advance(4000);
      await until(async () => ((await manager.get(id))?.leaseExpiresAt ?? 0) > clock.now(), 'lease renewed');
    }
    expect(await other.stuck()).toEqual([]);
    gate.resolve();
    await run;
    expect((await manager.get(id))?.leaseOwner).toBeNull();
  });

  it('a worker that lost its lease stops without recording the operation it was running', async () => {
    const gate = deferred();
    holds.set('a', gate.promise);
    const id = await manager.create({ name: 'lost', steps: [note('a'), note('b')] });
    const run = manager.run(id);
    // It rejects once the lease is found lost, possibly before the expectation below awaits it.
    run.catch(() => undefined);
    await until(async () => (await manager.progress(id)).current.length === 1, 'a running');
    // another process took the group over (as after a long GC pause past the lease)
    await repo.updateGroup(id, { leaseOwner: 'worker-b', leaseExpiresAt: clock.now() + 60_000 });
    await clock.advance(4000); // the heartbeat finds the lease gone
    await until(
      async () => (await manager.logs(id)).some((l) => l.message === 'worker-a lost the lease'),
      'the heartbeat to notice',
    );
    gate.resolve();
    await expect(run).rejects.toMatchObject({ code: 'GROUP_LEASE_LOST' });
    expect((await manager.operations(id)).map((o) => o.status)).toEqual(['running', 'pending']);
    expect(await manager.get(id)).toMatchObject({ status: 'running', leaseOwner: 'worker-b' });
  });

  it('detects a group whose worker died, diagnoses it and recovers it by rerunning the interrupted operation', async () => {
    const id = await manager.create({ name: 'crash', steps: [note('a'), note('b'), note('c')] });
    // a worker that died in operation b: state as it left it in the store
    await repo.updateGroup(id, { status: 'running', startedAt: clock.now() });
    await repo.acquireLease(id, 'dead-worker', clock.now(), clock.now() + 10_000);
    await repo.updateOperation(id, 0, { status: 'done' });
    await repo.updateOperation(id, 1, { status: 'running', startedAt: clock.now() });
    expect(await manager.stuck()).toEqual([]);
    await clock.advance(10_001);
    expect((await manager.stuck()).map((g) => g.id)).toEqual([id]);
    expect(await manager.diagnose(id)).toMatchObject({
      status: 'running',
      stuck: 'lease-expired',
      errorKind: 'none',
      strategy: 'reset-and-retry',
      sinceLastActivityMs: 10_001,
    });
    const health = manager.healthCheck();
    expect((await health.check()).status).toBe('fail');
    const report = await manager.recover();
    expect(report.actions).toEqual([
      { id, action: 'recovered', strategy: 'reset-and-retry', status: 'completed' },
    ]);
    expect(journal).toEqual(['+b', '+c']);
    expect((await health.check()).status).toBe('pass');
  });

  it('recovers failed groups by strategy: network errors are retried, logic errors left for a person, attempts bounded', async () => {
    failing.set('net', 2); // both attempts of the run fail
    const net = await manager.create({
      id: 'g1-net',
      name: 'net',
      steps: [note('a'), note('net')],
      onFailure: 'stop',
    });
    await expect(manager.run(net)).rejects.toMatchObject({ status: 'failed' });
    const logic = await manager.create({
      id: 'g2-logic',
      name: 'logic',
      steps: [note('bad')],
      onFailure: 'stop',
    });
    await expect(manager.run(logic)).rejects.toMatchObject({ status: 'failed' });
    expect(await manager.diagnose(net)).toMatchObject({
      errorKind: 'network',
      strategy: 'retry-with-backoff',
    });
    expect(await manager.diagnose(logic)).toMatchObject({ errorKind: 'logic', strategy: 'manual' });
    expect((await manager.healthCheck().check()).status).toBe('warn');
    const report = await manager.recover({ backoffMs: 0 });
    expect(report.actions).toEqual([
      { id: net, action: 'recovered', strategy: 'retry-with-backoff', status: 'completed' },
      expect.objectContaining({ id: logic, action: 'skipped', strategy: 'manual' }),
    ]);
    expect(journal).toEqual(['+a', '+net']);

    failing.set('net2', 100);
    const again = await manager.create({ name: 'net2', steps: [note('net2')], onFailure: 'stop' });
    await manager.run(again).catch(() => undefined);
    for (let i = 0; i < 2; i++) await manager.recover({ backoffMs: 0, maxAttempts: 2 });
    const last = await manager.recover({ backoffMs: 0, maxAttempts: 2 });
    expect(last.actions.find((a) => a.id === again)).toMatchObject({ action: 'skipped' });
    expect((await manager.get(again))?.recoverAttempts).toBe(2);
  });

  it('removes finished groups and logs by age per status', async () => {
    const done = await manager.create({ name: 'done', steps: [note('a')] });
    await manager.run(done);
    const failed = await manager.create({ name: 'failed', steps: [note('bad')] });
    await manager.run(failed).catch(() => undefined);
    const pending = await manager.create({ name: 'pending', steps: [note('x')] });
    await clock.advance(25 * 3_600_000);
    expect(await manager.cleanup()).toEqual({
      groupsDeleted: { rolled_back: 1 },
      logsDeleted: 0,
      resourcesRemoved: [],
      resourcesFailed: [],
    });
    expect(await manager.get(failed)).toBeUndefined();
    expect(await manager.operations(failed)).toEqual([]);
    await clock.advance(28 * 24 * 3_600_000);
    expect((await manager.cleanup()).groupsDeleted).toEqual({});
    expect(await manager.get(done)).toBeDefined();
    // completed groups and every group's log lines go after 30 days
    await clock.advance(2 * 24 * 3_600_000);
    const last = await manager.cleanup();
    expect(last.groupsDeleted).toEqual({ completed: 1 });
    expect(last.logsDeleted).toBe(1);
    expect(await manager.get(done)).toBeUndefined();
    expect((await manager.get(pending))?.status).toBe('pending');
  });

  it('builds the group that closes the difference between desired and actual state', async () => {
    const actual = new Map([
      ['a', 1],
      ['b', 2],
      ['x', 9],
    ]);
    const desired = new Map([
      ['a', 1],
      ['b', 3],
      ['c', 4],
    ]);
    const plan = await reconcile({
      actual: () => actual,
      desired: () => desired,
      create: (key, value) => ({
        executor: 'note',
        target: key,
        forward: `create-${key}-${String(value)}`,
        rollback: `drop-${key}`,
      }),
      update: (key, _a, d) => ({ executor: 'note', target: key, forward: `set-${key}-${String(d)}` }),
      remove: (key) => ({ executor: 'note', target: key, forward: `drop-${key}` }),
    });
    expect(plan.differences).toEqual([
      { key: 'b', kind: 'changed', actual: 2, desired: 3 },
      { key: 'c', kind: 'missing', desired: 4 },
      { key: 'x', kind: 'extra', actual: 9 },
    ]);
    const id = await manager.create({ name: 'reconcile', steps: plan.steps });
    await manager.run(id);
    expect(journal).toEqual(['+set-b-3', '+create-c-4', '+drop-x']);
  });
});

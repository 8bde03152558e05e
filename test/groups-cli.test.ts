import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { registerGroupsCommand } from '../packages/gateway/src/cli/groups.js';
import { ExecutorRegistry, GroupManager, openGroupRepository, type GroupRepository } from '@keel/groups';
import { registerExecutors } from './fixtures/groups-executors.js';

const EXECUTORS = path.join(import.meta.dirname, 'fixtures', 'groups-executors.ts');

let dir: string;
let store: string;
let repo: GroupRepository;
let manager: GroupManager;

async function keel(...args: string[]): Promise<{ out: string; code: number }> {
  const program = new Command('keel').exitOverride();
  registerGroupsCommand(program);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  process.exitCode = 0;
  try {
    await program.parseAsync(['node', 'keel', 'groups', ...args, '--store', store]);
  } finally {
    spy.mockRestore();
  }
  const code = process.exitCode ?? 0;
  process.exitCode = 0;
  return { out, code };
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'keel-groups-cli-'));
  store = path.join(dir, 'groups.db');
  repo = await openGroupRepository(store);
  const executors = new ExecutorRegistry();
  registerExecutors(executors);
  manager = new GroupManager({ repository: repo, executors, retry: { maxAttempts: 1 } });
});

afterEach(async () => {
  await repo.close();
  await rm(dir, { recursive: true, force: true });
});

const touch = (name: string) => ({
  executor: 'touch',
  target: name,
  forward: path.join(dir, name),
  rollback: path.join(dir, name),
});

describe('keel groups', () => {
  it('lists, shows, pauses, resumes and stops groups', async () => {
    const id = await manager.create({ id: 'g-1', name: 'two files', steps: [touch('a'), touch('b')] });
    const list = await keel('list', '--json');
    expect(JSON.parse(list.out)).toEqual([
      expect.objectContaining({ id, status: 'pending', done: 0, total: 2 }),
    ]);
    expect((await keel('list')).out).toMatch(/g-1 {2}pending +0\/2 {2}two files/);
    expect((await keel('pause', id)).out).toBe('g-1: paused\n');
    const shown = await keel('show', id);
    expect(shown.out).toContain('status: paused  0/2 done');
    expect(shown.out).toMatch(/0 step 0 pending +touch a/);
    expect((await keel('resume', id)).out).toBe('g-1: pending\n');
    expect((await keel('list', '--status', 'pending', '--json')).out).toContain('"g-1"');
    expect((await keel('stop', id, '--mode', 'graceful')).out).toBe('g-1: stopped\n');
    await expect(keel('pause', id)).rejects.toMatchObject({ code: 'GROUP_INVALID_TRANSITION' });
    await expect(keel('stop', id, '--mode', 'sideways')).rejects.toThrow(
      /--mode must be graceful or rollback/,
    );
    await expect(keel('list', '--status', 'bogus')).rejects.toThrow(/unknown status "bogus"/);
  });

  it('rolls back a completed group with the executors of a module', async () => {
    const id = await manager.create({ name: 'files', steps: [touch('a'), touch('b')] });
    await manager.run(id);
    expect(existsSync(path.join(dir, 'a'))).toBe(true);
    await expect(keel('rollback', id)).rejects.toThrow(/pass --executors <module>/);
    const result = await keel('rollback', id, '--executors', EXECUTORS);
    expect(result).toEqual({ out: `${id}: rolled_back\n`, code: 0 });
    expect(existsSync(path.join(dir, 'a'))).toBe(false);
    expect(existsSync(path.join(dir, 'b'))).toBe(false);
  });

  it('diagnoses a stuck group without executors and recovers it with them', async () => {
    const id = await manager.create({ name: 'crashed', steps: [touch('a'), touch('b')] });
    await repo.updateGroup(id, { status: 'running', startedAt: Date.now() });
    await repo.updateOperation(id, 0, { status: 'running' });
    const dry = await keel('recover');
    expect(dry.code).toBe(1);
    expect(dry.out).toContain(`group ${id} is running but its worker's lease expired`);
    const done = await keel('recover', '--executors', EXECUTORS);
    expect(done).toEqual({
      out: `examined 1 group(s)\n  ${id}: recovered via reset-and-retry → completed\n`,
      code: 0,
    });
    expect(existsSync(path.join(dir, 'b'))).toBe(true);
    expect((await keel('recover')).out).toBe('nothing to recover\n');
  });

  it('shows a group whose live worker made no progress as stuck, with the progress it last reported', async () => {
    const id = await manager.create({ name: 'hung', steps: [touch('a'), touch('b')] });
    const now = Date.now();
    // a live worker holds the lease, but operation a last reported progress 11 minutes ago
    await repo.updateGroup(id, { status: 'running', startedAt: now - 660_000, progressAt: now - 660_000 });
    await repo.acquireLease(id, 'worker-elsewhere', now, now + 3_600_000);
    await repo.updateOperation(id, 0, {
      status: 'running',
      progress: { at: now - 660_000, message: 'copying', done: 3, total: 10 },
    });
    expect((await keel('list')).out).toMatch(/hung {2}last progress .* {2}STUCK \(no-progress\)/);
    expect(JSON.parse((await keel('list', '--json')).out)).toEqual([
      expect.objectContaining({ id, stuck: 'no-progress' }),
    ]);
    expect((await keel('list', '--stuck-after', '20m')).out).not.toContain('STUCK');
    const shown = await keel('show', id);
    expect(shown.out).toContain('holds the lease, but it made no progress for');
    expect(shown.out).toMatch(/0 step 0 running +touch a {2}progress 3\/10 copying at /);
    const dry = await keel('recover');
    expect(dry.code).toBe(1);
    expect(dry.out).toContain(
      `group ${id} is running and its worker holds the lease, but it made no progress`,
    );
    await expect(keel('list', '--stuck-after', 'soon')).rejects.toThrow(/--stuck-after must be a duration/);
  });

  it('leaves a rollback stop of a paused group to recovery when it has no executors', async () => {
    const id = await manager.create({ name: 'half', steps: [touch('a'), touch('b')] });
    await manager.run(id);
    // as a worker leaves it when a pause lands during its last operation
    await manager.repository.updateGroup(id, { status: 'paused' });
    expect((await keel('stop', id, '--mode', 'rollback')).out).toBe(`${id}: stopping\n`);
    expect(existsSync(path.join(dir, 'a'))).toBe(true);
    const recovered = await keel('recover', '--executors', EXECUTORS, '--json');
    expect(JSON.parse(recovered.out)).toEqual({
      examined: 1,
      actions: [{ id, action: 'recovered', strategy: 'continue-rollback', status: 'rolled_back' }],
    });
    expect(existsSync(path.join(dir, 'a'))).toBe(false);
  });

  it('asks for a store when none is given', async () => {
    const program = new Command('keel').exitOverride();
    registerGroupsCommand(program);
    const saved = process.env.KEEL_GROUPS_STORE;
    delete process.env.KEEL_GROUPS_STORE;
    await expect(program.parseAsync(['node', 'keel', 'groups', 'list'])).rejects.toThrow(/no store given/);
    if (saved !== undefined) process.env.KEEL_GROUPS_STORE = saved;
  });
});

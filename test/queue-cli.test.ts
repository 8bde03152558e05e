import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VirtualClock } from 'keel';
import {
  postgresAvailable,
  postgresQueueFixture,
  sqliteQueueFixture,
  type QueueFixture,
} from './queue-support.js';

const MAIN = path.join(import.meta.dirname, '..', 'packages', 'gateway', 'src', 'cli', 'main.ts');

/** Runs `keel queue ...` as a real process. */
function keel(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', MAIN, 'queue', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => {
      resolve({ code: code ?? -1, out, err });
    });
  });
}

const withPg = await postgresAvailable();
const stores: [string, () => Promise<QueueFixture>][] = [['sqlite', sqliteQueueFixture]];
if (withPg) stores.push(['postgres', postgresQueueFixture]);

describe.each(stores)('keel queue on %s', (_name, makeFixture) => {
  let fx: QueueFixture;
  let store: string[];
  beforeEach(async () => {
    fx = await makeFixture();
    store = [
      '--store',
      fx.target,
      '--queue',
      'q',
      ...(fx.isolation.schema ? ['--schema', fx.isolation.schema] : []),
    ];
  });
  afterEach(async () => {
    await fx.dispose();
  });

  it('shows stats, lists items, redrives chosen dead letters and purges by age', async () => {
    // Items finished an hour ago, by the producer's clock.
    const clock = new VirtualClock(Date.now() - 3_600_000);
    const q = await fx.open<string>({ clock, retention: false });
    const a = await q.enqueue('a', { maxAttempts: 1 });
    await q.enqueue('b', { maxAttempts: 1 });
    for (const row of await q.rawStore.claim('q', 2, 60_000, clock.now()))
      await q.rawStore.fail(
        { id: row.id, token: row.token ?? '' },
        { code: 'INVALID_INPUT', message: 'bad' },
        null,
        clock.now(),
      );
    await q.enqueue('c');
    await q.close();

    // Read-only commands run side by side (each is a process start: seconds on a busy machine).
    const [stats, list, dead] = await Promise.all([
      keel('stats', ...store),
      keel('list', '--state', 'dead', '--limit', '1', ...store),
      keel('dead', ...store),
    ]);
    expect(stats.code).toBe(0);
    expect(JSON.parse(stats.out)).toMatchObject({ pending: 1, active: 0, dead: 2, paused: false });
    const listed = JSON.parse(list.out) as {
      payload: string;
      state: string;
      errors: { message: string }[];
    }[];
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ payload: 'a', state: 'dead', errors: [{ message: 'bad' }] });
    expect((JSON.parse(dead.out) as { payload: string }[]).map((d) => d.payload)).toEqual(['a', 'b']);

    expect(JSON.parse((await keel('redrive', '--id', String(a.id), ...store)).out)).toEqual({ redriven: 1 });
    const [pending, purge] = await Promise.all([
      keel('list', ...store),
      keel('purge', '--dead-older-than', '30m', ...store),
    ]);
    expect((JSON.parse(pending.out) as { payload: string }[]).map((p) => p.payload)).toEqual(['a', 'c']);
    expect(JSON.parse(purge.out)).toEqual({ purged: 1 });
    expect(JSON.parse((await keel('stats', ...store)).out)).toMatchObject({ pending: 2, dead: 0 });
  }, 120_000);
});

describe('keel queue input errors', () => {
  it('names a bad --state, an unsupported scheme, and never prints the password of an unreachable store', async () => {
    const fx = await sqliteQueueFixture();
    try {
      const [state, scheme, down] = await Promise.all([
        keel('list', '--store', fx.target, '--state', 'bogus'),
        keel('stats', '--store', 'redis://127.0.0.1:6379'),
        keel('stats', '--store', 'postgres://keel:hunter2-secret@127.0.0.1:1/test'),
      ]);
      expect(state.code).toBe(1);
      expect(state.err).toMatch(/--state must be one of pending, active, completed, dead/);
      expect(scheme.code).toBe(1);
      expect(scheme.err).toMatch(/unsupported scheme "redis:".*\[INVALID_CONFIG\]/);
      expect(down.code).toBe(1);
      expect(down.err).toMatch(/127\.0\.0\.1:1\/test.*\[QUEUE_STORE_UNAVAILABLE\]/);
      expect(down.err + down.out).not.toContain('hunter2');
    } finally {
      await fx.dispose();
    }
  }, 60_000);
});

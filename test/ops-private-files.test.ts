import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openGroupRepository } from '@keel/groups';
import { AlertManager, AutoRecovery, HealthRegistry, jsonlFileAlertHandler, JsonStateFile } from '@keel/ops';
import { openQueue } from '@keel/queue';
import { loadState, saveState } from '../packages/transfer/src/state-file.js';
import { PG_URL, postgresAvailable } from './pg-support.js';

const withPg = await postgresAvailable('PostgreSQL spool test');
const mode = (file: string): string => (statSync(file).mode & 0o777).toString(8);

let dir: string;
let warnings: Error[];
const onWarning = (w: Error): void => {
  warnings.push(w);
};
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'keel-private-'));
  warnings = [];
  process.on('warning', onWarning);
});
afterEach(async () => {
  process.off('warning', onWarning);
  await rm(dir, { recursive: true, force: true });
});

/** Waits for process warnings, which Node emits on the next tick. */
const warned = async (): Promise<string[]> => {
  await new Promise((r) => setImmediate(r));
  return warnings
    .filter((w) => (w as { code?: string }).code === 'KEEL_FILE_MODE_FIXED')
    .map((w) => w.message);
};

describe('files keel creates are private', () => {
  it('the queue database, its WAL files and the directories made for it', async () => {
    const file = path.join(dir, 'a', 'b', 'queue.db');
    const q = await openQueue<string>(file, { retention: false });
    await q.enqueue('x');
    expect(mode(path.join(dir, 'a'))).toBe('700');
    expect(mode(path.join(dir, 'a', 'b'))).toBe('700');
    expect(mode(file)).toBe('600');
    expect(mode(`${file}-wal`)).toBe('600');
    expect(mode(`${file}-shm`)).toBe('600');
    await q.close();
    expect(await warned()).toEqual([]);
  });

  it('an in-memory queue (:memory:) creates no file at all', async () => {
    const stray = path.join(process.cwd(), ':memory:');
    await rm(stray, { force: true });
    const q = await openQueue<string>(':memory:', { retention: false });
    await q.enqueue('x');
    expect((await q.stats()).pending).toBe(1);
    await q.close();
    expect(existsSync(stray)).toBe(false);
  });

  it('the groups database', async () => {
    const file = path.join(dir, 'g', 'groups.db');
    const repo = await openGroupRepository(file);
    expect(mode(path.join(dir, 'g'))).toBe('700');
    expect(mode(file)).toBe('600');
    await repo.close();
  });

  it('alert history, the alert log and recovery state files', async () => {
    const historyFile = path.join(dir, 'state', 'alerts.json');
    const log = path.join(dir, 'logs', 'alerts.jsonl');
    const alerts = new AlertManager({ handlers: [jsonlFileAlertHandler({ path: log })], historyFile });
    await alerts.start();
    alerts.raise({ name: 'Test', severity: 'info', summary: 'a test alert' });
    await alerts.flush();
    const stateFile = path.join(dir, 'recovery', 'db.json');
    const health = new HealthRegistry();
    health.register({ name: 'db:up', run: () => 'fail' });
    const recovery = await AutoRecovery.persistent(
      health,
      { check: 'db:up', action: () => undefined },
      stateFile,
    );
    await health.runCheck('db:up');
    await recovery.flush();
    recovery.close();
    for (const d of ['state', 'logs', 'recovery']) expect(mode(path.join(dir, d))).toBe('700');
    for (const f of [historyFile, log, stateFile]) expect(mode(f)).toBe('600');
  });

  it('transfer state files', async () => {
    const file = path.join(dir, 'big.iso.keel-download.json');
    await saveState(file, { etag: 'x' });
    expect(mode(file)).toBe('600');
  });

  it.skipIf(!withPg)('the outage spool of a PostgreSQL queue', async () => {
    const schema = `keel_private_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
    const spool = path.join(dir, 'spool', 'spool.db');
    const q = await openQueue(PG_URL, { schema, spool, retention: false });
    await q.close();
    expect(mode(path.join(dir, 'spool'))).toBe('700');
    expect(mode(spool)).toBe('600');
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });
});

describe('a process that finds its files readable by others makes them private and says so', () => {
  it('queue and groups databases', async () => {
    const queueFile = path.join(dir, 'queue.db');
    await (await openQueue(queueFile, { retention: false })).close();
    const groupsFile = path.join(dir, 'groups.db');
    await (await openGroupRepository(groupsFile)).close();
    chmodSync(queueFile, 0o644);
    chmodSync(groupsFile, 0o664);
    await (await openQueue(queueFile, { retention: false })).close();
    await (await openGroupRepository(groupsFile)).close();
    expect(mode(queueFile)).toBe('600');
    expect(mode(groupsFile)).toBe('600');
    expect(await warned()).toEqual([
      `${queueFile} was accessible to other users (mode 0644); changed it to 0600`,
      `${groupsFile} was accessible to other users (mode 0664); changed it to 0600`,
    ]);
  });

  it('state files, the alert log and transfer state', async () => {
    const state = path.join(dir, 'alerts.json');
    writeFileSync(state, JSON.stringify({ version: 1, history: [] }), { mode: 0o644 });
    const log = path.join(dir, 'alerts.jsonl');
    writeFileSync(log, '', { mode: 0o640 });
    const transfer = path.join(dir, 'f.keel-upload.json');
    writeFileSync(transfer, '{}', { mode: 0o666 });
    chmodSync(transfer, 0o666);
    await new JsonStateFile(state).load();
    const handler = jsonlFileAlertHandler({ path: log });
    await handler.send([]);
    await loadState(transfer, (v): v is object => typeof v === 'object');
    for (const f of [state, log, transfer]) expect(mode(f)).toBe('600');
    expect(await warned()).toEqual([
      `${state} was accessible to other users (mode 0644); changed it to 0600`,
      `${log} was accessible to other users (mode 0640); changed it to 0600`,
      `${transfer} was accessible to other users (mode 0666); changed it to 0600`,
    ]);
  });
});

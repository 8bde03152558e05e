import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { classify, describeHints, keelError, PROBLEM_CONTENT_TYPE, RECOVERY_HINTS } from 'keel';
import { AdminServer, AlertManager, HealthRegistry, createMetrics, type Alert } from '@keel/ops';
import { PG_URL, postgresAvailable } from './pg-support.js';

const MAIN = path.join(import.meta.dirname, '..', 'packages', 'gateway', 'src', 'cli', 'main.ts');
const withPg = await postgresAvailable('PostgreSQL lock timeout classification');

const sysErr = (code: string): Error => Object.assign(new Error(`${code} happened`), { code });

describe('resource exhaustion and lock conflicts', () => {
  it.each([
    ['ENOMEM', sysErr('ENOMEM'), 'RESOURCE_EXHAUSTED', true],
    ['ENOBUFS', sysErr('ENOBUFS'), 'RESOURCE_EXHAUSTED', true],
    ['ERR_BUFFER_TOO_LARGE', sysErr('ERR_BUFFER_TOO_LARGE'), 'RESOURCE_EXHAUSTED', true],
    ['V8 allocation failure', new RangeError('Array buffer allocation failed'), 'RESOURCE_EXHAUSTED', true],
    [
      'PostgreSQL out of memory',
      { code: '53200', severity: 'ERROR', message: 'out of memory' },
      'RESOURCE_EXHAUSTED',
      true,
    ],
    [
      'PostgreSQL too many connections',
      { code: '53300', severity: 'FATAL', message: 'too many' },
      'RESOURCE_EXHAUSTED',
      true,
    ],
    [
      'SQLITE_NOMEM',
      Object.assign(new Error('out of memory'), { code: 'SQLITE_NOMEM' }),
      'RESOURCE_EXHAUSTED',
      true,
    ],
    ['HTTP 409', { status: 409, message: 'locked' }, 'LOCK_CONFLICT', true],
    [
      'SQLITE_BUSY_SNAPSHOT',
      Object.assign(new Error('busy'), { code: 'SQLITE_BUSY_SNAPSHOT' }),
      'LOCK_CONFLICT',
      true,
    ],
    [
      'PostgreSQL deadlock',
      { code: '40P01', severity: 'ERROR', message: 'deadlock detected' },
      'LOCK_CONFLICT',
      true,
    ],
    ['HTTP 501', { status: 501, message: 'not implemented' }, 'HTTP_ERROR', false],
    [
      'S3 BucketAlreadyExists (409)',
      { name: 'BucketAlreadyExists', $metadata: { httpStatusCode: 409 } },
      'CONFLICT',
      false,
    ],
  ] as const)('%s → %s', (_name, input, code, retryable) => {
    const e = classify(input);
    expect(e).toMatchObject({ code, retryable });
    if (code === 'RESOURCE_EXHAUSTED') expect(e.hints).toContain('reduce-scope');
    if (code === 'LOCK_CONFLICT') expect(e.hints).toEqual(['retry']);
    if (code === 'HTTP_ERROR') expect(e.kind).toBe('permanent');
  });

  it('a real SQLITE_BUSY from a second writer is a retryable lock conflict', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'keel-busy-'));
    try {
      const file = path.join(dir, 'db.sqlite');
      const a = new Database(file);
      const b = new Database(file, { timeout: 0 });
      a.exec('CREATE TABLE t (x)');
      a.exec('BEGIN IMMEDIATE');
      let err: unknown;
      try {
        b.exec('BEGIN IMMEDIATE');
      } catch (e) {
        err = e;
      }
      a.exec('ROLLBACK');
      a.close();
      b.close();
      expect(classify(err)).toMatchObject({ code: 'LOCK_CONFLICT', retryable: true, kind: 'transient' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!withPg)('a real PostgreSQL lock timeout is a retryable lock conflict', async () => {
    const table = `keel_lock_${String(process.pid)}`;
    const holder = new pg.Client({ connectionString: PG_URL });
    const waiter = new pg.Client({ connectionString: PG_URL });
    await holder.connect();
    await waiter.connect();
    try {
      await holder.query(`CREATE TABLE IF NOT EXISTS ${table} (id int)`);
      await holder.query('BEGIN');
      await holder.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
      await waiter.query(`SET lock_timeout = '50ms'`);
      const err = await waiter.query(`SELECT * FROM ${table}`).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(classify(err)).toMatchObject({
        code: 'LOCK_CONFLICT',
        retryable: true,
        details: { sqlState: '55P03' },
      });
      await holder.query('ROLLBACK');
    } finally {
      await holder.query(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
      await holder.end();
      await waiter.end();
    }
  });
});

describe('severity and recovery hints are used', () => {
  it('an alert raised for an error takes its severity, and carries its code, hints and correlation id', async () => {
    const sent: Alert[] = [];
    const metrics = createMetrics({ defaultMetrics: false });
    const alerts = new AlertManager({
      handlers: [{ name: 'm', send: (a) => void sent.push(...a) }],
      metrics,
    });
    alerts.raise({
      name: 'CacheWriteFailed',
      summary: 'disk full',
      error: keelError('DISK_FULL', 'no space'),
    });
    alerts.raise({ name: 'OriginSlow', summary: 'slow', error: keelError('TIMEOUT', 'slow origin') });
    alerts.raise({ name: 'Odd', summary: 'odd', error: new Error('something') });
    alerts.raise({
      name: 'Forced',
      summary: 'told',
      severity: 'info',
      error: keelError('DISK_FULL', 'no space'),
    });
    await alerts.flush();
    expect(sent.map((a) => [a.name, a.severity])).toEqual([
      ['CacheWriteFailed', 'critical'],
      ['OriginSlow', 'warning'],
      ['Odd', 'warning'],
      ['Forced', 'info'],
    ]);
    expect(sent[0]?.details.error).toMatchObject({
      code: 'DISK_FULL',
      severity: 'critical',
      hints: ['reduce-scope', 'read-only'],
    });
    const text = await metrics.render();
    expect(text).toContain('keel_alerts_raised_total{name="CacheWriteFailed",severity="critical"} 1');
    expect(text).toContain('keel_alerts_raised_total{name="OriginSlow",severity="warning"} 1');
  });

  it('a failed admin route answers problem+json with the error’s severity and hints', async () => {
    const admin = new AdminServer({ health: new HealthRegistry() });
    admin.addRoute('POST', '/cache/cleanup', () => {
      throw keelError('DISK_FULL', 'could not write the cleanup report: disk full');
    });
    await admin.listen();
    try {
      const res = await fetch(`${admin.url}/cache/cleanup`, { method: 'POST' });
      expect(res.status).toBe(507);
      expect(res.headers.get('content-type')).toBe(PROBLEM_CONTENT_TYPE);
      expect(await res.json()).toMatchObject({
        code: 'DISK_FULL',
        severity: 'critical',
        hints: ['reduce-scope', 'read-only'],
        detail: 'could not write the cleanup report: disk full',
      });
    } finally {
      await admin.close();
    }
  });

  it('the CLI prints the recovery hints of the error it failed with', async () => {
    const result = await new Promise<{ code: number | null; err: string }>((resolve) => {
      const p = spawn(
        process.execPath,
        ['--import', 'tsx', MAIN, 'queue', 'stats', '--store', 'postgres://keel@127.0.0.1:1/test'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let err = '';
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      p.on('close', (code) => resolve({ code, err }));
    });
    expect(result.code).toBe(1);
    expect(result.err).toContain('[QUEUE_STORE_UNAVAILABLE]');
    expect(result.err).toContain(`keel: what to do: retry: ${RECOVERY_HINTS.retry}`);
    expect(describeHints(['reduce-scope', 'manual'])).toBe(
      `reduce-scope: ${RECOVERY_HINTS['reduce-scope']}; manual: ${RECOVERY_HINTS.manual}`,
    );
  }, 30_000);
});

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveGatewayConfig } from '@keel/gateway';

const base = { upstream: 'http://127.0.0.1:9000', auth: 'anonymous' };
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-opscfg-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('gateway operations settings', () => {
  it('default to log alerts, 80/90 % disk levels checked every minute, no shutdown delay, no admin token', () => {
    const c = resolveGatewayConfig(base, {});
    expect(c).toMatchObject({
      alerts: ['log'],
      alertsFile: undefined,
      alertsWebhookUrl: undefined,
      diskWarningPercent: 80,
      diskCriticalPercent: 90,
      diskCheckIntervalSeconds: 60,
      shutdownDelaySeconds: 0,
      drainSeconds: 30,
      adminToken: undefined,
    });
  });

  it('bound revalidation by 1 s by default, settable in seconds, and name a bad value', () => {
    expect(resolveGatewayConfig(base, {}).revalidateTimeoutSeconds).toBe(1);
    expect(
      resolveGatewayConfig(base, { KEEL_REVALIDATE_TIMEOUT_SECONDS: '0.25' }).revalidateTimeoutSeconds,
    ).toBe(0.25);
    expect(() => resolveGatewayConfig({ ...base, revalidateTimeoutSeconds: '0' }, {})).toThrow(
      /revalidate-timeout-seconds|revalidateTimeoutSeconds/,
    );
    expect(() => resolveGatewayConfig({ ...base, revalidateTimeoutSeconds: 'soon' }, {})).toThrow(
      /revalidate-timeout-seconds|revalidateTimeoutSeconds/,
    );
  });

  it('back off revalidation from 1 s doubling to 60 s by default, settable by flag, variable and file', async () => {
    expect(resolveGatewayConfig(base, {})).toMatchObject({
      revalidateBackoffSeconds: 1,
      revalidateMaxBackoffSeconds: 60,
    });
    const file = path.join(dir, 'backoff.json');
    await writeFile(file, JSON.stringify({ revalidateBackoffSeconds: 3, revalidateMaxBackoffSeconds: 90 }));
    expect(resolveGatewayConfig({ ...base, config: file }, {})).toMatchObject({
      revalidateBackoffSeconds: 3,
      revalidateMaxBackoffSeconds: 90,
    });
    expect(
      resolveGatewayConfig(
        { ...base, config: file, revalidateBackoffSeconds: '0.5' },
        { KEEL_REVALIDATE_MAX_BACKOFF_SECONDS: '10', KEEL_REVALIDATE_BACKOFF_SECONDS: '2' },
      ),
    ).toMatchObject({ revalidateBackoffSeconds: 0.5, revalidateMaxBackoffSeconds: 10 });
    // A start above the default cap raises the cap with it rather than failing on a setting not given.
    expect(resolveGatewayConfig({ ...base, revalidateBackoffSeconds: '120' }, {})).toMatchObject({
      revalidateBackoffSeconds: 120,
      revalidateMaxBackoffSeconds: 120,
    });
  });

  it('log warnings and errors by default, and take error, warn or info', () => {
    expect(resolveGatewayConfig(base, {}).logLevel).toBe('warn');
    expect(resolveGatewayConfig(base, { KEEL_LOG_LEVEL: 'info' }).logLevel).toBe('info');
    expect(resolveGatewayConfig({ ...base, logLevel: 'ERROR' }, { KEEL_LOG_LEVEL: 'info' }).logLevel).toBe(
      'error',
    );
  });

  it('read flags over KEEL_* variables over the config file', async () => {
    const file = path.join(dir, 'gw.json');
    await writeFile(
      file,
      JSON.stringify({
        diskWarningPercent: 70,
        diskCriticalPercent: 85,
        alerts: 'none',
        shutdownDelaySeconds: 2,
      }),
    );
    const c = resolveGatewayConfig(
      { ...base, config: file, diskCriticalPercent: 95 },
      {
        KEEL_DISK_WARNING_PERCENT: '75',
        KEEL_ALERTS: 'log,file',
        KEEL_ALERTS_FILE: '/var/log/keel/alerts.jsonl',
        KEEL_ADMIN_TOKEN: 'a-long-enough-admin-token',
      },
    );
    expect(c).toMatchObject({
      diskWarningPercent: 75,
      diskCriticalPercent: 95,
      alerts: ['log', 'file'],
      alertsFile: '/var/log/keel/alerts.jsonl',
      adminToken: 'a-long-enough-admin-token',
      shutdownDelaySeconds: 2,
    });
    expect(resolveGatewayConfig({ ...base, alerts: 'none' }, {}).alerts).toEqual([]);
  });

  it.each([
    [{ alerts: 'log,pager' }, '--alerts (KEEL_ALERTS): unknown alert handler "pager"'],
    [{ alerts: 'file' }, '--alerts-file (KEEL_ALERTS_FILE): required when --alerts includes file'],
    [{ alerts: 'webhook' }, '--alerts-webhook-url (KEEL_ALERTS_WEBHOOK_URL): required'],
    [
      { alerts: 'webhook', alertsWebhookUrl: 'ftp://hooks.example/secret-token' },
      '--alerts-webhook-url (KEEL_ALERTS_WEBHOOK_URL): expected an http or https URL',
    ],
    [{ diskWarningPercent: '95' }, '--disk-warning-percent (KEEL_DISK_WARNING_PERCENT): must be below'],
    [
      { diskCriticalPercent: '120' },
      '--disk-critical-percent (KEEL_DISK_CRITICAL_PERCENT): must be at most 100',
    ],
    [{ diskWarningPercent: 'lots' }, '--disk-warning-percent (KEEL_DISK_WARNING_PERCENT): expected a number'],
    [{ diskCheckIntervalSeconds: '0' }, '--disk-check-interval-seconds (KEEL_DISK_CHECK_INTERVAL_SECONDS)'],
    [{ drainSeconds: '-1' }, '--drain-seconds (KEEL_DRAIN_SECONDS): expected a number of seconds ≥ 0'],
    [{ shutdownDelaySeconds: 'soon' }, '--shutdown-delay-seconds (KEEL_SHUTDOWN_DELAY_SECONDS)'],
    [{ adminToken: 'short' }, '--admin-token (KEEL_ADMIN_TOKEN): must be at least 16 characters'],
    [
      { adminReadToken: 'wall:short-secret' },
      '--admin-read-token (KEEL_ADMIN_READ_TOKEN): the secret must be at least 16 characters',
    ],
    [
      { adminToken: 'ops:the-same-secret-0123', adminReadToken: 'wall:the-same-secret-0123' },
      '--admin-read-token (KEEL_ADMIN_READ_TOKEN): must differ from --admin-token',
    ],
    [
      { revalidateBackoffSeconds: '0' },
      '--revalidate-backoff-seconds (KEEL_REVALIDATE_BACKOFF_SECONDS): expected a positive number of seconds, got "0"',
    ],
    [
      { revalidateBackoffSeconds: 'often' },
      '--revalidate-backoff-seconds (KEEL_REVALIDATE_BACKOFF_SECONDS): expected a positive number of seconds',
    ],
    [
      { revalidateMaxBackoffSeconds: '-5' },
      '--revalidate-max-backoff-seconds (KEEL_REVALIDATE_MAX_BACKOFF_SECONDS): expected a positive number of seconds',
    ],
    [
      { revalidateMaxBackoffSeconds: '' },
      '--revalidate-max-backoff-seconds (KEEL_REVALIDATE_MAX_BACKOFF_SECONDS): expected a positive number of seconds',
    ],
    [
      { revalidateBackoffSeconds: '10', revalidateMaxBackoffSeconds: '5' },
      '--revalidate-max-backoff-seconds (KEEL_REVALIDATE_MAX_BACKOFF_SECONDS): must be at least --revalidate-backoff-seconds (10), got 5',
    ],
    [{ logLevel: 'debug' }, '--log-level (KEEL_LOG_LEVEL): expected one of error, warn, info, got "debug"'],
  ])('reject %j naming the setting', (flags, message) => {
    expect(() => resolveGatewayConfig({ ...base, ...flags }, {})).toThrow(message);
  });

  it.each([
    [
      'a blank flag',
      { drainSeconds: '' },
      {},
      '--drain-seconds (KEEL_DRAIN_SECONDS): expected a number of seconds ≥ 0, got a blank value',
    ],
    [
      'a blank variable',
      {},
      { KEEL_TTL_SECONDS: '' },
      '--ttl-seconds (KEEL_TTL_SECONDS): expected a number of seconds ≥ 0, got a blank value',
    ],
    [
      'a variable of spaces',
      {},
      { KEEL_DISK_WARNING_PERCENT: '  ' },
      '--disk-warning-percent (KEEL_DISK_WARNING_PERCENT): expected a number ≥ 1, got a blank value',
    ],
    [
      'a blank variable where only positive numbers go',
      {},
      { KEEL_REVALIDATE_TIMEOUT_SECONDS: '' },
      '--revalidate-timeout-seconds (KEEL_REVALIDATE_TIMEOUT_SECONDS): expected a positive number of seconds, got a blank value',
    ],
    [
      'a boolean',
      { shutdownDelaySeconds: true },
      {},
      '--shutdown-delay-seconds (KEEL_SHUTDOWN_DELAY_SECONDS): expected a number of seconds ≥ 0, got "true"',
    ],
  ])('reject %s for a numeric setting instead of reading it as 0 or 1', (_what, flags, env, message) => {
    expect(() => resolveGatewayConfig({ ...base, ...flags }, env)).toThrow(message);
  });

  it('give the origin 5 s to start answering per attempt and 10 s per request by default, and refuse unsigned requests', () => {
    expect(resolveGatewayConfig(base, {})).toMatchObject({
      originFirstByteTimeoutSeconds: 5,
      originDeadlineSeconds: 10,
      unsignedRequests: 'refuse',
    });
    expect(
      resolveGatewayConfig(base, {
        KEEL_ORIGIN_FIRST_BYTE_TIMEOUT_SECONDS: '2',
        KEEL_ORIGIN_DEADLINE_SECONDS: '4.5',
        KEEL_UNSIGNED_REQUESTS: 'forward',
      }),
    ).toMatchObject({
      originFirstByteTimeoutSeconds: 2,
      originDeadlineSeconds: 4.5,
      unsignedRequests: 'forward',
    });
    expect(
      resolveGatewayConfig({ ...base, originFirstByteTimeoutSeconds: '1.5', originDeadlineSeconds: '3' }, {}),
    ).toMatchObject({ originFirstByteTimeoutSeconds: 1.5, originDeadlineSeconds: 3 });
    expect(() => resolveGatewayConfig({ ...base, originDeadlineSeconds: '0' }, {})).toThrow(
      '--origin-deadline-seconds (KEEL_ORIGIN_DEADLINE_SECONDS): expected a positive number of seconds',
    );
    expect(() => resolveGatewayConfig({ ...base, unsignedRequests: 'allow' }, {})).toThrow(
      '--unsigned-requests (KEEL_UNSIGNED_REQUESTS): expected refuse or forward, got "allow"',
    );
  });

  it('take the origin timeouts from the config file, under a flag or variable', async () => {
    const file = path.join(dir, 'timeouts.json');
    await writeFile(file, JSON.stringify({ originFirstByteTimeoutSeconds: 2.5, originDeadlineSeconds: 7 }));
    expect(resolveGatewayConfig({ ...base, config: file }, {})).toMatchObject({
      originFirstByteTimeoutSeconds: 2.5,
      originDeadlineSeconds: 7,
    });
    expect(
      resolveGatewayConfig(
        { ...base, config: file, originDeadlineSeconds: '8' },
        { KEEL_ORIGIN_FIRST_BYTE_TIMEOUT_SECONDS: '1' },
      ),
    ).toMatchObject({ originFirstByteTimeoutSeconds: 1, originDeadlineSeconds: 8 });
  });

  it('read 4 slices ahead by default, from a flag, KEEL_READ_AHEAD_SLICES or the file, and refuse what is not 1 to 64', () => {
    expect(resolveGatewayConfig(base, {}).readAheadSlices).toBe(4);
    expect(resolveGatewayConfig({ ...base, readAheadSlices: '8' }, {}).readAheadSlices).toBe(8);
    expect(resolveGatewayConfig(base, { KEEL_READ_AHEAD_SLICES: '1' }).readAheadSlices).toBe(1);
    for (const bad of ['0', '2.5', '65', 'many', ''])
      expect(() => resolveGatewayConfig({ ...base, readAheadSlices: bad }, {})).toThrow(
        /--read-ahead-slices \(KEEL_READ_AHEAD_SLICES\): expected/,
      );
  });

  it('write through by default; --no-write-through, KEEL_WRITE_THROUGH or the file turn it off; refuse what is not yes or no', () => {
    expect(resolveGatewayConfig(base, {}).writeThrough).toBe(true);
    expect(resolveGatewayConfig({ ...base, writeThrough: false }, {}).writeThrough).toBe(false);
    for (const off of ['false', '0', 'no', 'OFF'])
      expect(resolveGatewayConfig(base, { KEEL_WRITE_THROUGH: off }).writeThrough).toBe(false);
    expect(resolveGatewayConfig(base, { KEEL_WRITE_THROUGH: 'yes' }).writeThrough).toBe(true);
    // A flag wins over the environment.
    expect(
      resolveGatewayConfig({ ...base, writeThrough: true }, { KEEL_WRITE_THROUGH: '0' }).writeThrough,
    ).toBe(true);
    for (const bad of ['maybe', '', '2'])
      expect(() => resolveGatewayConfig(base, { KEEL_WRITE_THROUGH: bad })).toThrow(
        `--write-through (KEEL_WRITE_THROUGH): expected true or false, got "${bad}"`,
      );
  });

  it.each(['127.0.0.1', '127.9.8.7', 'localhost', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'])(
    'take %s as loopback: anonymous mode and an admin port without a token are allowed there',
    (host) => {
      const c = resolveGatewayConfig({ ...base, listen: `${host}:8080`, admin: `${host}:9090` }, {});
      expect(c.auth).toBe('anonymous');
    },
  );

  it.each(['127.attacker.example', '10.0.0.1', '0.0.0.0', '::', '128.0.0.1', '::ffff:10.0.0.1'])(
    'do not take %s for loopback: anonymous mode there needs --force-anonymous, the admin port a token',
    (host) => {
      expect(() => resolveGatewayConfig({ ...base, listen: `${host}:8080` }, {})).toThrow(
        '--auth (KEEL_AUTH): anonymous mode on',
      );
      expect(() => resolveGatewayConfig({ ...base, admin: `${host}:9090` }, {})).toThrow(
        '--admin (KEEL_ADMIN_LISTEN): the admin endpoints on',
      );
      expect(
        resolveGatewayConfig({ ...base, admin: `${host}:9090`, adminToken: 'a-token-of-16-chars' }, {})
          .adminHost,
      ).toBe(host.replace(/^\[|\]$/g, ''));
    },
  );

  it('refuse a blank variable rather than fall back to the config file under it', async () => {
    const file = path.join(dir, 'drain.json');
    await writeFile(file, JSON.stringify({ drainSeconds: 5 }));
    expect(resolveGatewayConfig({ ...base, config: file }, {}).drainSeconds).toBe(5);
    expect(() => resolveGatewayConfig({ ...base, config: file }, { KEEL_DRAIN_SECONDS: '' })).toThrow(
      '--drain-seconds (KEEL_DRAIN_SECONDS): expected a number of seconds ≥ 0, got a blank value',
    );
  });

  it('never repeat the admin token or the webhook URL in an error', () => {
    const secret = 'ftp://hooks.example/secret-token';
    let text = '';
    try {
      resolveGatewayConfig({ ...base, alerts: 'webhook', alertsWebhookUrl: secret }, {});
    } catch (err) {
      text = (err as Error).message;
    }
    expect(text).not.toBe('');
    expect(text).not.toContain('secret-token');
    try {
      resolveGatewayConfig({ ...base, adminToken: 'tok-short' }, {});
    } catch (err) {
      text = (err as Error).message;
    }
    expect(text).not.toContain('tok-short');
  });
});

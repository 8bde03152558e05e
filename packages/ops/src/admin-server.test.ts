import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { circuitBreaker, consecutive, retry, constant, withCorrelation, keelError } from 'keel';
import { AdminServer } from './admin-server.js';
import { HealthRegistry, HEALTH_CONTENT_TYPE } from './health.js';
import { createMetrics } from './metrics.js';
import { bindPolicyMetrics } from './policy-metrics.js';
import { DegradationRegistry } from './degradation.js';
import { AlertManager } from './alerts/manager.js';
import { createLogger } from './logger.js';
import type { Alert } from './alerts/types.js';

const servers: AdminServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function start(token?: string) {
  const health = new HealthRegistry();
  const metrics = createMetrics();
  let dbOk = true;
  health.register({ name: 'db:ping', run: () => (dbOk ? 'pass' : 'fail') });
  health.register({ name: 'loop:alive', probes: ['liveness'], run: () => 'pass' });
  const admin = new AdminServer({ health, metrics, ...(token ? { token } : {}) });
  servers.push(admin);
  await admin.listen();
  return {
    admin,
    health,
    metrics,
    setDb: (ok: boolean) => {
      dbOk = ok;
    },
  };
}

describe('AdminServer', () => {
  it('binds to loopback and answers probes in health+json with 200/503', async () => {
    const { admin, health, setDb } = await start();
    expect(admin.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    let res = await fetch(`${admin.url}/readyz`);
    expect(res.status).toBe(503); // not started yet
    health.markStarted();
    res = await fetch(`${admin.url}/readyz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(HEALTH_CONTENT_TYPE);
    const body = (await res.json()) as { status: string; checks: Record<string, unknown> };
    expect(body.status).toBe('pass');
    expect(Object.keys(body.checks)).toEqual(['db:ping']);
    setDb(false);
    expect((await fetch(`${admin.url}/readyz`)).status).toBe(503);
    expect((await fetch(`${admin.url}/livez`)).status).toBe(200);
    expect((await fetch(`${admin.url}/healthz`)).status).toBe(503);
    expect((await fetch(`${admin.url}/nope`)).status).toBe(404);
    expect((await fetch(`${admin.url}/livez`, { method: 'POST' })).status).toBe(405);
  });

  it('requires the bearer token except on probes, and a query string does not bypass it', async () => {
    const token = 'a-long-admin-token-123';
    const { admin, health } = await start(token);
    health.markStarted();
    expect((await fetch(`${admin.url}/livez`)).status).toBe(200);
    expect((await fetch(`${admin.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${admin.url}/metrics?/livez`)).status).toBe(401);
    expect((await fetch(`${admin.url}/status?x=/readyz`)).status).toBe(401);
    expect((await fetch(`${admin.url}/status`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(
      401,
    );
    expect(
      (await fetch(`${admin.url}/status`, { headers: { authorization: `Bearer ${token}` } })).status,
    ).toBe(200);
    expect((await fetch(`${admin.url}/readyz?verbose=1`)).status).toBe(200);
    expect(() => new AdminServer({ health, token: 'short' })).toThrow(/admin\.token/);
    expect(() => new AdminServer({ health, port: 70000 })).toThrow(/admin\.port/);
  });

  it('serves Prometheus text and OpenMetrics with policy metrics bound', async () => {
    const { admin, metrics } = await start();
    const breaker = circuitBreaker({ window: consecutive(1), halfOpenAfterMs: 60_000, name: 'origin' });
    const r = retry({ maxAttempts: 2, backoff: constant(0), name: 'origin-retry' });
    bindPolicyMetrics(metrics, breaker);
    bindPolicyMetrics(metrics, r);
    const cacheHits = metrics.counter('keel_cache_hits_total', 'Cache hits.');
    cacheHits.inc(3);
    await r.execute(() => Promise.resolve(1));
    await r.execute(() => Promise.reject(keelError('NETWORK_RESET', 'reset'))).catch(() => undefined);
    await breaker.execute(() => Promise.reject(keelError('NETWORK_RESET', 'reset'))).catch(() => undefined);
    await breaker.execute(() => Promise.resolve(1)).catch(() => undefined);
    const text = await (await fetch(`${admin.url}/metrics`)).text();
    expect(text).toContain('keel_policy_calls_total{policy="origin-retry",kind="retry",outcome="success"} 1');
    expect(text).toContain('keel_policy_calls_total{policy="origin-retry",kind="retry",outcome="failure"} 1');
    expect(text).toContain('keel_retry_attempts_total{policy="origin-retry"} 1');
    expect(text).toContain('keel_breaker_state{breaker="origin"} 1');
    expect(text).toContain('keel_policy_rejections_total{policy="origin",reason="circuitOpen"} 1');
    expect(text).toContain('keel_cache_hits_total 3');
    expect(text).toContain('process_cpu_user_seconds_total');
    const om = await fetch(`${admin.url}/metrics`, {
      headers: { accept: 'application/openmetrics-text; version=1.0.0' },
    });
    expect(om.headers.get('content-type')).toContain('application/openmetrics-text');
    expect(await om.text()).toMatch(/# EOF\s*$/);
    expect(() => bindPolicyMetrics(metrics, retry({ name: 'bucket/some/key' }))).toThrow(/must match/);
  });

  it('shows health, degradation modes, alerts and registered components in /status', async () => {
    const { admin, health } = await start();
    health.markStarted();
    const sent: Alert[] = [];
    const alerts = new AlertManager({
      handlers: [
        {
          name: 'mem',
          send: (a) => {
            sent.push(...a);
          },
        },
      ],
    });
    const modes = new DegradationRegistry({ health, alerts });
    admin.addStatus('degradation', () => modes.snapshot());
    admin.addStatus('alerts', () => alerts.history());
    admin.addStatus('cache', () => ({ bytes: 10, secretAccessKey: 'abc' }));
    modes.set('cache', 'bypass', 'disk full (ENOSPC)');
    let res = await fetch(`${admin.url}/readyz`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { status: string }).status).toBe('warn');
    const status = (await (await fetch(`${admin.url}/status`)).json()) as Record<
      string,
      Record<string, unknown>
    >;
    expect(status.degradation?.cache).toMatchObject({ mode: 'bypass', reason: 'disk full (ENOSPC)' });
    expect(status.cache).toEqual({ bytes: 10, secretAccessKey: '[REDACTED]' });
    modes.set('cache', 'normal');
    res = await fetch(`${admin.url}/readyz`);
    expect(((await res.json()) as { status: string }).status).toBe('pass');
    await alerts.flush();
    expect(sent.map((a) => `${a.name}:${a.status}`)).toEqual([
      'ComponentDegraded:firing',
      'ComponentDegraded:resolved',
    ]);
  });
});

describe('createLogger', () => {
  it('writes JSON lines with the correlation id and without secrets', () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const log = createLogger({ destination, name: 'test' });
    withCorrelation('req-123', () => {
      log.info({ password: 'p4ss', headers: { authorization: 'Bearer abc.def' } }, 'login with token=s3cr3t');
    });
    log.info('outside');
    const [first, second] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(first?.correlationId).toBe('req-123');
    expect(first?.name).toBe('test');
    expect(lines[0]).not.toMatch(/p4ss|abc\.def|s3cr3t/);
    expect(second?.correlationId).toBeUndefined();
  });

  it('removes secrets at any depth and from errors, keeping the error type and stack', () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const log = createLogger({ destination });
    const deep = { a: { b: { c: { d: { password: 'deep-pw', url: 'postgres://u:pgpass@db/x' } } } } };
    log.info(deep, 'nested');
    const err = Object.assign(new Error('connect failed for postgres://u:errpass@db/x'), { token: 'tok-1' });
    log.error({ err, request: { headers: { 'x-amz-security-token': 'sts-1' } } }, 'failed');
    log.error(err);
    expect(lines).toHaveLength(3);
    const text = lines.join('');
    expect(text).not.toMatch(/deep-pw|pgpass|errpass|tok-1|sts-1/);
    const [first, second, third] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(JSON.stringify(first)).toContain('[REDACTED]');
    const loggedErr = second?.err as { type?: string; stack?: string; message?: string };
    expect(loggedErr.type).toBe('Error');
    expect(loggedErr.stack).toContain('connect failed');
    expect(third?.msg).toContain('connect failed');
    // The caller's objects are not changed.
    expect(deep.a.b.c.d.password).toBe('deep-pw');
    expect(err.token).toBe('tok-1');
  });
});

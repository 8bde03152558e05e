import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  classify,
  correlationId,
  ErrorAggregator,
  keelError,
  newCorrelationId,
  normaliseMessage,
  PROBLEM_CONTENT_TYPE,
  withCorrelation,
} from './index.js';

describe('correlation', () => {
  it('a KeelError made inside withCorrelation carries the id, across awaits', async () => {
    const id = newCorrelationId();
    const err = await withCorrelation(id, async () => {
      await new Promise((r) => setTimeout(r, 1));
      expect(correlationId()).toBe(id);
      return classify(new Error('x'));
    });
    expect(err.correlationId).toBe(id);
    expect(correlationId()).toBeUndefined();
    expect(keelError('TIMEOUT', 't').correlationId).toBeUndefined();
  });
});

function failAt(id: number): Error {
  // One throw site, different ids in the message.
  return new Error(`request ${id} to /data/bucket-${id}/obj failed after ${id * 3} ms`);
}

describe('fingerprints', () => {
  it('normalises numbers, ids, paths and quoted values out of messages', () => {
    expect(normaliseMessage('slice 3 of "a/b" at /var/x/1 id 0123456789abcdef took 12.5 ms')).toBe(
      normaliseMessage('slice 9 of "c/d" at /var/y/2 id fedcba9876543210 took 1 ms'),
    );
  });

  it('the same failure from the same place shares a fingerprint; other codes or places do not', () => {
    const a = classify(failAt(1));
    const b = classify(failAt(2));
    expect(a.fingerprint).toBe(b.fingerprint);
    const elsewhere = classify(new Error('request 1 to /data/bucket-1/obj failed after 3 ms'));
    expect(elsewhere.fingerprint).not.toBe(a.fingerprint);
    const otherCode = classify(Object.assign(failAt(1), { code: 'ECONNRESET' }));
    expect(otherCode.fingerprint).not.toBe(a.fingerprint);
  });

  it('is stable across processes', () => {
    const script = `
      import { classify } from './packages/keel/src/errors/index.ts';
      function site(n) { return new Error('job ' + n + ' failed'); }
      console.log(classify(site(Number(process.argv[2]))).fingerprint);`;
    const run = (n: number): string =>
      spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, String(n)], {
        cwd: process.cwd(),
        encoding: 'utf8',
      }).stdout.trim();
    const first = run(1);
    expect(first).toMatch(/^[0-9a-f]{16}$/);
    expect(run(2)).toBe(first);
  });
});

describe('problem details', () => {
  it('maps a KeelError to RFC 9457 with keel extension members', () => {
    const err = classify({ status: 503, headers: { 'retry-after': '5' }, message: 'upstream down' });
    const problem = err.toProblem();
    expect(PROBLEM_CONTENT_TYPE).toBe('application/problem+json');
    expect(problem).toMatchObject({
      type: 'urn:keel:error:service-unavailable',
      title: 'Service unavailable',
      status: 503,
      code: 'SERVICE_UNAVAILABLE',
      retryable: true,
      retryAfterSeconds: 5,
    });
    expect(problem.detail).toContain('upstream down');
  });
});

describe('ErrorAggregator', () => {
  it('counts by code and fingerprint over a sliding window with first/last seen and top N', () => {
    let now = 1_000_000;
    const agg = new ErrorAggregator({ windowMs: 60_000, buckets: 6, clock: { now: () => now } });
    const reset = (): Error => Object.assign(new Error('reset'), { code: 'ECONNRESET' });
    const full = (): Error => Object.assign(new Error('full'), { code: 'ENOSPC' });
    for (let i = 0; i < 5; i++) agg.record(reset());
    now += 30_000;
    agg.record(full());
    agg.record(reset());
    expect(agg.countsByCode()).toEqual({ NETWORK_RESET: 6, DISK_FULL: 1 });
    const [first, second] = agg.top(2);
    expect(first).toMatchObject({
      code: 'NETWORK_RESET',
      count: 6,
      firstSeen: 1_000_000,
      lastSeen: 1_030_000,
    });
    expect(second).toMatchObject({ code: 'DISK_FULL', count: 1 });
    expect(agg.total()).toBe(7);
    now += 40_000; // the first five fall out of the window
    expect(agg.countsByCode()).toEqual({ NETWORK_RESET: 1, DISK_FULL: 1 });
    now += 120_000;
    expect(agg.total()).toBe(0);
    expect(agg.top()).toEqual([]);
  });

  it('keeps at most maxFingerprints groups, dropping the least recently seen', () => {
    const agg = new ErrorAggregator({ maxFingerprints: 2, clock: { now: () => 0 } });
    agg.record(Object.assign(new Error('a'), { code: 'ECONNRESET' }));
    agg.record(Object.assign(new Error('b'), { code: 'ENOSPC' }));
    agg.record(Object.assign(new Error('c'), { code: 'EIO' }));
    expect(Object.keys(agg.countsByCode()).sort()).toEqual(['DISK_FULL', 'IO_ERROR']);
  });

  it('rejects a bad configuration with a message naming the option', () => {
    expect(() => new ErrorAggregator({ windowMs: 0 })).toThrow(/windowMs/);
    expect(() => new ErrorAggregator({ buckets: 0.5 })).toThrow(/buckets/);
  });
});

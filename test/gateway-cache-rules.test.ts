import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chaos, type HttpFaultProxy } from 'keel/chaos';
import { VirtualClock } from 'keel';
import {
  CacheRuleList,
  createGateway,
  resolveGatewayConfig,
  runGateway,
  type Gateway,
  type GatewayOptions,
} from '@keel/gateway';
import { originClient, s3, sha, signedRequest } from './gateway-protocol-support.js';
import { KEY_A, KEY_B, setup as passthroughSetup, SLICE as PASSTHROUGH_SLICE } from './passthrough-origin.js';
import { until } from './gateway-run-support.js';
import { startS3Origin, TEST_CREDENTIALS, type S3Origin } from './s3-origin.js';

/*
 * Cache rules per key pattern (--rules): a no-cache prefix never reaches the disk, a TTL rule
 * changes when objects are revalidated, a rule turns write-through off (or on), and a rules file
 * edited while traffic runs takes effect within a second, while a broken one keeps the rules in
 * force and raises KeelRulesInvalid until it is fixed.
 */

const SLICE = 64 * 1024;
let origin: S3Origin;
/** Between the gateways and s3rver: counts the requests that reach the origin. */
let faults: HttpFaultProxy;
let root: string;
const gateways: Gateway[] = [];

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  faults = await chaos.httpProxy({ upstream: origin.url });
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-rules-'));
});

afterAll(async () => {
  for (const g of gateways) await g.close(500);
  await faults.close();
  await origin.close();
  await rm(root, { recursive: true, force: true });
});

async function put(key: string, body: Buffer): Promise<void> {
  const client = originClient(origin);
  try {
    await client.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: body }));
  } finally {
    client.destroy();
  }
}

async function gateway(rules: unknown[], extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const g = await createGateway({
    upstream: `http://127.0.0.1:${faults.port}`,
    originCredentials: TEST_CREDENTIALS,
    auth: 'anonymous',
    cacheDir: await mkdtemp(path.join(root, 'cache-')),
    sliceBytes: SLICE,
    rules: CacheRuleList.from({ rules }, 'test rules'),
    log: () => undefined,
    ...extra,
  });
  await g.listen(0);
  gateways.push(g);
  return g;
}

interface Answer {
  status: number;
  body: Buffer;
  cache: string | null;
}

async function read(url: string, key: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(`${url}/b/${key}`, init);
  return {
    status: res.status,
    body: Buffer.from(await res.arrayBuffer()),
    cache: res.headers.get('x-keel-cache'),
  };
}

/** Counts the origin requests whose path starts with `prefix` (and whose method is `method`, if given). */
function countOrigin(name: string, prefix: string, method?: 'GET' | 'HEAD'): () => number {
  faults.add({ name, path: prefix, ...(method ? { method } : {}), action: { type: 'delay', ms: 0 } });
  return () => faults.stats.faults[name] ?? 0;
}

/** Waits until `cond` resolves true, a bounded number of turns (no timing assertion). */
async function eventually(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

/** Every file under `dir`, as paths relative to it. */
async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

describe('cache rules', () => {
  it('a no-cache prefix is never written to disk, and every read of it comes from the origin', async () => {
    const g = await gateway([{ pattern: 'b/live/**', noCache: true }]);
    const dir = (g.cache as NonNullable<Gateway['cache']>).dir;
    const live = randomBytes(SLICE * 2 + 5);
    const other = randomBytes(SLICE + 3);
    await put('live/feed.bin', live);
    await put('static/a.bin', other);
    const fromOrigin = countOrigin('live-reads', '/b/live/');
    const before = await files(dir);

    for (let i = 0; i < 3; i++) {
      const whole = await read(g.url(), 'live/feed.bin');
      expect(whole.status).toBe(200);
      expect(whole.cache).toBe('BYPASS');
      expect(sha(whole.body)).toBe(sha(live));
      await g.idle();
    }
    const ranged = await read(g.url(), 'live/feed.bin', { headers: { range: 'bytes=100-199' } });
    expect(ranged.status).toBe(206);
    expect(ranged.cache).toBe('BYPASS');
    expect(sha(ranged.body)).toBe(sha(live.subarray(100, 200)));
    const head = await fetch(`${g.url()}/b/live/feed.bin`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('x-keel-cache')).toBe('BYPASS');
    expect(head.headers.get('content-length')).toBe(String(live.length));
    // An object the rule keeps out of the cache that does not exist: the origin's 404, relayed.
    const missing = await read(g.url(), 'live/none.bin');
    expect(missing.status).toBe(404);
    expect(missing.cache).toBe('PASS');
    // A write through the gateway (write-through is on) caches nothing either.
    const client = s3(g.url(), TEST_CREDENTIALS);
    const written = randomBytes(SLICE + 9);
    await client.send(new PutObjectCommand({ Bucket: 'b', Key: 'live/written.bin', Body: written }));
    client.destroy();
    const afterWrite = await read(g.url(), 'live/written.bin');
    expect(afterWrite.cache).toBe('BYPASS');
    expect(sha(afterWrite.body)).toBe(sha(written));
    await g.idle();

    // 3 whole reads, 1 range, 1 HEAD, the 404, the PUT and the read after it: all at the origin.
    expect(fromOrigin()).toBe(8);
    expect(await files(dir)).toEqual(before);
    expect(await g.cache?.getMeta({ bucket: 'b', key: 'live/feed.bin', versionId: null })).toBeUndefined();

    // The same gateway caches what no rule keeps out.
    expect((await read(g.url(), 'static/a.bin')).cache).toBe('MISS');
    await g.idle();
    expect((await read(g.url(), 'static/a.bin')).cache).toBe('HIT');
    expect((await files(dir)).length).toBeGreaterThan(before.length);
  });

  it('a TTL rule changes when objects are revalidated, and a HEAD TTL when HEADs are', async () => {
    const clock = new VirtualClock(Date.now());
    const g = await gateway([{ pattern: 'b/fast/**', ttlSeconds: 2, headTtlSeconds: 0 }], {
      clock,
      ttlMs: 60_000,
      // One attempt per call: a retry would sleep on the virtual clock.
      guard: { retryAttempts: 1, breakerFailures: 1000 },
    });
    const body = randomBytes(SLICE + 1);
    await put('fast/x.bin', body);
    await put('slow/x.bin', body);
    for (const key of ['fast/x.bin', 'slow/x.bin']) {
      expect((await read(g.url(), key)).cache).toBe('MISS');
      await g.idle();
      expect((await read(g.url(), key)).cache).toBe('HIT');
    }
    const fastHeads = countOrigin('fast-heads', '/b/fast/x.bin', 'HEAD');
    const slowHeads = countOrigin('slow-heads', '/b/slow/x.bin', 'HEAD');

    await clock.advance(1_000);
    expect((await read(g.url(), 'fast/x.bin')).cache).toBe('HIT');
    expect(fastHeads()).toBe(0);
    // HEAD TTL 0: every HEAD asks the origin; the GET TTL of 2 s still holds for GETs.
    const head = await fetch(`${g.url()}/b/fast/x.bin`, { method: 'HEAD' });
    expect(head.headers.get('x-keel-cache')).toBe('HIT');
    expect(fastHeads()).toBe(1);
    await g.idle();

    // The HEAD's revalidation refreshed the copy at 1 s: its GET TTL runs out at 3 s.
    await clock.advance(1_500);
    expect((await read(g.url(), 'fast/x.bin')).cache).toBe('HIT');
    expect(fastHeads()).toBe(1);
    await clock.advance(1_000);
    const fast = await read(g.url(), 'fast/x.bin');
    expect(fast.cache).toBe('HIT');
    expect(sha(fast.body)).toBe(sha(body));
    expect(fastHeads()).toBe(2);
    expect((await read(g.url(), 'slow/x.bin')).cache).toBe('HIT');
    await fetch(`${g.url()}/b/slow/x.bin`, { method: 'HEAD' });
    expect(slowHeads()).toBe(0);
    await g.idle();

    // The global TTL (60 s) for the objects no rule matches.
    await clock.advance(60_000);
    expect((await read(g.url(), 'slow/x.bin')).cache).toBe('HIT');
    expect(slowHeads()).toBe(1);
  });

  it('a rule with write-through off makes the read after a PUT a MISS; one with it on caches where the global setting does not', async () => {
    const off = await gateway([{ pattern: 'b/nowt/**', writeThrough: false }]);
    const on = await gateway([{ pattern: 'b/wt/**', writeThrough: true }], { writeThrough: false });
    for (const [g, cached, forwarded] of [
      [off, 'other/k.bin', 'nowt/k.bin'],
      [on, 'wt/k.bin', 'other/k2.bin'],
    ] as const) {
      const client = s3(g.url(), TEST_CREDENTIALS);
      try {
        for (const key of [cached, forwarded]) {
          const body = randomBytes(SLICE + 17);
          await client.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: body }));
          await g.idle();
          const after = await read(g.url(), key);
          expect(after.cache, key).toBe(key === cached ? 'HIT' : 'MISS');
          expect(sha(after.body)).toBe(sha(body));
        }
      } finally {
        client.destroy();
      }
    }
  });

  it('a rule with memory off keeps its objects out of the memory tier', async () => {
    const g = await gateway([{ pattern: 'b/cold/**', memory: false }]);
    const body = randomBytes(SLICE);
    await put('cold/k.bin', body);
    await put('warm/k.bin', body);
    const tiers = async (key: string): Promise<(string | null)[]> => {
      const seen: (string | null)[] = [];
      for (let i = 0; i < 6; i++) {
        const res = await fetch(`${g.url()}/b/${key}`, { headers: { range: 'bytes=0-4095' } });
        expect(sha(Buffer.from(await res.arrayBuffer()))).toBe(sha(body.subarray(0, 4096)));
        seen.push(res.headers.get('x-keel-cache-tier'));
        await g.idle();
      }
      return seen;
    };
    expect(await tiers('warm/k.bin')).toContain('memory');
    const cold = await tiers('cold/k.bin');
    expect(cold.slice(1)).toEqual(cold.slice(1).map(() => 'disk'));
  });

  it('exposes the resolved rule of an object', async () => {
    const g = await gateway(
      [
        { pattern: 'b/hot/**', memory: true, ttlSeconds: 300 },
        { pattern: 'b/**/*.tmp', memory: false, writeThrough: false },
      ],
      { ttlMs: 30_000 },
    );
    expect(g.rules.forObject('b', 'hot/a')).toEqual({
      rule: { index: 0, pattern: 'b/hot/**' },
      ttlMs: 300_000,
      headTtlMs: 300_000,
      noCache: false,
      memory: true,
      writeThrough: true,
    });
    expect(g.rules.forObject('b', 'x/y/z.tmp')).toMatchObject({
      rule: { index: 1 },
      memory: false,
      writeThrough: false,
    });
    expect(g.rules.forObject('c', 'x')).toMatchObject({ rule: undefined, ttlMs: 30_000, memory: true });
  });
});

describe('the --rules setting', () => {
  it('is read from the flag, KEEL_RULES or the config file, and a bad file stops the start naming the rule', async () => {
    const dir = await mkdtemp(path.join(root, 'setting-'));
    const good = path.join(dir, 'good.json');
    const bad = path.join(dir, 'bad.json');
    await writeFile(good, JSON.stringify({ rules: [{ pattern: 'b/**', ttlSeconds: 1 }] }));
    await writeFile(bad, JSON.stringify({ rules: [{ pattern: 'b/**' }, { pattern: 'c/**', headTtl: 1 }] }));
    const configFile = path.join(dir, 'config.json');
    await writeFile(configFile, JSON.stringify({ rules: good }));
    const base = { upstream: 'http://127.0.0.1:1', auth: 'anonymous' };
    expect(resolveGatewayConfig({ ...base, rules: good }, {}).rulesFile).toBe(good);
    expect(resolveGatewayConfig(base, { KEEL_RULES: good }).rulesFile).toBe(good);
    expect(resolveGatewayConfig({ ...base, config: configFile }, {}).rulesFile).toBe(good);
    expect(resolveGatewayConfig(base, {}).rulesFile).toBeUndefined();
    expect(() => resolveGatewayConfig({ ...base, rules: bad }, {})).toThrow(
      `--rules (KEEL_RULES): cache rules ${bad}: rules[1] (pattern "c/**"): unknown field "headTtl"`,
    );
    expect(() => resolveGatewayConfig(base, { KEEL_RULES: path.join(dir, 'none.json') })).toThrow(
      /--rules \(KEEL_RULES\): cannot read .*none\.json: ENOENT/,
    );
  });
});

describe('cache rules in passthrough auth', () => {
  it('a no-cache object is relayed from the origin and never cached; the origin still judges every read', async () => {
    const p = await passthroughSetup({
      rules: CacheRuleList.from({ rules: [{ pattern: 'x/live/**', noCache: true }] }, 'test rules'),
    });
    try {
      const data = randomBytes(2 * PASSTHROUGH_SLICE + 5);
      await p.put('live/a.bin', data);
      await p.put('other.bin', data);
      const cacheDir = (p.gateway.cache as NonNullable<Gateway['cache']>).dir;
      const before = await files(cacheDir);
      for (let i = 0; i < 2; i++) {
        const a = await signedRequest(p.gateway.url(), KEY_A, 'GET', '/x/live/a.bin');
        expect(a.status).toBe(200);
        expect(sha(a.body)).toBe(sha(data));
        expect(a.headers['x-keel-cache']).toBe('BYPASS');
        expect(a.headers['x-keel-authorization']).toBe('forwarded');
        await p.gateway.idle();
      }
      const denied = await signedRequest(p.gateway.url(), KEY_B, 'GET', '/x/live/a.bin');
      expect(denied.status).toBe(403);
      expect(denied.headers['x-keel-cache']).toBe('DENIED');
      expect(await files(cacheDir)).toEqual(before);
      // What no rule keeps out is cached as usual.
      expect(
        (await signedRequest(p.gateway.url(), KEY_A, 'GET', '/x/other.bin')).headers['x-keel-cache'],
      ).toBe('MISS');
      await p.gateway.idle();
      expect(
        (await signedRequest(p.gateway.url(), KEY_A, 'GET', '/x/other.bin')).headers['x-keel-cache'],
      ).toBe('HIT');
    } finally {
      await p.close();
    }
  });
});

describe('cache rules file', () => {
  it('an edit while traffic runs takes effect within a second; a broken file keeps the rules and raises KeelRulesInvalid until fixed', async () => {
    const dir = await mkdtemp(path.join(root, 'reload-'));
    const rulesPath = path.join(dir, 'rules.json');
    // As editors save: a new file renamed over the old one.
    const save = async (text: string): Promise<void> => {
      await writeFile(`${rulesPath}.tmp`, text);
      await rename(`${rulesPath}.tmp`, rulesPath);
    };
    await save(JSON.stringify({ rules: [{ pattern: 'b/other/**', ttlSeconds: 5 }] }));
    const body = randomBytes(SLICE + 7);
    await put('hot/k.bin', body);
    const running = await runGateway(
      resolveGatewayConfig(
        {
          upstream: `http://127.0.0.1:${faults.port}`,
          auth: 'anonymous',
          listen: '0',
          admin: '0',
          cacheDir: path.join(dir, 'cache'),
          sliceBytes: '64KiB',
          originAccessKeyId: TEST_CREDENTIALS.accessKeyId,
          originSecretAccessKey: TEST_CREDENTIALS.secretAccessKey,
          rules: rulesPath,
          alerts: 'none',
        },
        {},
      ),
      { logger: pino({ level: 'silent' }) },
    );
    const url = running.gateway.url();
    const metric = async (name: string): Promise<string> => {
      const text = await (await fetch(`${running.admin.url}/metrics`)).text();
      return text
        .split('\n')
        .filter((l) => l.startsWith(name))
        .join('\n');
    };
    let stop = false;
    const labels: string[] = [];
    const traffic = (async () => {
      while (!stop) {
        const a = await read(url, 'hot/k.bin');
        expect(sha(a.body)).toBe(sha(body));
        labels.push(a.cache ?? '');
      }
    })();
    try {
      await until(() => labels.includes('HIT'), 'the object to be cached');

      await save(JSON.stringify({ rules: [{ pattern: 'b/hot/**', noCache: true }] }));
      const saved = performance.now();
      const seen = labels.length;
      await until(() => labels.slice(seen).includes('BYPASS'), 'the no-cache rule to apply');
      expect(performance.now() - saved).toBeLessThan(1_000);
      expect(await metric('keel_gateway_rules_reloads_total')).toContain(
        'keel_gateway_rules_reloads_total{result="applied"} 1',
      );

      // Broken, written in place: the no-cache rule stays in force, the alert is raised.
      await writeFile(rulesPath, '{ "rules": [ { "pattern": "b/hot/**", "noCache": tru');
      await until(() => running.alerts.firing().some((a) => a.name === 'KeelRulesInvalid'), 'the alert');
      const alert = running.alerts.firing().find((a) => a.name === 'KeelRulesInvalid');
      expect(alert?.summary).toContain('not JSON');
      expect(alert?.summary).toContain('the 1 cache rule(s) in force before stay in force');
      expect(await metric('keel_gateway_rules_invalid')).toContain('keel_gateway_rules_invalid 1');
      expect(await metric('keel_gateway_rules_reloads_total')).toContain(
        'keel_gateway_rules_reloads_total{result="invalid"} 1',
      );
      const during = labels.length;
      await until(() => labels.length > during + 5, 'reads while the file is broken');
      expect(labels.slice(during)).toEqual(labels.slice(during).map(() => 'BYPASS'));

      // Invalid another way (a field at fault): counted, and the no-cache rule still applies.
      await save(JSON.stringify({ rules: [{ pattern: 'b/hot/**', noCache: 'yes' }] }));
      await eventually(
        async () => (await metric('keel_gateway_rules_reloads_total')).includes('{result="invalid"} 2'),
        'the second invalid version to be read',
      );
      const after = labels.length;
      await until(() => labels.length > after + 2, 'reads after the second invalid version');
      expect(labels.slice(after)).toEqual(labels.slice(after).map(() => 'BYPASS'));

      // Fixed: no rule for the object any more, the alert resolved, reads cached again.
      await save(JSON.stringify({ rules: [] }));
      await until(
        () => !running.alerts.firing().some((a) => a.name === 'KeelRulesInvalid'),
        'the alert to resolve',
      );
      expect(await metric('keel_gateway_rules_invalid')).toContain('keel_gateway_rules_invalid 0');
      const fixed = labels.length;
      await until(() => labels.slice(fixed).includes('HIT'), 'reads to be cached again');
    } finally {
      stop = true;
      await traffic;
      await running.shutdown();
    }
  });
});

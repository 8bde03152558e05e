import { describe, expect, it } from 'vitest';
import { keelError, VirtualClock } from 'keel';
import type { CorsRule } from './cors.js';
import { BucketCorsRules, type BucketCorsRulesOptions } from './cors-rules.js';

const rule = (origin: string): CorsRule => ({
  allowedOrigins: [origin],
  allowedMethods: ['GET'],
  allowedHeaders: [],
  exposeHeaders: [],
});

/** An origin whose answers the test hands out one at a time. */
function origin() {
  const asked: { bucket: string; resolve: (r: CorsRule[]) => void; reject: (e: unknown) => void }[] = [];
  return {
    asked,
    fetch: (bucket: string) =>
      new Promise<readonly CorsRule[]>((resolve, reject) => asked.push({ bucket, resolve, reject })),
    answer(rules: CorsRule[]) {
      const a = asked.shift();
      if (!a) throw new Error('nothing was asked');
      a.resolve(rules);
    },
    fail() {
      const a = asked.shift();
      if (!a) throw new Error('nothing was asked');
      a.reject(keelError('NETWORK_RESET', 'connection reset'));
    },
  };
}

const settle = () => new Promise((r) => setImmediate(r));

/** Rules on a virtual clock in front of {@link origin}, kept 60 s unless `options` say otherwise. */
function setup(options: Partial<Omit<BucketCorsRulesOptions, 'fetch' | 'clock'>> = {}) {
  const clock = new VirtualClock();
  const o = origin();
  const cors = new BucketCorsRules({ fetch: o.fetch, clock, ttlMs: 60_000, ...options });
  return { clock, o, cors };
}

/** The next read of bucket `b` asks the origin again, and answers with what it says now. */
async function expectAsksAgain(o: ReturnType<typeof origin>, cors: BucketCorsRules): Promise<void> {
  const next = cors.rules('b');
  expect(o.asked).toHaveLength(1);
  o.answer([rule('https://new.example')]);
  expect(await next).toEqual([rule('https://new.example')]);
}

describe('BucketCorsRules', () => {
  it('asks the origin once for concurrent reads of a bucket, and not again while the rules are fresh', async () => {
    const { clock, o, cors } = setup();
    const waiting = [cors.rules('b'), cors.rules('b'), cors.rules('b')].map((r) => Promise.resolve(r));
    expect(o.asked).toHaveLength(1);
    o.answer([rule('https://a.example')]);
    for (const w of await Promise.all(waiting)) expect(w).toEqual([rule('https://a.example')]);
    await clock.advance(59_999);
    expect(cors.rules('b')).toEqual([rule('https://a.example')]);
    expect(o.asked).toHaveLength(0);
    void cors.rules('other');
    expect(o.asked.map((a) => a.bucket)).toEqual(['other']);
  });

  it('asks again once the TTL has passed, and answers with what the origin says now', async () => {
    const { clock, o, cors } = setup();
    const first = cors.rules('b');
    o.answer([rule('https://a.example')]);
    await first;
    await clock.advance(60_000);
    const second = cors.rules('b');
    expect(o.asked).toHaveLength(1);
    o.answer([]);
    expect(await second).toEqual([]);
  });

  it('uses the last rules known when the origin fails, and does not ask again before the backoff', async () => {
    const { clock, o, cors } = setup({ ttlMs: 1_000, backoffMs: 5_000 });
    const first = cors.rules('b');
    o.answer([rule('https://a.example')]);
    await first;
    await clock.advance(1_000);
    const failed = cors.rules('b');
    o.fail();
    expect(await failed).toEqual([rule('https://a.example')]);
    await clock.advance(4_999);
    expect(await cors.rules('b')).toEqual([rule('https://a.example')]);
    expect(o.asked).toHaveLength(0);
    await clock.advance(1);
    void cors.rules('b');
    expect(o.asked).toHaveLength(1);
    expect(cors.stats).toEqual({ fetched: 3, failed: 1 });
  });

  it('doubles the backoff per failure up to maxBackoffMs, and starts again from backoffMs after a success', async () => {
    const { clock, o, cors } = setup({ ttlMs: 1, backoffMs: 100, maxBackoffMs: 300 });
    /** Fails the fetch under way (or a new one), then the wait (ms) before the bucket is asked again. */
    const failAndWait = async (): Promise<number> => {
      const r = cors.rules('b');
      o.fail();
      await r;
      let waited = 0;
      while (o.asked.length === 0) {
        await clock.advance(10);
        waited += 10;
        void cors.rules('b');
      }
      return waited;
    };
    expect(await failAndWait()).toBe(100);
    expect(await failAndWait()).toBe(200);
    expect(await failAndWait()).toBe(300);
    expect(await failAndWait()).toBe(300);
    const ok = cors.rules('b');
    o.answer([]);
    await ok;
    await clock.advance(1);
    expect(await failAndWait()).toBe(100);
  });

  it('answers no rules when the origin fails before any were known', async () => {
    const { o, cors } = setup();
    const failed = cors.rules('b');
    o.fail();
    expect(await failed).toEqual([]);
  });

  it('a read waits for the origin at most waitMs, then goes on with the last rules known; the answer is kept when it comes', async () => {
    const { clock, o, cors } = setup({ waitMs: 1_000 });
    let got: readonly CorsRule[] | undefined;
    void Promise.resolve(cors.rules('b')).then((r) => (got = r));
    await clock.advance(999);
    await settle();
    expect(got).toBeUndefined();
    await clock.advance(1);
    await settle();
    expect(got).toEqual([]);
    // Reads meanwhile do not wait again, nor ask again.
    expect(await cors.rules('b')).toEqual([]);
    expect(o.asked).toHaveLength(1);
    o.answer([rule('https://late.example')]);
    await settle();
    expect(cors.rules('b')).toEqual([rule('https://late.example')]);
  });

  it('after invalidate, the next read asks again', async () => {
    const { o, cors } = setup();
    const first = cors.rules('b');
    o.answer([rule('https://old.example')]);
    await first;
    cors.invalidate('b');
    await expectAsksAgain(o, cors);
  });

  it('a fetch begun before invalidate and answered after it does not bring the old rules back', async () => {
    const { o, cors } = setup();
    const running = cors.rules('b');
    cors.invalidate('b');
    o.answer([rule('https://old.example')]);
    // The reads that were waiting for it get what it brought…
    expect(await running).toEqual([rule('https://old.example')]);
    // …but the next read asks the origin again.
    await expectAsksAgain(o, cors);
  });

  it('forgets the least recently used bucket beyond maxBuckets: one read again stays', async () => {
    const { o, cors } = setup({ maxBuckets: 2 });
    for (const b of ['a', 'b']) {
      const w = cors.rules(b);
      o.answer([rule(`https://${b}.example`)]);
      await w;
    }
    expect(cors.rules('a')).toEqual([rule('https://a.example')]); // a is now the most recent
    const w = cors.rules('c');
    o.answer([rule('https://c.example')]);
    await w;
    expect(cors.size).toBe(2);
    expect(cors.rules('a')).toEqual([rule('https://a.example')]); // kept: b went
    void cors.rules('b');
    expect(o.asked.map((x) => x.bucket)).toEqual(['b']);
  });

  it('keeps nothing for a bucket the origin has not shown to exist, and asks again next time', async () => {
    const confirmed = new Set<string>(['real']);
    const { o, cors } = setup({ known: (b) => confirmed.has(b) });
    for (const b of ['made-up', 'real']) {
      const w = cors.rules(b);
      o.answer([]);
      await w;
    }
    expect(cors.size).toBe(1);
    expect(cors.rules('real')).toEqual([]); // remembered: no fetch
    void cors.rules('made-up'); // forgotten: asked again
    expect(o.asked.map((x) => x.bucket)).toEqual(['made-up']);
    o.fail();
    await settle();
    expect(cors.size).toBe(1); // a failure for it leaves nothing either
  });

  it('forgets the oldest bucket beyond maxBuckets', async () => {
    const { o, cors } = setup({ maxBuckets: 2 });
    for (const b of ['a', 'b', 'c']) {
      const w = cors.rules(b);
      o.answer([rule(`https://${b}.example`)]);
      await w;
    }
    expect(cors.rules('c')).toEqual([rule('https://c.example')]);
    void cors.rules('a');
    expect(o.asked.map((a) => a.bucket)).toEqual(['a']);
  });
});

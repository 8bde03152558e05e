import { describe, expect, it } from 'vitest';
import { CacheRuleList, CacheRules, MAX_CACHE_RULES } from './cache-rules.js';

const parse = (doc: unknown): CacheRuleList => CacheRuleList.parse(JSON.stringify(doc), 'rules.json');
const rulesOf = (...rules: unknown[]): CacheRuleList => parse({ rules });

describe('cache rules validation', () => {
  it.each([
    ['not JSON', '{ rules: [', /cache rules rules\.json: not JSON/],
    ['an array at the top', '[]', /expected an object such as \{ "rules": \[ … \] \}/],
    ['an unknown top-level field', '{"rules":[],"ttl":1}', /unknown field "ttl"; known: "rules"/],
    ['rules not an array', '{"rules":{}}', /"rules" must be an array/],
    ['a rule that is not an object', '{"rules":[1]}', /rules\[0\]: expected an object with a "pattern"/],
    ['a rule without pattern', '{"rules":[{"ttlSeconds":1}]}', /rules\[0\]: "pattern" is required/],
    ['a blank pattern', '{"rules":[{"pattern":"  "}]}', /rules\[0\]: "pattern" is required/],
    [
      'an unknown field, named with the rule',
      '{"rules":[{"pattern":"b/**"},{"pattern":"a/**","ttl":5}]}',
      /rules\[1\] \(pattern "a\/\*\*"\): unknown field "ttl"; known: "pattern", "ttlSeconds"/,
    ],
    [
      'a negative TTL',
      '{"rules":[{"pattern":"a/**","ttlSeconds":-1}]}',
      /rules\[0\] \(pattern "a\/\*\*"\): "ttlSeconds": expected a number of seconds ≥ 0, got -1/,
    ],
    [
      'a TTL given as a string',
      '{"rules":[{"pattern":"a/**","headTtlSeconds":"60"}]}',
      /"headTtlSeconds": expected a number of seconds ≥ 0, got "60"/,
    ],
    [
      'a flag that is not a boolean',
      '{"rules":[{"pattern":"a/**","noCache":"yes"}]}',
      /rules\[0\] \(pattern "a\/\*\*"\): "noCache": expected true or false, got "yes"/,
    ],
    [
      'memory not a boolean',
      '{"rules":[{"pattern":"a/**","memory":1}]}',
      /"memory": expected true or false, got 1/,
    ],
    [
      'writeThrough not a boolean',
      '{"rules":[{"pattern":"a/**","writeThrough":null}]}',
      /"writeThrough": expected true or false, got null/,
    ],
    [
      'a pattern without a bucket part',
      '{"rules":[{"pattern":"*.css"}]}',
      /"pattern": matched against bucket\/key, so a pattern without "\/" matches no object; write "\*\/\*\.css"/,
    ],
    ['a leading slash', '{"rules":[{"pattern":"/b/k"}]}', /which has no leading "\/"/],
    [
      'a repeated pattern',
      '{"rules":[{"pattern":"a/**"},{"pattern":"b/**"},{"pattern":"a/**","noCache":true}]}',
      /rules\[2\] \(pattern "a\/\*\*"\): repeats the pattern of rules\[0\], so it would never apply/,
    ],
    [
      'noCache beside a TTL',
      '{"rules":[{"pattern":"a/**","noCache":true,"ttlSeconds":5,"memory":true}]}',
      /"noCache" caches nothing, so "ttlSeconds", "memory" cannot apply; remove them/,
    ],
    [
      'a pattern over 1024 characters',
      `{"rules":[{"pattern":"a/${'x'.repeat(1100)}"}]}`,
      /longer than 1024 characters/,
    ],
    [
      'more rules than allowed',
      JSON.stringify({
        rules: Array.from({ length: MAX_CACHE_RULES + 1 }, (_, i) => ({ pattern: `b/${i}` })),
      }),
      /1001 rules, more than the 1000 allowed/,
    ],
  ])('refuses %s', (_what, text, message) => {
    let thrown: unknown;
    try {
      CacheRuleList.parse(text, 'rules.json');
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toMatchObject({ code: 'INVALID_CONFIG' });
    expect((thrown as Error).message).toMatch(message);
  });

  it('accepts every field, an empty list and the largest list allowed', () => {
    expect(
      rulesOf({
        pattern: 'static/**/*.{css,js}',
        ttlSeconds: 86_400,
        headTtlSeconds: 3_600,
        memory: false,
        writeThrough: false,
      }).rules,
    ).toHaveLength(1);
    expect(
      rulesOf({ pattern: '*/private/**', noCache: true, memory: false, writeThrough: false }).rules,
    ).toHaveLength(1);
    expect(parse({ rules: [] }).rules).toHaveLength(0);
    expect(
      parse({ rules: Array.from({ length: MAX_CACHE_RULES }, (_, i) => ({ pattern: `b/${i}` })) }).rules,
    ).toHaveLength(MAX_CACHE_RULES);
    expect(rulesOf({ pattern: '**', ttlSeconds: 0 }).rules).toHaveLength(1);
  });
});

describe('cache rules matching', () => {
  const defaults = { ttlMs: 60_000, writeThrough: true };
  const list = rulesOf(
    { pattern: 'assets/**/*.css', ttlSeconds: 86_400 },
    { pattern: 'assets/live/**', ttlSeconds: 1, headTtlSeconds: 0 },
    { pattern: '*/private/**', noCache: true },
    { pattern: 'uploads/**', writeThrough: false, memory: false },
    { pattern: 'assets/**', headTtlSeconds: 30 },
  );
  const rules = new CacheRules(() => list, defaults);

  it.each([
    // bucket, key, index of the rule that applies (-1: none), ttlMs, headTtlMs, noCache, memory, writeThrough
    ['assets', 'site/a.css', 0, 86_400_000, 86_400_000, false, true, true],
    ['assets', 'live/a.css', 0, 86_400_000, 86_400_000, false, true, true],
    ['assets', 'live/feed.json', 1, 1_000, 0, false, true, true],
    ['assets', '.hidden/x.css', 0, 86_400_000, 86_400_000, false, true, true],
    ['b', 'private/k', 2, 60_000, 60_000, true, false, false],
    // `prefix/**` also matches the object named `prefix` itself.
    ['b', 'private', 2, 60_000, 60_000, true, false, false],
    ['b', 'x/private/k', -1, 60_000, 60_000, false, true, true],
    ['uploads', 'u/1.bin', 3, 60_000, 60_000, false, false, false],
    ['assets', 'img/x.png', 4, 60_000, 30_000, false, true, true],
    ['other', 'assets/x.css', -1, 60_000, 60_000, false, true, true],
  ] as const)('%s/%s: rule %d', (bucket, key, index, ttlMs, headTtlMs, noCache, memory, writeThrough) => {
    const r = rules.forObject(bucket, key);
    expect(r.rule?.index ?? -1).toBe(index);
    expect(r).toMatchObject({ ttlMs, headTtlMs, noCache, memory, writeThrough });
  });

  it('the first matching rule wins, and the same settings object is returned for every match', () => {
    expect(rules.forObject('assets', 'a/b.css')).toBe(rules.forObject('assets', 'c.css'));
    expect(rules.forObject('assets', 'a/b.css').rule).toEqual({ index: 0, pattern: 'assets/**/*.css' });
  });

  it('a rule may turn write-through on where the global setting is off', () => {
    const on = new CacheRules(() => rulesOf({ pattern: 'b/wt/**', writeThrough: true }), {
      ttlMs: 1_000,
      writeThrough: false,
    });
    expect(on.forObject('b', 'wt/k').writeThrough).toBe(true);
    expect(on.forObject('b', 'k').writeThrough).toBe(false);
  });

  it('follows the source: a new list applies at the next call', () => {
    let current = rulesOf({ pattern: 'b/**', ttlSeconds: 5 });
    const live = new CacheRules(() => current, defaults);
    expect(live.forObject('b', 'k').ttlMs).toBe(5_000);
    current = rulesOf({ pattern: 'b/**', noCache: true });
    expect(live.forObject('b', 'k').noCache).toBe(true);
    current = CacheRuleList.EMPTY;
    expect(live.forObject('b', 'k')).toMatchObject({ rule: undefined, ttlMs: 60_000, noCache: false });
  });
});

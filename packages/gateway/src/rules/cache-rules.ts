import picomatch from 'picomatch/posix.js';
import { keelError } from 'keel';

/*
 * Cache rules per key pattern (`--rules rules.json`): what the gateway does with the objects whose
 * `bucket/key` a glob matches. The first rule that matches decides; an object no rule matches gets
 * the global settings. This file parses and validates a rules document and answers, per object,
 * the settings that apply; rules-file.ts reloads it when it changes.
 */

/** Most rules a file may hold (each read tries them in order until one matches). */
export const MAX_CACHE_RULES = 1_000;

/** Longest pattern a rule may have, in characters. */
export const MAX_RULE_PATTERN_LENGTH = 1_024;

/** One rule as written in the rules file. Fields left out take the global settings. */
export interface CacheRule {
  /**
   * A glob matched against `bucket/key` (picomatch syntax; `*` stays within one `/`-separated
   * part, `**` crosses them, dots are not special): `assets/**`, `*\/tmp/**`, `logs/**\/*.gz`.
   */
  pattern: string;
  /** Serve a cached object this long before revalidating it with the origin (default `--ttl-seconds`). */
  ttlSeconds?: number;
  /** The same for HEAD requests (default: this rule's `ttlSeconds`, else `--ttl-seconds`). */
  headTtlSeconds?: number;
  /** Never cache these objects: every read goes to the origin and nothing is written to disk. */
  noCache?: boolean;
  /** Whether these objects may be kept in the memory tier (default true). */
  memory?: boolean;
  /** Whether uploads of these objects are written through to the cache (default `--write-through`). */
  writeThrough?: boolean;
}

/** The fields a rule may have. */
const RULE_FIELDS = ['pattern', 'ttlSeconds', 'headTtlSeconds', 'noCache', 'memory', 'writeThrough'] as const;

/** What applies to one object: its matching rule's settings over the global ones. */
export interface ResolvedCacheRule {
  /** The rule that matched (its position in the file, from 0, and its pattern); undefined: none did. */
  readonly rule: { readonly index: number; readonly pattern: string } | undefined;
  /** Serve the cached object this long before revalidating a GET (ms). */
  readonly ttlMs: number;
  /** Serve the cached metadata this long before revalidating a HEAD (ms). */
  readonly headTtlMs: number;
  /** Never cached: reads are relayed from the origin (`x-keel-cache: BYPASS`), nothing written to disk. */
  readonly noCache: boolean;
  /** May be kept in the memory tier (false whenever `noCache`). */
  readonly memory: boolean;
  /** Uploads are written through to the cache (false whenever `noCache`). */
  readonly writeThrough: boolean;
}

/** The global settings objects no rule matches get, and rules' fields left out fall back to. */
export interface CacheRuleDefaults {
  ttlMs: number;
  writeThrough: boolean;
}

/**
 * A validated list of rules, tried in order. Immutable: a reload makes a new list.
 */
export class CacheRuleList {
  /** A list without rules: every object gets the global settings. */
  static readonly EMPTY = new CacheRuleList([]);

  private readonly matchers: ((path: string) => boolean)[];

  private constructor(readonly rules: readonly Readonly<CacheRule>[]) {
    this.matchers = rules.map((r) => picomatch(r.pattern, { dot: true }));
  }

  /**
   * Parses and validates a rules document: `{ "rules": [ { "pattern": "…", … }, … ] }`.
   * `source` names it in errors (a file path).
   * @throws KeelError `INVALID_CONFIG` naming the rule (`rules[i]`, its pattern) and the field at fault.
   */
  static parse(text: string, source: string): CacheRuleList {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw invalid(source, `not JSON: ${(err as Error).message}`);
    }
    return CacheRuleList.from(doc, source);
  }

  /** {@link parse} of a document already read from JSON. */
  static from(doc: unknown, source: string): CacheRuleList {
    if (!isObject(doc)) throw invalid(source, 'expected an object such as { "rules": [ … ] }');
    const extra = Object.keys(doc).filter((k) => k !== 'rules');
    if (extra.length) throw invalid(source, `unknown field ${extra.map(quote).join(', ')}; known: "rules"`);
    const list = doc.rules;
    if (!Array.isArray(list)) throw invalid(source, '"rules" must be an array of rules');
    if (list.length > MAX_CACHE_RULES)
      throw invalid(source, `${list.length} rules, more than the ${MAX_CACHE_RULES} allowed`);
    const seen = new Map<string, number>();
    const rules = list.map((raw: unknown, index) => {
      const rule = validateRule(raw, index, source);
      const earlier = seen.get(rule.pattern);
      if (earlier !== undefined)
        throw invalid(
          source,
          `${where(index, rule.pattern)}: repeats the pattern of rules[${earlier}], so it would never apply`,
        );
      seen.set(rule.pattern, index);
      return Object.freeze(rule);
    });
    return new CacheRuleList(rules);
  }

  /** The index of the first rule whose pattern matches `bucket/key`, or -1. */
  match(bucket: string, key: string): number {
    if (this.matchers.length === 0) return -1;
    const path = `${bucket}/${key}`;
    for (let i = 0; i < this.matchers.length; i++)
      if ((this.matchers[i] as (p: string) => boolean)(path)) return i;
    return -1;
  }
}

/**
 * The settings that apply to each object: the current rules (`source` is asked on every call, so a
 * reload takes effect at the next request) over `defaults`.
 */
export class CacheRules {
  private readonly global: ResolvedCacheRule;
  /** The resolved settings of each rule of the list they were made for (made again after a reload). */
  private resolved: { list: CacheRuleList; rules: ResolvedCacheRule[] } | undefined;

  constructor(
    private readonly source: () => CacheRuleList,
    private readonly defaults: CacheRuleDefaults,
  ) {
    this.global = Object.freeze({
      rule: undefined,
      ttlMs: defaults.ttlMs,
      headTtlMs: defaults.ttlMs,
      noCache: false,
      memory: true,
      writeThrough: defaults.writeThrough,
    });
  }

  /**
   * What applies to the object `key` of `bucket`: the first matching rule's settings, the global
   * ones for the fields it leaves out; the global settings when no rule matches. The same object
   * is returned for every object a rule matches (no allocation per call).
   */
  forObject(bucket: string, key: string): ResolvedCacheRule {
    const list = this.source();
    const index = list.match(bucket, key);
    if (index < 0) return this.global;
    if (this.resolved?.list !== list)
      this.resolved = { list, rules: list.rules.map((r, i) => this.resolve(r, i)) };
    return this.resolved.rules[index] as ResolvedCacheRule;
  }

  private resolve(r: Readonly<CacheRule>, index: number): ResolvedCacheRule {
    const ttlMs = r.ttlSeconds === undefined ? this.defaults.ttlMs : r.ttlSeconds * 1000;
    const noCache = r.noCache === true;
    return Object.freeze({
      rule: Object.freeze({ index, pattern: r.pattern }),
      ttlMs,
      headTtlMs: r.headTtlSeconds === undefined ? ttlMs : r.headTtlSeconds * 1000,
      noCache,
      memory: !noCache && r.memory !== false,
      writeThrough: !noCache && (r.writeThrough ?? this.defaults.writeThrough),
    });
  }
}

function validateRule(raw: unknown, index: number, source: string): CacheRule {
  if (!isObject(raw)) throw invalid(source, `rules[${index}]: expected an object with a "pattern"`);
  const pattern = raw.pattern;
  if (typeof pattern !== 'string' || pattern.trim() === '')
    throw invalid(
      source,
      `rules[${index}]: "pattern" is required: a glob over bucket/key such as "assets/**"`,
    );
  const at = where(index, pattern);
  const unknown = Object.keys(raw).filter((k) => !(RULE_FIELDS as readonly string[]).includes(k));
  if (unknown.length)
    throw invalid(
      source,
      `${at}: unknown field ${unknown.map(quote).join(', ')}; known: ${RULE_FIELDS.map(quote).join(', ')}`,
    );
  if (pattern.length > MAX_RULE_PATTERN_LENGTH)
    throw invalid(source, `${at}: "pattern" is longer than ${MAX_RULE_PATTERN_LENGTH} characters`);
  if (pattern.startsWith('/'))
    throw invalid(source, `${at}: "pattern": matched against bucket/key, which has no leading "/"`);
  if (!pattern.includes('/') && pattern !== '**')
    throw invalid(
      source,
      `${at}: "pattern": matched against bucket/key, so a pattern without "/" matches no object; write "*/${pattern}" or "mybucket/**/${pattern}"`,
    );
  try {
    picomatch(pattern, { dot: true, maxLength: MAX_RULE_PATTERN_LENGTH });
  } catch (err) {
    throw invalid(source, `${at}: "pattern" is not a glob: ${(err as Error).message}`);
  }
  const rule: CacheRule = { pattern };
  for (const field of ['ttlSeconds', 'headTtlSeconds'] as const) {
    const v = raw[field];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
      throw invalid(source, `${at}: "${field}": expected a number of seconds ≥ 0, got ${JSON.stringify(v)}`);
    rule[field] = v;
  }
  for (const field of ['noCache', 'memory', 'writeThrough'] as const) {
    const v = raw[field];
    if (v === undefined) continue;
    if (typeof v !== 'boolean')
      throw invalid(source, `${at}: "${field}": expected true or false, got ${JSON.stringify(v)}`);
    rule[field] = v;
  }
  if (rule.noCache) {
    // A no-cache rule caches nothing: a setting about caching beside it is a mistake worth naming.
    const moot: string[] = [
      ...(['ttlSeconds', 'headTtlSeconds'] as const).filter((f) => rule[f] !== undefined),
      ...(['memory', 'writeThrough'] as const).filter((f) => rule[f] === true),
    ];
    if (moot.length)
      throw invalid(
        source,
        `${at}: "noCache" caches nothing, so ${moot.map(quote).join(', ')} cannot apply; remove ${moot.length > 1 ? 'them' : 'it'}`,
      );
  }
  return rule;
}

function where(index: number, pattern: string): string {
  const shown = pattern.length > 80 ? `${pattern.slice(0, 80)}…` : pattern;
  return `rules[${index}] (pattern ${JSON.stringify(shown)})`;
}

function quote(s: string): string {
  return `"${s}"`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(source: string, message: string): Error {
  return keelError('INVALID_CONFIG', `cache rules ${source}: ${message}`, { source }, { stack: false });
}

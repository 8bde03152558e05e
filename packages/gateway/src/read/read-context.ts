import type { Readable } from 'node:stream';
import { classify, keelError, type KeelError } from 'keel';
import {
  identityHash,
  type CacheMeta,
  type ObjectIdentity,
  type ObjectInfo,
  type RangeCache,
} from 'keel/cache';
import type { Clock } from 'keel';
import type { OriginClient } from '../origin/origin-client.js';
import type { OriginGuard } from '../origin/origin-guard.js';
import type { Revalidator, RevalidatorOptions } from './revalidation.js';
import type { SliceFill } from './slice-fill.js';
import type { Coordinator } from '../coord/coordinator.js';
import type { ReadAheadSettings } from './read-ahead.js';
import type { CacheRules } from '../rules/cache-rules.js';
import type { MemoryTier } from './memory-tier.js';

/* What the read path shares: its context, and the rules that keep a write's old version out of the cache. */

/** Everything the read path needs from the gateway. */
export interface ReadContext {
  origin: OriginClient;
  guard: OriginGuard;
  cache: RangeCache | undefined;
  clock: Clock;
  /** Serve cached metadata this long before revalidating (ms), unless a cache rule says otherwise. */
  ttlMs: number;
  /** The cache rules (`--rules`): per object, its TTLs, no-cache, memory tier and write-through. */
  rules: CacheRules;
  /** Slice size used when the cache is off. */
  sliceBytes: number;
  fills: Map<string, SliceFill>;
  /** Slice fills whose origin fetch is running (their bytes still coming). */
  fetching: { count: number };
  /**
   * The other processes serving this cache (the workers of one host): one origin fetch per slice
   * across them (see shared-fill.ts). Absent: this process alone.
   */
  coord?: Coordinator | undefined;
  /** How far reads fetch ahead of their clients. */
  readAhead: ReadAheadSettings;
  /** Bytes of complete fills waiting for their cache write (bounded: see slice-stream.ts). */
  unwritten: { bytes: number };
  /** Origin lookups of uncached objects in flight, shared by concurrent requests for one object. */
  heads: Map<string, HeadLookup>;
  /** Revalidation timeout and backoff (defaults: see {@link RevalidatorOptions}). */
  revalidation?: RevalidatorOptions;
  /**
   * Objects (by hash) this process looked up at the origin. Not derivable from `heads` (emptied
   * once the metadata is written) nor `fills` (keyed by ETag): until a slice of the object is in
   * the cache, this is what sends a plain GET to the metadata in memory and the fill under way
   * rather than to the origin again.
   */
  lookedUp: Set<string>;
  /**
   * Per object (by hash), how many writes through the gateway changed it. What an origin answer
   * obtained before a write brings back is not cached after it.
   */
  generations: Map<string, number>;
  /** Revalidations in flight and backing off, per object (created on first use). */
  revalidator?: Revalidator<Resolved | { passthrough: true }>;
  /** Metadata writes in flight by object hash; slice writes of the object wait for them. */
  metaWrites: Map<string, Promise<unknown>>;
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
  /** Longest a client request waits for the origin to answer, retries included (ms). */
  deadlineMs: number;
  /** Bytes held in memory by buffered hits being sent (bounded by the read path). */
  buffered: { bytes: number };
  /** Hot verified blocks and recent metadata in memory, in front of the disk cache. Absent: off. */
  memory?: MemoryTier | undefined;
  onBytes(source: 'cache' | 'origin', n: number): void;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** The identity plus the object info the read is served from. */
export interface Resolved {
  meta: CacheMeta | (ObjectInfo & { sliceBytes: number; slices: { index: number }[] });
  stale: boolean;
}

/** An origin lookup of an uncached object, shared by the requests that arrive while it runs. */
export interface HeadLookup {
  lookup: Promise<Lookup>;
  /** The origin has answered (its metadata may still be being written). */
  settled: boolean;
}

/** What the origin said about an object: serve it, pass the request through, or fail. */
export type Lookup = Resolved | { passthrough: true } | { error: KeelError };

/** Runs a cache operation; a failure is logged and taken as "nothing cached" (`undefined`). */
export async function safe<T>(ctx: ReadContext, what: string, fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    ctx.log('warn', `cache ${what} failed; serving from the origin`, { error: classify(err).message });
    return undefined;
  }
}

/**
 * `work`, or a TIMEOUT KeelError once the clock passes `deadline` (clock ms) first. The work goes
 * on for whoever else waits for it (a shared lookup or fill); only this request stops waiting.
 */
export function untilDeadline<T>(ctx: ReadContext, work: Promise<T>, deadline: number): Promise<T> {
  const left = deadline - ctx.clock.now();
  const late = (): KeelError =>
    keelError('TIMEOUT', `the origin did not answer within ${ctx.deadlineMs} ms`, {
      deadlineMs: ctx.deadlineMs,
    });
  if (left <= 0) {
    work.catch(() => undefined);
    return Promise.reject(late());
  }
  return new Promise<T>((resolve, reject) => {
    const timer = ctx.clock.setTimer(left, () => reject(late()));
    work.then(
      (v) => {
        timer.cancel();
        resolve(v);
      },
      (err: unknown) => {
        timer.cancel();
        reject(err instanceof Error ? err : classify(err));
      },
    );
  });
}

/** Reads and drops a body nobody needs, ignoring its errors. */
export function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.resume();
}

/** Objects remembered as asked about (beyond this, the set starts again). */
export const MAX_LOOKED_UP = 100_000;

/** How many writes through the gateway changed the object with this hash. */
export function generation(ctx: ReadContext, hash: string): number {
  return ctx.generations.get(hash) ?? 0;
}

/**
 * A write through the gateway changed `id`: reads that start from now on neither join an origin
 * lookup that began before it nor see what such a lookup, a fill or a revalidation brings back
 * (it is not cached, or dropped again if it was being written). Call before invalidating the cache.
 */
export function invalidateReads(ctx: ReadContext, id: ObjectIdentity): void {
  const hash = identityHash(id);
  // Bounded: a hash whose count is dropped only loses protection against a write long past.
  if (ctx.generations.size >= MAX_LOOKED_UP && !ctx.generations.has(hash)) ctx.generations.clear();
  ctx.generations.set(hash, generation(ctx, hash) + 1);
  ctx.heads.delete(hash);
  ctx.memory?.forget(hash);
}

/**
 * Runs a cache write of what was learned at generation `gen`: skipped when a write through the
 * gateway came since, and undone when one came while it ran.
 */
export async function writeUnlessChanged<T>(
  ctx: ReadContext,
  id: ObjectIdentity,
  gen: number,
  write: () => Promise<T>,
): Promise<T | undefined> {
  const hash = identityHash(id);
  if (generation(ctx, hash) !== gen) return undefined;
  const result = await write();
  if (generation(ctx, hash) !== gen && ctx.cache) {
    const cache = ctx.cache;
    await safe(ctx, 'invalidate', () => cache.invalidate(id));
  }
  return result;
}

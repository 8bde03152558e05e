import { keelError } from '../errors/index.js';
import { systemClock, type Clock } from '../time/index.js';
import type { ExecuteOptions, PolicyFn, SubstituteValue } from './policy.js';

/** Options of {@link keyed}. */
export interface KeyedOptions<K = unknown, P = unknown> {
  /** Keys kept at most; the least recently used is dropped beyond it (default 10,000). */
  maxKeys?: number;
  /** A key unused for this long is dropped (default: never for idleness). */
  idleMs?: number;
  clock?: Clock;
  /** Called with each key dropped for size or idleness, and its policy (to release what was bound to it). */
  onEvict?: (key: K, policy: P) => void;
}

interface Entry<P> {
  policy: P;
  usedAt: number;
}

/** What a keyed registry needs of its policies. */
interface Executes {
  execute<T>(fn: PolicyFn<T>, opts?: ExecuteOptions): Promise<unknown>;
}

/**
 * One policy per key (per host, bucket, operation type …), made on first use by `factory`, with
 * a bound on memory: at most `maxKeys` keys, least recently used dropped first, and optionally
 * keys idle for `idleMs` dropped. A dropped key's next use starts from a fresh policy.
 */
export class KeyedRegistry<K, P extends Executes> {
  private readonly map = new Map<K, Entry<P>>();
  private readonly factory: (key: K) => P;
  private readonly maxKeys: number;
  private readonly idleMs: number | undefined;
  private readonly clock: Clock;
  private readonly onEvict: ((key: K, policy: P) => void) | undefined;
  private sweptAt = 0;
  private evicted = 0;
  private last: Entry<P> | undefined;

  constructor(factory: (key: K) => P, options: KeyedOptions<K, P> = {}) {
    this.factory = factory;
    this.maxKeys = options.maxKeys ?? 10_000;
    if (!Number.isInteger(this.maxKeys) || this.maxKeys < 1) {
      throw keelError(
        'INVALID_CONFIG',
        `keyed: maxKeys must be an integer >= 1, got ${String(this.maxKeys)}`,
      );
    }
    this.idleMs = options.idleMs;
    this.clock = options.clock ?? systemClock;
    this.onEvict = options.onEvict;
  }

  /** The policy of `key`, made now if it has none. */
  get(key: K): P {
    const now = this.idleMs === undefined ? 0 : this.clock.now();
    if (this.idleMs !== undefined && now - this.sweptAt >= this.idleMs / 2) this.sweep(now);
    const map = this.map;
    let entry = map.get(key);
    if (entry !== undefined) {
      // Re-insert to keep the map in least-recently-used-first order (unless it is already last).
      if (this.last !== entry) {
        map.delete(key);
        map.set(key, entry);
        this.last = entry;
      }
      entry.usedAt = now;
      return entry.policy;
    }
    entry = { policy: this.factory(key), usedAt: now };
    map.set(key, entry);
    this.last = entry;
    if (map.size > this.maxKeys) {
      const oldest = map.entries().next();
      if (oldest.done !== true) {
        const [oldKey, old] = oldest.value;
        if (old === this.last) this.last = undefined;
        map.delete(oldKey);
        this.evicted++;
        this.onEvict?.(oldKey, old.policy);
      }
    }
    return entry.policy;
  }

  /** Runs `fn` under the policy of `key`. */
  execute<T>(key: K, fn: PolicyFn<T>, opts?: ExecuteOptions): Promise<T | SubstituteValue<P>> {
    return this.get(key).execute(fn, opts) as Promise<T | SubstituteValue<P>>;
  }

  /** Whether `key` currently has a policy (does not count as a use). */
  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Drops the policy of `key`. */
  delete(key: K): boolean {
    if (this.last !== undefined && this.map.get(key) === this.last) this.last = undefined;
    return this.map.delete(key);
  }

  /** Drops every policy. */
  clear(): void {
    this.map.clear();
    this.last = undefined;
  }

  /** Keys held. */
  get size(): number {
    return this.map.size;
  }

  /** Keys dropped so far for size or idleness. */
  get evictions(): number {
    return this.evicted;
  }

  /** Every key and its policy, least recently used first. */
  entries(): [K, P][] {
    if (this.idleMs !== undefined) this.sweep(this.clock.now());
    return [...this.map].map(([k, e]) => [k, e.policy]);
  }

  private sweep(now: number): void {
    this.sweptAt = now;
    const limit = now - (this.idleMs ?? Infinity);
    for (const [key, entry] of this.map) {
      if (entry.usedAt > limit) break; // the rest were used more recently
      if (entry === this.last) this.last = undefined;
      this.map.delete(key);
      this.evicted++;
      this.onEvict?.(key, entry.policy);
    }
  }
}

/** Creates a {@link KeyedRegistry}: `keyed((host) => circuitBreaker(), { maxKeys: 1000 })`. */
export function keyed<K, P extends Executes>(
  factory: (key: K) => P,
  options?: KeyedOptions<K, P>,
): KeyedRegistry<K, P> {
  return new KeyedRegistry(factory, options);
}

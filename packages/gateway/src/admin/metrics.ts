import { AUTHORIZATION_RESULTS } from '../read/passthrough-read.js';
import { Counter, type Gauge, type Histogram, type Registry } from 'prom-client';
import { CACHE_OPERATIONS, REPAIR_COUNTERS, type CacheStats, type RangeCache } from 'keel/cache';
import { bindPolicyMetrics, createMetrics, type Metrics } from '@keel/ops';
import type { CircuitBreakerPolicy } from 'keel';
import type { OriginGuard } from '../origin/origin-guard.js';
import type { MemoryTier } from '../read/memory-tier.js';

const BREAKER_STATES = ['closed', 'open', 'halfOpen', 'isolated'] as const;

/** Most buckets whose breaker gets its own `keel_breaker_state{breaker}` series. */
export const MAX_BREAKER_SERIES = 100;

/** The breaker label of a bucket; service-level calls (no bucket) are `_service`, a name no bucket can have. */
export function breakerLabel(bucket: string): string {
  return bucket === '' ? '_service' : bucket;
}

/** The cache's own counters exported as `keel_cache_<name>`, read from `stats()` at every scrape. */
const CACHE_COUNTERS: readonly { name: string; help: string; read: (s: CacheStats) => number }[] = [
  {
    name: 'keel_cache_hits_total',
    help: 'Reads the range cache answered (every byte verified).',
    read: (s) => s.hits,
  },
  {
    name: 'keel_cache_misses_total',
    help: 'Reads the range cache could not answer (not cached, or a fault: served from the origin).',
    read: (s) => s.misses,
  },
  {
    name: 'keel_cache_evictions_total',
    help: 'Slices the range cache evicted to stay under its size limit or to make room on a full disk.',
    read: (s) => s.evictions,
  },
  {
    name: 'keel_cache_bytes_served_total',
    help: 'Bytes read out of the range cache, verified.',
    read: (s) => s.bytesServed,
  },
  {
    name: 'keel_cache_bytes_written_total',
    help: 'Slice bytes written to the range cache.',
    read: (s) => s.bytesWritten,
  },
];

/**
 * The gateway's Prometheus metrics on one @keel/ops {@link Metrics} (a private prom-client
 * registry with Node's default metrics): requests by outcome, bytes by source, origin requests
 * and their time to first byte, breaker states, the retry budget, cache bypass, size and limit,
 * the cache's hits, misses, evictions, bytes and I/O errors by operation, and the six cache
 * repair counters `keel_cache_<name>`.
 */
export class GatewayMetrics {
  /** The @keel/ops metrics (render text or OpenMetrics with `ops.render(format)`). */
  readonly ops: Metrics;
  readonly requests: Counter<'method' | 'outcome'>;
  readonly bytes: Counter<'source'>;
  readonly duration: Histogram<'outcome'>;
  readonly invalidations: Counter;
  /** PutObjects staged for write-through: `cached` once committed, `not_cached` when the write or its check failed. */
  readonly writeThrough: Counter<'result'>;
  readonly originRequests: Counter<'outcome'>;
  readonly originFirstByte: Histogram;
  /** `passthrough` auth: what the origin said about each request (see AuthorizationResult). */
  readonly authorizations: Counter<'result'>;
  /** `passthrough` auth: body bytes served from the cache after a 304, which the origin did not send. */
  readonly originBytesSaved: Counter;
  /** `passthrough` auth: CONNECT tunnels opened, refused (not the origin's host) or failed. */
  readonly tunnels: Counter<'result'>;
  /** Breakers bound, by label, with what unbinds each. */
  private readonly bound = new Map<string, () => void>();

  /**
   * @param options.defaultMetrics Node's process metrics (default true).
   * @param options.memory The memory tier, when on: its size and what it did.
   */
  constructor(
    cache: RangeCache | undefined,
    guard: OriginGuard,
    options: { defaultMetrics?: boolean; memory?: MemoryTier } = {},
  ) {
    const m = createMetrics({ defaultMetrics: options.defaultMetrics ?? true });
    this.ops = m;
    this.requests = m.counter(
      'keel_gateway_requests_total',
      'Client requests by method and outcome (HIT, MISS, PARTIAL, STALE, BYPASS, PASS, ERROR, DENIED).',
      ['method', 'outcome'],
    );
    this.bytes = m.counter(
      'keel_gateway_bytes_served_total',
      'Object bytes sent to clients, by where they came from (cache or origin).',
      ['source'],
    );
    this.duration = m.histogram(
      'keel_gateway_request_duration_seconds',
      'Time to serve a client request, by outcome.',
      ['outcome'],
      [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    this.invalidations = m.counter(
      'keel_gateway_invalidations_total',
      'Cached objects dropped because a write passed through.',
    );
    this.writeThrough = m.counter(
      'keel_gateway_write_through_total',
      "PutObjects staged for write-through, by result: cached (committed once the origin accepted them with the body's MD5), not_cached (the write failed, was cut, or its ETag did not match).",
      ['result'],
    );
    this.originRequests = m.counter(
      'keel_gateway_origin_requests_total',
      'Requests to the origin by outcome: success (an answer), failure (a 5xx or 429, a timeout, an unreachable origin; each attempt), rejected (client requests an open breaker turned away).',
      ['outcome'],
    );
    this.originFirstByte = m.histogram(
      'keel_gateway_origin_first_byte_seconds',
      'Time from sending a request to the origin to its response headers.',
      [],
      [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    this.authorizations = m.counter(
      'keel_gateway_origin_authorizations_total',
      'passthrough auth: what the origin said about each request (authorized-hit, trusted-hit, changed, denied, miss, forwarded, unavailable, refused).',
      ['result'],
    );
    this.originBytesSaved = m.counter(
      'keel_gateway_origin_bytes_saved_total',
      'passthrough auth: object bytes served from the cache after the origin answered 304 to the cached ETag (bytes the origin did not send).',
    );
    this.tunnels = m.counter(
      'keel_gateway_tunnels_total',
      'passthrough auth: CONNECT tunnels by result (opened, refused: not the origin, failed).',
      ['result'],
    );
    for (const r of AUTHORIZATION_RESULTS) this.authorizations.inc({ result: r }, 0);
    for (const r of ['opened', 'refused', 'failed']) this.tunnels.inc({ result: r }, 0);
    // Series that exist from the start, so rate() and absent() work before the first request.
    for (const o of ['success', 'failure', 'rejected']) this.originRequests.inc({ outcome: o }, 0);
    for (const source of ['cache', 'origin']) this.bytes.inc({ source }, 0);
    m.gauge('keel_gateway_breakers', 'Origin circuit breakers (one per bucket) by state.', ['state'], (g) => {
      const states = Object.values(guard.breakerStates());
      for (const s of BREAKER_STATES) g.set({ state: s }, states.filter((x) => x === s).length);
    });
    this.scrapedCounter(
      'keel_gateway_retry_budget_exhausted_total',
      'Origin calls that could not be retried because the retry budget was spent.',
      () => guard.budgetExhausted,
    );
    m.gauge(
      'keel_gateway_cache_bypass',
      '1 while the cache is bypassed (unusable directory, full disk, or I/O errors past the threshold), else 0.',
      [],
      (g) => g.set(cache === undefined || cache.bypassed ? 1 : 0),
    );
    m.gauge('keel_cache_size_bytes', 'Bytes of cached slices on disk.', [], (g) =>
      g.set(cache?.stats().sizeBytes ?? 0),
    );
    m.gauge('keel_cache_max_bytes', 'Size limit of the cached slices (--cache-max-bytes).', [], (g) =>
      g.set(cache?.maxBytes ?? 0),
    );
    for (const c of CACHE_COUNTERS)
      this.scrapedCounter(c.name, c.help, () => (cache ? c.read(cache.stats()) : 0));
    this.bindMemoryTier(m, options.memory);
    new Counter({
      name: 'keel_cache_io_errors_total',
      help: 'I/O errors of the range cache (EIO, EROFS, EPERM, ENOTDIR …; each a miss or a write not stored), by what it was doing: read, write, cleanup.',
      labelNames: ['operation'],
      registers: [m.registry],
      collect() {
        const counts = cache?.stats().ioErrorsByOperation;
        this.reset();
        for (const operation of CACHE_OPERATIONS) this.inc({ operation }, counts?.[operation] ?? 0);
      },
    });
    for (const name of REPAIR_COUNTERS)
      this.scrapedCounter(
        `keel_cache_${name}`,
        `Range cache repairs: ${name.replace(/_total$/, '').replace(/_/g, ' ')}.`,
        () => cache?.stats().repairs[name] ?? 0,
      );
    // Retries, give-ups (reason="budget" when the budget is spent) of origin calls.
    bindPolicyMetrics(m, guard.retry, { name: 'origin' });
    // Every request that reached the origin (each attempt of a client request).
    guard.onAttempt((e) => {
      this.originRequests.inc({ outcome: e.outcome });
      this.originFirstByte.observe(e.durationMs / 1000);
    });
  }

  /** The prom-client registry (also reachable as `ops.registry`). */
  get registry(): Registry {
    return this.ops.registry;
  }

  /**
   * Binds a bucket's breaker: `keel_breaker_state{breaker}`, transitions and per-call metrics
   * (ops' policy metrics, for up to {@link MAX_BREAKER_SERIES} breakers at once), and the
   * client requests it turned away in `keel_gateway_origin_requests_total{outcome="rejected"}`.
   * Returns false when already bound.
   */
  bindBreaker(bucket: string, breaker: CircuitBreakerPolicy): boolean {
    const label = breakerLabel(bucket);
    if (this.bound.has(label)) return false;
    const disposers = [breaker.on('rejected', () => this.originRequests.inc({ outcome: 'rejected' }))];
    if (this.bound.size < MAX_BREAKER_SERIES)
      disposers.push(bindPolicyMetrics(this.ops, breaker, { name: label }));
    this.bound.set(label, () => {
      for (const d of disposers) d();
    });
    return true;
  }

  /**
   * Unbinds a bucket's breaker (the guard forgot it): its listeners go, and its
   * `keel_breaker_state` series with them, so no stale state is reported and the slot is free.
   */
  unbindBreaker(bucket: string): void {
    const label = breakerLabel(bucket);
    const unbind = this.bound.get(label);
    if (!unbind) return;
    unbind();
    this.bound.delete(label);
    (this.registry.getSingleMetric('keel_breaker_state') as Gauge | undefined)?.remove({ breaker: label });
  }

  /**
   * `keel_gateway_revalidations_total{outcome}`: revalidations of expired objects started, failed
   * (timed out or the origin failed: served STALE), and skipped while an object backs off after a
   * failure (served STALE without asking the origin), read from the counts at every scrape.
   */
  bindRevalidations(read: () => { started: number; failed: number; servedStaleWithoutAsking: number }): void {
    new Counter({
      name: 'keel_gateway_revalidations_total',
      help: 'Revalidations of expired objects: started, failed (served STALE), skipped during a backoff (served STALE).',
      labelNames: ['outcome'],
      registers: [this.ops.registry],
      collect() {
        const counts = read();
        this.reset();
        this.inc({ outcome: 'started' }, counts.started);
        this.inc({ outcome: 'failed' }, counts.failed);
        this.inc({ outcome: 'skipped' }, counts.servedStaleWithoutAsking);
      },
    });
  }

  /** A counter whose value is read at every scrape (the cache and the guard keep the counts). */
  /** The memory tier's series (zeros when it is off, so dashboards and alerts need no special case). */
  private bindMemoryTier(m: Metrics, memory: MemoryTier | undefined): void {
    m.gauge('keel_gateway_memory_bytes', 'Bytes of object data held by the memory tier.', [], (g) =>
      g.set(memory?.stats().bytes ?? 0),
    );
    m.gauge(
      'keel_gateway_memory_max_bytes',
      'Size limit of the memory tier (--memory-cache-bytes; 0: off).',
      [],
      (g) => g.set(memory?.maxBytes ?? 0),
    );
    m.gauge('keel_gateway_memory_objects', 'Objects whose metadata the memory tier holds.', [], (g) =>
      g.set(memory?.stats().objects ?? 0),
    );
    new Counter({
      name: 'keel_gateway_memory_reads_total',
      help: 'Cached reads that asked the memory tier, by result: hit (every byte from memory) or miss (some byte not in memory: the disk cache, or the origin, answered).',
      labelNames: ['result'],
      registers: [m.registry],
      collect() {
        const s = memory?.stats();
        this.reset();
        this.inc({ result: 'hit' }, s?.hits ?? 0);
        this.inc({ result: 'miss' }, s?.misses ?? 0);
      },
    });
    new Counter({
      name: 'keel_gateway_memory_blocks_total',
      help: 'Blocks offered to the memory tier, by what happened: admitted, rejected (asked for less often than what they would push out), evicted.',
      labelNames: ['event'],
      registers: [m.registry],
      collect() {
        const s = memory?.stats();
        this.reset();
        this.inc({ event: 'admitted' }, s?.admitted ?? 0);
        this.inc({ event: 'rejected' }, s?.rejected ?? 0);
        this.inc({ event: 'evicted' }, s?.evicted ?? 0);
      },
    });
  }

  private scrapedCounter(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers: [this.ops.registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }
}

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { REPAIR_COUNTERS, type RangeCache } from '../cache/index.js';
import type { OriginGuard } from './origin-guard.js';

const BREAKER_STATES = ['closed', 'open', 'halfOpen', 'isolated'] as const;

/** The gateway's Prometheus metrics (own registry, `keel_` prefix, bounded labels). */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'method' | 'outcome'>;
  readonly bytes: Counter<'source'>;
  readonly duration: Histogram<'outcome'>;
  readonly invalidations: Counter;

  constructor(cache: RangeCache | undefined, guard: OriginGuard) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'keel_gateway_requests_total',
      help: 'Client requests by method and outcome (HIT, MISS, PARTIAL, STALE, BYPASS, PASS, ERROR, DENIED).',
      labelNames: ['method', 'outcome'],
      registers,
    });
    this.bytes = new Counter({
      name: 'keel_gateway_bytes_served_total',
      help: 'Object bytes sent to clients, by where they came from (cache or origin).',
      labelNames: ['source'],
      registers,
    });
    this.duration = new Histogram({
      name: 'keel_gateway_request_duration_seconds',
      help: 'Time to serve a client request, by outcome.',
      labelNames: ['outcome'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.invalidations = new Counter({
      name: 'keel_gateway_invalidations_total',
      help: 'Cached objects dropped because a write passed through.',
      registers,
    });
    new Gauge({
      name: 'keel_gateway_breakers',
      help: 'Origin circuit breakers (one per bucket) by state.',
      labelNames: ['state'],
      registers,
      collect() {
        const states = Object.values(guard.breakerStates());
        for (const s of BREAKER_STATES) this.set({ state: s }, states.filter((x) => x === s).length);
      },
    });
    new Counter({
      name: 'keel_gateway_retry_budget_exhausted_total',
      help: 'Origin calls that could not be retried because the retry budget was spent.',
      registers,
      collect() {
        this.reset();
        this.inc(guard.budgetExhausted);
      },
    });
    new Gauge({
      name: 'keel_gateway_cache_bypass',
      help: '1 while the cache is bypassed (unusable directory or full disk), else 0.',
      registers,
      collect() {
        this.set(cache === undefined || cache.bypassed ? 1 : 0);
      },
    });
    new Gauge({
      name: 'keel_cache_size_bytes',
      help: 'Bytes of cached slices on disk.',
      registers,
      collect() {
        this.set(cache?.stats().sizeBytes ?? 0);
      },
    });
    for (const name of REPAIR_COUNTERS) {
      new Counter({
        name: `keel_cache_${name}`,
        help: `Range cache repairs: ${name.replace(/_total$/, '').replace(/_/g, ' ')}.`,
        registers,
        collect() {
          this.reset();
          this.inc(cache?.stats().repairs[name] ?? 0);
        },
      });
    }
  }
}

import { Engine, LAYERS, layersOf, PASS, type HasLayers, type Layer } from './engine.js';
import { Emitter, type CommonEvents, type Listener, type PipelineEvents } from './events.js';
import type { BaseOptions } from './base.js';
import type {
  CommonStats,
  ExecuteOptions,
  PipelineStats,
  Policy,
  PolicyFn,
  SUBSTITUTE,
  Substitutes,
  SubstituteValue,
} from './policy.js';

/** Any policy, whatever its events, stats and substitute value. */
export type AnyPolicy = Policy<CommonEvents, CommonStats, unknown>;

/**
 * The union of the substitute-value types of some policies (what a fallback among them may
 * return): `never` when none of them is a fallback, so a pipeline's result is exactly `T`.
 */
export type SubstituteOf<P extends readonly AnyPolicy[]> = SubstituteValue<P[number]>;

/**
 * Policies nested into one, the first outermost: `pipeline(timeout(…), retry(…), breaker)` runs
 * each attempt through the breaker, retries, and bounds the whole under one timeout. A pipeline of
 * hook-only policies (everything but hedge and aggressive timeouts) runs a call in a single async
 * frame. Its own events are `success`, `failure` and `rejected` of the call as a whole.
 */
export class PipelinePolicy<R = never> implements Policy<PipelineEvents, PipelineStats, R>, HasLayers {
  readonly kind = 'pipeline' as const;
  declare readonly [SUBSTITUTE]?: Substitutes<R>;
  readonly name: string | undefined;
  readonly [LAYERS]: readonly Layer[];
  readonly policies: readonly AnyPolicy[];
  private engine: Engine;
  private readonly events = new Emitter<PipelineEvents>();
  private observed = false;
  private calls = 0;
  private successes = 0;
  private failures = 0;

  constructor(policies: readonly AnyPolicy[], options?: BaseOptions) {
    this.name = options?.name;
    this.policies = policies;
    this[LAYERS] = policies.flatMap((p) => layersOf(p));
    this.engine = new Engine(this[LAYERS]);
  }

  execute<T>(fn: PolicyFn<T>, opts?: ExecuteOptions): Promise<T | R> {
    return this.engine.execute(fn, opts);
  }

  on<K extends keyof PipelineEvents>(event: K, listener: Listener<PipelineEvents[K]>): () => void {
    if (!this.observed) {
      // The pipeline's own events need one more (outermost) hook layer; add it only once someone listens.
      const first = this.policies[0]?.stats();
      this.calls = first?.calls ?? 0;
      this.successes = first?.successes ?? 0;
      this.failures = first?.failures ?? 0;
      this.observed = true;
      this.engine = new Engine([this.accounting(), ...this[LAYERS]]);
    }
    return this.events.on(event, listener);
  }

  stats(): PipelineStats {
    const policies = this.policies.map((p) => p.stats());
    // Without its own layer, the pipeline's outcome is its outermost member's.
    const first = policies[0];
    return {
      calls: this.observed ? this.calls : (first?.calls ?? 0),
      successes: this.observed ? this.successes : (first?.successes ?? 0),
      failures: this.observed ? this.failures : (first?.failures ?? 0),
      rejections: first?.rejections ?? 0,
      policies,
    };
  }

  private accounting(): Layer {
    const events = this.events;
    return {
      get timed() {
        return events.timed;
      },
      enter: (ctx) => {
        this.calls++;
        return ctx;
      },
      onSuccess: (ctx) => {
        this.successes++;
        if (events.timed && events.has('success')) {
          events.emit('success', ctx.startedAt >= 0 ? { durationMs: performance.now() - ctx.startedAt } : {});
        }
      },
      onFailure: (ctx, error) => {
        this.failures++;
        if (events.has('failure')) {
          events.emit(
            'failure',
            ctx.startedAt >= 0 ? { error, durationMs: performance.now() - ctx.startedAt } : { error },
          );
        }
        return PASS;
      },
    };
  }
}

/** Nests policies, the first outermost. See {@link PipelinePolicy}. */
export function pipeline<const P extends readonly AnyPolicy[]>(
  ...policies: P
): PipelinePolicy<SubstituteOf<P>> {
  return new PipelinePolicy<SubstituteOf<P>>(policies);
}

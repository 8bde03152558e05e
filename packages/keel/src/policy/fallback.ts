import { classify, type KeelError } from '../errors/index.js';
import { PolicyBase, type BaseOptions } from './base.js';
import type { CallContext } from './context.js';
import { PASS } from './engine.js';
import type { FallbackEvents } from './events.js';
import type { FallbackStats } from './policy.js';

/** A substitute: a value, or a function of the (classified) error that returns one. */
export type FallbackSource<R> = R | ((error: KeelError) => R | Promise<R>);

/** Options of {@link fallback}. */
export interface FallbackOptions extends BaseOptions {
  /** Which failures to replace (default: all of them). */
  shouldHandle?: (error: KeelError) => boolean;
}

/**
 * Replaces a failure with a substitute value: a constant, or a function of the error (which
 * receives classify(error), so it can look at `code`, `hints` and `cause`). A `fallback` event
 * reports each use. A substitute function that throws fails the call with that error.
 */
export class FallbackPolicy<R> extends PolicyBase<FallbackEvents, FallbackStats, R> {
  readonly kind = 'fallback' as const;
  private readonly source: FallbackSource<R>;
  private readonly shouldHandle: ((error: KeelError) => boolean) | undefined;
  private fallbacks = 0;

  constructor(source: FallbackSource<R>, options: FallbackOptions = {}) {
    super(options);
    this.source = source;
    this.shouldHandle = options.shouldHandle;
  }

  enter(ctx: CallContext): CallContext {
    this.calls++;
    return ctx;
  }

  onSuccess(ctx: CallContext): void {
    this.succeeded(ctx);
  }

  onFailure(ctx: CallContext, error: unknown): Promise<R> | typeof PASS {
    const k = classify(error);
    if (this.shouldHandle !== undefined && !this.shouldHandle(k)) {
      this.failed(ctx, error);
      return PASS;
    }
    return this.substitute(ctx, error, k);
  }

  private async substitute(ctx: CallContext, error: unknown, k: KeelError): Promise<R> {
    this.fallbacks++;
    if (this.events.has('fallback')) this.events.emit('fallback', { error });
    try {
      const value =
        typeof this.source === 'function'
          ? await (this.source as (e: KeelError) => R | Promise<R>)(k)
          : this.source;
      this.succeeded(ctx);
      return value;
    } catch (e) {
      this.failed(ctx, e);
      throw e;
    }
  }

  stats(): FallbackStats {
    return { ...this.commonStats(), fallbacks: this.fallbacks };
  }
}

/**
 * Creates a {@link FallbackPolicy}. A function source is called with the error; to fall back to a
 * function value itself, return it from a function: `fallback(() => fn)`.
 */
export function fallback<R>(source: FallbackSource<R>, options?: FallbackOptions): FallbackPolicy<R> {
  return new FallbackPolicy(source, options);
}

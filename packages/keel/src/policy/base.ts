import type { KeelError } from '../errors/index.js';
import type { CallContext } from './context.js';
import { Engine, LAYERS, type HasLayers, type Layer, type Next } from './engine.js';
import { Emitter, type CommonEvents, type Listener, type RejectionReason } from './events.js';
import type {
  CommonStats,
  ExecuteOptions,
  Policy,
  PolicyFn,
  PolicyKind,
  SUBSTITUTE,
  Substitutes,
} from './policy.js';

/** Options every policy accepts. */
export interface BaseOptions {
  /** A label for logs, metrics and error messages. */
  name?: string;
}

/**
 * What every policy shares: counters, the event emitter, `execute` through the pipeline engine.
 * A policy is its own single layer.
 * @internal
 */
export abstract class PolicyBase<E extends CommonEvents, S extends CommonStats, R = never>
  implements Policy<E, S, R>, Layer, HasLayers
{
  abstract readonly kind: PolicyKind;
  declare readonly [SUBSTITUTE]?: Substitutes<R>;
  readonly name: string | undefined;
  protected readonly events = new Emitter<E>();
  protected calls = 0;
  protected successes = 0;
  protected failures = 0;
  protected rejections = 0;
  private engine: Engine | undefined;

  constructor(options: BaseOptions | undefined) {
    this.name = options?.name;
  }

  /** A policy is its own single layer (made on demand: idle policies stay small). */
  get [LAYERS](): readonly Layer[] {
    return [this];
  }

  get timed(): boolean {
    return this.events.timed;
  }

  execute<T>(fn: PolicyFn<T>, opts?: ExecuteOptions): Promise<T | R> {
    return (this.engine ??= new Engine([this])).execute(fn, opts);
  }

  on<K extends keyof E>(event: K, listener: Listener<E[K]>): () => void {
    return this.events.on(event, listener);
  }

  abstract stats(): S;

  abstract enter(ctx: CallContext, level: number): CallContext | Promise<CallContext> | KeelError;
  abstract onSuccess(ctx: CallContext, level: number): void;
  abstract onFailure(ctx: CallContext, error: unknown, next: Next, level: number): unknown;

  /** The counters every policy has, for `stats()`. */
  protected commonStats(): CommonStats {
    return {
      calls: this.calls,
      successes: this.successes,
      failures: this.failures,
      rejections: this.rejections,
    };
  }

  /** A label for messages: `the circuit breaker "s3"` or `the circuit breaker`. */
  protected label(what: string): string {
    return this.name === undefined ? what : `${what} "${this.name}"`;
  }

  protected succeeded(ctx: CallContext): void {
    this.successes++;
    if (this.events.timed && this.events.has('success')) {
      this.events.emit(
        'success',
        ctx.startedAt >= 0 ? { durationMs: performance.now() - ctx.startedAt } : {},
      );
    }
  }

  protected failed(ctx: CallContext, error: unknown): void {
    this.failures++;
    if (this.events.timed && this.events.has('failure')) {
      this.events.emit(
        'failure',
        ctx.startedAt >= 0 ? { error, durationMs: performance.now() - ctx.startedAt } : { error },
      );
    }
  }

  /** Counts and announces a rejection; returns the error for `enter` to hand back. */
  protected rejected(reason: RejectionReason, error: KeelError): KeelError {
    this.rejections++;
    this.failures++;
    if (this.events.has('rejected')) this.events.emit('rejected', { reason, error });
    if (this.events.has('failure')) this.events.emit('failure', { error });
    return error;
  }
}

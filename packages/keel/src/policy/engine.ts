import type { KeelError } from '../errors/index.js';
import { abortedError, CallContext, contextAt } from './context.js';
import { timedEmitters } from './events.js';
import { rejectSoon } from './fast-reject.js';
import type { ExecuteOptions, PolicyFn } from './policy.js';

/**
 * What `onFailure` returns to let a failure go on to the layers above unchanged. Passing it on
 * this way, rather than rethrowing, keeps a failure that no layer handles free of exceptions.
 */
export const PASS: unique symbol = Symbol('keel.pass');

/** Runs the layers below some level again with a given context (what retry and hedge need). */
export type Next = (ctx: CallContext) => Promise<unknown>;

/**
 * What a policy contributes to a pipeline. Most policies are hooks around the call: `enter`
 * admits (returning the context for the layers below, possibly a child holding per-call state),
 * waits (a promise of that context) or rejects (an error); `onSuccess` and `onFailure` see the
 * outcome, and `onFailure` may recover by returning a value (fallback) or by running the layers
 * below again (retry); it returns {@link PASS} to pass the failure on, or throws to replace it. With only hooks, a whole pipeline runs in one async frame.
 * Policies that must run the layers below themselves (hedge, aggressive timeout) set `wrap`.
 * @internal
 */
export interface Layer {
  enter(ctx: CallContext, level: number): CallContext | Promise<CallContext> | KeelError;
  onSuccess(ctx: CallContext, level: number): void;
  onFailure(ctx: CallContext, error: unknown, next: Next, level: number): unknown;
  /**
   * For the outermost layer: a rejection decided before any context exists (an open breaker), or
   * undefined to go on. Lets a rejected call cost no context object at all.
   */
  rejectNow?: (() => KeelError | undefined) | undefined;
  /** True when the layer needs call durations (a success or failure listener). */
  readonly timed: boolean;
  wrap?: ((ctx: CallContext, next: Next, level: number) => Promise<unknown>) | undefined;
}

/** Access to a policy's layers, so pipelines can flatten them. @internal */
export const LAYERS: unique symbol = Symbol('keel.layers');

/** Anything that carries layers (every keel policy). @internal */
export interface HasLayers {
  readonly [LAYERS]: readonly Layer[];
}

/** Runs a function through a list of layers, outermost first. @internal */
export class Engine {
  private readonly layers: readonly Layer[];
  private readonly n: number;
  private readonly hooksOnly: boolean;
  private readonly rejectNow: (() => KeelError | undefined) | undefined;

  constructor(layers: readonly Layer[]) {
    this.layers = layers;
    this.n = layers.length;
    const first = layers[0];
    this.rejectNow = first?.rejectNow?.bind(first);
    this.hooksOnly = layers.every((l) => l.wrap === undefined);
  }

  execute<T>(fn: PolicyFn<T>, opts: ExecuteOptions | undefined): Promise<T> {
    const signal = opts?.signal;
    if (signal?.aborted === true) return rejectSoon(abortedError(signal.reason, 'the call did not start'));
    if (this.rejectNow !== undefined) {
      const rejection = this.rejectNow();
      if (rejection !== undefined) return rejectSoon(rejection);
    }
    const root = new CallContext(undefined, signal, -1, 1);
    if (timedEmitters.count !== 0) {
      for (const layer of this.layers) {
        if (layer.timed) {
          root.startedAt = performance.now();
          break;
        }
      }
    }
    if (this.hooksOnly) return this.runHooks(root, fn);
    return this.runWrapped(root, fn);
  }

  private async runWrapped<T>(root: CallContext, fn: PolicyFn<T>): Promise<T> {
    try {
      return (await this.runFrom(0, root, fn)) as T;
    } finally {
      root.dispose();
    }
  }

  /**
   * The hot path: every layer's enter (synchronously), then one async frame with one await of
   * `fn`, then every layer's onSuccess. Waiting admissions and rejections leave for slower paths.
   */
  private runHooks<T>(root: CallContext, fn: PolicyFn<T>): Promise<T> {
    const layers = this.layers;
    const n = this.n;
    let ctx = root;
    for (let i = 0; i < n; i++) {
      const r = (layers[i] as Layer).enter(ctx, i);
      if (r instanceof CallContext) ctx = r;
      else if (i === 0 && !(r instanceof Promise)) {
        // Turned away by the outermost layer (an open breaker, a full bulkhead): the fast rejection.
        root.dispose();
        return rejectSoon(r);
      } else return this.admitSlowly(i, ctx, r, fn, root) as Promise<T>;
    }
    return this.invoke(ctx, fn, root);
  }

  private async invoke<T>(ctx: CallContext, fn: PolicyFn<T>, root: CallContext): Promise<T> {
    let value: T;
    try {
      value = await fn(ctx);
    } catch (err) {
      return (await this.unwind(this.n - 1, ctx, err, fn, root)) as T;
    }
    this.succeed(this.n - 1, ctx);
    root.dispose();
    return value;
  }

  /** Layer `level` answered its enter with a wait (a promise of the context) or a rejection. */
  private admitSlowly(
    level: number,
    above: CallContext,
    answer: Promise<CallContext> | KeelError,
    fn: PolicyFn<unknown>,
    root: CallContext,
  ): Promise<unknown> {
    if (answer instanceof Promise) return this.waitForAdmission(level, above, answer, fn, root);
    if (level === 0) {
      root.dispose();
      return rejectSoon(answer);
    }
    return this.unwind(level - 1, above, answer, fn, root);
  }

  private async waitForAdmission(
    level: number,
    above: CallContext,
    answer: Promise<CallContext>,
    fn: PolicyFn<unknown>,
    root: CallContext,
  ): Promise<unknown> {
    let ctx: CallContext;
    try {
      ctx = await answer;
    } catch (err) {
      return await this.unwind(level - 1, above, err, fn, root);
    }
    const layers = this.layers;
    for (let i = level + 1; i < this.n; i++) {
      const r = (layers[i] as Layer).enter(ctx, i);
      if (r instanceof CallContext) ctx = r;
      else return await this.admitSlowly(i, ctx, r, fn, root);
    }
    return await this.invoke(ctx, fn, root);
  }

  private succeed(from: number, ctx: CallContext): void {
    const layers = this.layers;
    let c = ctx;
    for (let i = from; i >= 0; i--) {
      while (c.level > i && c.parent !== undefined) c = c.parent;
      (layers[i] as Layer).onSuccess(c, i);
    }
  }

  /**
   * A failure reached layer `from`: let it and the layers above it decide, innermost first.
   * Layers that pass the failure on synchronously cost no promise; the final rejection is
   * deferred a microtask so the caller's handler is attached first (see rejectSoon).
   */
  private unwind(
    from: number,
    ctx: CallContext,
    error: unknown,
    fn: PolicyFn<unknown>,
    root: CallContext,
  ): Promise<unknown> {
    let err = error;
    let c = ctx;
    for (let i = from; i >= 0; i--) {
      c = contextAt(c, i);
      let answer: unknown;
      try {
        answer = (this.layers[i] as Layer).onFailure(c, err, this.next(i + 1, fn), i);
      } catch (e) {
        err = e;
        continue;
      }
      if (answer === PASS) continue;
      return this.recover(i, c, answer, fn, root);
    }
    root.dispose();
    return rejectSoon(err);
  }

  /** Layer `level` is recovering (retrying, substituting): wait, then let the layers above see the outcome. */
  private async recover(
    level: number,
    c: CallContext,
    answer: unknown,
    fn: PolicyFn<unknown>,
    root: CallContext,
  ): Promise<unknown> {
    let value: unknown;
    try {
      value = await answer;
    } catch (e) {
      return await this.unwind(level - 1, c, e, fn, root);
    }
    this.succeed(level - 1, c);
    root.dispose();
    return value;
  }

  private next(level: number, fn: PolicyFn<unknown>): Next {
    return (ctx) => this.runFrom(level, ctx, fn);
  }

  /** The general (nested) path, used below a retry or a wrapping layer. */
  private async runFrom(level: number, ctx: CallContext, fn: PolicyFn<unknown>): Promise<unknown> {
    if (level === this.n) return fn(ctx);
    const layer = this.layers[level] as Layer;
    if (layer.wrap !== undefined) return layer.wrap(ctx, this.next(level + 1, fn), level);
    const r = layer.enter(ctx, level);
    let inner: CallContext;
    if (r instanceof CallContext) inner = r;
    else if (r instanceof Promise) inner = await r;
    else throw r;
    let value: unknown;
    try {
      value = await this.runFrom(level + 1, inner, fn);
    } catch (err) {
      const answer = layer.onFailure(inner, err, this.next(level + 1, fn), level);
      if (answer === PASS) throw err;
      return answer;
    }
    layer.onSuccess(inner, level);
    return value;
  }
}

/** The layers of a policy, or an adapter layer for a foreign policy with an `execute` method. @internal */
export function layersOf(policy: object): readonly Layer[] {
  const own = (policy as Partial<HasLayers>)[LAYERS];
  if (own !== undefined) return own;
  const foreign = policy as { execute(fn: () => unknown, opts?: ExecuteOptions): Promise<unknown> };
  return [
    {
      timed: false,
      enter: (ctx) => ctx,
      onSuccess: () => undefined,
      onFailure: () => PASS,
      wrap: (ctx, next) => foreign.execute(() => next(ctx), { signal: ctx.signal }),
    },
  ];
}

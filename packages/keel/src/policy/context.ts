import { keelError, type KeelError } from '../errors/index.js';
import type { PolicyContext } from './policy.js';

const NOT_ABORTED: unique symbol = Symbol('keel.notAborted');

/**
 * The per-call context handed down a pipeline and to the user's function. It is also an abort
 * scope: a layer that may cancel what runs below it (timeout, hedge, retry between attempts)
 * makes a child. The AbortController behind `signal` is created only when someone reads `signal`,
 * and is linked to its parent's signal only then.
 * @internal
 */
export class CallContext implements PolicyContext {
  attempt: number;
  /** performance.now() when the call entered the pipeline, or -1 when nobody listens for durations. */
  startedAt = -1;
  /** Index of the pipeline layer that made this context; -1 for the root. */
  readonly level: number;
  readonly parent: CallContext | undefined;
  /** The caller's signal (root contexts only). */
  private readonly outer: AbortSignal | undefined;
  private controller: AbortController | undefined;
  private reason: unknown = NOT_ABORTED;
  private unlink: (() => void) | undefined;
  // Slots of a timeout layer, kept here so the hot path builds one object of one class.
  /** @internal */ prev: CallContext | undefined = undefined;
  /** @internal */ next: CallContext | undefined = undefined;
  /** @internal */ expiresAtTick = 0;
  /** @internal */ timeoutError: KeelError | undefined = undefined;
  /** @internal */ linked = false;
  /** @internal */ settle: ((error: KeelError) => void) | undefined = undefined;

  constructor(
    parent: CallContext | undefined,
    outer: AbortSignal | undefined,
    level: number,
    attempt: number,
  ) {
    this.parent = parent;
    this.outer = outer;
    this.level = level;
    this.attempt = attempt;
  }

  get signal(): AbortSignal {
    if (this.controller !== undefined) return this.controller.signal;
    const controller = new AbortController();
    this.controller = controller;
    if (this.reason !== NOT_ABORTED) {
      controller.abort(this.reason);
      return controller.signal;
    }
    const up = this.parent !== undefined ? this.parent.signal : this.outer;
    if (up !== undefined) {
      if (up.aborted) controller.abort(up.reason);
      else {
        const onAbort = (): void => {
          controller.abort(up.reason);
        };
        up.addEventListener('abort', onAbort, { once: true });
        this.unlink = () => {
          up.removeEventListener('abort', onAbort);
        };
      }
    }
    return controller.signal;
  }

  /** Whether this scope or one above it has been aborted (never creates a signal). */
  get aborted(): boolean {
    if (this.reason !== NOT_ABORTED) return true;
    if (this.controller?.signal.aborted === true) return true;
    if (this.parent !== undefined) return this.parent.aborted;
    return this.outer?.aborted === true;
  }

  /** The reason of the nearest abort, if any. */
  abortReason(): unknown {
    if (this.reason !== NOT_ABORTED) return this.reason;
    if (this.controller?.signal.aborted === true) return this.controller.signal.reason;
    if (this.parent !== undefined) return this.parent.abortReason();
    return this.outer?.aborted === true ? this.outer.reason : undefined;
  }

  /** Aborts this scope (and, through their signals, every scope below it). */
  abort(reason: unknown): void {
    if (this.reason !== NOT_ABORTED) return;
    this.reason = reason;
    this.controller?.abort(reason);
  }

  /** A child scope for layer `level`. */
  child(level: number, attempt: number = this.attempt): CallContext {
    const c = new CallContext(this, undefined, level, attempt);
    c.startedAt = this.startedAt;
    return c;
  }

  /** Detaches from the parent's signal; call when the scope's work is over. */
  dispose(): void {
    if (this.unlink !== undefined) {
      this.unlink();
      this.unlink = undefined;
    }
  }
}

/** The context a layer at `level` sees: the deepest one made at or above that level. */
export function contextAt(ctx: CallContext, level: number): CallContext {
  let c = ctx;
  while (c.level > level && c.parent !== undefined) c = c.parent;
  return c;
}

/** The ABORTED error for a call cancelled by its caller. */
export function abortedError(reason: unknown, what: string): KeelError {
  if (
    typeof reason === 'object' &&
    reason !== null &&
    (reason as { isKeelError?: unknown }).isKeelError === true
  ) {
    return reason as KeelError;
  }
  return keelError('ABORTED', `${what}: the caller aborted the call`, {}, { cause: reason, stack: false });
}

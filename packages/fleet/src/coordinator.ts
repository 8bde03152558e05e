/*
 * What the processes serving one cache coordinate, as @keel/fleet sees it. The gateway's
 * Coordinator (packages/gateway/src/coord/coordinator.ts) has the same shape: RedisCoordinator
 * implements it structurally, and takes one of the gateway's own (one process, or the workers of
 * one host) to fall back on while Redis cannot be reached.
 */

/** An object a write changed: bucket, key and version (the cache's ObjectIdentity). */
export interface ObjectRef {
  bucket: string;
  key: string;
  versionId?: string | null;
}

/**
 * The lease on one piece of work that one process at a time should do: `leader` does it and
 * calls `done`; a `follower` waits until `settled` (whether the result is where others find it).
 */
export type Lease =
  { role: 'leader'; done(ok: boolean): void } | { role: 'follower'; settled: Promise<boolean> };

/** A circuit breaker's state as plain data, to be shared. */
export interface SharedBreakerState {
  state: 'closed' | 'open' | 'half-open';
  /** When an open breaker lets a probe through (epoch ms), if open. */
  openUntil?: number;
}

/** Coordination of the processes that serve one cache (see the gateway's interface of the same name). */
export interface Coordinator {
  readonly kind: string;
  lease(key: string): Promise<Lease>;
  invalidate(id: ObjectRef): Promise<void>;
  onInvalidate(listener: (id: ObjectRef) => Promise<void> | void): () => void;
  publishBreaker(name: string, state: SharedBreakerState): void;
  onBreaker(listener: (name: string, state: SharedBreakerState) => void): () => void;
  /** Shares this process's net change to the retry budget `name` since it last published. */
  publishBudget(name: string, tokens: number): void;
  /** Calls `listener` with each change another process published to a retry budget. */
  onBudget(listener: (name: string, tokens: number) => void): () => void;
  close(): Promise<void>;
}

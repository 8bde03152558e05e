/*
 * What the processes serving one cache coordinate, behind one interface: the workers of one host
 * through their primary and one process alone (the gateway's ClusterCoordinator and
 * LocalCoordinator), several hosts through Redis (RedisCoordinator, here). The gateway takes its
 * Coordinator type from here.
 */

/** An object a write changed: bucket, key and version (the same shape as keel/cache's ObjectIdentity). */
export interface ObjectRef {
  bucket: string;
  key: string;
  versionId?: string | null;
}

/**
 * The lease on one piece of work that one process at a time should do (the origin fetch of one
 * slice): `leader` does it and calls `done`; a `follower` waits until the leader is done (`settled`
 * says whether the result is where the others can find it: the slice on disk) and then takes it
 * from there, or does the work itself when the leader failed or went away.
 */
export type Lease =
  { role: 'leader'; done(ok: boolean): void } | { role: 'follower'; settled: Promise<boolean> };

/** A circuit breaker's state as plain data, to be shared (see {@link Coordinator.publishBreaker}). */
export interface SharedBreakerState {
  state: 'closed' | 'open' | 'half-open';
  /** When an open breaker lets a probe through (epoch ms), if open. */
  openUntil?: number;
}

/** Coordination of the processes that serve one cache. */
export interface Coordinator {
  /** What coordinates: `local` (this process only), `cluster` (the workers of one host) … */
  readonly kind: string;
  /** The lease on `key` (for a slice fill: the slice's fill key). */
  lease(key: string): Promise<Lease>;
  /**
   * Tells every other process that `id` changed (a write through the gateway): resolves once each
   * has dropped what it knew of it, so the writer's answer goes out after every process forgot
   * the old version.
   */
  invalidate(id: ObjectRef): Promise<void>;
  /** Calls `listener` (and waits for it) when another process invalidates an object. */
  onInvalidate(listener: (id: ObjectRef) => Promise<void> | void): () => void;
  /**
   * Shares a breaker's state with the other processes (last writer wins). Only `open` and
   * `closed` are published: each process moves an open breaker to half-open itself at
   * `openUntil`, and its probes are admitted one at a time across processes by the lease on
   * `breaker:<name>` (the leader probes, a follower answers as an open breaker does).
   */
  publishBreaker(name: string, state: SharedBreakerState): void;
  /** Calls `listener` when another process published a breaker's state. */
  onBreaker(listener: (name: string, state: SharedBreakerState) => void): () => void;
  /**
   * Shares this process's net change to the retry budget `name` since it last published (tokens
   * its calls earned minus what its retries spent; time refills excluded: each process refills
   * its own copy). Every process keeps a copy of the one budget and adds the others' changes to
   * it, so the fleet retries within one budget, late by at most the publishing period.
   */
  publishBudget(name: string, tokens: number): void;
  /** Calls `listener` with each change another process published to a retry budget. */
  onBudget(listener: (name: string, tokens: number) => void): () => void;
  close(): Promise<void>;
}

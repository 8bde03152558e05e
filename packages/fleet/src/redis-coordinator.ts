import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Redis } from 'ioredis';
import type { Coordinator, Lease, ObjectRef, SharedBreakerState } from './coordinator.js';
import { fleetKeys, type FleetKeys } from './keys.js';
import { liveInstances, removeHeartbeat, writeHeartbeat, type InstanceStatus } from './instances.js';
import { createRedisClient, type RedisClientOptions } from './redis-client.js';
import { LeaseTable } from './lease-table.js';

/** Options of {@link RedisCoordinator}. */
export interface RedisCoordinatorOptions extends RedisClientOptions {
  /** `redis://…` (checked with parseRedisUrl first: its password is never logged). */
  url: string;
  /** What coordinates while Redis cannot be reached: this process alone, or the workers of its host. */
  fallback: Coordinator;
  /** Prefix of every key and channel (default `keel`): fleets sharing one Redis use different ones. */
  prefix?: string;
  /** A lease lives this long unless its holder renews it (default 5,000 ms; renewed every third of it). */
  leaseTtlMs?: number;
  /** How often a waiting follower checks that its leader's lease still exists (default 250 ms). */
  leaseCheckMs?: number;
  /** Heartbeat period (default 1,000 ms); a heartbeat lives three periods. */
  heartbeatMs?: number;
  /** Longest a writer waits for the live instances to acknowledge an invalidation (default 2,000 ms). */
  invalidateWaitMs?: number;
  /** This instance's status for its heartbeat (default: only its identity). */
  status?: () =>
    | Partial<Omit<InstanceStatus, 'id' | 'host' | 'pid' | 'started' | 'at'>>
    | Promise<Partial<Omit<InstanceStatus, 'id' | 'host' | 'pid' | 'started' | 'at'>>>;
  /** Log sink (warnings about Redis, password redacted). */
  log?: (level: 'info' | 'warn', msg: string) => void;
}

/** Whether the fleet's Redis is being used, and why not. */
export type CoordinatorAvailability = { available: true } | { available: false; reason: string };

/** Most lease keys followed at once by one process; beyond it, it coordinates alone. */
export const MAX_FOLLOWED_LEASES = 10_000;
/** Most invalidations waiting for acknowledgements at once; beyond it a writer waits for none. */
export const MAX_PENDING_INVALIDATIONS = 10_000;
/** Longest lease key accepted (a fill key is a hash, an ETag and an index). */
export const MAX_LEASE_KEY_LENGTH = 1024;

interface InvalidateMessage {
  from: string;
  req: string;
  id: ObjectRef;
}

/**
 * Coordinates the gateways of several hosts (and their workers) through Redis:
 * - leases: `SET NX PX` with a token, renewed while held, released only by their owner; followers
 *   on any instance learn the holder is done by pub/sub, and fetch themselves when its lease
 *   expires (a killed instance) — checked every `leaseCheckMs`;
 * - invalidations: published to every instance, answered once each live one (heartbeat not
 *   expired) acknowledged, or after `invalidateWaitMs`;
 * - breaker states: published on change and kept in a hash a joining instance reads;
 * - heartbeats with a TTL for `keel fleet status`.
 * While Redis cannot be reached (not connected, or a command failed or timed out), every call
 * goes to `fallback`, and {@link onAvailability} listeners hear it; it rejoins when a heartbeat
 * succeeds again. Invalidations and breaker states also always go through `fallback` (the workers
 * of this host), so a sibling that lost Redis still hears them.
 */
export class RedisCoordinator implements Coordinator {
  readonly kind = 'redis';
  /** This instance's id in the fleet. */
  readonly id = `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private readonly keys: FleetKeys;
  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly fallback: Coordinator;
  private readonly leases: LeaseTable;
  private readonly started = new Date().toISOString();
  private availability: CoordinatorAvailability = { available: false, reason: 'connecting' };
  private readonly availabilityListeners = new Set<(a: CoordinatorAvailability) => void>();
  private readonly invalidateListeners = new Set<(id: ObjectRef) => Promise<void> | void>();
  private readonly breakerListeners = new Set<(name: string, state: SharedBreakerState) => void>();
  private readonly budgetListeners = new Set<(name: string, tokens: number) => void>();
  private readonly pending = new Map<string, { left: Set<string>; done: () => void }>();
  private seq = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  private closed = false;
  private failedBeats = 0;
  /** The subscriber listens on every channel (set once SUBSCRIBE answered, cleared when it disconnects). */
  private subscribed = false;
  private readonly heartbeatMs: number;
  private readonly invalidateWaitMs: number;
  private readonly log: NonNullable<RedisCoordinatorOptions['log']>;
  private lastError = '';

  constructor(private readonly options: RedisCoordinatorOptions) {
    this.keys = fleetKeys(options.prefix);
    this.fallback = options.fallback;
    this.heartbeatMs = options.heartbeatMs ?? 1_000;
    this.invalidateWaitMs = options.invalidateWaitMs ?? 2_000;
    this.log = options.log ?? (() => undefined);
    const onError = (message: string): void => {
      // One line per distinct error, not one per reconnection attempt.
      if (message !== this.lastError) this.log('warn', message);
      this.lastError = message;
    };
    this.cmd = createRedisClient(options.url, onError, options);
    this.sub = createRedisClient(options.url, onError, options);
    this.leases = new LeaseTable(this.cmd, this.keys, {
      ttlMs: options.leaseTtlMs ?? 5_000,
      checkMs: options.leaseCheckMs ?? 250,
      onRedisFailed: (err) => this.commandFailed(err),
    });
    this.cmd.on('close', () => this.down('connection closed'));
    this.sub.on('close', () => {
      this.subscribed = false;
      this.down('subscriber connection closed');
    });
    this.sub.on('ready', () => void this.subscribe());
    this.sub.on('message', (channel: string, message: string) => this.receive(channel, message));
  }

  /**
   * Connects and sends the first heartbeat; resolves whether or not Redis answered (without it
   * the fallback coordinates until it does). Heartbeats then run every `heartbeatMs`.
   */
  async start(): Promise<CoordinatorAvailability> {
    await Promise.allSettled([this.cmd.connect(), this.sub.connect()]);
    if (this.sub.status === 'ready' && !this.subscribed) await this.subscribe();
    await this.beat();
    this.heartbeat = setInterval(() => void this.beat(), this.heartbeatMs);
    this.heartbeat.unref();
    return this.availability;
  }

  /**
   * The live instances of the fleet (heartbeats not expired), oldest first, as `keel fleet status`
   * lists them; undefined when they cannot be listed (Redis unusable or failing): not "none".
   */
  async instances(): Promise<InstanceStatus[] | undefined> {
    if (!this.status.available) return undefined;
    try {
      return await liveInstances(this.cmd, this.keys);
    } catch {
      return undefined;
    }
  }

  /** Whether Redis is used now. */
  get status(): CoordinatorAvailability {
    return this.availability;
  }

  /** Calls `listener` each time Redis becomes unusable or usable again. Returns a remover. */
  onAvailability(listener: (a: CoordinatorAvailability) => void): () => void {
    this.availabilityListeners.add(listener);
    return () => this.availabilityListeners.delete(listener);
  }

  lease(key: string): Promise<Lease> {
    if (
      !this.availability.available ||
      key.length > MAX_LEASE_KEY_LENGTH ||
      this.leases.following >= MAX_FOLLOWED_LEASES
    )
      return this.fallback.lease(key);
    return this.leases
      .take(key, `${this.id}:${this.seq++}`)
      .then((lease) => lease ?? this.fallback.lease(key));
  }

  async invalidate(id: ObjectRef): Promise<void> {
    await Promise.all([this.fallback.invalidate(id), this.invalidateFleet(id)]);
  }

  onInvalidate(listener: (id: ObjectRef) => Promise<void> | void): () => void {
    this.invalidateListeners.add(listener);
    const off = this.fallback.onInvalidate(listener);
    return () => {
      this.invalidateListeners.delete(listener);
      off();
    };
  }

  publishBreaker(name: string, state: SharedBreakerState): void {
    this.fallback.publishBreaker(name, state);
    if (!this.availability.available) return;
    const field = JSON.stringify({ from: this.id, name, state });
    const write =
      state.state === 'closed'
        ? this.cmd.hdel(this.keys.breakers, name)
        : this.cmd.hset(this.keys.breakers, name, field);
    void Promise.all([write, this.cmd.publish(this.keys.breaker, field)]).catch((err: unknown) =>
      this.commandFailed(err),
    );
  }

  onBreaker(listener: (name: string, state: SharedBreakerState) => void): () => void {
    this.breakerListeners.add(listener);
    const off = this.fallback.onBreaker(listener);
    return () => {
      this.breakerListeners.delete(listener);
      off();
    };
  }

  publishBudget(name: string, tokens: number): void {
    this.fallback.publishBudget(name, tokens);
    if (!this.availability.available) return;
    this.cmd
      .publish(this.keys.budget, JSON.stringify({ from: this.id, name, tokens }))
      .catch((err: unknown) => this.commandFailed(err));
  }

  onBudget(listener: (name: string, tokens: number) => void): () => void {
    this.budgetListeners.add(listener);
    const off = this.fallback.onBudget(listener);
    return () => {
      this.budgetListeners.delete(listener);
      off();
    };
  }

  /** Stops heartbeats, removes this instance's, tells its followers to fetch, and disconnects (the fallback stays open: its owner closes it). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.leases.close();
    for (const p of this.pending.values()) p.done();
    this.pending.clear();
    if (this.availability.available)
      await removeHeartbeat(this.cmd, this.keys, this.id).catch(() => undefined);
    this.cmd.disconnect();
    this.sub.disconnect();
  }

  private async invalidateFleet(id: ObjectRef): Promise<void> {
    if (!this.availability.available || this.pending.size >= MAX_PENDING_INVALIDATIONS) return;
    try {
      const others = (await liveInstances(this.cmd, this.keys)).map((i) => i.id).filter((i) => i !== this.id);
      if (others.length === 0) return;
      const req = `${this.id}:${this.seq++}`;
      const acked = new Promise<void>((resolve) => {
        const timer = setTimeout(() => finish(), this.invalidateWaitMs);
        timer.unref();
        const finish = (): void => {
          clearTimeout(timer);
          this.pending.delete(req);
          resolve();
        };
        this.pending.set(req, { left: new Set(others), done: finish });
      });
      const message: InvalidateMessage = { from: this.id, req, id };
      await this.cmd.publish(this.keys.invalidate, JSON.stringify(message));
      await acked;
    } catch (err) {
      // The writer answers: the others drop the object when its TTL ends, or at the next write.
      this.commandFailed(err);
    }
  }

  private async beat(): Promise<void> {
    if (this.closed) return;
    const status: InstanceStatus = {
      port: 0,
      health: 'pass',
      hitRatio: 0,
      fillsInFlight: 0,
      breakers: {},
      // A status that cannot be read leaves the defaults: the heartbeat still says this instance lives.
      ...(await (async () => this.options.status?.())().catch(() => undefined)),
      id: this.id,
      host: os.hostname(),
      pid: process.pid,
      started: this.started,
      at: new Date().toISOString(),
    };
    if (this.cmd.status !== 'ready' || !this.subscribed) {
      this.down(
        this.cmd.status === 'ready' ? 'subscriber not connected' : `not connected (${this.cmd.status})`,
      );
      return;
    }
    try {
      await writeHeartbeat(this.cmd, this.keys, status, this.heartbeatMs * 3);
      this.failedBeats = 0;
      if (!this.availability.available) await this.up();
    } catch (err) {
      // One slow answer (a busy event loop) is not an outage; two heartbeats in a row are.
      if (++this.failedBeats >= 2 || !this.availability.available) this.down(err);
      else this.commandFailed(err);
    }
  }

  private async subscribe(): Promise<void> {
    try {
      const k = this.keys;
      await this.sub.subscribe(k.settled, k.invalidate, k.breaker, k.budget, k.ack(this.id));
      this.subscribed = true;
      // Back after a disconnection: rejoin now rather than at the next heartbeat.
      if (!this.availability.available && this.heartbeat) await this.beat();
    } catch (err) {
      this.down(err);
    }
  }

  /** Redis answers again: read the breaker states published meanwhile, then use it. */
  private async up(): Promise<void> {
    const states = await this.cmd.hgetall(this.keys.breakers);
    for (const field of Object.values(states).slice(0, MAX_FOLLOWED_LEASES)) this.deliverBreaker(field);
    this.availability = { available: true };
    this.lastError = '';
    this.log('info', 'coordinator: Redis reachable, coordinating with the fleet');
    for (const l of this.availabilityListeners) l(this.availability);
  }

  /** One command failed or timed out: that call fell back; Redis is not given up on for it. */
  private commandFailed(err: unknown): void {
    const message = `coordinator: a Redis command failed (${err instanceof Error ? err.message : String(err)}); that call went on without the fleet`;
    if (message !== this.lastError) this.log('warn', message);
    this.lastError = message;
  }

  private down(err: unknown): void {
    // Followers waiting on Redis fetch for themselves (or through the fallback) at once.
    this.leases.abandonAll();
    if (!this.availability.available || this.closed) return;
    const reason = err instanceof Error ? err.message : String(err);
    this.availability = { available: false, reason };
    this.log(
      'warn',
      `coordinator: Redis unusable (${reason}); coordinating without the fleet until it returns`,
    );
    for (const l of this.availabilityListeners) l(this.availability);
  }

  private receive(channel: string, message: string): void {
    let m: unknown;
    try {
      m = JSON.parse(message);
    } catch {
      return;
    }
    if (typeof m !== 'object' || m === null) return;
    if (channel === this.keys.settled) {
      const { key, ok } = m as { key?: unknown; ok?: unknown };
      if (typeof key === 'string') this.leases.settle(key, ok === true);
    } else if (channel === this.keys.invalidate) {
      const { from, req, id } = m as Partial<InvalidateMessage>;
      if (typeof from !== 'string' || typeof req !== 'string' || typeof id !== 'object' || from === this.id)
        return;
      void Promise.allSettled([...this.invalidateListeners].map(async (l) => l(id))).then(() =>
        this.cmd
          .publish(this.keys.ack(from), JSON.stringify({ req, by: this.id }))
          .catch((err: unknown) => this.commandFailed(err)),
      );
    } else if (channel === this.keys.ack(this.id)) {
      const { req, by } = m as { req?: unknown; by?: unknown };
      const p = typeof req === 'string' ? this.pending.get(req) : undefined;
      if (!p || typeof by !== 'string') return;
      p.left.delete(by);
      if (p.left.size === 0) p.done();
    } else if (channel === this.keys.breaker) this.deliverBreaker(message);
    else if (channel === this.keys.budget) {
      const { from, name, tokens } = m as { from?: unknown; name?: unknown; tokens?: unknown };
      if (
        from === this.id ||
        typeof name !== 'string' ||
        typeof tokens !== 'number' ||
        !Number.isFinite(tokens)
      )
        return;
      for (const l of this.budgetListeners) l(name, tokens);
    }
  }

  private deliverBreaker(field: string): void {
    try {
      const { from, name, state } = JSON.parse(field) as {
        from?: unknown;
        name?: unknown;
        state?: SharedBreakerState;
      };
      if (from === this.id || typeof name !== 'string' || typeof state?.state !== 'string') return;
      for (const l of this.breakerListeners) l(name, state);
    } catch {
      // Not a state this version wrote: ignored.
    }
  }
}

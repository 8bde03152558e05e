import type { Redis } from 'ioredis';
import type { Lease } from './coordinator.js';
import type { FleetKeys } from './keys.js';

/**
 * Releases a lease only if its token is still the one stored (its holder's), notes how it ended
 * for a while (a follower that checks before the message reaches it reads it there), then says so.
 */
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
redis.call('set', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('publish', KEYS[2], ARGV[2])
return 1`;

/** Extends a lease only if its token is still the one stored. */
const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0`;

interface LeaseTableOptions {
  ttlMs: number;
  checkMs: number;
  /** A Redis command failed (the coordinator logs it; only its heartbeats and connections decide that Redis is down). */
  onRedisFailed(err: unknown): void;
}

/**
 * The leases of one process in Redis: those it holds (renewed every third of their TTL by one
 * timer for all) and those it follows (each key's waiters told when its holder publishes that it
 * is done, or when the lease is found gone — its holder died and it expired — by one timer
 * checking every followed key each `checkMs`).
 */
export class LeaseTable {
  private readonly held = new Map<string, string>();
  private readonly followed = new Map<string, ((ok: boolean) => void)[]>();
  private renewTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private checking = false;

  constructor(
    private readonly redis: Redis,
    private readonly keys: FleetKeys,
    private readonly options: LeaseTableOptions,
  ) {}

  /** Lease keys followed now. */
  get following(): number {
    return this.followed.size;
  }

  /** Leases held now. */
  get holding(): number {
    return this.held.size;
  }

  /** Takes or follows the lease on `key`; undefined when Redis failed (the caller falls back). */
  async take(key: string, token: string): Promise<Lease | undefined> {
    // Registered before asking: the holder's "done" may arrive on the subscriber connection
    // before this connection's answer.
    let settle!: (ok: boolean) => void;
    const settled = new Promise<boolean>((resolve) => (settle = resolve));
    const waiters = this.followed.get(key) ?? [];
    waiters.push(settle);
    this.followed.set(key, waiters);
    let taken: string | null;
    try {
      taken = await this.redis.set(this.keys.lease(key), token, 'PX', this.options.ttlMs, 'NX');
    } catch (err) {
      this.forget(key, settle);
      this.options.onRedisFailed(err);
      return undefined;
    }
    if (taken !== 'OK') {
      this.startChecking();
      return { role: 'follower', settled };
    }
    this.forget(key, settle);
    this.held.set(key, token);
    this.startRenewing();
    let released = false;
    return {
      role: 'leader',
      done: (ok) => {
        if (released) return;
        released = true;
        this.held.delete(key);
        const message = JSON.stringify({ key, ok });
        this.redis
          .eval(
            RELEASE,
            3,
            this.keys.lease(key),
            this.keys.settled,
            this.keys.leaseOutcome(key),
            token,
            message,
            ok ? '1' : '0',
            this.options.ttlMs,
          )
          .catch((err: unknown) => this.options.onRedisFailed(err));
      },
    };
  }

  /** The holder of `key` is done: its followers go on. */
  settle(key: string, ok: boolean): void {
    const waiters = this.followed.get(key);
    if (!waiters) return;
    this.followed.delete(key);
    for (const w of waiters) w(ok);
  }

  /** Redis is gone: every follower goes on as if its leader failed (it asks again, or fetches itself). */
  abandonAll(): void {
    for (const key of [...this.followed.keys()]) this.settle(key, false);
  }

  close(): void {
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.checkTimer) clearInterval(this.checkTimer);
    this.renewTimer = this.checkTimer = undefined;
    this.abandonAll();
    this.held.clear();
  }

  private forget(key: string, settle: (ok: boolean) => void): void {
    const waiters = this.followed.get(key)?.filter((w) => w !== settle) ?? [];
    if (waiters.length === 0) this.followed.delete(key);
    else this.followed.set(key, waiters);
  }

  private startRenewing(): void {
    if (this.renewTimer) return;
    this.renewTimer = setInterval(
      () => {
        if (this.held.size === 0) {
          clearInterval(this.renewTimer);
          this.renewTimer = undefined;
          return;
        }
        const batch = this.redis.pipeline();
        for (const [key, token] of this.held)
          batch.eval(RENEW, 1, this.keys.lease(key), token, this.options.ttlMs);
        batch.exec().catch((err: unknown) => this.options.onRedisFailed(err));
      },
      Math.max(1, Math.floor(this.options.ttlMs / 3)),
    );
    this.renewTimer.unref();
  }

  private startChecking(): void {
    if (this.checkTimer) return;
    this.checkTimer = setInterval(() => void this.check(), this.options.checkMs);
    this.checkTimer.unref();
  }

  /** Followed leases that no longer exist (released, its message missed, or expired): their followers go on. */
  private async check(): Promise<void> {
    if (this.followed.size === 0) {
      clearInterval(this.checkTimer);
      this.checkTimer = undefined;
      return;
    }
    if (this.checking) return;
    this.checking = true;
    try {
      const keys = [...this.followed.keys()];
      const values = await this.redis.mget(keys.map((k) => this.keys.lease(k)));
      const gone = keys.filter((_, i) => values[i] === null);
      if (gone.length === 0) return;
      // Released (its outcome noted) or expired with its holder (none).
      const outcomes = await this.redis.mget(gone.map((k) => this.keys.leaseOutcome(k)));
      gone.forEach((k, i) => this.settle(k, outcomes[i] === '1'));
    } catch (err) {
      // Whether the leaders are alive cannot be told: their followers ask again (or fetch).
      this.abandonAll();
      this.options.onRedisFailed(err);
    } finally {
      this.checking = false;
    }
  }
}

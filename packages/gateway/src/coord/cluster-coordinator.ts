import type { ObjectIdentity } from 'keel/cache';
import { isKeelMessage } from '../cluster/messages.js';
import type { CoordReply, CoordRequest } from './cluster-protocol.js';
import type { Coordinator, Lease, SharedBreakerState } from './coordinator.js';

/**
 * A worker's side of the one-host coordination: leases, invalidations, breaker states and budget changes go
 * through the primary ({@link ClusterCoordination}) over node:cluster's IPC channel.
 */
export class ClusterCoordinator implements Coordinator {
  readonly kind = 'cluster';
  private next = 0;
  private readonly replies = new Map<number, (m: CoordReply) => void>();
  private readonly waiting = new Map<string, ((ok: boolean) => void)[]>();
  private readonly invalidateListeners = new Set<(id: ObjectIdentity) => Promise<void> | void>();
  private readonly breakerListeners = new Set<(name: string, state: SharedBreakerState) => void>();
  private readonly budgetListeners = new Set<(name: string, tokens: number) => void>();
  private readonly onMessage = (m: unknown): void => {
    if (isKeelMessage(m)) this.receive(m as CoordReply);
  };

  private readonly unsubscribe: () => void;

  /**
   * `send` and `subscribe` are the channel to the primary: node:cluster's IPC by default
   * (`process.send`, `process.on('message')`).
   */
  constructor(
    private readonly send: (m: CoordRequest) => void = (m) => process.send?.(m),
    subscribe: (listener: (m: unknown) => void) => () => void = (listener) => {
      process.on('message', listener);
      return () => process.off('message', listener);
    },
  ) {
    this.unsubscribe = subscribe(this.onMessage);
  }

  lease(key: string): Promise<Lease> {
    const req = this.next++;
    return new Promise((resolve) => {
      // The follower's wait is registered as its answer arrives: the leader's "done" may be in
      // the same read of the channel, before any promise callback runs.
      this.replies.set(req, (m) => {
        if (m.keel === 'lease-reply' && m.role === 'follower') {
          const settled = new Promise<boolean>((done) => {
            const list = this.waiting.get(key) ?? [];
            list.push(done);
            this.waiting.set(key, list);
          });
          resolve({ role: 'follower', settled });
        } else resolve({ role: 'leader', done: (ok) => this.send({ keel: 'lease-done', key, ok }) });
      });
      this.send({ keel: 'lease', req, key });
    });
  }

  async invalidate(id: ObjectIdentity): Promise<void> {
    await this.ask((req) => ({ keel: 'invalidate', req, id }));
  }

  onInvalidate(listener: (id: ObjectIdentity) => Promise<void> | void): () => void {
    this.invalidateListeners.add(listener);
    return () => this.invalidateListeners.delete(listener);
  }

  publishBreaker(name: string, state: SharedBreakerState): void {
    this.send({ keel: 'breaker', name, state });
  }

  onBreaker(listener: (name: string, state: SharedBreakerState) => void): () => void {
    this.breakerListeners.add(listener);
    return () => this.breakerListeners.delete(listener);
  }

  publishBudget(name: string, tokens: number): void {
    this.send({ keel: 'budget', name, tokens });
  }

  onBudget(listener: (name: string, tokens: number) => void): () => void {
    this.budgetListeners.add(listener);
    return () => this.budgetListeners.delete(listener);
  }

  close(): Promise<void> {
    this.unsubscribe();
    // Nobody will answer any more: followers fetch for themselves, writers answer.
    for (const list of this.waiting.values()) for (const resolve of list) resolve(false);
    this.waiting.clear();
    for (const reply of this.replies.values()) reply({ keel: 'invalidate-reply', req: -1 });
    this.replies.clear();
    return Promise.resolve();
  }

  private ask(make: (req: number) => CoordRequest): Promise<CoordReply> {
    const req = this.next++;
    return new Promise((resolve) => {
      this.replies.set(req, resolve);
      this.send(make(req));
    });
  }

  private receive(m: CoordReply): void {
    switch (m.keel) {
      case 'lease-reply':
      case 'invalidate-reply': {
        const reply = this.replies.get(m.req);
        this.replies.delete(m.req);
        reply?.(m);
        return;
      }
      case 'lease-settled': {
        const list = this.waiting.get(m.key) ?? [];
        this.waiting.delete(m.key);
        for (const resolve of list) resolve(m.ok);
        return;
      }
      case 'invalidate': {
        // Each listener drops what this process knew; the primary hears back once all did.
        void Promise.allSettled([...this.invalidateListeners].map(async (l) => l(m.id))).then(() =>
          this.send({ keel: 'invalidated', req: m.req }),
        );
        return;
      }
      case 'breaker':
        for (const l of this.breakerListeners) l(m.name, m.state);
        return;
      case 'budget':
        for (const l of this.budgetListeners) l(m.name, m.tokens);
        return;
      default:
        return;
    }
  }
}

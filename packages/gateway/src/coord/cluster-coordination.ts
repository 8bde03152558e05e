import type { Worker } from 'node:cluster';
import { isKeelMessage } from '../cluster/messages.js';
import { MAX_LEASE_KEY_LENGTH, type CoordReply, type CoordRequest } from './cluster-protocol.js';

/** Leases held at once across the workers; beyond it every worker leads its own (no sharing). */
export const MAX_LEASES = 10_000;

/** Longest a writer waits for the other workers to drop an object before it answers anyway. */
export const INVALIDATE_WAIT_MS = 5_000;

/**
 * The primary's side of the one-host coordination: who leads each lease (the first worker to
 * ask; the others follow and are told when it is done), invalidations passed to every other
 * worker and answered once all dropped the object, breaker states and budget changes passed on. A worker that dies
 * gives up its leases: its followers are told it failed, and the next to ask leads.
 */
export class ClusterCoordination {
  /** Lease key → leading worker id and the workers following it. */
  private readonly leases = new Map<string, { leader: number; followers: Set<number> }>();
  private readonly workers = new Map<number, Worker>();
  private nextReq = 0;
  /** Invalidations under way: the workers still to answer, and the asker's reply. */
  private readonly pending = new Map<number, { left: Set<number>; done: () => void }>();

  /** Serves a worker's requests from now on. */
  add(worker: Worker): void {
    this.workers.set(worker.id, worker);
    worker.on('message', (m: unknown) => {
      if (isKeelMessage(m)) this.receive(worker, m as CoordRequest);
    });
  }

  /** A worker exited: its leases fail over, nothing waits for its answers. */
  remove(worker: Worker): void {
    this.workers.delete(worker.id);
    for (const [key, lease] of this.leases) {
      lease.followers.delete(worker.id);
      if (lease.leader === worker.id) this.settle(key, false);
    }
    for (const [req, p] of this.pending) {
      p.left.delete(worker.id);
      if (p.left.size === 0) this.finish(req);
    }
  }

  /** Leases held now (for `/status`). */
  get leaseCount(): number {
    return this.leases.size;
  }

  private send(worker: Worker | undefined, m: CoordReply): void {
    if (worker?.isConnected()) worker.send(m);
  }

  private receive(worker: Worker, m: CoordRequest): void {
    switch (m.keel) {
      case 'lease': {
        const lease = this.leases.get(m.key);
        if (lease && lease.leader !== worker.id) {
          lease.followers.add(worker.id);
          this.send(worker, { keel: 'lease-reply', req: m.req, role: 'follower' });
          return;
        }
        if (!lease && this.leases.size < MAX_LEASES && m.key.length <= MAX_LEASE_KEY_LENGTH)
          this.leases.set(m.key, { leader: worker.id, followers: new Set() });
        this.send(worker, { keel: 'lease-reply', req: m.req, role: 'leader' });
        return;
      }
      case 'lease-done':
        if (this.leases.get(m.key)?.leader === worker.id) this.settle(m.key, m.ok);
        return;
      case 'invalidate': {
        const req = this.nextReq++;
        const others = [...this.workers.values()].filter((w) => w.id !== worker.id && w.isConnected());
        const answer = (): void => this.send(worker, { keel: 'invalidate-reply', req: m.req });
        if (others.length === 0) {
          answer();
          return;
        }
        const timer = setTimeout(() => this.finish(req), INVALIDATE_WAIT_MS);
        timer.unref();
        this.pending.set(req, {
          left: new Set(others.map((w) => w.id)),
          done: () => {
            clearTimeout(timer);
            answer();
          },
        });
        for (const w of others) this.send(w, { keel: 'invalidate', req, id: m.id });
        return;
      }
      case 'invalidated': {
        const p = this.pending.get(m.req);
        if (!p) return;
        p.left.delete(worker.id);
        if (p.left.size === 0) this.finish(m.req);
        return;
      }
      case 'breaker':
        for (const w of this.workers.values())
          if (w.id !== worker.id) this.send(w, { keel: 'breaker', name: m.name, state: m.state });
        return;
      case 'budget':
        if (!Number.isFinite(m.tokens)) return;
        for (const w of this.workers.values())
          if (w.id !== worker.id) this.send(w, { keel: 'budget', name: m.name, tokens: m.tokens });
        return;
      default:
        return;
    }
  }

  private settle(key: string, ok: boolean): void {
    const lease = this.leases.get(key);
    if (!lease) return;
    this.leases.delete(key);
    for (const id of lease.followers) this.send(this.workers.get(id), { keel: 'lease-settled', key, ok });
  }

  private finish(req: number): void {
    const p = this.pending.get(req);
    if (!p) return;
    this.pending.delete(req);
    p.done();
  }
}

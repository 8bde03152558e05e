import { keelError } from 'keel';
import type { Clock, TimerHandle } from 'keel';
import type { ClaimRef, QueueStore } from '@keel/store';

/** A claimed item, from its claim until its outcome is written (or it is released). */
export interface InFlight {
  ref: ClaimRef;
  abort: AbortController;
  /** Given back at close: its outcome is no longer written. */
  released: boolean;
  done: Promise<void>;
}

/**
 * The items one queue instance holds leases on, buffered or being handled: renews the leases by
 * heartbeats every third of the lease, aborts a handler whose lease was lost to another worker
 * (`STALE_TOKEN`), and gives back at close what did not finish.
 */
export class Leases {
  private readonly held = new Map<number, InFlight>();
  private timer: TimerHandle | undefined;

  constructor(
    private readonly store: QueueStore,
    private readonly name: string,
    private readonly clock: Clock,
  ) {}

  /** Records a claimed item. */
  hold(ref: ClaimRef): InFlight {
    const entry: InFlight = { ref, abort: new AbortController(), released: false, done: Promise.resolve() };
    this.held.set(ref.id, entry);
    return entry;
  }

  /** Forgets an item whose outcome was written or that was given back. */
  drop(id: number): void {
    this.held.delete(id);
  }

  /** Renews every lease held, every third of `leaseMs` (at least 10 ms) of the queue's clock. */
  startHeartbeat(leaseMs: number): void {
    const every = Math.max(10, Math.floor(leaseMs / 3));
    const beat = (): void => {
      const entries = [...this.held.values()].filter((f) => !f.released);
      if (entries.length > 0) {
        this.store
          .heartbeat(
            entries.map((f) => f.ref),
            this.clock.now() + leaseMs,
          )
          .then(
            (renewed) => {
              for (const f of entries)
                if (!renewed.has(f.ref.id) && this.held.get(f.ref.id) === f)
                  f.abort.abort(
                    keelError(
                      'STALE_TOKEN',
                      `lease of item ${String(f.ref.id)} in queue "${this.name}" was lost`,
                    ),
                  );
            },
            // Store unavailable: the next beat tries again; if the lease runs out meanwhile, the
            // completion is refused and the item is handled again (at least once).
            () => undefined,
          );
      }
      // A beat runs to its end before stopHeartbeat can run, so cancelling this timer stops it.
      this.timer = this.clock.setTimer(every, beat);
    };
    this.timer = this.clock.setTimer(every, beat);
  }

  stopHeartbeat(): void {
    this.timer?.cancel();
  }

  /**
   * Waits for the items in flight to finish (up to `timeoutMs`), then aborts the handlers of the
   * others and releases them without counting the attempt.
   */
  async release(timeoutMs: number): Promise<void> {
    const pending = [...this.held.values()].map((f) => f.done);
    if (pending.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(pending),
        new Promise((r) => {
          timer = setTimeout(r, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    for (const f of [...this.held.values()]) {
      f.released = true;
      f.abort.abort(keelError('ABORTED', `queue "${this.name}" closing`));
      await this.store.release(f.ref).catch(() => undefined);
    }
    this.held.clear();
  }
}

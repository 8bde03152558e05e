import { systemClock, type Clock, type TimerHandle } from './clock.js';

class Deadline implements TimerHandle {
  cancelled = false;
  constructor(
    readonly at: number,
    readonly fn: () => void,
    private readonly owner: DeadlineScheduler,
  ) {}
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.owner.onCancel();
  }
}

/**
 * Runs many deadlines off one clock timer: scheduling and cancelling a deadline is a heap
 * operation, not a `setTimeout`/`clearTimeout` pair. The one underlying timer is armed for the
 * earliest live deadline and, on the system clock, never keeps the process alive.
 */
export class DeadlineScheduler {
  private heap: Deadline[] = [];
  private live = 0;
  private timer: TimerHandle | undefined;
  private armedAt = Infinity;

  constructor(readonly clock: Clock = systemClock) {}

  /** Calls `fn` once `delayMs` from now unless the returned handle is cancelled first. */
  schedule(delayMs: number, fn: () => void): TimerHandle {
    const deadline = new Deadline(this.clock.now() + Math.max(0, delayMs), fn, this);
    this.push(deadline);
    this.live++;
    if (deadline.at < this.armedAt) this.arm(deadline.at);
    return deadline;
  }

  /** Deadlines scheduled and not yet fired or cancelled. */
  get size(): number {
    return this.live;
  }

  /** @internal */
  onCancel(): void {
    this.live--;
    if (this.live === 0) {
      this.heap = [];
      this.disarm();
    } else if (this.heap.length > 64 && this.heap.length > this.live * 4) {
      // Lazy deletion leaves cancelled entries behind; rebuild when they dominate.
      const keep = this.heap.filter((d) => !d.cancelled);
      this.heap = [];
      for (const d of keep) this.push(d);
    }
  }

  private arm(at: number): void {
    this.timer?.cancel();
    this.armedAt = at;
    this.timer = this.clock.setTimer(at - this.clock.now(), () => {
      this.timer = undefined;
      this.armedAt = Infinity;
      this.fireDue();
    });
  }

  private disarm(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.armedAt = Infinity;
  }

  private fireDue(): void {
    const now = this.clock.now();
    for (;;) {
      const top = this.heap[0];
      if (!top) break;
      if (top.cancelled) {
        this.pop();
        continue;
      }
      if (top.at > now) break;
      this.pop();
      top.cancelled = true;
      this.live--;
      try {
        top.fn();
      } catch (err) {
        // A deadline callback must not stop the others; surface it like an uncaught timer error.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    const next = this.peekLive();
    if (next) this.arm(next.at);
  }

  private peekLive(): Deadline | undefined {
    while (this.heap[0]?.cancelled) this.pop();
    return this.heap[0];
  }

  private push(d: Deadline): void {
    const h = this.heap;
    h.push(d);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = h[parent] as Deadline;
      if (p.at <= d.at) break;
      h[i] = p;
      i = parent;
    }
    h[i] = d;
  }

  private pop(): Deadline | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length === 0 || !last) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const lc = h[l] as Deadline;
      const rc = h[r];
      const child = rc && rc.at < lc.at ? r : l;
      const c = h[child] as Deadline;
      if (last.at <= c.at) break;
      h[i] = c;
      i = child;
    }
    h[i] = last;
    return top;
  }
}

const shared = new WeakMap<Clock, DeadlineScheduler>();

/** The scheduler shared by every policy that uses `clock` (the system clock by default). */
export function deadlineScheduler(clock: Clock = systemClock): DeadlineScheduler {
  let scheduler = shared.get(clock);
  if (!scheduler) {
    scheduler = new DeadlineScheduler(clock);
    shared.set(clock, scheduler);
  }
  return scheduler;
}

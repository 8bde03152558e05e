import type { ServerResponse } from 'node:http';
import type { ObjectIdentity } from 'keel/cache';
import type { ReadContext, Resolved } from './read-context.js';
import type { SliceFill } from './slice-fill.js';
import { fillKey, startFill } from './slice-stream.js';

/** How far a read fetches ahead of its client. */
export interface ReadAheadSettings {
  /**
   * Uncached slices of one read fetched at once from the origin, the one being streamed
   * included (default 4; 1 fetches each slice only when the client reaches it).
   */
  slices: number;
  /**
   * Slice fetches running at once in the whole gateway beyond which no read starts one ahead of
   * its client (the origin connection pool's size): fetching ahead never makes a client's next
   * slice queue for a connection behind another client's read-ahead.
   */
  maxFetches: number;
}

/**
 * The slices one read fetches ahead of its client. Before each slice is streamed, the next
 * uncached slices of the range, up to {@link ReadAheadSettings.slices} in all, are fetched through
 * their shared fills (single flight per slice: concurrent readers of the object share them), as
 * long as the origin has room: the bucket's breaker closed, the guard's bulkhead with a free slot
 * and no queue, and fewer fetches running than {@link ReadAheadSettings.maxFetches}. The slice
 * the client needs now is always fetched; only the ones ahead are optional.
 *
 * The read holds each fill it waits for or fetched ahead (see {@link SliceFill.retain}) until it
 * streamed the slice or the client went away; a fill nobody holds any more stops, unless it is
 * nearly done (then it finishes and is cached).
 */
export class ReadAhead {
  private readonly held = new Map<number, SliceFill>();
  private closed = false;

  /**
   * @param needed the slices of the range, in order
   * @param cached whether the read will take slice `index` from the cache (or a complete fill)
   */
  constructor(
    private readonly ctx: ReadContext,
    private readonly id: ObjectIdentity,
    private readonly rawQuery: string,
    private readonly meta: Resolved['meta'],
    private readonly needed: readonly number[],
    private readonly cached: (index: number) => boolean,
    res: ServerResponse,
  ) {
    // A client that goes away lets go at once, not when its stream next wakes up.
    res.once('close', () => this.close());
  }

  /** The read is about to stream `needed[at]`: holds its fill, if one runs, and fetches ahead. */
  advance(at: number): void {
    if (this.closed) return;
    const depth = Math.max(1, this.ctx.readAhead.slices);
    for (let j = at; j < this.needed.length && j < at + depth; j++) {
      const index = this.needed[j] as number;
      if (this.held.has(index) || this.cached(index)) continue;
      if (j === at) {
        // The slice needed now: streamSlice decides between the cache and a fill; hold one that runs.
        const running = this.ctx.fills.get(this.key(index));
        if (running) this.hold(index, running);
        continue;
      }
      // Written to the cache since the read was planned (by another reader's fill).
      if (this.ctx.cache?.hasSlice(this.id, index) === true) continue;
      if (!this.originHasRoom()) break;
      this.hold(index, startFill(this.ctx, this.id, this.rawQuery, this.meta, index));
    }
  }

  /** The fill streamSlice uses for `index` (started or joined there): held until the slice is streamed. */
  adopt(index: number, fill: SliceFill): void {
    if (this.closed) return;
    this.hold(index, fill);
  }

  /** Slice `index` is streamed: its fill is let go. */
  done(index: number): void {
    const fill = this.held.get(index);
    if (!fill) return;
    this.held.delete(index);
    fill.release();
  }

  /** The read is over (finished, failed, or its client went away): every fill it held is let go. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const fills = [...this.held.values()];
    this.held.clear();
    for (const fill of fills) fill.release();
  }

  private hold(index: number, fill: SliceFill): void {
    const before = this.held.get(index);
    if (before === fill) return;
    fill.retain();
    this.held.set(index, fill);
    before?.release();
  }

  private key(index: number): string {
    return fillKey(this.id, this.meta.etag, index);
  }

  private originHasRoom(): boolean {
    const { guard, fetching, readAhead } = this.ctx;
    return (
      fetching.count < readAhead.maxFetches &&
      guard.breakerOf(this.id.bucket).state === 'closed' &&
      guard.hasRoom()
    );
  }
}

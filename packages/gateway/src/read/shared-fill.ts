import type { Readable } from 'node:stream';
import { identityHash, MAX_BUFFER_READ_BYTES, type CacheMeta, type ObjectIdentity } from 'keel/cache';
import type { Lease } from '../coord/coordinator.js';
import { safe, type ReadContext, type Resolved } from './read-context.js';
import type { SliceFill } from './slice-fill.js';

/** What {@link fillFromPeer} leaves to the fill: whether its bytes came from the cache, and what to call when done. */
export interface PeerFill {
  /** The slice's bytes were put into the fill from the cache, where another process stored them. */
  filled: boolean;
  /** The fill is over (its slice cached, `ok`, or failed): tells the processes that waited for it. */
  done(ok: boolean): void;
  /** Another process led: an origin answer this one had in hand was dropped, not to be read. */
  droppedInitial: boolean;
}

/**
 * Longest a process waits for another to finish a slice or a lookup it leads: beyond it the
 * leader is presumed stuck and this one asks the origin itself. Not the client's deadline: the
 * leader's own origin request is bounded by it, and a leader that dies releases its leases at once.
 */
export const LEADER_WAIT_MS = 60_000;

const ALONE: PeerFill = { filled: false, done: () => undefined, droppedInitial: false };

/**
 * Before a slice fill fetches from the origin (or reads the origin answer `initial` it has in
 * hand): takes the slice's lease, so one process of the host fetches it (`ctx.coord`, the workers' coordination). When another process leads, this one
 * waits until that one is done (at most the origin deadline, and not after every reader left),
 * then puts the slice's bytes into `fill` from the cache, verified. When the leader failed or
 * went away, the lease is asked for again once: the first to ask fetches, the others wait again.
 * Anything else (no coordination, a slice too large to read into memory, the slice not in the
 * cache after all) leaves the fetch to this process.
 */
export async function fillFromPeer(
  ctx: ReadContext,
  key: string,
  id: ObjectIdentity,
  meta: Resolved['meta'],
  fill: SliceFill,
  initial?: Readable,
  again = true,
): Promise<PeerFill> {
  const { coord, cache } = ctx;
  if (!coord || coord.kind === 'local' || !cache || fill.length > MAX_BUFFER_READ_BYTES) return ALONE;
  let lease: Lease;
  try {
    lease = await coord.lease(key);
  } catch {
    return ALONE;
  }
  if (lease.role === 'leader') {
    // Another worker may have stored the slice before this one asked (its lease is over by now).
    const listed = await safe(ctx, 'lookup', () => cache.cachedSlices(id, fill.start, fill.start));
    if (
      listed?.cached.has(Math.floor(fill.start / listed.meta.sliceBytes)) &&
      listed.meta.etag === meta.etag
    ) {
      if (initial) {
        initial.on('error', () => undefined);
        initial.destroy();
      }
      const filled = await fromCache(ctx, id, meta, fill);
      lease.done(filled);
      return { filled, done: () => undefined, droppedInitial: initial !== undefined };
    }
    return { filled: false, done: (ok) => lease.done(ok), droppedInitial: false };
  }
  // The origin's answer this process already has (a miss's first slice) is stopped: another
  // worker is fetching the same bytes, and they will be on disk.
  if (initial) {
    initial.on('error', () => undefined);
    initial.destroy();
  }
  const dropped = { ...ALONE, droppedInitial: initial !== undefined };
  const ok = await settledOrGiveUp(ctx, lease.settled, fill);
  if (!fill.filling) return dropped;
  if (!ok) {
    if (!again) return dropped;
    const retried = await fillFromPeer(ctx, key, id, meta, fill, undefined, false);
    return { ...retried, droppedInitial: dropped.droppedInitial };
  }
  return (await fromCache(ctx, id, meta, fill)) ? { ...dropped, filled: true } : dropped;
}

/** Puts the slice's bytes into `fill` from the cache, verified; false when they are not there (or another version). */
async function fromCache(
  ctx: ReadContext,
  id: ObjectIdentity,
  meta: Resolved['meta'],
  fill: SliceFill,
): Promise<boolean> {
  const cache = ctx.cache;
  if (!cache) return false;
  const got = await safe(ctx, 'read', () => cache.readBuffer(id, fill.start, fill.start + fill.length - 1));
  if (!got?.hit) return false;
  if (got.meta.etag !== meta.etag || !fill.filling) {
    got.release();
    return false;
  }
  fill.markOpened();
  // Copied into the fill's own buffer: the cache's may be reused at once.
  fill.push(got.bytes);
  got.release();
  return true;
}

/** The leader's outcome; false when it takes longer than {@link LEADER_WAIT_MS} or every reader left. */
function settledOrGiveUp(ctx: ReadContext, settled: Promise<boolean>, fill: SliceFill): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = ctx.clock.setTimer(Math.max(ctx.deadlineMs, LEADER_WAIT_MS), () => finish(false));
    const onAbort = (): void => finish(false);
    const finish = (ok: boolean): void => {
      timer.cancel();
      fill.signal.removeEventListener('abort', onAbort);
      resolve(ok);
    };
    fill.signal.addEventListener('abort', onAbort, { once: true });
    void settled.then(finish);
  });
}

/** What {@link lookupFromPeer} found: the metadata another process stored, or what to call once this one looked it up. */
export interface PeerLookup {
  found: CacheMeta | undefined;
  /** This process's lookup is over (`ok`: its metadata is being written, `written` settles when it is). */
  done(ok: boolean, written?: Promise<unknown>): void;
}

const LOOK_ALONE: PeerLookup = { found: undefined, done: () => undefined };

/**
 * Before this process asks the origin about an uncached object: takes the object's lookup lease,
 * so one worker of the host asks. When another leads, waits until its metadata is in the cache
 * (at most {@link LEADER_WAIT_MS}) and answers from there; its first slice, which that worker is
 * fetching, is then shared as every slice is ({@link fillFromPeer}).
 */
export async function lookupFromPeer(ctx: ReadContext, id: ObjectIdentity): Promise<PeerLookup> {
  const { coord, cache } = ctx;
  if (!coord || coord.kind === 'local' || !cache) return LOOK_ALONE;
  let lease: Lease;
  try {
    lease = await coord.lease(`lookup:${identityHash(id)}`);
  } catch {
    return LOOK_ALONE;
  }
  if (lease.role === 'leader')
    return {
      found: undefined,
      done: (ok, written) => {
        void Promise.resolve(written).finally(() => lease.done(ok));
      },
    };
  const ok = await new Promise<boolean>((resolve) => {
    const timer = ctx.clock.setTimer(Math.max(ctx.deadlineMs, LEADER_WAIT_MS), () => resolve(false));
    void lease.settled.then((v) => {
      timer.cancel();
      resolve(v);
    });
  });
  if (!ok) return LOOK_ALONE;
  const meta = await safe(ctx, 'lookup', () => cache.getMeta(id));
  return meta ? { found: meta, done: () => undefined } : LOOK_ALONE;
}

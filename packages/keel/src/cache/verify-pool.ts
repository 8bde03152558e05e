import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { fastCrc32Module } from './crc32.js';
import type { FileStamp } from './meta-memo.js';

/** One read for a verifying thread: `length` bytes at `position`, checked block by block. */
export interface VerifyRequest {
  path: string;
  position: number;
  /** Bytes to read; the file must hold exactly these (plus one more is read when `atEnd`). */
  length: number;
  /** True when the read ends at the slice's end: a longer file is corrupt. */
  atEnd: boolean;
  blockBytes: number;
  /** Expected CRC32 of each block of the read, in order (the last may be short). */
  crcs: Uint32Array;
  /** The object's meta.json and the stamp it had when read: the answer says if it changed since. */
  meta?: { path: string; stamp: FileStamp } | undefined;
}

/** What a verifying thread found. `release` hands the memory back for reuse (see {@link VerifyPool}). */
export type VerifyOutcome =
  | { ok: true; bytes: Buffer; release: () => void; metaChanged: boolean }
  | { ok: false; kind: 'wrong-length' | 'checksum'; message: string }
  | { ok: false; kind: 'error'; error: NodeJS.ErrnoException };

/**
 * The thread's code, as CommonJS evaluated in the worker (so it loads the same from TypeScript
 * sources and from the built package): open, read, close, CRC32 of every block, answer.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
// The main thread's CRC-32; node:zlib's (the same values) if it does not load here.
let crc32 = require('node:zlib').crc32;
try { if (workerData.crc32Module) crc32 = require(workerData.crc32Module).crc32; } catch {}
// [buffer, id, path, position, length, atEnd, blockBytes, metaPath, ino, size, mtimeMs, ctimeMs, ...crcs]
parentPort.on('message', (m) => {
  const [ab, id, path, position, length, atEnd, blockBytes, metaPath] = m;
  const buffer = Buffer.from(ab, 0, length + atEnd);
  let fd;
  try {
    fd = fs.openSync(path, 'r');
    // Read a few blocks at a time and check them while they are still in the CPU's cache.
    const step = Math.max(blockBytes, Math.floor(262144 / blockBytes) * blockBytes);
    let got = 0;
    let checked = 0;
    let kind = 0; // 0 ok, 1 wrong length, 2 checksum
    while (got < buffer.length) {
      const n = fs.readSync(fd, buffer, got, Math.min(step, buffer.length - got), position + got);
      if (n === 0) break;
      got += n;
      for (; kind === 0 && checked < length && (checked + blockBytes <= got || got >= length); checked += blockBytes) {
        const crc = crc32(buffer.subarray(checked, Math.min(length, checked + blockBytes)));
        if (crc !== m[12 + checked / blockBytes]) kind = 2;
      }
      if (kind !== 0) break;
    }
    if (kind === 0 && got !== length) kind = 1;
    let metaChanged = 0;
    if (metaPath !== '') {
      try {
        const st = fs.statSync(metaPath);
        metaChanged = st.ino !== m[8] || st.size !== m[9] || st.mtimeMs !== m[10] || st.ctimeMs !== m[11] ? 1 : 0;
      } catch {
        metaChanged = 1;
      }
    }
    parentPort.postMessage([ab, id, kind, got, metaChanged], [ab]);
  } catch (err) {
    parentPort.postMessage([ab, id, 3, 0, 0, err.code, err.message], [ab]);
  } finally {
    if (fd !== undefined) try { fs.closeSync(fd); } catch {}
  }
});
`;

/** A thread's answer: [buffer, id, kind (0 ok, 1 wrong length, 2 checksum, 3 error), bytes read, meta.json changed, error code, message]. */
type Reply = [ArrayBuffer, number, 0 | 1 | 2 | 3, number, 0 | 1, string?, string?];

/** Buffers are pooled in steps of this size… */
const BUFFER_STEP = 64 * 1024;
/** …up to this size each… */
const MAX_POOLED_BUFFER = 4 * 1024 * 1024 + BUFFER_STEP;
/** …and this much in all. */
const MAX_POOLED_BYTES = 64 * 1024 * 1024;

/**
 * Threads the range cache uses by default: one per core, at most 4. On a small machine the threads
 * share cores with the event loop, and still win: the event loop only moves verified buffers.
 */
export function defaultVerifyThreads(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

/**
 * A few worker threads that read slice files and check their CRC32s, so the event loop only
 * hands out verified buffers. Threads start on first use, never keep the process alive, and are
 * stopped by {@link VerifyPool.close}. A thread that dies is replaced; its reads fail as I/O errors.
 *
 * Read buffers are reused: a caller that is done with a verified buffer (for a response, once it
 * has finished) calls its `release()`. Reuse is safe against a stale view: the memory is
 * transferred to the thread for the next read, which detaches every old view of it in this thread,
 * so old views read as empty, never as other bytes. What is never released is garbage-collected.
 */
export class VerifyPool {
  private readonly workers: { worker: Worker; busy: number }[] = [];
  private readonly pending = new Map<number, { resolve: (o: VerifyOutcome) => void; worker: Worker }>();
  private nextId = 1;
  private closed = false;
  private readonly free = new Map<number, ArrayBuffer[]>();
  private pooledBytes = 0;

  constructor(private readonly threads: number) {}

  /** Reads and verifies; never rejects. */
  verify(request: VerifyRequest): Promise<VerifyOutcome> {
    if (this.closed) return Promise.resolve(ioError('the verifying threads are stopped'));
    let slot: { worker: Worker; busy: number };
    try {
      slot = this.pick();
    } catch (err) {
      // No thread could be started (a resource limit): this read is an I/O error, a miss.
      return Promise.resolve(ioError(`could not start a verifying thread: ${(err as Error).message}`));
    }
    const id = this.nextId++;
    const buffer = this.take(request.length + (request.atEnd ? 1 : 0));
    return new Promise((resolve) => {
      this.pending.set(id, { resolve, worker: slot.worker });
      slot.busy++;
      // A flat list clones faster than an object with a typed array in it.
      const stamp = request.meta?.stamp;
      slot.worker.postMessage(
        [
          buffer,
          id,
          request.path,
          request.position,
          request.length,
          request.atEnd ? 1 : 0,
          request.blockBytes,
          request.meta?.path ?? '',
          stamp?.ino ?? 0,
          stamp?.size ?? 0,
          stamp?.mtimeMs ?? 0,
          stamp?.ctimeMs ?? 0,
          ...request.crcs,
        ],
        [buffer],
      );
    });
  }

  /** Stops the threads; reads in flight answer as I/O errors. */
  async close(): Promise<void> {
    this.closed = true;
    const workers = this.workers.splice(0);
    this.free.clear();
    this.pooledBytes = 0;
    await Promise.all(workers.map((w) => w.worker.terminate()));
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.resolve(ioError('the verifying threads were stopped'));
    }
  }

  /** A buffer of at least `bytes` (not zeroed: the thread overwrites what it answers with). */
  private take(bytes: number): ArrayBuffer {
    const size = Math.ceil(bytes / BUFFER_STEP) * BUFFER_STEP;
    const reused = this.free.get(size)?.pop();
    if (reused) {
      this.pooledBytes -= size;
      return reused;
    }
    return Buffer.allocUnsafeSlow(size).buffer;
  }

  private give(buffer: ArrayBuffer): void {
    const size = buffer.byteLength;
    if (this.closed || size > MAX_POOLED_BUFFER || this.pooledBytes + size > MAX_POOLED_BYTES) return;
    let list = this.free.get(size);
    if (!list) {
      list = [];
      this.free.set(size, list);
    }
    list.push(buffer);
    this.pooledBytes += size;
  }

  private pick(): { worker: Worker; busy: number } {
    let best = this.workers[0];
    for (const w of this.workers) if (best === undefined || w.busy < best.busy) best = w;
    if (best !== undefined && (best.busy === 0 || this.workers.length >= this.threads)) return best;
    return this.spawn();
  }

  private spawn(): { worker: Worker; busy: number } {
    // The same CRC-32 as the main thread's: the fast build when it loaded there.
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { crc32Module: fastCrc32Module } });
    worker.unref();
    const slot = { worker, busy: 0 };
    this.workers.push(slot);
    worker.on('message', (reply: Reply) => {
      const p = this.pending.get(reply[1]);
      if (!p) return;
      this.pending.delete(reply[1]);
      slot.busy--;
      const outcome = outcomeOf(reply, (b) => {
        this.give(b);
      });
      if (!outcome.ok) this.give(reply[0]);
      p.resolve(outcome);
    });
    const lost = (why: string): void => {
      const at = this.workers.indexOf(slot);
      if (at >= 0) this.workers.splice(at, 1);
      for (const [id, p] of this.pending) {
        if (p.worker !== worker) continue;
        this.pending.delete(id);
        p.resolve(ioError(why));
      }
    };
    worker.on('error', (err) => {
      lost(`a verifying thread failed: ${err.message}`);
    });
    worker.on('exit', () => {
      lost('a verifying thread exited');
    });
    return slot;
  }
}

function ioError(message: string): VerifyOutcome {
  return { ok: false, kind: 'error', error: Object.assign(new Error(message), { code: 'EIO' }) };
}

function outcomeOf(reply: Reply, give: (b: ArrayBuffer) => void): VerifyOutcome {
  const [buffer, , kind, got, metaChanged, code, message] = reply;
  switch (kind) {
    case 0: {
      let released = false;
      return {
        ok: true,
        bytes: Buffer.from(buffer, 0, got),
        metaChanged: metaChanged === 1,
        release: () => {
          if (released) return;
          released = true;
          give(buffer);
        },
      };
    }
    case 1:
      return { ok: false, kind: 'wrong-length', message: `read ${got} bytes` };
    case 2:
      return { ok: false, kind: 'checksum', message: 'a block failed its CRC32' };
    default:
      return {
        ok: false,
        kind: 'error',
        error: Object.assign(new Error(message ?? 'read failed'), { code }),
      };
  }
}

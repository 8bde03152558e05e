import * as nodeFs from 'node:fs/promises';
import { keelError } from '../errors/index.js';
import type { StatsFs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/**
 * The part of `node:fs/promises` that keel's disk-touching modules use. Modules accept an object
 * of this shape (default: `node:fs/promises` itself) so tests can inject {@link faultyFs}.
 */
export interface FsLike {
  open: typeof nodeFs.open;
  readFile: typeof nodeFs.readFile;
  writeFile: typeof nodeFs.writeFile;
  rename: typeof nodeFs.rename;
  unlink: typeof nodeFs.unlink;
  rm: typeof nodeFs.rm;
  mkdir: typeof nodeFs.mkdir;
  readdir: typeof nodeFs.readdir;
  stat: typeof nodeFs.stat;
  statfs: typeof nodeFs.statfs;
}

/** fs calls a fault can target; `write`, `sync`, `read` and `close` are FileHandle methods. */
export type FsOperation =
  | 'open'
  | 'readFile'
  | 'writeFile'
  | 'rename'
  | 'unlink'
  | 'rm'
  | 'mkdir'
  | 'readdir'
  | 'stat'
  | 'statfs'
  | 'write'
  | 'sync'
  | 'read'
  | 'close';

/** Error codes a fault can raise. */
export type FsFaultCode = 'ENOSPC' | 'EDQUOT' | 'EIO' | 'EACCES' | 'EROFS';

/** One rule: which calls fail and with what. */
export interface FsFault {
  /** The errno code to fail with. */
  code: FsFaultCode;
  /** Operations it applies to (default: all). */
  ops?: readonly FsOperation[];
  /** Only paths matching this (a RegExp, or a substring). */
  path?: RegExp | string;
  /** Fail only the Nth matching call (1-based), counted per rule. */
  nth?: number;
  /** Fail matching calls with this probability (default 1). */
  probability?: number;
  /** Stop after failing this many calls (default unlimited). */
  times?: number;
}

/** Options of {@link faultyFs}. */
export interface FaultyFsOptions {
  /** The fs to wrap (default `node:fs/promises`). */
  fs?: FsLike;
  /** Rules, checked in order; the first that fires fails the call. */
  faults?: FsFault[];
  /**
   * Simulates a disk with this many bytes free: writes beyond it fail with ENOSPC (no partial
   * write), unlinks of files give their size back, and `statfs` reports it.
   */
  diskBytes?: number;
  /** Source of randomness for `probability` (default `Math.random`). */
  random?: () => number;
}

/** A stall: matching calls take `ms` longer (a slow or overloaded disk), then run as usual. */
export interface FsStall {
  /** Added to each matching call, in milliseconds. */
  ms: number;
  /** Operations it applies to (default: all). */
  ops?: readonly FsOperation[];
  /** Only paths matching this (a RegExp, or a substring). */
  path?: RegExp | string;
}

/** A faulty fs plus the controls to change its faults while a test runs. */
export interface FaultyFs extends FsLike {
  /** Adds a rule; returns a function that removes it. */
  inject(fault: FsFault): () => void;
  /**
   * Makes matching calls wait `ms` before they run (a disk that stalls writes: `ops: ['write',
   * 'sync']`). Returns a function that removes the stall; calls already waiting finish their wait.
   * @throws KeelError INVALID_INPUT when `ms` is negative or not finite.
   */
  stall(stall: FsStall): () => void;
  /** Removes every rule and stall. */
  clear(): void;
  /** Sets the simulated free space (undefined = the real disk). */
  setFreeBytes(bytes: number | undefined): void;
  /** Simulated free bytes, if a budget is set. */
  freeBytes(): number | undefined;
  /** How many calls each rule failed, and how many calls were made per operation. */
  readonly counts: { failed: number; calls: Partial<Record<FsOperation, number>> };
}

const MESSAGES: Record<FsFaultCode, [number, string]> = {
  ENOSPC: [-28, 'no space left on device'],
  EDQUOT: [-122, 'disk quota exceeded'],
  EIO: [-5, 'i/o error'],
  EACCES: [-13, 'permission denied'],
  EROFS: [-30, 'read-only file system'],
};

/** An errno-style error like the ones Node raises: code, errno, syscall, path. */
export function fsError(code: FsFaultCode, syscall: string, path?: string): NodeJS.ErrnoException {
  const [errno, text] = MESSAGES[code];
  const err: NodeJS.ErrnoException = new Error(`${code}: ${text}, ${syscall}${path ? ` '${path}'` : ''}`);
  err.code = code;
  err.errno = errno;
  err.syscall = syscall;
  if (path !== undefined) err.path = path;
  return err;
}

interface RuleState {
  fault: FsFault;
  seen: number;
  failed: number;
}

function pathText(p: unknown): string | undefined {
  if (typeof p === 'string') return p;
  if (p instanceof URL) return p.pathname;
  if (Buffer.isBuffer(p)) return p.toString();
  return undefined;
}

function byteLength(data: unknown): number {
  if (typeof data === 'string') return Buffer.byteLength(data);
  if (ArrayBuffer.isView(data)) return data.byteLength;
  return 0;
}

/**
 * Wraps the fs functions storage code uses so chosen calls fail with ENOSPC, EDQUOT, EIO, EACCES
 * or EROFS — on the Nth call, by path, with a probability — and can simulate a full disk from a
 * byte budget. Everything else goes to the real file system.
 */
export function faultyFs(options: FaultyFsOptions = {}): FaultyFs {
  const real = options.fs ?? nodeFs;
  const random = options.random ?? Math.random;
  let rules: RuleState[] = (options.faults ?? []).map((fault) => ({ fault, seen: 0, failed: 0 }));
  let free = options.diskBytes;
  const counts: FaultyFs['counts'] = { failed: 0, calls: {} };

  const check = (op: FsOperation, path: string | undefined): void => {
    counts.calls[op] = (counts.calls[op] ?? 0) + 1;
    for (const rule of rules) {
      const f = rule.fault;
      if (f.ops && !f.ops.includes(op)) continue;
      if (f.path !== undefined) {
        if (path === undefined) continue;
        if (typeof f.path === 'string' ? !path.includes(f.path) : !f.path.test(path)) continue;
      }
      rule.seen++;
      if (f.times !== undefined && rule.failed >= f.times) continue;
      if (f.nth !== undefined && rule.seen !== f.nth) continue;
      if (f.probability !== undefined && random() >= f.probability) continue;
      rule.failed++;
      counts.failed++;
      throw fsError(f.code, op, path);
    }
  };

  let stalls: FsStall[] = [];
  // Waits for every stall that matches; resolves at once (no timer) when none does.
  const slow = async (op: FsOperation, path: string | undefined): Promise<void> => {
    let ms = 0;
    for (const st of stalls) {
      if (st.ops && !st.ops.includes(op)) continue;
      if (st.path !== undefined) {
        if (path === undefined) continue;
        if (typeof st.path === 'string' ? !path.includes(st.path) : !st.path.test(path)) continue;
      }
      ms += st.ms;
    }
    if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
  };

  const spend = (op: FsOperation, path: string | undefined, bytes: number): void => {
    if (free === undefined || bytes === 0) return;
    if (bytes > free) {
      counts.failed++;
      throw fsError('ENOSPC', op, path);
    }
    free -= bytes;
  };

  const wrapHandle = (handle: FileHandle, path: string | undefined): FileHandle => {
    return new Proxy(handle, {
      get(target, prop, receiver) {
        const value: unknown = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function') return value;
        const fn = value as (...args: unknown[]) => Promise<unknown>;
        if (prop === 'write' || prop === 'writeFile' || prop === 'appendFile') {
          return async (...args: unknown[]) => {
            check('write', path);
            await slow('write', path);
            spend('write', path, byteLength(args[0]));
            return await fn.apply(target, args);
          };
        }
        if (prop === 'sync' || prop === 'datasync') {
          return async (...args: unknown[]) => {
            check('sync', path);
            await slow('sync', path);
            return await fn.apply(target, args);
          };
        }
        if (prop === 'read' || prop === 'readFile') {
          return async (...args: unknown[]) => {
            check('read', path);
            await slow('read', path);
            return await fn.apply(target, args);
          };
        }
        if (prop === 'close') {
          return async (...args: unknown[]) => {
            check('close', path);
            await slow('close', path);
            return await fn.apply(target, args);
          };
        }
        return fn.bind(target);
      },
    });
  };

  // Bytes a path holds (a directory: everything under it), for the simulated disk's accounting.
  const sizeOf = async (path: unknown): Promise<number> => {
    if (free === undefined) return 0;
    try {
      const stats = await real.stat(path as string);
      if (!stats.isDirectory()) return stats.size;
      let total = 0;
      const entries = await real.readdir(path as string);
      for (const entry of entries) total += await sizeOf(`${pathText(path) ?? ''}/${entry}`);
      return total;
    } catch {
      return 0;
    }
  };
  const giveBack = (bytes: number): void => {
    if (free !== undefined) free += bytes;
  };
  // Opening with `w` (not `a`, not `r+`) truncates: the old contents' space comes back.
  const truncates = (flags: unknown): boolean => typeof flags === 'string' && flags.startsWith('w');

  const fs: FsLike = {
    open: async (path: Parameters<typeof nodeFs.open>[0], ...rest: unknown[]) => {
      const p = pathText(path);
      check('open', p);
      await slow('open', p);
      const freed = truncates(rest[0]) ? await sizeOf(path) : 0;
      const handle = await (real.open as (...a: unknown[]) => Promise<FileHandle>)(path, ...rest);
      giveBack(freed);
      return wrapHandle(handle, p);
    },
    readFile: (async (path: unknown, ...rest: unknown[]) => {
      check('readFile', pathText(path));
      return (real.readFile as (...a: unknown[]) => Promise<unknown>)(path, ...rest);
    }) as typeof nodeFs.readFile,
    writeFile: (async (path: unknown, data: unknown, ...rest: unknown[]) => {
      const p = pathText(path);
      check('writeFile', p);
      await slow('writeFile', p);
      const options = rest[0];
      const flag =
        typeof options === 'object' && options !== null ? (options as { flag?: unknown }).flag : 'w';
      const replaced = flag === undefined || truncates(flag) ? await sizeOf(path) : 0;
      // A full disk refuses the write whole, before touching the file (no partial data).
      spend('writeFile', p, Math.max(0, byteLength(data) - replaced));
      await (real.writeFile as (...a: unknown[]) => Promise<void>)(path, data, ...rest);
      giveBack(Math.max(0, replaced - byteLength(data)));
    }) as typeof nodeFs.writeFile,
    rename: async (from: unknown, to: unknown) => {
      check('rename', pathText(to) ?? pathText(from));
      await slow('rename', pathText(to) ?? pathText(from));
      // Renaming over a file frees the file that was there.
      const replaced = pathText(from) === pathText(to) ? 0 : await sizeOf(to);
      await (real.rename as (...a: unknown[]) => Promise<void>)(from, to);
      giveBack(replaced);
    },
    unlink: async (path: unknown) => {
      check('unlink', pathText(path));
      const size = await sizeOf(path);
      await (real.unlink as (...a: unknown[]) => Promise<void>)(path);
      giveBack(size);
    },
    rm: async (path: unknown, ...rest: unknown[]) => {
      check('rm', pathText(path));
      const size = await sizeOf(path);
      await (real.rm as (...a: unknown[]) => Promise<void>)(path, ...rest);
      giveBack(size);
    },
    mkdir: (async (path: unknown, ...rest: unknown[]) => {
      check('mkdir', pathText(path));
      return (real.mkdir as (...a: unknown[]) => Promise<unknown>)(path, ...rest);
    }) as typeof nodeFs.mkdir,
    readdir: (async (path: unknown, ...rest: unknown[]) => {
      check('readdir', pathText(path));
      return (real.readdir as (...a: unknown[]) => Promise<unknown>)(path, ...rest);
    }) as typeof nodeFs.readdir,
    stat: (async (path: unknown, ...rest: unknown[]) => {
      check('stat', pathText(path));
      return (real.stat as (...a: unknown[]) => Promise<unknown>)(path, ...rest);
    }) as typeof nodeFs.stat,
    statfs: (async (path: unknown, ...rest: unknown[]) => {
      check('statfs', pathText(path));
      const stats = (await (real.statfs as (...a: unknown[]) => Promise<unknown>)(path, ...rest)) as StatsFs;
      if (free === undefined) return stats;
      const bsize = stats.bsize || 4096;
      const blocks = Math.floor(free / bsize);
      return {
        type: stats.type,
        bsize,
        blocks: stats.blocks,
        bfree: blocks,
        bavail: blocks,
        files: stats.files,
        ffree: stats.ffree,
      };
    }) as typeof nodeFs.statfs,
  };

  return {
    ...fs,
    inject(fault) {
      const state = { fault, seen: 0, failed: 0 };
      rules.push(state);
      return () => {
        rules = rules.filter((r) => r !== state);
      };
    },
    stall(stall) {
      if (!Number.isFinite(stall.ms) || stall.ms < 0)
        throw keelError('INVALID_INPUT', `fs stall: ms must be a finite number ≥ 0, got ${stall.ms}`);
      const own = { ...stall };
      stalls.push(own);
      return () => {
        stalls = stalls.filter((st) => st !== own);
      };
    },
    clear() {
      rules = [];
      stalls = [];
    },
    setFreeBytes(bytes) {
      free = bytes;
    },
    freeBytes: () => free,
    counts,
  };
}

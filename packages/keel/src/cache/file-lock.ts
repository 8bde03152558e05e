import { randomBytes } from 'node:crypto';
import * as nodeFs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { classify, wrap, type KeelError } from '../errors/index.js';
import { KeyedLock } from './keyed-lock.js';

/** Name of the folder of lock files inside the cache directory. */
export const LOCKS_DIR = 'locks';

/** A lock this old is broken whoever holds it (its holder refreshes it if it needs longer). */
export const DEFAULT_STALE_LOCK_MS = 30_000;

/** First and longest pause between two attempts at a lock another process holds. */
const FIRST_WAIT_MS = 1;
const MAX_WAIT_MS = 25;

/** True when process `pid` exists on this host (EPERM: it exists but is someone else's). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: unknown }).code === 'EPERM';
  }
}

/** This host's name as lock files carry it (characters other than letters, digits, `.`, `_`, `-` dropped). */
export const LOCK_HOST = os.hostname().replace(/[^A-Za-z0-9._-]/g, '') || 'localhost';

/** A new owner name for a lock file: `<pid>-<random>@<host>`. */
function ownerName(): string {
  return `${process.pid}-${randomBytes(8).toString('hex')}@${LOCK_HOST}`;
}

/**
 * The owner a lock's symbolic link names: `<pid>-<token>@<host>` (`<pid>-<token>`, from before
 * hosts were named, is this host's).
 */
function parseOwner(target: string): { pid: number; host: string } | undefined {
  const m = /^(\d+)-[0-9a-f]+(?:@([A-Za-z0-9._-]+))?$/.exec(target);
  return m ? { pid: Number(m[1]), host: m[2] ?? LOCK_HOST } : undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The locks the cache takes: one per object while its metadata changes (`run`, waiting), and
 * `evictor` for the one process evicting (`tryRun`, never waiting). {@link FileLocks} (the
 * default) holds them for the processes of one host; pass another implementation in
 * `RangeCacheOptions.locks` to share one directory between hosts.
 */
export interface CacheLocks {
  /** Runs `fn` holding `key`, waiting while anyone else holds it. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T>;
  /** Runs `fn` holding `key` if nobody else holds it; never waits. */
  tryRun<T>(key: string, fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }>;
}

/**
 * Locks shared by every process that opens one cache directory on this host: one per key (an
 * object's hash, or a name such as `evictor`), taken in this process through a {@link KeyedLock}
 * (so at most one of its callers waits on the file) and across processes through a lock file.
 *
 * A lock file is a symbolic link `<dir>/locks/<key>` whose target names its holder
 * (`<pid>-<random>@<host>`): creating it is atomic, fails when it exists, and needs no data block,
 * so it works on a full disk. A lock whose holder on this host no longer runs (SIGKILLed), or
 * older than `staleMs` (the only test for another host's), is broken, under a second lock (`<key>.break`) so that two processes breaking it at once cannot
 * remove a lock a third has just taken.
 */
export class FileLocks extends KeyedLock implements CacheLocks {
  private readonly dir: string;
  /** Keys held through {@link tryRun} in this process (never waited for). */
  private readonly tried = new Set<string>();

  /**
   * @param cacheDir the cache directory (its `locks/` folder is created on first use)
   * @param staleMs a lock older than this is broken (default {@link DEFAULT_STALE_LOCK_MS})
   */
  constructor(
    cacheDir: string,
    private readonly staleMs = DEFAULT_STALE_LOCK_MS,
  ) {
    super();
    this.dir = path.join(cacheDir, LOCKS_DIR);
  }

  /**
   * Runs `fn` holding `key` in this process and in every other: waits while another holds it.
   * @throws KeelError when the lock file cannot be created (the cache directory is unusable).
   */
  override run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return super.run(key, async () => {
      const release = await this.acquire(key, true);
      try {
        return await fn();
      } finally {
        await (release as () => Promise<void>)();
      }
    });
  }

  /**
   * Runs `fn` holding `key` when nobody else holds it, in this process or another; otherwise does
   * not run it and does not wait. For work that one process at a time should do and that others
   * may skip (eviction). Never waits, so a caller holding another lock cannot deadlock on it.
   */
  async tryRun<T>(key: string, fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
    if (this.tried.has(key)) return { ran: false };
    this.tried.add(key);
    try {
      const release = await this.acquire(key, false);
      if (!release) return { ran: false };
      try {
        return { ran: true, value: await fn() };
      } finally {
        await release();
      }
    } finally {
      this.tried.delete(key);
    }
  }

  /** Takes the lock file of `key`: resolves with its release, or undefined when held and `wait` is false. */
  private async acquire(key: string, wait: boolean): Promise<(() => Promise<void>) | undefined> {
    const file = path.join(this.dir, key);
    const mine = ownerName();
    let pause = FIRST_WAIT_MS;
    for (;;) {
      try {
        await nodeFs.symlink(mine, file);
        return () => this.release(file, mine);
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        if (code === 'ENOENT') {
          await this.makeDir();
          continue;
        }
        if (code !== 'EEXIST') throw this.failure(key, err);
      }
      if (await this.breakIfStale(file)) continue;
      if (!wait) return undefined;
      await sleep(pause);
      pause = Math.min(MAX_WAIT_MS, pause * 2);
    }
  }

  /** Removes the lock file when it is still ours (a lock broken as stale may be someone else's by now). */
  private async release(file: string, mine: string): Promise<void> {
    const target = await nodeFs.readlink(file).catch(() => undefined);
    if (target === mine) await nodeFs.unlink(file).catch(() => undefined);
  }

  /**
   * True when the lock at `file` was gone or stale and is gone now (try again at once); false
   * while its holder runs.
   */
  private async breakIfStale(file: string): Promise<boolean> {
    const seen = await this.holder(file);
    if (seen === 'gone') return true;
    if (!this.isStale(seen)) return false;
    const breaker = `${file}.break`;
    const mine = ownerName();
    try {
      await nodeFs.symlink(mine, breaker);
    } catch {
      // Another process is breaking it; a breaker left by a crash is itself stale after staleMs.
      const other = await this.holder(breaker);
      if (other !== 'gone' && this.isStale(other)) await nodeFs.unlink(breaker).catch(() => undefined);
      return false;
    }
    try {
      const now = await this.holder(file);
      // Only the lock judged stale is removed, never one taken since.
      if (now !== 'gone' && now.target === seen.target) await nodeFs.unlink(file).catch(() => undefined);
    } finally {
      await this.release(breaker, mine);
    }
    return true;
  }

  private isStale(h: { target: string; ageMs: number }): boolean {
    const owner = parseOwner(h.target);
    if (!owner) return true;
    // Whether a process runs can be asked on this host only: another host's lock (hosts sharing
    // the directory on a network volume) is broken by its age alone.
    if (owner.host === LOCK_HOST) {
      // This process takes a key once at a time (the KeyedLock): a lock naming it is a past one's.
      if (owner.pid === process.pid || !processAlive(owner.pid)) return true;
    }
    return h.ageMs > this.staleMs;
  }

  private async holder(file: string): Promise<{ target: string; ageMs: number } | 'gone'> {
    try {
      const [target, st] = await Promise.all([nodeFs.readlink(file), nodeFs.lstat(file)]);
      return { target, ageMs: Date.now() - st.mtimeMs };
    } catch {
      return 'gone';
    }
  }

  private async makeDir(): Promise<void> {
    try {
      await nodeFs.mkdir(this.dir, { recursive: true });
    } catch (err) {
      throw this.failure('locks', err);
    }
  }

  private failure(key: string, err: unknown): KeelError {
    const e = classify(err);
    return wrap(err, e.code, `could not take the cache lock ${key} in ${this.dir}: ${e.message}`);
  }
}

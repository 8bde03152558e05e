import { lstat, readdir, realpath, rm, statfs as fsStatfs } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { spaceOf, type StatfsResult } from './disk-monitor.js';

const DAY_MS = 86_400_000;

/** Which files a rule may remove. */
export interface CleanupRule {
  /** Directory searched (recursively). Symlinks are never followed and never removed. */
  dir: string;
  /** Matches the path relative to `dir` (`/`-separated): a RegExp, or a glob with `*`, `**` and `?`. Default: every file. */
  pattern?: RegExp | string;
  /** Only files last modified longer ago than this. Default 0. */
  olderThanMs?: number;
}

/** Rules from practice: logs after 7 days, temp files after 1 day, cache files after 3 days. */
export const CLEANUP_PRESETS = {
  logs: (dir: string): CleanupRule => ({ dir, pattern: /\.log(\.\d+)?(\.gz)?$/, olderThanMs: 7 * DAY_MS }),
  temp: (dir: string): CleanupRule => ({ dir, pattern: /\.tmp$/, olderThanMs: DAY_MS }),
  cache: (dir: string): CleanupRule => ({ dir, olderThanMs: 3 * DAY_MS }),
} as const;

/** Options of {@link cleanupDisk}. */
export interface CleanupOptions {
  rules: readonly CleanupRule[];
  /**
   * Stop once this share of the file system is free, counted as `df` does: free to unprivileged
   * users over used plus that (root's reserve is neither). Default 0.2. Use 1 to remove every match.
   */
  targetFreeRatio?: number;
  /**
   * Asked first to free `bytesNeeded` its own way (a cache evicting entries instead of files being
   * deleted under it); returns the bytes it freed.
   */
  evict?: (bytesNeeded: number) => Promise<number>;
  /** List what would be removed without removing it. Default false. */
  dryRun?: boolean;
  statfs?: (path: string) => Promise<StatfsResult>;
  now?: () => number;
}

/** One removed (or, in a dry run, removable) file. */
export interface RemovedFile {
  path: string;
  bytes: number;
  mtimeMs: number;
}

/** What a cleanup did. */
export interface CleanupReport {
  removed: RemovedFile[];
  freedBytes: number;
  /** Bytes the `evict` hook reported freeing. */
  evictedBytes: number;
  /** Whether the target free share was reached. */
  reachedTarget: boolean;
  /** Files that could not be removed, with why. */
  errors: { path: string; error: string }[];
}

function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob.charAt(i);
    if (c === '*' && glob.charAt(i + 1) === '*') {
      out += '.*';
      i++;
      if (glob.charAt(i + 1) === '/') i++;
    } else if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

async function walk(
  root: string,
  dir: string,
  out: { path: string; rel: string; bytes: number; mtimeMs: number }[],
): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const path = join(dir, name);
    const st = await lstat(path).catch(() => undefined);
    if (!st || st.isSymbolicLink()) continue;
    if (st.isDirectory()) await walk(root, path, out);
    else if (st.isFile())
      out.push({ path, rel: relative(root, path).split(sep).join('/'), bytes: st.size, mtimeMs: st.mtimeMs });
  }
}

/**
 * Frees space: first through the `evict` hook, then by removing files that match the rules,
 * oldest first, until `targetFreeRatio` of the file system is free. Never follows a symlink and
 * never removes anything whose real path is outside its rule's directory.
 * Throws on invalid options, naming the setting.
 */
export async function cleanupDisk(options: CleanupOptions): Promise<CleanupReport> {
  const target = options.targetFreeRatio ?? 0.2;
  if (!(target > 0 && target <= 1))
    throw new Error(`cleanup.targetFreeRatio: must be in (0, 1], got ${String(target)}`);
  if (options.rules.length === 0) throw new Error('cleanup.rules: at least one rule is required');
  const statfs = options.statfs ?? ((p: string) => fsStatfs(p));
  const now = (options.now ?? Date.now)();
  const first = options.rules[0] as CleanupRule;
  const s = spaceOf(await statfs(first.dir));
  // Freeing a byte moves it from used to free: their sum, what users can have, stays the same.
  const usable = s.usedBytes + s.freeBytes;
  let free = s.freeBytes;
  const needed = (): number => Math.max(0, Math.ceil(target * usable - free));
  const report: CleanupReport = {
    removed: [],
    freedBytes: 0,
    evictedBytes: 0,
    reachedTarget: false,
    errors: [],
  };

  if (options.evict && needed() > 0 && !options.dryRun) {
    report.evictedBytes = await options.evict(needed());
    const again = await statfs(first.dir);
    free = Math.max(free + report.evictedBytes, spaceOf(again).freeBytes);
  }

  const candidates: (RemovedFile & { root: string })[] = [];
  for (const [i, rule] of options.rules.entries()) {
    if (rule.olderThanMs !== undefined && !(rule.olderThanMs >= 0))
      throw new Error(`cleanup.rules[${String(i)}].olderThanMs: must be >= 0`);
    const root = await realpath(rule.dir).catch(() => undefined);
    if (!root) continue;
    const pattern =
      rule.pattern === undefined
        ? undefined
        : typeof rule.pattern === 'string'
          ? globToRegExp(rule.pattern)
          : rule.pattern;
    const files: { path: string; rel: string; bytes: number; mtimeMs: number }[] = [];
    await walk(root, root, files);
    for (const f of files) {
      if (pattern && !pattern.test(f.rel)) continue;
      if (now - f.mtimeMs < (rule.olderThanMs ?? 0)) continue;
      candidates.push({ path: f.path, bytes: f.bytes, mtimeMs: f.mtimeMs, root });
    }
  }
  candidates.sort((a, b) => a.mtimeMs - b.mtimeMs);
  const seen = new Set<string>();
  for (const c of candidates) {
    if (needed() === 0 && target < 1) break;
    if (seen.has(c.path)) continue;
    seen.add(c.path);
    // A directory swapped for a symlink after the walk must not lead outside the root.
    const real = await realpath(c.path).catch(() => undefined);
    if (real?.startsWith(c.root + sep) !== true) continue;
    if (!options.dryRun) {
      try {
        await rm(real);
      } catch (err) {
        report.errors.push({ path: c.path, error: (err as Error).message });
        continue;
      }
    }
    report.removed.push({ path: c.path, bytes: c.bytes, mtimeMs: c.mtimeMs });
    report.freedBytes += c.bytes;
    free += c.bytes;
  }
  if (!options.dryRun && options.statfs === undefined) {
    const after = await statfs(first.dir);
    free = spaceOf(after).freeBytes;
  }
  report.reachedTarget = needed() === 0;
  return report;
}

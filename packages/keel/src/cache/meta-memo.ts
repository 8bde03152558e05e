import type { Stats } from 'node:fs';
import type { CacheMeta } from './metadata.js';

/** What identifies one version of a meta.json file on disk: replaced, rewritten or touched, it changes. */
export interface FileStamp {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

/** The stamp of a file from its stat. */
export function stampOf(st: Pick<Stats, 'ino' | 'size' | 'mtimeMs' | 'ctimeMs'>): FileStamp {
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
}

/** True when both stamps name the same file content as far as stat can tell. */
export function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}

/** Most slices (over all remembered objects) kept in memory by default. */
export const DEFAULT_MEMO_SLICES = 100_000;

/**
 * Decoded metadata of recently used objects, each with the stamp of the meta.json it came from, so
 * a hit costs one `stat` instead of reading and parsing the file. Entries are replaced whenever
 * this process writes the metadata and dropped when it removes it; a stamp that no longer matches
 * the file (changed by another process or by hand) makes the caller read the file again. Bounded
 * by the number of slices it holds, least recently used objects forgotten first.
 */
export class MetaMemo {
  private readonly entries = new Map<string, { meta: CacheMeta; stamp: FileStamp }>();
  private slices = 0;

  constructor(private readonly maxSlices = DEFAULT_MEMO_SLICES) {}

  /** The remembered metadata of `hash` and the stamp of its file, most recently used from now on. */
  get(hash: string): { meta: CacheMeta; stamp: FileStamp } | undefined {
    const e = this.entries.get(hash);
    if (e) {
      this.entries.delete(hash);
      this.entries.set(hash, e);
    }
    return e;
  }

  /** The remembered entry, without changing the order of use. */
  peek(hash: string): { meta: CacheMeta; stamp: FileStamp } | undefined {
    return this.entries.get(hash);
  }

  /** True when `meta` is the object remembered for `hash` (nothing has replaced it since). */
  isCurrent(hash: string, meta: CacheMeta): boolean {
    return this.entries.get(hash)?.meta === meta;
  }

  set(hash: string, meta: CacheMeta, stamp: FileStamp): void {
    this.delete(hash);
    this.entries.set(hash, { meta, stamp });
    this.slices += meta.slices.length + 1;
    for (const [oldest, e] of this.entries) {
      if (this.slices <= this.maxSlices || oldest === hash) break;
      this.entries.delete(oldest);
      this.slices -= e.meta.slices.length + 1;
    }
  }

  delete(hash: string): void {
    const e = this.entries.get(hash);
    if (!e) return;
    this.entries.delete(hash);
    this.slices -= e.meta.slices.length + 1;
  }

  clear(): void {
    this.entries.clear();
    this.slices = 0;
  }

  get size(): number {
    return this.entries.size;
  }
}

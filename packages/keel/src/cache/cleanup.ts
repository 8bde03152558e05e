import path from 'node:path';
import { crc32 } from './crc32.js';
import { classify } from '../errors/index.js';
import { TMP_MARKER, tmpOwner, writtenByOtherProcess } from './atomic-write.js';
import type { CacheReporter } from './counters.js';
import type { SliceIndex } from './eviction.js';
import type { CacheFs } from './fs.js';
import { LOCK_HOST, type CacheLocks } from './file-lock.js';
import { META_FILE, objectDir, SLICE_PREFIX, slicePath } from './layout.js';
import type { ObjectStore } from './object-store.js';

/**
 * Another host's temporary file (hosts sharing the directory on a network volume) is left alone
 * this long: whether its writer still runs cannot be asked from here, and a write takes seconds.
 */
export const OTHER_HOST_TMP_GRACE_MS = 10 * 60_000;

/** What {@link RangeCache.cleanup} did. */
export interface CleanupReport {
  partialWrites: number;
  orphanedFiles: number;
  inconsistenciesFixed: number;
  corruptMetadata: number;
  objectsScanned: number;
}

/** What {@link RangeCache.verify} found (and repaired with `fix`). */
export interface VerifyReport extends CleanupReport {
  slicesChecked: number;
  bytesChecked: number;
  checksumFailures: number;
  missingSlices: number;
  fixed: boolean;
}

/** Objects cleanup, verify and open walk at once. */
const WALK_CONCURRENCY = 16;

/** What a walk over the cache needs from the cache (its files, locks, index and reports). */
export interface WalkContext {
  dir: string;
  /** `<dir>/objects` ({@link objectsRootOf}). */
  objectsRoot: string;
  fs: CacheFs;
  /** Paths a writer in this process is using: never removed. */
  inFlight: ReadonlySet<string>;
  locks: CacheLocks;
  store: ObjectStore;
  /** Valid slices found are indexed. */
  index: SliceIndex;
  report: CacheReporter;
}

/** Options of {@link walkCache}. */
export interface WalkOptions {
  /** Also read every slice and check its CRC32 (verify). */
  deep: boolean;
  /** Repair what is found; without, only report. */
  fix: boolean;
  /** Leave `.tmp` and unreferenced files younger than this alone (another process may own them). */
  minAgeMs: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * One pass over every object directory: removes stale `.tmp` files and orphans, fixes
 * references, indexes valid slices; with `deep`, also reads and verifies every slice.
 */
export async function walkCache(ctx: WalkContext, options: WalkOptions): Promise<VerifyReport> {
  const { deep, fix, onProgress, minAgeMs } = options;
  const report: VerifyReport = {
    partialWrites: 0,
    orphanedFiles: 0,
    inconsistenciesFixed: 0,
    corruptMetadata: 0,
    objectsScanned: 0,
    slicesChecked: 0,
    bytesChecked: 0,
    checksumFailures: 0,
    missingSlices: 0,
    fixed: fix,
  };
  const root = ctx.objectsRoot;
  const hashes: string[] = [];
  for (const shard of await readdirSafe(ctx, root)) {
    for (const hash of await readdirSafe(ctx, path.join(root, shard))) hashes.push(hash);
  }
  // Leftover probe files at the top level.
  for (const name of await readdirSafe(ctx, ctx.dir)) {
    const full = path.join(ctx.dir, name);
    if (name.includes(TMP_MARKER) && !ctx.inFlight.has(full) && !writtenByOtherProcess(name)) {
      if (fix) await ctx.fs.rm(full, { force: true });
    }
  }
  // Objects are independent (each under its own lock): walk several at once, so the disk's
  // queue stays busy.
  let done = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < hashes.length) {
      const hash = hashes[next++] as string;
      await ctx.locks.run(hash, () => walkObject(ctx, hash, deep, fix, report, minAgeMs));
      report.objectsScanned++;
      onProgress?.(++done, hashes.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(WALK_CONCURRENCY, hashes.length) }, worker));
  if (fix) {
    if (report.partialWrites > 0)
      ctx.report.repair(
        'partial_write_cleanup_total',
        `removed ${report.partialWrites} leftover .tmp file(s)`,
        report.partialWrites,
      );
    if (report.orphanedFiles > 0)
      ctx.report.repair(
        'orphaned_files_cleaned_total',
        `removed ${report.orphanedFiles} orphaned slice file(s)`,
        report.orphanedFiles,
      );
  }
  return report;
}

async function walkObject(
  ctx: WalkContext,
  hash: string,
  deep: boolean,
  fix: boolean,
  report: VerifyReport,
  minAgeMs: number,
): Promise<void> {
  const dir = objectDir(ctx.objectsRoot, hash);
  const names = await readdirSafe(ctx, dir);
  const young = new Set<string>();
  for (const name of names) {
    if (name === META_FILE) continue;
    // Files this young may belong to a writer in another process (a CLI cleanup of a live cache);
    // another host's temporary files (hosts sharing the directory) are judged by their age alone.
    const owner = tmpOwner(name);
    const graceMs =
      owner && owner.host !== LOCK_HOST ? Math.max(minAgeMs, OTHER_HOST_TMP_GRACE_MS) : minAgeMs;
    if (graceMs <= 0) continue;
    const st = await ctx.fs.stat(path.join(dir, name)).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs < graceMs) young.add(name);
  }
  const busy = (name: string): boolean =>
    young.has(name) || ctx.inFlight.has(path.join(dir, name)) || writtenByOtherProcess(name);
  for (const name of names) {
    if (name.includes(TMP_MARKER) && !busy(name)) {
      report.partialWrites++;
      if (fix) await ctx.fs.rm(path.join(dir, name), { force: true });
    }
  }
  const sliceFiles = names.filter((n) => n.startsWith(SLICE_PREFIX) && !n.includes(TMP_MARKER));
  const loaded = names.includes(META_FILE)
    ? await ctx.store.peek(hash, fix)
    : ({ state: 'missing' } as const);
  if (loaded.state === 'corrupt') {
    report.corruptMetadata++;
    return;
  }
  if (loaded.state === 'error') return;
  const referenced = new Set(
    loaded.state === 'ok' ? loaded.meta.slices.map((s) => `${SLICE_PREFIX}${s.index}`) : [],
  );
  for (const name of sliceFiles) {
    if (referenced.has(name) || busy(name)) continue;
    report.orphanedFiles++;
    if (fix) await ctx.fs.rm(path.join(dir, name), { force: true });
  }
  if (loaded.state === 'missing') {
    if (fix && sliceFiles.every((n) => !busy(n)))
      await ctx.fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    return;
  }
  const meta = loaded.meta;
  const present = new Set(sliceFiles);
  const missing = meta.slices.filter((s) => !present.has(`${SLICE_PREFIX}${s.index}`));
  report.missingSlices += missing.length;
  if (missing.length > 0 && fix) {
    const fixed = await ctx.store.fixReferences(hash);
    report.inconsistenciesFixed += fixed.removed;
  }
  const current = missing.length > 0 && fix ? await ctx.store.peek(hash, fix) : loaded;
  if (current.state !== 'ok') return;
  for (const s of current.meta.slices) {
    if (deep) {
      report.slicesChecked++;
      let ok = false;
      try {
        const bytes = await ctx.fs.readFile(slicePath(ctx.objectsRoot, hash, s.index));
        report.bytesChecked += bytes.length;
        ok = bytes.length === s.length && crc32(bytes) === s.crc32;
      } catch (err) {
        if (classify(err).code !== 'NOT_FOUND')
          ctx.report.fault(`could not read slice ${s.index} of ${hash}`, err);
      }
      if (!ok) {
        report.checksumFailures++;
        if (fix)
          await ctx.store.dropCorruptSlice(hash, current.meta.identity, s.index, 'failed verification', true);
        continue;
      }
    }
    ctx.index.add(hash, s);
  }
}

/** The names in `dir`; none when it is missing or unreadable (the latter reported as a fault). */
async function readdirSafe(ctx: WalkContext, dir: string): Promise<string[]> {
  try {
    return await ctx.fs.readdir(dir);
  } catch (err) {
    if (classify(err).code !== 'NOT_FOUND') ctx.report.fault(`could not list ${dir}`, err);
    return [];
  }
}

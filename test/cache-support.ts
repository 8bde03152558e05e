import { randomBytes } from 'node:crypto';
import * as nodeFs from 'node:fs/promises';
import { mkdtemp, rm, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach } from 'vitest';
import {
  identityHash,
  RangeCache,
  type CacheFs,
  type ObjectIdentity,
  type RangeCacheOptions,
} from 'keel/cache';

export const SLICE = 1024;

/** A temporary directory and the function that removes it with all it holds. */
export interface TempDir {
  dir: string;
  remove(): Promise<void>;
}

export async function tempDir(): Promise<TempDir> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-cache-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Gives every test of the file a fresh temporary directory, made before it and removed after it;
 * returns the current test's directory. Call at the top of the file, before hooks that use it:
 * hooks registered later run after it is made and before it is removed.
 */
export function useTempDir(): () => TempDir {
  let current: TempDir | undefined;
  beforeEach(async () => {
    current = await tempDir();
  });
  afterEach(async () => {
    await current?.remove();
    current = undefined;
  });
  return () => {
    if (!current) throw new Error('useTempDir: no temporary directory outside a test or its hooks');
    return current;
  };
}

/** Directory of `id` in the cache at `cacheDir`: `objects/<first two hex digits of its hash>/<hash>`. */
export function objectDirOf(cacheDir: string, id: ObjectIdentity): string {
  const h = identityHash(id);
  return path.join(cacheDir, 'objects', h.slice(0, 2), h);
}

/** File of slice `index` of `id` in the cache at `cacheDir`. */
export function sliceFileOf(cacheDir: string, id: ObjectIdentity, index: number): string {
  return path.join(objectDirOf(cacheDir, id), `slice-${index}`);
}

/** The meta.json of `id` in the cache at `cacheDir`. */
export function metaFileOf(cacheDir: string, id: ObjectIdentity): string {
  return path.join(objectDirOf(cacheDir, id), 'meta.json');
}

/** Opens a cache with 1 KiB slices and stores `size` random bytes of `id`, all slices. */
export async function filledCache(
  dir: string,
  id: ObjectIdentity,
  size: number,
  options: Partial<RangeCacheOptions> = {},
): Promise<{ cache: RangeCache; data: Buffer }> {
  const cache = await RangeCache.open({
    dir,
    sliceBytes: SLICE,
    maxBytes: 10 * 1024 * 1024,
    cleanupGraceMs: 0,
    ...options,
  });
  const data = randomBytes(size);
  await cache.putMeta(id, { etag: '"e1"', size, contentType: 'application/octet-stream' });
  for (let i = 0; i * SLICE < size; i++) {
    const r = await cache.writeSlice(id, i, data.subarray(i * SLICE, (i + 1) * SLICE), '"e1"');
    if (!r.stored) throw new Error(`fill failed: ${r.message}`);
  }
  return { cache, data };
}

export async function bytesOf(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

export { text };

/** A file-system call seen by {@link watchedFs}: `close` is a FileHandle's, with the path it was opened at. */
export interface FsCall {
  op: keyof CacheFs | 'close';
  path: string;
}

/**
 * The real file system, recording every call of the cache's that succeeds (and every close of a
 * handle it opened); `after` runs once a call has succeeded, before the cache sees its result.
 */
export function watchedFs(after?: (call: FsCall) => Promise<void> | void): { fs: CacheFs; calls: FsCall[] } {
  const calls: FsCall[] = [];
  const seen = async (call: FsCall): Promise<void> => {
    calls.push(call);
    await after?.(call);
  };
  const wrap =
    (op: keyof CacheFs): unknown =>
    async (...args: unknown[]): Promise<unknown> => {
      const file = String(args[0]);
      const result: unknown = await (nodeFs[op] as (...a: unknown[]) => Promise<unknown>)(...args);
      if (op === 'open') {
        const handle = result as FileHandle;
        const close = handle.close.bind(handle);
        handle.close = async (): Promise<void> => {
          await close();
          await seen({ op: 'close', path: file });
        };
      }
      await seen({ op, path: file });
      return result;
    };
  const ops: (keyof CacheFs)[] = [
    'open',
    'readFile',
    'rename',
    'unlink',
    'rm',
    'mkdir',
    'readdir',
    'stat',
    'statfs',
  ];
  return { fs: Object.fromEntries(ops.map((op) => [op, wrap(op)])) as unknown as CacheFs, calls };
}

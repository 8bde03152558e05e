import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import type { CacheFs } from './fs.js';
import type { VerifyOutcome, VerifyRequest } from './verify-pool.js';

/**
 * Reads and verifies on the event loop, through the cache's file system (the path taken with an
 * injected `fs`, or without verifying threads). `open` shares one handle between reads of a
 * slice; whoever passes it closes it.
 */
export async function readAndVerify(
  fs: CacheFs,
  r: VerifyRequest,
  open?: () => Promise<FileHandle>,
): Promise<VerifyOutcome> {
  const buffer = Buffer.allocUnsafe(r.length + (r.atEnd ? 1 : 0));
  let got = 0;
  try {
    const handle = open ? await open() : await fs.open(r.path, 'r');
    try {
      while (got < buffer.length) {
        const { bytesRead } = await handle.read(buffer, got, buffer.length - got, r.position + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    } finally {
      if (!open) await handle.close();
    }
  } catch (err) {
    return { ok: false, kind: 'error', error: err as NodeJS.ErrnoException };
  }
  if (got !== r.length) return { ok: false, kind: 'wrong-length', message: `read ${got} bytes` };
  for (let b = 0, at = 0; at < r.length; b++, at += r.blockBytes) {
    if (crc32(buffer.subarray(at, Math.min(r.length, at + r.blockBytes))) !== r.crcs[b])
      return { ok: false, kind: 'checksum', message: 'a block failed its CRC32' };
  }
  return { ok: true, bytes: buffer.subarray(0, r.length), release: () => undefined, metaChanged: false };
}

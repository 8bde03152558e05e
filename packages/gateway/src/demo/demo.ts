import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { createCipheriv, createHash } from 'node:crypto';
import { request } from 'undici';
import { keelError } from 'keel';
import { superviseOrigin } from './origin-supervisor.js';

/** The demo's objects: name and size. */
export const DEMO_OBJECTS = [
  { key: '1KiB.bin', size: 1024 },
  { key: '10MiB.bin', size: 10 * 1024 * 1024 },
  { key: '200MiB.bin', size: 200 * 1024 * 1024 },
] as const;

const BLOCK_BYTES = 1024 * 1024;

/** Deterministic pseudo-random bytes (AES-CTR over zeros) for block `n` of a demo object, so reruns serve the same data. */
function block(seed: string, n: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(n, 12);
  return createCipheriv('aes-128-ctr', key, iv).update(Buffer.alloc(BLOCK_BYTES));
}

/** The bytes of a demo object, block by block (never the whole object in memory). */
function* content(obj: (typeof DEMO_OBJECTS)[number]): Generator<Buffer> {
  for (let n = 0; n * BLOCK_BYTES < obj.size; n++)
    yield block(obj.key, n).subarray(0, Math.min(BLOCK_BYTES, obj.size - n * BLOCK_BYTES));
}

/**
 * Starts the demo's S3 origin: s3rver (with keel's patches) in a child process on a loopback port,
 * with an empty `demo` bucket, storing into a new directory under the system's temporary
 * directory. The process is started again on the same port whenever it dies (`log` is told), so
 * nothing a client sends to the origin can take down the process that called this.
 *
 * - `seed()` uploads {@link DEMO_OBJECTS} through s3rver's API, so their metadata (ETag …) is
 *   s3rver's own.
 * - `close()` stops the origin and removes its directory (also when the caller dies: the origin's
 *   process removes it when its parent goes away).
 * @throws when the origin's process does not start listening.
 */
export async function startDemoOrigin(options: { log?: (message: string) => void } = {}): Promise<{
  url: string;
  /** Where the origin stores its objects (removed by `close()`). */
  directory: string;
  /** The origin's process now; undefined while it is being started again. */
  pid(): number | undefined;
  seed(): Promise<void>;
  close(): Promise<void>;
}> {
  const log = options.log ?? ((message: string) => process.stderr.write(`demo origin: ${message}\n`));
  const directory = await mkdtemp(path.join(os.tmpdir(), 'keel-demo-origin-'));
  let origin: Awaited<ReturnType<typeof superviseOrigin>>;
  try {
    origin = await superviseOrigin(directory, log);
  } catch (err) {
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    url: origin.url,
    directory,
    pid: () => origin.pid(),
    seed: async () => {
      for (const obj of DEMO_OBJECTS) {
        const res = await request(`${origin.url}/demo/${obj.key}`, {
          method: 'PUT',
          body: Readable.from(content(obj)),
          headers: { 'content-length': String(obj.size), 'content-type': 'application/octet-stream' },
        });
        await res.body.dump();
        if (res.statusCode !== 200)
          throw keelError(
            'BAD_GATEWAY',
            `demo origin: the upload of ${obj.key} was answered ${res.statusCode}`,
          );
      }
    },
    close: () => (closing ??= origin.close().finally(() => rm(directory, { recursive: true, force: true }))),
  };
}

import { mkdir, mkdtemp, open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createCipheriv, createHash } from 'node:crypto';
import { fixS3rver } from './s3rver-fixes.js';

/** The demo's objects: name and size. */
export const DEMO_OBJECTS = [
  { key: '1KiB.bin', size: 1024 },
  { key: '10MiB.bin', size: 10 * 1024 * 1024 },
  { key: '200MiB.bin', size: 200 * 1024 * 1024 },
] as const;

/** Deterministic pseudo-random bytes (AES-CTR over zeros) for block `n` of a demo object, so reruns serve the same data. */
function block(seed: string, n: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(n, 12);
  return createCipheriv('aes-128-ctr', key, iv).update(Buffer.alloc(1024 * 1024));
}

/**
 * Starts an s3rver origin on a loopback port with a `demo` bucket holding the demo objects,
 * written to s3rver's directory block by block (never the whole object in memory).
 */
export async function startDemoOrigin(): Promise<{ url: string; close(): Promise<void> }> {
  const { default: S3rver } = (await import('s3rver')) as unknown as {
    default: new (o: Record<string, unknown>) => {
      run(): Promise<{ port: number }>;
      close(cb?: () => void): void;
    };
  };
  fixS3rver();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-demo-origin-'));
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: dir,
    configureBuckets: [{ name: 'demo' }],
  });
  const { port } = await server.run();
  const url = `http://127.0.0.1:${port}`;
  for (const obj of DEMO_OBJECTS) {
    // Upload through s3rver's API with a streamed body so its metadata (ETag …) is right.
    const file = path.join(dir, `${obj.key}.src`);
    await mkdir(dir, { recursive: true });
    const fh = await open(file, 'w');
    for (let n = 0; n * 1024 * 1024 < obj.size; n++) {
      const b = block(obj.key, n);
      await fh.write(b, 0, Math.min(b.length, obj.size - n * 1024 * 1024));
    }
    await fh.close();
    const { createReadStream } = await import('node:fs');
    const { request } = await import('undici');
    const res = await request(`${url}/demo/${obj.key}`, {
      method: 'PUT',
      body: createReadStream(file),
      headers: { 'content-length': String(obj.size), 'content-type': 'application/octet-stream' },
    });
    await res.body.dump();
    if (res.statusCode !== 200)
      throw new Error(`demo origin: upload of ${obj.key} answered ${res.statusCode}`);
    const { rm } = await import('node:fs/promises');
    await rm(file);
  }
  return {
    url,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chaos } from 'keel/chaos';
import { createGateway, type Gateway } from '@keel/gateway';
import {
  bodyOf,
  CLIENT_KEY,
  gatewayOptions,
  s3,
  sha,
  signedRequest,
  SLICE,
  startHarness,
  startRecordedGateway,
  TEST_CREDENTIALS,
  type Harness,
  type Recorded,
  type Recorder,
} from './gateway-protocol-support.js';

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

async function put(key: string, data: Buffer): Promise<void> {
  await h.direct.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: data }));
}

/** Reads through the gateway, waits until the slices are on disk, and checks they are. */
async function readCached(key: string, want: Buffer, versionId?: string): Promise<void> {
  const got = await h.client.send(
    new GetObjectCommand({ Bucket: 'b', Key: key, ...(versionId ? { VersionId: versionId } : {}) }),
  );
  expect(sha(await bodyOf(got))).toBe(sha(want));
  await h.gateway.idle();
  const meta = await h.gateway.cache?.getMeta({ bucket: 'b', key, versionId: versionId ?? null });
  expect(meta?.slices.length).toBe(Math.ceil(want.length / SLICE));
}

async function readThrough(key: string): Promise<Buffer | string> {
  try {
    return await bodyOf(await h.client.send(new GetObjectCommand({ Bucket: 'b', Key: key })));
  } catch (err) {
    return (err as Error).name;
  }
}

describe('writes through the gateway drop the cached object', () => {
  it('PutObject: the next read returns the new bytes, not the cached ones', async () => {
    const v1 = randomBytes(SLICE * 2 + 3);
    await put('put.bin', v1);
    await readCached('put.bin', v1);
    const v2 = randomBytes(SLICE + 9);
    await h.client.send(new PutObjectCommand({ Bucket: 'b', Key: 'put.bin', Body: v2 }));
    expect(sha((await readThrough('put.bin')) as Buffer)).toBe(sha(v2));
  });

  it('DeleteObject: the next read is NoSuchKey', async () => {
    const v1 = randomBytes(1000);
    await put('delete me.bin', v1);
    await readCached('delete me.bin', v1);
    await h.client.send(new DeleteObjectCommand({ Bucket: 'b', Key: 'delete me.bin' }));
    expect(await readThrough('delete me.bin')).toBe('NoSuchKey');
  });

  it('DeleteObject of one version drops that version and the current one', async () => {
    const v1 = randomBytes(5000);
    await put('versioned.bin', v1);
    await readCached('versioned.bin', v1);
    await readCached('versioned.bin', v1, 'v-1');
    await h.client.send(new DeleteObjectCommand({ Bucket: 'b', Key: 'versioned.bin', VersionId: 'v-1' }));
    const cache = h.gateway.cache;
    expect(await cache?.getMeta({ bucket: 'b', key: 'versioned.bin', versionId: 'v-1' })).toBeUndefined();
    expect(await cache?.getMeta({ bucket: 'b', key: 'versioned.bin', versionId: null })).toBeUndefined();
    // s3rver has no versioning: deleting "a version" deleted the object.
    expect(await readThrough('versioned.bin')).toBe('NoSuchKey');
  });

  it('CopyObject: the destination is dropped and reads the copied bytes', async () => {
    const src = randomBytes(SLICE + 1);
    const dst = randomBytes(SLICE * 3);
    await put('copy-src.bin', src);
    await put('copy-dst.bin', dst);
    await readCached('copy-dst.bin', dst);
    await h.client.send(
      new CopyObjectCommand({ Bucket: 'b', Key: 'copy-dst.bin', CopySource: 'b/copy-src.bin' }),
    );
    expect(sha((await readThrough('copy-dst.bin')) as Buffer)).toBe(sha(src));
  });

  it('CompleteMultipartUpload: the object is dropped when the upload completes, not before', async () => {
    const old = randomBytes(SLICE * 2);
    await put('multi.bin', old);
    await readCached('multi.bin', old);
    const part1 = randomBytes(5 * 1024 * 1024);
    const part2 = randomBytes(1234);
    const { UploadId } = await h.client.send(
      new CreateMultipartUploadCommand({ Bucket: 'b', Key: 'multi.bin' }),
    );
    const etags: string[] = [];
    for (const [i, part] of [part1, part2].entries()) {
      const r = await h.client.send(
        new UploadPartCommand({ Bucket: 'b', Key: 'multi.bin', UploadId, PartNumber: i + 1, Body: part }),
      );
      etags.push(r.ETag as string);
    }
    // Uploading parts leaves the object as it is: still cached.
    expect(await h.gateway.cache?.getMeta({ bucket: 'b', key: 'multi.bin' })).toBeDefined();
    expect(sha((await readThrough('multi.bin')) as Buffer)).toBe(sha(old));
    await h.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: 'b',
        Key: 'multi.bin',
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
    expect(sha((await readThrough('multi.bin')) as Buffer)).toBe(sha(Buffer.concat([part1, part2])));
  });

  it('lib-storage Upload (multipart) replaces a cached object', async () => {
    const old = randomBytes(4000);
    await put('upload.bin', old);
    await readCached('upload.bin', old);
    const fresh = randomBytes(6 * 1024 * 1024 + 77);
    await new Upload({ client: h.client, params: { Bucket: 'b', Key: 'upload.bin', Body: fresh } }).done();
    expect(sha((await readThrough('upload.bin')) as Buffer)).toBe(sha(fresh));
  });

  it('DeleteObjects: every key listed is dropped', async () => {
    const keys = ['multi-del-a.bin', 'multi-del b & <c>.bin', 'multi-del-ünïcode +.bin'];
    for (const k of keys) {
      const d = randomBytes(3000);
      await put(k, d);
      await readCached(k, d);
    }
    const out = await h.client.send(
      new DeleteObjectsCommand({ Bucket: 'b', Delete: { Objects: keys.map((Key) => ({ Key })) } }),
    );
    expect(out.Deleted?.map((d) => d.Key).sort()).toEqual([...keys].sort());
    for (const k of keys) {
      expect(await h.gateway.cache?.getMeta({ bucket: 'b', key: k })).toBeUndefined();
      expect(await readThrough(k)).toBe('NoSuchKey');
    }
  });

  it('a write the origin refuses leaves the cached object as it was', async () => {
    const v1 = randomBytes(SLICE + 5);
    await put('kept.bin', v1);
    await readCached('kept.bin', v1);
    await expect(
      h.client.send(new CopyObjectCommand({ Bucket: 'b', Key: 'kept.bin', CopySource: 'b/does-not-exist' })),
    ).rejects.toMatchObject({ name: 'NoSuchKey' });
    expect((await h.gateway.cache?.getMeta({ bucket: 'b', key: 'kept.bin' }))?.slices.length).toBe(2);
    expect(sha((await readThrough('kept.bin')) as Buffer)).toBe(sha(v1));
  });
});

describe('origin failures on writes', () => {
  it('an origin 500 reaches the client as 500 InternalError, not as the gateway being unavailable', async () => {
    // The origin answers DeleteObjects with a 500 (every time), behind keel's HTTP fault proxy.
    const faults = await chaos.httpProxy({
      upstream: h.origin.url,
      rules: [
        {
          name: 'delete-fails',
          method: 'POST',
          path: '/b',
          action: {
            type: 'status',
            status: 500,
            contentType: 'application/xml',
            body: '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>ORIGIN-ID</RequestId></Error>',
          },
        },
      ],
    });
    const g: Gateway = await createGateway(
      gatewayOptions(`http://127.0.0.1:${String(faults.port)}`, {
        cacheDir: `${h.cacheDir}-origin-500`,
        sliceBytes: SLICE,
      }),
    );
    await g.listen(0);
    try {
      const body = Buffer.from(
        '<Delete><Object><Key>fails/a.bin</Key></Object><Object><Key>fails/b.bin</Key></Object></Delete>',
      );
      const res = await signedRequest(g.url(), CLIENT_KEY, 'POST', '/b?delete', {}, body);
      expect(res.status).toBe(500);
      expect(faults.stats.faults['delete-fails']).toBe(1);
      expect(res.body.toString()).toContain('<Code>InternalError</Code>');
      expect(res.body.toString()).toContain(`<RequestId>${String(res.headers['x-request-id'])}</RequestId>`);
      expect(res.body.toString()).not.toContain('ORIGIN-ID');
    } finally {
      await g.close(1000);
      await faults.close();
    }
  });
});

describe('a write racing a miss of the same object', () => {
  it('is never followed by the old version, for reads that started after it', async () => {
    // An origin whose answer to the miss (the old version, as it was when asked) arrives only
    // after a write went through: the order in which S3 can answer across two connections.
    const versions: [Buffer, Buffer] = [randomBytes(1000), randomBytes(1000)];
    let current = 0;
    let holdNextGet: Promise<void> | undefined;
    const origin = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.method === 'PUT') {
          current = 1;
          res.writeHead(200, { etag: '"v2"' }).end();
          return;
        }
        const v = current;
        const body = versions[v === 0 ? 0 : 1];
        const headers = {
          etag: v === 0 ? '"v1"' : '"v2"',
          'last-modified': new Date(0).toUTCString(),
          'content-type': 'application/octet-stream',
        };
        const answer = (): void => {
          const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
          if (range) {
            const a = Number(range[1]);
            const b = Math.min(body.length - 1, range[2] ? Number(range[2]) : body.length - 1);
            res.writeHead(206, { ...headers, 'content-range': `bytes ${a}-${b}/${body.length}` });
            res.end(req.method === 'HEAD' ? undefined : body.subarray(a, b + 1));
          } else {
            res.writeHead(200, { ...headers, 'content-length': String(body.length) });
            res.end(req.method === 'HEAD' ? undefined : body);
          }
        };
        const hold = holdNextGet;
        holdNextGet = undefined;
        if (hold) void hold.then(answer);
        else answer();
      });
    });
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    const g: Gateway = await createGateway(
      gatewayOptions(`http://127.0.0.1:${String((origin.address() as { port: number }).port)}`, {
        cacheDir: `${h.cacheDir}-race`,
        sliceBytes: SLICE,
      }),
    );
    await g.listen(0);
    const client = s3(g.url(), CLIENT_KEY);
    try {
      let release!: () => void;
      holdNextGet = new Promise<void>((r) => (release = r));
      const first = client.send(new GetObjectCommand({ Bucket: 'b', Key: 'race.bin' })).then(bodyOf);
      for (let i = 0; i < 500 && holdNextGet !== undefined; i++) await new Promise((r) => setTimeout(r, 2));
      expect(holdNextGet).toBeUndefined(); // the miss reached the origin and waits there
      await client.send(new PutObjectCommand({ Bucket: 'b', Key: 'race.bin', Body: versions[1] }));
      // A read that starts after the write must not join the lookup that began before it.
      const second = client.send(new GetObjectCommand({ Bucket: 'b', Key: 'race.bin' })).then(bodyOf);
      setTimeout(release, 50);
      expect(sha(await second)).toBe(sha(versions[1]));
      // The read that began before the write gets the version it asked for, whole.
      expect(sha(await first)).toBe(sha(versions[0]));
      await g.idle();
      // Nothing the old lookup brought back is served afterwards.
      const third = await client.send(new GetObjectCommand({ Bucket: 'b', Key: 'race.bin' })).then(bodyOf);
      expect(sha(third)).toBe(sha(versions[1]));
    } finally {
      client.destroy();
      await g.close(1000);
      await new Promise((r) => origin.close(r));
    }
  });
});

describe('DeleteObjects body', () => {
  it('reaches the origin byte for byte while its keys are dropped', async () => {
    const { recorder, gateway: g } = await startRecordedGateway(h, 'recorded', { sliceBytes: SLICE });
    const client = s3(g.url(), CLIENT_KEY);
    try {
      const keys = ['rec-x&y.bin', 'rec-z.bin'];
      for (const k of keys) {
        await put(k, randomBytes(100));
        await client.send(new GetObjectCommand({ Bucket: 'b', Key: k })).then(bodyOf);
      }
      await g.idle();
      // Odd but valid XML: a declaration, a comment, entities, and whitespace kept as sent.
      const body = Buffer.from(
        `<?xml version="1.0" encoding="UTF-8"?>\n<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">\n  <!-- two keys -->\n  <Object><Key>rec-x&amp;y.bin</Key></Object>\n  <Object><Key>rec-z.bin</Key><VersionId>null</VersionId></Object>\n  <Quiet>false</Quiet>\n</Delete>\n`,
      );
      const res = await signedRequest(
        g.url(),
        CLIENT_KEY,
        'POST',
        '/b?delete',
        { 'content-type': 'application/xml' },
        body,
      );
      expect(res.status).toBe(200);
      const deletes = recorder.seen.filter((r) => r.method === 'POST' && r.url.includes('delete'));
      expect(deletes).toHaveLength(1);
      expect(sha(deletes[0]?.body ?? Buffer.alloc(0))).toBe(sha(body));
      for (const k of keys) expect(await g.cache?.getMeta({ bucket: 'b', key: k })).toBeUndefined();
      expect(
        Number(await g.metrics.invalidations.get().then((m) => m.values[0]?.value)),
      ).toBeGreaterThanOrEqual(2);
    } finally {
      client.destroy();
      await g.close(500);
      await recorder.close();
    }
  });
});

describe('DeleteObjects body limit (8 MiB)', () => {
  const LIMIT = 8 * 1024 * 1024;
  let recorder: Recorder;
  let g: Gateway;
  beforeAll(async () => {
    ({ recorder, gateway: g } = await startRecordedGateway(h, 'delete-limit', { sliceBytes: SLICE }));
  });
  afterAll(async () => {
    await g.close(500);
    await recorder.close();
  });

  /** Puts `keys` at the origin and reads them through `g`, so they are cached. */
  async function cached(keys: string[]): Promise<void> {
    for (const k of keys) {
      await put(k, randomBytes(100));
      const res = await signedRequest(g.url(), CLIENT_KEY, 'GET', `/b/${k}`);
      expect(res.status).toBe(200);
    }
    await g.idle();
    for (const k of keys) expect(await g.cache?.getMeta({ bucket: 'b', key: k })).toBeDefined();
  }

  /** A DeleteObjects body of `keys`, padded with whitespace to `size` bytes. */
  function deleteBody(keys: string[], size: number): Buffer {
    const objects = keys.map((k) => `<Object><Key>${k}</Key></Object>`).join('');
    const head = `<?xml version="1.0" encoding="UTF-8"?>\n<Delete>${objects}`;
    const tail = '</Delete>';
    return Buffer.concat([
      Buffer.from(head),
      Buffer.alloc(size - head.length - tail.length, ' '),
      Buffer.from(tail),
    ]);
  }

  const deletesSeen = (): Recorded[] =>
    recorder.seen.filter((r) => r.method === 'POST' && r.url.includes('delete'));
  const invalidations = async (): Promise<number> =>
    (await g.metrics.invalidations.get()).values[0]?.value ?? 0;

  it('deletes and drops the keys of a body of exactly 8 MiB, passed on byte for byte', async () => {
    const keys = ['limit-at-a.bin', 'limit-at-b.bin'];
    await cached(keys);
    const before = { deletes: deletesSeen().length, invalidations: await invalidations() };
    const body = deleteBody(keys, LIMIT);
    const res = await signedRequest(g.url(), CLIENT_KEY, 'POST', '/b?delete', {}, body);
    expect(res.status).toBe(200);
    for (const k of keys) expect(res.body.toString()).toContain(`<Key>${k}</Key>`);
    const seen = deletesSeen().slice(before.deletes);
    expect(seen).toHaveLength(1);
    expect(sha(seen[0]?.body ?? Buffer.alloc(0))).toBe(sha(body));
    for (const k of keys) {
      expect(await g.cache?.getMeta({ bucket: 'b', key: k })).toBeUndefined();
      expect((await signedRequest(g.url(), CLIENT_KEY, 'GET', `/b/${k}`)).status).toBe(404);
    }
    expect(await invalidations()).toBe(before.invalidations + keys.length);
  });

  it('refuses a body one byte over 8 MiB with 400 InvalidRequest: nothing reaches the origin, nothing is dropped', async () => {
    const keys = ['limit-over-a.bin', 'limit-over-b.bin'];
    await cached(keys);
    const before = { deletes: deletesSeen().length, invalidations: await invalidations() };
    const res = await signedRequest(
      g.url(),
      CLIENT_KEY,
      'POST',
      '/b?delete',
      {},
      deleteBody(keys, LIMIT + 1),
    );
    expect(res.status).toBe(400);
    const xml = res.body.toString();
    expect(xml).toContain('<Code>InvalidRequest</Code>');
    expect(xml).toContain(`at most ${LIMIT} bytes`);
    expect(xml).toContain(`<RequestId>${String(res.headers['x-request-id'])}</RequestId>`);
    expect(deletesSeen().slice(before.deletes)).toEqual([]);
    expect(await invalidations()).toBe(before.invalidations);
    for (const k of keys) {
      expect(await g.cache?.getMeta({ bucket: 'b', key: k })).toBeDefined();
      expect(await readThrough(k)).toBeInstanceOf(Buffer);
    }
  });
});

describe('browser form uploads (POST Object)', () => {
  it.each([
    ['204', {}],
    ['201', { success_action_status: '201' }],
    ['303', { success_action_redirect: 'http://example.invalid/done' }],
  ])('drop the key the origin says it stored (%s)', async (_status, fields: Record<string, string>) => {
    const g = await createGateway({
      upstream: h.origin.url,
      originCredentials: TEST_CREDENTIALS,
      auth: 'anonymous',
      cacheDir: `${h.cacheDir}-form-${_status}`,
      sliceBytes: SLICE,
      log: () => undefined,
    });
    await g.listen(0);
    try {
      const key = `form dir/up+loaded ${_status}.bin`;
      const v1 = randomBytes(SLICE + 10);
      await put(key, v1);
      const url = `${g.url()}/b/${key.split('/').map(encodeURIComponent).join('/')}`;
      expect(sha(Buffer.from(await (await fetch(url)).arrayBuffer()))).toBe(sha(v1));
      await g.idle();
      expect(await g.cache?.getMeta({ bucket: 'b', key })).toBeDefined();
      const v2 = randomBytes(500);
      const form = new FormData();
      form.append('key', key);
      for (const [k, v] of Object.entries(fields)) form.append(k, v);
      form.append('file', new Blob([v2]), 'upload.bin');
      const res = await fetch(`${g.url()}/b`, { method: 'POST', body: form, redirect: 'manual' });
      expect(res.status).toBe(Number(_status));
      await res.arrayBuffer();
      expect(await g.cache?.getMeta({ bucket: 'b', key })).toBeUndefined();
      expect(sha(Buffer.from(await (await fetch(url)).arrayBuffer()))).toBe(sha(v2));
    } finally {
      await g.close(500);
    }
  });
});

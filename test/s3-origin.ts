/**
 * An S3 origin for tests: s3rver on loopback, behind a thin shim that adds what s3rver lacks and
 * real S3 has — If-Match on GET, ListParts and AbortMultipartUpload, 416 for a range of an empty
 * object — and records open uploads.
 */
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import S3rver from 's3rver';
import { fixS3rver } from '../packages/gateway/src/demo/s3rver-fixes.js';

export interface S3Origin {
  /** Base URL clients use (the shim). */
  url: string;
  port: number;
  /** s3rver itself, without the shim. */
  directPort: number;
  /**
   * Multipart uploads created and neither completed nor aborted. With `withParts`, only those that
   * received a part: an upload whose creation answer a client never got (the connection was cut)
   * holds none, as the client never learned its id.
   */
  openUploads(options?: { withParts?: boolean }): string[];
  /** The most UploadPart requests the origin was handling at once. */
  maxConcurrentParts(): number;
  /** Requests the origin has received so far. */
  requests(): number;
  close(): Promise<void>;
}

export const TEST_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export async function startS3Origin(buckets: string[] = ['b']): Promise<S3Origin> {
  fixS3rver(); // S3's answers where s3rver 3 differs (empty ranges, multipart errors, ListObjectVersions)
  const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-s3rver-'));
  const s3rver = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: dir,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const address = (await s3rver.run()) as { port: number };
  const directPort = address.port;
  // Our own agent, so close() can drop the shim's connections to s3rver (s3rver waits for them).
  const agent = new http.Agent({ keepAlive: true });
  const uploads = new Map<string, { parts: Map<number, { etag: string; size: number }>; open: boolean }>();

  const forward = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    body: Buffer,
    onResponse?: (status: number, headers: http.IncomingHttpHeaders, data: Buffer) => void,
  ): void => {
    const up = http.request(
      { agent, host: '127.0.0.1', port: directPort, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        if (!onResponse) {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
          return;
        }
        const parts: Buffer[] = [];
        upRes.on('data', (d: Buffer) => parts.push(d));
        upRes.on('end', () => {
          const data = Buffer.concat(parts);
          onResponse(upRes.statusCode ?? 502, upRes.headers, data);
          res.writeHead(upRes.statusCode ?? 502, upRes.headers).end(data);
        });
      },
    );
    up.on('error', () => res.destroy());
    up.end(body);
  };

  const headEtag = (p: string): Promise<string | undefined> =>
    new Promise((resolve) => {
      http
        .request({ agent, host: '127.0.0.1', port: directPort, method: 'HEAD', path: p }, (r) => {
          r.resume();
          resolve(r.statusCode === 200 ? r.headers.etag : undefined);
        })
        .on('error', () => resolve(undefined))
        .end();
    });

  const sockets = new Set<import('node:net').Socket>();
  let partsInFlight = 0;
  let maxPartsInFlight = 0;
  let requests = 0;
  const shim = http.createServer((req, res) => {
    requests++;
    if (req.method === 'PUT' && req.url?.includes('uploadId=')) {
      maxPartsInFlight = Math.max(maxPartsInFlight, ++partsInFlight);
      res.once('close', () => partsInFlight--);
    }
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        const url = new URL(req.url ?? '/', 'http://x');
        const uploadId = url.searchParams.get('uploadId');
        if ((req.method === 'GET' || req.method === 'HEAD') && req.headers['if-match'] && !uploadId) {
          const etag = await headEtag(url.pathname);
          if (etag !== undefined && etag !== req.headers['if-match']) {
            res
              .writeHead(412, { 'content-type': 'application/xml' })
              .end(
                '<?xml version="1.0"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>',
              );
            return;
          }
        }
        if (req.method === 'GET' && uploadId) {
          const u = uploads.get(uploadId);
          if (!u?.open) {
            res
              .writeHead(404, { 'content-type': 'application/xml' })
              .end(
                '<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>',
              );
            return;
          }
          const parts = [...u.parts.entries()]
            .sort((a, b) => a[0] - b[0])
            .map(
              ([n, p]) =>
                `<Part><PartNumber>${n}</PartNumber><ETag>${p.etag}</ETag><Size>${p.size}</Size></Part>`,
            );
          res
            .writeHead(200, { 'content-type': 'application/xml' })
            .end(
              `<?xml version="1.0"?><ListPartsResult><UploadId>${uploadId}</UploadId>${parts.join('')}</ListPartsResult>`,
            );
          return;
        }
        if (req.method === 'DELETE' && uploadId) {
          const u = uploads.get(uploadId);
          if (u) u.open = false;
          res.writeHead(204).end();
          return;
        }
        if (req.method === 'POST' && url.searchParams.has('uploads')) {
          forward(req, res, body, (status, _h, data) => {
            const id = /<UploadId>([^<]+)<\/UploadId>/.exec(data.toString())?.[1];
            if (status === 200 && id) uploads.set(id, { parts: new Map(), open: true });
          });
          return;
        }
        if (req.method === 'PUT' && uploadId) {
          const u = uploads.get(uploadId);
          if (!u?.open) {
            res
              .writeHead(404, { 'content-type': 'application/xml' })
              .end(
                '<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>',
              );
            return;
          }
          forward(req, res, body, (status, headers) => {
            if (status === 200 && typeof headers.etag === 'string')
              u.parts.set(Number(url.searchParams.get('partNumber')), {
                etag: headers.etag,
                size: body.length,
              });
          });
          return;
        }
        if (req.method === 'POST' && uploadId) {
          forward(req, res, body, (status) => {
            const u = uploads.get(uploadId);
            if (status === 200 && u) u.open = false;
          });
          return;
        }
        forward(req, res, body);
      })();
    });
  });
  shim.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => shim.listen(0, '127.0.0.1', r));
  const port = (shim.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    directPort,
    openUploads: (options) =>
      [...uploads.entries()]
        .filter(([, u]) => u.open && (!options?.withParts || u.parts.size > 0))
        .map(([id]) => id),
    maxConcurrentParts: () => maxPartsInFlight,
    requests: () => requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => shim.close(r));
      agent.destroy();
      await new Promise((r) => s3rver.close(r));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

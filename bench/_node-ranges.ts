/**
 * The ceiling for Node on these cores: a minimal HTTP server that answers byte ranges of one object
 * from a Buffer in memory, with no checks, no cache and no S3 (bench/gateway.ts, memoryTier).
 * Usage: _node-ranges.ts <object URL> [workers]. Fetches the object once, then prints
 * `S3 endpoint http://127.0.0.1:<port>` on stderr; with workers > 1, node:cluster workers share
 * the port.
 */
import cluster from 'node:cluster';
import http from 'node:http';

const [objectUrl, workersArg] = process.argv.slice(2);
if (!objectUrl) throw new Error('usage: _node-ranges.ts <object URL> [workers]');
const workers = Number(workersArg ?? 1);

if (cluster.isPrimary && workers > 1) {
  // The port is picked once, then every worker listens on it.
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((r) => probe.close(() => r()));
  let up = 0;
  for (let i = 0; i < workers; i++)
    cluster.fork({ NODE_RANGES_PORT: String(port) }).on('message', () => {
      if (++up === workers) process.stderr.write(`S3 endpoint http://127.0.0.1:${port}\n`);
    });
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill();
    process.exit(0);
  });
} else {
  const res = await fetch(objectUrl);
  if (!res.ok) throw new Error(`GET ${objectUrl}: ${res.status}`);
  const object = Buffer.from(await res.arrayBuffer());
  const etag = res.headers.get('etag') ?? '"x"';
  const server = http.createServer((req, out) => {
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) {
      out.writeHead(200, { 'content-length': object.length, etag });
      out.end(object);
      return;
    }
    const start = Number(m[1]);
    const end = Math.min(Number(m[2]), object.length - 1);
    out.writeHead(206, {
      'content-length': end - start + 1,
      'content-range': `bytes ${start}-${end}/${object.length}`,
      etag,
    });
    out.end(object.subarray(start, end + 1));
  });
  server.keepAliveTimeout = 60_000;
  const port = Number(process.env.NODE_RANGES_PORT ?? 0);
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  if (cluster.isWorker) process.send?.('up');
  else process.stderr.write(`S3 endpoint http://127.0.0.1:${(server.address() as { port: number }).port}\n`);
  process.on('SIGTERM', () => process.exit(0));
}

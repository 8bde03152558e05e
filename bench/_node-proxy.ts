/**
 * The least an HTTP proxy written in Node does on a miss, as a reference for keel's: answer each
 * GET with the origin's answer to the same path and Range, through a pool of kept-alive
 * connections (undici), headers and body passed on as they come. No cache, no signing, no
 * policies. `node --import tsx bench/_node-proxy.ts <origin-url> [undici|http]` prints
 * `S3 endpoint <url>` once listening.
 */
import http from 'node:http';
import { pipeline } from 'node:stream';
import { Pool } from 'undici';

const origin = process.argv[2];
if (!origin) throw new Error('usage: _node-proxy.ts <origin-url> [undici|http]');
const mode = process.argv[3] ?? 'undici';
if (mode !== 'undici' && mode !== 'http') throw new Error(`mode must be undici or http, got ${mode}`);
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding']);
const pool = new Pool(origin, { connections: 64 });
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const target = new URL(origin);

/** The origin's answer headers without the hop-by-hop ones, to pass on to the client. */
function endToEnd(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP.has(k)) out[k] = v;
  return out;
}

const server = http.createServer((req, res) => {
  const headers = req.headers.range ? { range: req.headers.range } : {};
  const fail = (): void => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  };
  if (mode === 'http') {
    const up = http.request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, endToEnd(answer.headers));
        pipeline(answer, res, () => undefined);
      },
    );
    up.on('error', fail);
    up.end();
    return;
  }
  pool.request({ path: req.url ?? '/', method: 'GET', headers }).then((answer) => {
    res.writeHead(answer.statusCode, endToEnd(answer.headers));
    pipeline(answer.body, res, () => undefined);
  }, fail);
});
server.listen(0, '127.0.0.1', () => {
  const a = server.address() as { port: number };
  console.error(`S3 endpoint http://127.0.0.1:${a.port}`);
});

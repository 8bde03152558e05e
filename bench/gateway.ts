/**
 * keel gateway against nginx (proxy_cache + slice) in front of the same s3rver origin:
 * 1. cache hits with 1 MiB and 4 KiB ranges, 64 connections (wrk): requests/s and p99;
 * 2. a stampede: 100 clients at once on an uncached 64 MiB object: origin bytes / object size;
 * 3. misses: time to first byte through keel over direct to the origin, and through nginx, a bare
 *    TCP relay and a minimal Node HTTP proxy (bench/_node-proxy.ts) as references; then the same
 *    with the origin 20 ms away (a latency toxic), as S3 is from a gateway in its region;
 * 4. passthrough auth: hits the origin authorises with a 304 against hits in gateway auth, origin
 *    on loopback and 20 ms away: latency p50/p99, origin bytes per hit, the origin's round trip.
 * The origin (s3rver) runs in a process of its own (bench/_s3-origin.ts), as it would elsewhere.
 * Writes bench/results/gateway.json. `--only hits,stampede,missTtfb,passthroughHits` runs some sections and keeps
 * the others' last figures in the file; KEEL_BENCH_CPU_PROF_DIR=<dir> profiles the keel process.
 * `--out <file>` writes the figures there instead (a trial run that leaves the record alone);
 * KEEL_BENCH_MISS_OBJECTS sets how many 1 MiB objects the miss section reads (default 40, the first
 * 5 not counted).
 * `--only memoryTier`: hits (1 MiB and 4 KiB ranges) from keel's memory tier and from its disk tier
 * (--memory-cache-bytes 0), against nginx and against a minimal Node server answering the ranges
 * from a Buffer (bench/_node-ranges.ts), all one process; then origin bytes for a PUT and 10 GETs
 * of a 64 MiB object through keel (write-through).
 * `--only fleet`: three keel gateways on one cache directory coordinated through Redis against three
 * nginx sharing nothing and against one (stampede origin bytes), and the cost of --coordinator
 * (bench/_fleet.ts; Redis on 127.0.0.1:6379 or KEEL_BENCH_REDIS_URL).
 * `--only oneReader`: one client reads whole 256 MiB objects, cold and warm, through keel, nginx
 * (slice 8m) and directly, then cold with each origin connection limited to 50 MB/s
 * (bench/_one-reader.ts; KEEL_BENCH_ONE_READER_MIB, _OBJECTS and _LIMIT_KBPS change the figures).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, createCipheriv } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chaos } from 'keel/chaos';
import { oneReader } from './_one-reader.js';
import { fleet } from './_fleet.js';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';

const OBJECT = 64 * 1024 * 1024;
const SECONDS = Number(process.env.KEEL_BENCH_GATEWAY_SECONDS ?? 6);
const CONNECTIONS = 64;
const ROUNDS = Number(process.env.KEEL_BENCH_GATEWAY_ROUNDS ?? 3);
const SECTIONS = [
  'missTtfb',
  'stampede',
  'hits',
  'passthroughHits',
  'oneReader',
  'workers',
  'memoryTier',
  'fleet',
] as const;
const onlyArg = process.argv.indexOf('--only');
const only = new Set(
  onlyArg < 0 ? SECTIONS : (process.argv[onlyArg + 1] ?? '').split(',').filter((s) => s !== ''),
);
for (const s of only)
  if (!(SECTIONS as readonly string[]).includes(s))
    throw new Error(`--only takes a comma-separated list of ${SECTIONS.join(', ')}; got ${s}`);
const run = (s: (typeof SECTIONS)[number]): boolean => only.has(s);
const outArg = process.argv.indexOf('--out');
if (outArg >= 0 && !process.argv[outArg + 1]) throw new Error('--out takes a file path');
const MISS_OBJECTS = Number(process.env.KEEL_BENCH_MISS_OBJECTS ?? 40);
/** Miss objects read first to warm keel, nginx and the client, not counted. */
const MISS_WARMUP = 5;
/** Latency added to the origin's answers for the second miss measure (ms). */
const FAR_ORIGIN_MS = 20;
if (!Number.isInteger(MISS_OBJECTS) || MISS_OBJECTS <= MISS_WARMUP)
  throw new Error(
    `KEEL_BENCH_MISS_OBJECTS must be an integer above ${MISS_WARMUP} (the first ${MISS_WARMUP} warm up); got ${process.env.KEEL_BENCH_MISS_OBJECTS}`,
  );
// keel runs as installed: the compiled build behind bin/keel.js, built here from the sources.
const build = spawnSync(
  process.execPath,
  ['node_modules/typescript/bin/tsc', '-b', 'packages/gateway/tsconfig.build.json'],
  {
    encoding: 'utf8',
  },
);
if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}${build.stderr}`);
const KEEL_ENTRY = ['packages/gateway/bin/keel.js'];
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

function bytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

function put(base: string, key: string, body: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}/demo/${key}`,
      { method: 'PUT', headers: { 'content-length': body.length } },
      (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200 ? resolve() : reject(new Error(`PUT ${key}: ${res.statusCode}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Full GET; resolves with time to first byte (ms) and the body's sha256. */
function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ ttfbMs: number; sha: string; length: number; tier: string | undefined }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    http
      .get(url, { headers, agent: false }, (res) => {
        let ttfb = -1;
        const h = createHash('sha256');
        let length = 0;
        res.on('data', (d: Buffer) => {
          if (ttfb < 0) ttfb = performance.now() - t0;
          h.update(d);
          length += d.length;
        });
        res.on('end', () =>
          resolve({
            ttfbMs: ttfb,
            sha: h.digest('hex'),
            length,
            tier: res.headers['x-keel-cache-tier'] as string | undefined,
          }),
        );
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

function wrk(url: string, rangeBytes: number): { rps: number; p99Ms: number } {
  const script = path.join(root, `range-${rangeBytes}.lua`);
  spawnSync('sh', ['-c', `cat > ${script}`], {
    input: `local size = ${OBJECT}\nlocal len = ${rangeBytes}\nlocal n = math.floor(size / len)\nlocal counter = 0\nrequest = function()\n  counter = counter + 1\n  local start = ((counter * 7919) % n) * len\n  return wrk.format("GET", nil, {["Range"] = "bytes=" .. start .. "-" .. (start + len - 1)})\nend\n`,
  });
  const out = spawnSync(
    'wrk',
    // A request slower than 10 s counts as an error (wrk's default, 2 s, trips on a loaded machine).
    [
      '-t',
      '2',
      '-c',
      String(CONNECTIONS),
      '-d',
      `${SECONDS}s`,
      '--timeout',
      '10s',
      '--latency',
      '-s',
      script,
      url,
    ],
    {
      encoding: 'utf8',
    },
  ).stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p = /99%\s+([\d.]+)(us|ms|s)/.exec(out);
  const p99Ms = p ? Number(p[1]) * (p[2] === 'us' ? 0.001 : p[2] === 's' ? 1000 : 1) : NaN;
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const socketErrors = /Socket errors: (.*)/.exec(out);
  if (non2xx || socketErrors || !(rps > 0)) {
    const probe = spawnSync('curl', ['-si', '-r', '0-10', url], { encoding: 'utf8' }).stdout;
    throw new Error(`wrk saw errors against ${url}:\n${out}\n${probe}`);
  }
  return { rps, p99Ms };
}

async function startKeel(
  upstream: string,
  cacheDir: string,
  workers = 1,
  extra: string[] = [],
): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(
    process.execPath,
    [
      ...(process.env.KEEL_BENCH_CPU_PROF_DIR
        ? ['--cpu-prof', '--cpu-prof-dir', process.env.KEEL_BENCH_CPU_PROF_DIR]
        : []),
      ...KEEL_ENTRY,
      'gateway',
      '--upstream',
      upstream,
      '--auth',
      'anonymous',
      '--listen',
      '0',
      '--admin',
      '0',
      '--cache-dir',
      cacheDir,
      // Fresh as long as nginx's proxy_cache_valid (1h): no revalidation in the middle of a run.
      '--ttl-seconds',
      '3600',
      // One process unless a section asks for more (its nginx peer then gets as many workers).
      '--workers',
      String(workers),
      ...extra,
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, KEEL_ORIGIN_ACCESS_KEY_ID: 'S3RVER', KEEL_ORIGIN_SECRET_ACCESS_KEY: 'S3RVER' },
    },
  );
  return listening(proc, 'keel', {
    echo: Boolean(process.env.KEEL_BENCH_KEEL_LOG),
    // Past start-up, a keel that dies must not pass for a slow one.
    onExit: (e) => {
      if (!stopping && !stopped.has(proc)) console.error(e.message);
    },
  });
}

/** The minimal Node server of bench/_node-ranges.ts answering ranges of the object at `objectUrl` from memory. */
function startNodeRanges(objectUrl: string, workers = 1): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(import.meta.dirname, '_node-ranges.ts'), objectUrl, String(workers)],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return listening(proc, 'the Node ranges server');
}

/** The minimal Node HTTP proxy of bench/_node-proxy.ts in front of `upstream`. */
function startNodeProxy(upstream: string): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(import.meta.dirname, '_node-proxy.ts'), upstream],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return listening(proc, 'the Node proxy');
}

/**
 * Resolves with the URL `proc` prints on stderr as `S3 endpoint <url>` once it listens; rejects
 * when it exits first. `echo` copies its stderr to ours; `onExit` is told of any exit, with the
 * stderr so far.
 */
function listening(
  proc: ChildProcess,
  name: string,
  options: { echo?: boolean; onExit?: (e: Error) => void } = {},
): Promise<{ url: string; proc: ChildProcess }> {
  return new Promise((resolve, reject) => {
    let err = '';
    proc.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (options.echo) process.stderr.write(d);
      const m = /S3 endpoint (http:\/\/\S+)/.exec(err);
      if (m) resolve({ url: m[1] as string, proc });
    });
    proc.on('exit', (code, signal) => {
      const e = new Error(`${name} exited (${code ?? signal}): ${err}`);
      reject(e);
      options.onExit?.(e);
    });
  });
}

/** Processes stopped on purpose (their exit is not a failure). */
const stopped = new Set<ChildProcess>();

/** SIGTERM, and SIGKILL after 10 s; resolves once the process is gone. */
function stopChild(c: ChildProcess): Promise<void> {
  stopped.add(c);
  return new Promise<void>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    c.once('exit', () => resolve());
    c.kill('SIGTERM');
    setTimeout(() => {
      c.kill('SIGKILL');
      resolve();
    }, 10_000).unref();
  });
}

/** nginx with proxy_cache and slice in front of the origin at `upstreamPort`; `dir` (created) holds its files. */
async function startNginx(
  upstreamPort: number,
  dir: string,
  slice = '1m',
  workers = 1,
): Promise<{ url: string; proc: ChildProcess }> {
  await mkdir(dir, { recursive: true });
  const port = 20000 + Math.floor(Math.random() * 20000);
  const conf = `
worker_processes ${workers};
${process.getuid?.() === 0 ? 'user root;' : ''}
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=s3:50m max_size=10g inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / {
      slice ${slice};
      proxy_cache s3;
      proxy_cache_key $uri$is_args$args$slice_range;
      proxy_set_header Range $slice_range;
      proxy_set_header Host 127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache_valid 200 206 1h;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 60s;
      proxy_pass http://origin;
    }
  }
}`;
  await writeFile(path.join(dir, 'nginx.conf'), conf);
  const proc = spawn('nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    try {
      await get(`http://127.0.0.1:${port}/demo/nothing`);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { url: `http://127.0.0.1:${port}`, proc };
}

/* Passthrough auth: hits authorised by the origin (a 304) against hits in gateway auth. */

/** Sequential hits per keel and per origin distance in the passthrough section (paired, alternating). */
const PASSTHROUGH_HITS = Number(process.env.KEEL_BENCH_PASSTHROUGH_HITS ?? 200);
/** The object the passthrough section reads whole, again and again. */
const PASSTHROUGH_OBJECT = 1024 * 1024;
/** The client key of the gateway-auth keel; the passthrough keel's clients sign with the origin's own (s3rver's) key. */
const BENCH_CLIENT = { accessKeyId: 'BENCHCLIENT', secretAccessKey: 'bench-client-secret' };
const ORIGIN_KEY = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

/** keel in `gateway` auth (client key, origin credentials) or `passthrough` auth (no key at all). */
function startKeelAuth(
  upstream: string,
  cacheDir: string,
  auth: 'gateway' | 'passthrough',
): Promise<{ url: string; proc: ChildProcess }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Passthrough holds no credentials: the start is refused with any.
  for (const k of ['KEEL_ORIGIN_ACCESS_KEY_ID', 'KEEL_ORIGIN_SECRET_ACCESS_KEY', 'KEEL_CLIENT_KEYS'])
    delete env[k];
  if (auth === 'gateway') {
    env.KEEL_ORIGIN_ACCESS_KEY_ID = ORIGIN_KEY.accessKeyId;
    env.KEEL_ORIGIN_SECRET_ACCESS_KEY = ORIGIN_KEY.secretAccessKey;
    env.KEEL_CLIENT_KEYS = `${BENCH_CLIENT.accessKeyId}:${BENCH_CLIENT.secretAccessKey}`;
  }
  const proc = spawn(
    process.execPath,
    [
      ...(process.env.KEEL_BENCH_CPU_PROF_DIR
        ? ['--cpu-prof', '--cpu-prof-dir', process.env.KEEL_BENCH_CPU_PROF_DIR]
        : []),
      ...KEEL_ENTRY,
      'gateway',
      '--upstream',
      upstream,
      '--auth',
      auth,
      '--listen',
      '0',
      '--admin',
      '0',
      '--cache-dir',
      cacheDir,
      '--ttl-seconds',
      '3600',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env },
  );
  return listening(proc, `keel (${auth} auth)`, { echo: Boolean(process.env.KEEL_BENCH_KEEL_LOG) });
}

/** SigV4 headers of a GET of `path` on `base`, made once and sent again for every hit (valid 15 minutes). */
async function sigv4(
  base: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  method: string,
  pathname: string,
  headers: Record<string, string> = {},
): Promise<Record<string, string>> {
  const u = new URL(base);
  const signed = await new SignatureV4({
    credentials,
    region: 'us-east-1',
    service: 's3',
    sha256: Sha256,
    uriEscapePath: false,
  }).sign(
    new HttpRequest({
      method,
      protocol: u.protocol,
      hostname: u.hostname,
      port: Number(u.port),
      path: pathname,
      headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...headers },
    }),
  );
  return signed.headers;
}

/** One request on a keep-alive agent: total time (ms), status, body length and x-keel-authorization. */
function timed(
  url: string,
  method: string,
  headers: Record<string, string>,
  agent: http.Agent,
): Promise<{ ms: number; status: number; length: number; authorization: string | undefined }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    http
      .request(url, { method, headers, agent }, (res) => {
        let length = 0;
        res.on('data', (d: Buffer) => (length += d.length));
        res.on('end', () =>
          resolve({
            ms: performance.now() - t0,
            status: res.statusCode ?? 0,
            length,
            authorization: res.headers['x-keel-authorization'] as string | undefined,
          }),
        );
        res.on('error', reject);
      })
      .on('error', reject)
      .end();
  });
}

const percentile = (xs: number[], p: number): number =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;

/**
 * Hits of one 1 MiB object through keel in passthrough auth and in gateway auth, each behind its
 * own byte-counting proxy to the origin (with `latencyMs` on its answers), one request at a time,
 * alternating: latency p50/p99 and origin bytes per hit; and the origin's own round trip for the
 * request a passthrough hit forwards (the client's signed GET with If-None-Match: a 304) through
 * a third such proxy, the most a passthrough hit should add.
 */
async function passthroughHitsAt(
  originPort: number,
  dir: string,
  latencyMs: number,
  children: ChildProcess[],
): Promise<Record<string, unknown>> {
  const proxies = await Promise.all(
    [0, 1, 2].map(async () => {
      const p = await chaos.proxy({ upstream: `127.0.0.1:${originPort}` });
      if (latencyMs > 0) p.add({ type: 'latency', attributes: { latency: latencyMs } });
      return p;
    }),
  );
  const [gwProxy, ptProxy, rtProxy] = proxies as [
    (typeof proxies)[0],
    (typeof proxies)[0],
    (typeof proxies)[0],
  ];
  const gw = await startKeelAuth(
    `http://127.0.0.1:${gwProxy.port}`,
    path.join(dir, `gw-${latencyMs}`),
    'gateway',
  );
  children.push(gw.proc);
  const pt = await startKeelAuth(
    `http://127.0.0.1:${ptProxy.port}`,
    path.join(dir, `pt-${latencyMs}`),
    'passthrough',
  );
  children.push(pt.proc);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const key = '/demo/passthrough.bin';
  const gwHeaders = await sigv4(gw.url, BENCH_CLIENT, 'GET', key);
  const ptHeaders = await sigv4(pt.url, ORIGIN_KEY, 'GET', key);
  const rtUrl = `http://127.0.0.1:${rtProxy.port}${key}`;
  try {
    // The first read of each is a miss that fills the cache; the next few warm the code paths.
    for (let i = 0; i < 5; i++) {
      const a = await timed(`${gw.url}${key}`, 'GET', gwHeaders, agent);
      const b = await timed(`${pt.url}${key}`, 'GET', ptHeaders, agent);
      if (a.status !== 200 || b.status !== 200)
        throw new Error(`passthrough section: warm-up answered ${a.status}, ${b.status}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const etag = await new Promise<string>((resolve, reject) => {
      http
        .request(`http://127.0.0.1:${originPort}${key}`, { method: 'HEAD' }, (res) => {
          res.resume();
          resolve(String(res.headers.etag));
        })
        .on('error', reject)
        .end();
    });
    const rtHeaders = await sigv4(`http://127.0.0.1:${rtProxy.port}`, ORIGIN_KEY, 'GET', key);
    const gwMs: number[] = [];
    const ptMs: number[] = [];
    const rtMs: number[] = [];
    let authorizedHits = 0;
    const gwBefore = gwProxy.stats().bytesDownstream;
    const ptBefore = ptProxy.stats().bytesDownstream;
    for (let i = 0; i < PASSTHROUGH_HITS; i++) {
      const a = await timed(`${gw.url}${key}`, 'GET', gwHeaders, agent);
      const b = await timed(`${pt.url}${key}`, 'GET', ptHeaders, agent);
      const c = await timed(rtUrl, 'GET', { ...rtHeaders, 'if-none-match': etag }, agent);
      if (a.length !== PASSTHROUGH_OBJECT || b.length !== PASSTHROUGH_OBJECT || c.status !== 304)
        throw new Error(
          `passthrough section: answers ${a.status}/${a.length}, ${b.status}/${b.length}, ${c.status}`,
        );
      if (b.authorization === 'authorized-hit') authorizedHits++;
      gwMs.push(a.ms);
      ptMs.push(b.ms);
      rtMs.push(c.ms);
    }
    const gwBytes = (gwProxy.stats().bytesDownstream - gwBefore) / PASSTHROUGH_HITS;
    const ptBytes = (ptProxy.stats().bytesDownstream - ptBefore) / PASSTHROUGH_HITS;
    const figures = (xs: number[]) => ({ p50Ms: percentile(xs, 0.5), p99Ms: percentile(xs, 0.99) });
    const extraP50Ms = percentile(ptMs, 0.5) - percentile(gwMs, 0.5);
    return {
      originLatencyMs: latencyMs,
      hits: PASSTHROUGH_HITS,
      gateway: { ...figures(gwMs), originBytesPerHit: gwBytes },
      passthrough: { ...figures(ptMs), originBytesPerHit: ptBytes, authorizedHits },
      originRoundTrip: figures(rtMs),
      p50Ratio: percentile(ptMs, 0.5) / percentile(gwMs, 0.5),
      p99Ratio: percentile(ptMs, 0.99) / percentile(gwMs, 0.99),
      extraP50Ms,
      target:
        'passthrough hit: 0 origin body bytes (a 304: headers only) and p50 at most one origin round trip above gateway auth',
      targetMet: authorizedHits === PASSTHROUGH_HITS && extraP50Ms <= percentile(rtMs, 0.5),
    };
  } finally {
    agent.destroy();
    for (const c of [gw.proc, pt.proc]) await stopChild(c);
    for (const p of proxies) await p.close();
  }
}

/** The passthrough section: origin on loopback, then 20 ms away. */
async function passthroughHits(
  originPort: number,
  dir: string,
  children: ChildProcess[],
): Promise<Record<string, unknown>> {
  await put(`http://127.0.0.1:${originPort}`, 'passthrough.bin', bytes('passthrough', PASSTHROUGH_OBJECT));
  return {
    loopback: await passthroughHitsAt(originPort, dir, 0, children),
    far: await passthroughHitsAt(originPort, dir, FAR_ORIGIN_MS, children),
    loadAverage: os.loadavg(),
  };
}

/**
 * ROUNDS of wrk with `len`-byte ranges of hot.bin against every target, each round starting with
 * another one (neighbours on a shared machine hit them alike): every run, and each target's
 * medians.
 */
function rotatingRounds<N extends string>(
  targets: Record<N, string>,
  len: number,
): { runs: Record<N, { rps: number; p99Ms: number }[]>; med: (n: N) => { rps: number; p99Ms: number } } {
  const names = Object.keys(targets) as N[];
  const runs = Object.fromEntries(names.map((n) => [n, [] as { rps: number; p99Ms: number }[]])) as Record<
    N,
    { rps: number; p99Ms: number }[]
  >;
  for (let r = 0; r < ROUNDS; r++) {
    const order = [...names.slice(r % names.length), ...names.slice(0, r % names.length)];
    for (const n of order) runs[n].push(wrk(`${targets[n]}/demo/hot.bin`, len));
  }
  const med = (n: N): { rps: number; p99Ms: number } => ({
    rps: median(runs[n].map((x) => x.rps)),
    p99Ms: median(runs[n].map((x) => x.p99Ms)),
  });
  return { runs, med };
}

/** Hits (1 MiB and 4 KiB ranges), a stampede and miss TTFB with two worker processes each. */
async function workersSection(): Promise<Record<string, unknown>> {
  const load = os.loadavg();
  const proxies = {
    keel2: await chaos.proxy({ upstream: `127.0.0.1:${originPort}` }),
    keel1: await chaos.proxy({ upstream: `127.0.0.1:${originPort}` }),
    nginx2: await chaos.proxy({ upstream: `127.0.0.1:${originPort}` }),
  };
  const keel2 = await startKeel(`http://127.0.0.1:${proxies.keel2.port}`, path.join(root, 'w-keel2'), 2);
  const keel1 = await startKeel(`http://127.0.0.1:${proxies.keel1.port}`, path.join(root, 'w-keel1'), 1);
  const nginx2 = await startNginx(proxies.nginx2.port, path.join(root, 'w-nginx2'), '1m', 2);
  children.push(keel2.proc, keel1.proc, nginx2.proc);
  const targets = { keel2: keel2.url, keel1: keel1.url, nginx2: nginx2.url };
  const names = Object.keys(targets) as (keyof typeof targets)[];
  const out: Record<string, unknown> = { loadAverageAtStart: load };

  // Stampede: 100 clients at once on an uncached 64 MiB object, through keel --workers 2.
  await put(originUrl, 'stampede-w2.bin', bytes('sw', OBJECT));
  const before = proxies.keel2.stats().bytesDownstream;
  const t0 = performance.now();
  const all = await Promise.all(Array.from({ length: 100 }, () => get(`${keel2.url}/demo/stampede-w2.bin`)));
  const want = createHash('sha256').update(bytes('sw', OBJECT)).digest('hex');
  out.stampede = {
    keelWorkers2: {
      originBytesOverSize: (proxies.keel2.stats().bytesDownstream - before) / OBJECT,
      allIdentical: all.every((r) => r.sha === want),
      seconds: (performance.now() - t0) / 1000,
    },
    target: '≤ 1.05',
  };

  // Miss TTFB: fresh 1 MiB objects through keel --workers 2, and direct, alternating.
  const viaKeel: number[] = [];
  const direct: number[] = [];
  const missKeys = Array.from({ length: 20 }, (_, i) => `w-miss-${i}.bin`);
  for (const k of missKeys) await put(originUrl, k, bytes(k, 1024 * 1024));
  for (const [i, k] of missKeys.entries()) {
    const d = (await get(`${originUrl}/demo/${k}`)).ttfbMs;
    const v = (await get(`${keel2.url}/demo/${k}`)).ttfbMs;
    if (i < MISS_WARMUP) continue;
    direct.push(d);
    viaKeel.push(v);
  }
  out.missTtfb = {
    objects: direct.length,
    keelWorkers2MedianMs: median(viaKeel),
    directMedianMs: median(direct),
    ratio: median(viaKeel) / median(direct),
    keelUpstream: 'a counting proxy in front of the origin',
  };

  // Hits: warm every cache with the whole object, check ranges, then wrk in rotating order.
  for (const base of Object.values(targets)) await get(`${base}/demo/hot.bin`);
  await new Promise((r) => setTimeout(r, 500));
  const hot = bytes('hot', OBJECT);
  for (const [a, b] of [
    [0, 4095],
    [5 * 1024 * 1024 - 100, 9 * 1024 * 1024 + 99],
    [OBJECT - 4096, OBJECT - 1],
  ] as const) {
    const wantRange = createHash('sha256')
      .update(hot.subarray(a, b + 1))
      .digest('hex');
    for (const base of Object.values(targets)) {
      const got = await get(`${base}/demo/hot.bin`, { range: `bytes=${a}-${b}` });
      if (got.sha !== wantRange) throw new Error(`${base} served wrong bytes for ${a}-${b}`);
    }
  }
  const originBefore = Object.fromEntries(names.map((n) => [n, proxies[n].stats().bytesDownstream]));
  for (const [label, len] of [
    ['1MiB', 1024 * 1024],
    ['4KiB', 4096],
  ] as const) {
    const { runs, med } = rotatingRounds(targets, len);
    const k2 = med('keel2');
    const k1 = med('keel1');
    const n2 = med('nginx2');
    out[label] = {
      keelWorkers2: k2,
      keelWorkers1: k1,
      nginxWorkers2: n2,
      rpsRatio: k2.rps / n2.rps,
      p99Ratio: k2.p99Ms / n2.p99Ms,
      workers1RpsRatio: k1.rps / n2.rps,
      workers1P99Ratio: k1.p99Ms / n2.p99Ms,
      pairedRpsRatios: runs.keel2.map((x, r) => x.rps / (runs.nginx2[r]?.rps ?? NaN)),
    };
  }
  out.originBytesDuringHits = Object.fromEntries(
    names.map((n) => [n, proxies[n].stats().bytesDownstream - (originBefore[n] ?? 0)]),
  );
  out.rounds = ROUNDS;
  out.loadAverageAtEnd = os.loadavg();
  out.target =
    '1MiB rpsRatio ≥ 1.0 and p99Ratio ≤ 1.5 (keel checks the CRC32 of every byte served); 4KiB rpsRatio ≥ 0.35';
  await Promise.all([keel2.proc, keel1.proc, nginx2.proc].map(stopChild));
  for (const p of Object.values(proxies)) await p.close();
  return out;
}

/**
 * Hits from keel's memory tier and from its disk tier, against nginx and the minimal Node server
 * (all one process, on the same object), and origin bytes for a write then reads (write-through).
 */
async function memoryTierSection(): Promise<Record<string, unknown>> {
  const load = os.loadavg();
  const proxies = {
    keelMemory: await chaos.proxy({ upstream: `127.0.0.1:${originPort}` }),
    keelDisk: await chaos.proxy({ upstream: `127.0.0.1:${originPort}` }),
    nginx: await chaos.proxy({ upstream: `127.0.0.1:${originPort}` }),
  };
  const up = (n: keyof typeof proxies): string => `http://127.0.0.1:${proxies[n].port}`;
  const keelMemory = await startKeel(up('keelMemory'), path.join(root, 'm-keel-memory'), 1);
  const keelDisk = await startKeel(up('keelDisk'), path.join(root, 'm-keel-disk'), 1, [
    '--memory-cache-bytes',
    '0',
  ]);
  const nginx = await startNginx(proxies.nginx.port, path.join(root, 'm-nginx'), '1m', 1);
  const node = await startNodeRanges(`${originUrl}/demo/hot.bin`, 1);
  const procs = [keelMemory.proc, keelDisk.proc, nginx.proc, node.proc];
  children.push(...procs);
  const targets = { keelMemory: keelMemory.url, keelDisk: keelDisk.url, nginx: nginx.url, node: node.url };
  const out: Record<string, unknown> = { workers: 1, loadAverageAtStart: load };

  // Warm: the whole object into each cache, then every MiB twice as a range, so keel's memory
  // tier has taken its blocks in (it holds 256 MiB by default; the object is 64 MiB).
  for (const base of [keelMemory.url, keelDisk.url, nginx.url]) await get(`${base}/demo/hot.bin`);
  await new Promise((r) => setTimeout(r, 500));
  const hot = bytes('hot', OBJECT);
  for (let round = 0; round < 2; round++)
    for (let mib = 0; mib < OBJECT / (1024 * 1024); mib++)
      for (const base of [keelMemory.url, keelDisk.url])
        await get(`${base}/demo/hot.bin`, {
          range: `bytes=${mib * 1024 * 1024}-${(mib + 1) * 1024 * 1024 - 1}`,
        });
  for (const [a, b] of [
    [0, 4095],
    [5 * 1024 * 1024 - 100, 9 * 1024 * 1024 + 99],
    [OBJECT - 4096, OBJECT - 1],
  ] as const) {
    const want = createHash('sha256')
      .update(hot.subarray(a, b + 1))
      .digest('hex');
    for (const [n, base] of Object.entries(targets)) {
      const got = await get(`${base}/demo/hot.bin`, { range: `bytes=${a}-${b}` });
      if (got.sha !== want) throw new Error(`${n} served wrong bytes for ${a}-${b}`);
      const tier = n === 'keelMemory' ? 'memory' : n === 'keelDisk' ? 'disk' : undefined;
      if (got.tier !== tier) throw new Error(`${n} answered ${a}-${b} from tier ${got.tier}, not ${tier}`);
    }
  }
  const originBefore = Object.fromEntries(
    (Object.keys(proxies) as (keyof typeof proxies)[]).map((n) => [n, proxies[n].stats().bytesDownstream]),
  );
  for (const [label, len] of [
    ['4KiB', 4096],
    ['1MiB', 1024 * 1024],
  ] as const) {
    const { runs, med } = rotatingRounds(targets, len);
    const m = med('keelMemory');
    const d = med('keelDisk');
    const ng = med('nginx');
    const nd = med('node');
    out[label] = {
      keelMemory: m,
      keelDisk: d,
      nginx: ng,
      node: nd,
      memoryOverNode: m.rps / nd.rps,
      memoryOverNginx: m.rps / ng.rps,
      memoryP99OverNginx: m.p99Ms / ng.p99Ms,
      diskOverNginx: d.rps / ng.rps,
      memoryOverDisk: m.rps / d.rps,
      nodeOverNginx: nd.rps / ng.rps,
      pairedMemoryOverNode: runs.keelMemory.map((x, r) => x.rps / (runs.node[r]?.rps ?? NaN)),
    };
  }
  out.originBytesDuringHits = Object.fromEntries(
    (Object.keys(proxies) as (keyof typeof proxies)[]).map((n) => [
      n,
      proxies[n].stats().bytesDownstream - (originBefore[n] ?? 0),
    ]),
  );

  // Read after write: a 64 MiB PUT through keel, then 10 GETs; bytes between keel and the origin.
  const written = bytes('raw', OBJECT);
  const upBefore = proxies.keelMemory.stats().bytesUpstream;
  const downBefore = proxies.keelMemory.stats().bytesDownstream;
  await put(keelMemory.url, 'read-after-write.bin', written);
  const afterPut = {
    up: proxies.keelMemory.stats().bytesUpstream,
    down: proxies.keelMemory.stats().bytesDownstream,
  };
  const want = createHash('sha256').update(written).digest('hex');
  let identical = true;
  for (let i = 0; i < 10; i++)
    identical &&= (await get(`${keelMemory.url}/demo/read-after-write.bin`)).sha === want;
  out.readAfterWrite = {
    objectBytes: OBJECT,
    toOriginDuringPut: afterPut.up - upBefore,
    fromOriginDuringReads: proxies.keelMemory.stats().bytesDownstream - afterPut.down,
    fromOriginDuringPut: afterPut.down - downBefore,
    allIdentical: identical,
    target: 'the object size once (the upload), 0 for the 10 reads',
  };
  out.rounds = ROUNDS;
  out.loadAverageAtEnd = os.loadavg();
  out.target = '4KiB memoryOverNode ≥ 0.85 and memoryP99OverNginx ≤ 2; 1MiB memory not below disk';
  await Promise.all(procs.map(stopChild));
  for (const p of Object.values(proxies)) await p.close();
  return out;
}

const root = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-gateway-'));
const s3dir = path.join(root, 's3');
const s3rver = spawn(
  process.execPath,
  ['--import', 'tsx', path.join(import.meta.dirname, '_s3-origin.ts'), s3dir, 'demo'],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const originPort = await new Promise<number>((resolve, reject) => {
  let out = '';
  s3rver.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const m = /ORIGIN (\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
  s3rver.on('exit', (code) => reject(new Error(`the s3rver origin exited (${code}) before listening`)));
});
const originUrl = `http://127.0.0.1:${originPort}`;
const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  cpus: os.cpus().length,
  connections: CONNECTIONS,
  seconds: SECONDS,
};
const children: ChildProcess[] = [];
let stopping = false;
try {
  const hot = bytes('hot', OBJECT);
  await put(originUrl, 'hot.bin', hot);
  await put(originUrl, 'stampede-keel.bin', bytes('sk', OBJECT));
  await put(originUrl, 'stampede-nginx.bin', bytes('sn', OBJECT));
  const small = Array.from({ length: MISS_OBJECTS }, (_, i) => `miss-${i}.bin`);
  for (const k of small) await put(originUrl, k, bytes(k, 1024 * 1024));

  // keel and nginx each behind their own counting proxy to the same origin.
  const keelProxy = await chaos.proxy({ upstream: `127.0.0.1:${originPort}` });
  const nginxProxy = await chaos.proxy({ upstream: `127.0.0.1:${originPort}` });
  const keel = await startKeel(`http://127.0.0.1:${keelProxy.port}`, path.join(root, 'keel-cache'));
  children.push(keel.proc);
  const nginxDir = path.join(root, 'nginx');
  const nginx = await startNginx(nginxProxy.port, nginxDir);
  children.push(nginx.proc);

  // 3. misses: TTFB through keel over direct (alternating, same objects fresh for keel). This keel
  // talks to the origin directly, as in production: the counting proxy is for the stampede only.
  // nginx's slice cache in front of the same origin is timed on the same objects, as the peer.
  if (run('missTtfb')) {
    const missKeel = await startKeel(originUrl, path.join(root, 'keel-miss-cache'));
    children.push(missKeel.proc);
    const missNginxDir = path.join(root, 'nginx-miss');
    const missNginx = await startNginx(originPort, missNginxDir);
    children.push(missNginx.proc);
    const viaKeel: number[] = [];
    const viaNginx: number[] = [];
    const direct: number[] = [];
    // References for what any proxy adds: a bare TCP relay (a chaos proxy with no toxics, in this
    // process) and a minimal HTTP proxy in Node (its own process: undici pool, answer piped on).
    const relay = await chaos.proxy({ upstream: `127.0.0.1:${originPort}` });
    const nodeProxy = await startNodeProxy(originUrl);
    children.push(nodeProxy.proc);
    const viaRelay: number[] = [];
    const viaNodeProxy: number[] = [];
    for (const [i, k] of small.entries()) {
      // The first objects warm each process's code paths; they are not counted.
      const counted = i >= MISS_WARMUP;
      const d = (await get(`${originUrl}/demo/${k}`)).ttfbMs;
      const viaK = (await get(`${missKeel.url}/demo/${k}`)).ttfbMs;
      const viaN = (await get(`${missNginx.url}/demo/${k}`)).ttfbMs;
      const viaR = (await get(`http://127.0.0.1:${relay.port}/demo/${k}`)).ttfbMs;
      const viaP = (await get(`${nodeProxy.url}/demo/${k}`)).ttfbMs;
      if (!counted) continue;
      direct.push(d);
      viaKeel.push(viaK);
      viaNginx.push(viaN);
      viaRelay.push(viaR);
      viaNodeProxy.push(viaP);
    }
    await relay.close();
    // The same objects through a keel and an nginx with empty caches in front of the origin made
    // 20 ms away (a latency toxic on its answers), as S3 is from a gateway in its region.
    const far = await chaos.proxy({ upstream: `127.0.0.1:${originPort}` });
    far.add({ type: 'latency', attributes: { latency: FAR_ORIGIN_MS } });
    const farKeel = await startKeel(`http://127.0.0.1:${far.port}`, path.join(root, 'keel-far-cache'));
    children.push(farKeel.proc);
    const farNginxDir = path.join(root, 'nginx-far');
    const farNginx = await startNginx(far.port, farNginxDir);
    children.push(farNginx.proc);
    const farDirect: number[] = [];
    const farViaKeel: number[] = [];
    const farViaNginx: number[] = [];
    for (const [i, k] of small.entries()) {
      const d = (await get(`http://127.0.0.1:${far.port}/demo/${k}`)).ttfbMs;
      const viaK = (await get(`${farKeel.url}/demo/${k}`)).ttfbMs;
      const viaN = (await get(`${farNginx.url}/demo/${k}`)).ttfbMs;
      if (i < MISS_WARMUP) continue;
      farDirect.push(d);
      farViaKeel.push(viaK);
      farViaNginx.push(viaN);
    }
    // The miss section's keels and nginxes are done: they do not run on through the other sections.
    await Promise.all(
      [missKeel.proc, missNginx.proc, nodeProxy.proc, farKeel.proc, farNginx.proc].map(stopChild),
    );
    await far.close();
    results.missTtfb = {
      objects: direct.length,
      keelMedianMs: median(viaKeel),
      directMedianMs: median(direct),
      nginxMedianMs: median(viaNginx),
      ratio: median(viaKeel) / median(direct),
      nginxRatio: median(viaNginx) / median(direct),
      keelOverNginx: median(viaKeel) / median(viaNginx),
      pairedRatioMedian: median(viaKeel.map((v, i) => v / (direct[i] ?? NaN))),
      relayMedianMs: median(viaRelay),
      relayRatio: median(viaRelay) / median(direct),
      nodeProxyMedianMs: median(viaNodeProxy),
      nodeProxyRatio: median(viaNodeProxy) / median(direct),
      keelOverNodeProxy: median(viaKeel) / median(viaNodeProxy),
      keelUpstream: 'the origin directly',
      originFarAway: {
        latencyMs: FAR_ORIGIN_MS,
        keelMedianMs: median(farViaKeel),
        directMedianMs: median(farDirect),
        nginxMedianMs: median(farViaNginx),
        ratio: median(farViaKeel) / median(farDirect),
        nginxRatio: median(farViaNginx) / median(farDirect),
      },
      target: '≤ 1.2',
    };
  }

  // 2. stampede: 100 clients at once on an uncached 64 MiB object.
  const stampede = async (
    base: string,
    key: string,
    proxy: typeof keelProxy,
  ): Promise<Record<string, number | boolean>> => {
    const before = proxy.stats().bytesDownstream;
    const t0 = performance.now();
    const all = await Promise.all(Array.from({ length: 100 }, () => get(`${base}/demo/${key}`)));
    const ms = performance.now() - t0;
    const want = createHash('sha256')
      .update(bytes(key === 'stampede-keel.bin' ? 'sk' : 'sn', OBJECT))
      .digest('hex');
    return {
      originBytesOverSize: (proxy.stats().bytesDownstream - before) / OBJECT,
      allIdentical: all.every((r) => r.sha === want),
      seconds: ms / 1000,
    };
  };
  if (run('stampede'))
    results.stampede = {
      keel: await stampede(keel.url, 'stampede-keel.bin', keelProxy),
      nginx: await stampede(nginx.url, 'stampede-nginx.bin', nginxProxy),
      target: 'keel ≤ 1.05 (limit 1.00)',
    };

  // 1. hits: warm both caches with the whole object, check that ranges come back right, then
  // ranges with wrk, keel and nginx in alternating order over several rounds (the machine may be
  // shared: paired rounds see the same neighbours).
  if (run('hits')) {
    await get(`${keel.url}/demo/hot.bin`);
    await get(`${nginx.url}/demo/hot.bin`);
    await new Promise((r) => setTimeout(r, 500));
    for (const [a, b] of [
      [0, 4095],
      [5 * 1024 * 1024 - 100, 9 * 1024 * 1024 + 99],
      [OBJECT - 4096, OBJECT - 1],
    ] as const) {
      const want = createHash('sha256')
        .update(hot.subarray(a, b + 1))
        .digest('hex');
      for (const base of [keel.url, nginx.url]) {
        const got = await get(`${base}/demo/hot.bin`, { range: `bytes=${a}-${b}` });
        if (got.sha !== want) throw new Error(`${base} served wrong bytes for ${a}-${b}`);
      }
    }
    const hits: Record<string, unknown> = {};
    // Both must answer every range from their caches: bytes fetched from the origin while ranges run.
    const keelOriginBefore = keelProxy.stats().bytesDownstream;
    const nginxOriginBefore = nginxProxy.stats().bytesDownstream;
    for (const [name, len] of [
      ['1MiB', 1024 * 1024],
      ['4KiB', 4096],
    ] as const) {
      const keelRuns: { rps: number; p99Ms: number }[] = [];
      const nginxRuns: { rps: number; p99Ms: number }[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        if (r % 2 === 0) {
          keelRuns.push(wrk(`${keel.url}/demo/hot.bin`, len));
          nginxRuns.push(wrk(`${nginx.url}/demo/hot.bin`, len));
        } else {
          nginxRuns.push(wrk(`${nginx.url}/demo/hot.bin`, len));
          keelRuns.push(wrk(`${keel.url}/demo/hot.bin`, len));
        }
      }
      const k = { rps: median(keelRuns.map((x) => x.rps)), p99Ms: median(keelRuns.map((x) => x.p99Ms)) };
      const n = { rps: median(nginxRuns.map((x) => x.rps)), p99Ms: median(nginxRuns.map((x) => x.p99Ms)) };
      hits[name] = {
        keel: k,
        nginx: n,
        rpsRatio: k.rps / n.rps,
        p99Ratio: k.p99Ms / n.p99Ms,
        pairedRpsRatios: keelRuns.map((x, r) => x.rps / (nginxRuns[r]?.rps ?? NaN)),
      };
    }
    results.hits = {
      ...hits,
      originBytesDuringHits: {
        keel: keelProxy.stats().bytesDownstream - keelOriginBefore,
        nginx: nginxProxy.stats().bytesDownstream - nginxOriginBefore,
      },
      rounds: ROUNDS,
      loadAverage: os.loadavg(),
      target: '1MiB rpsRatio ≥ 0.5 (keel verifies CRC32 of every byte served; nginx verifies nothing)',
    };
  }
  // 5. workers: keel --workers 2 against nginx with worker_processes 2 (and keel --workers 1 for
  // the record), each behind its own counting proxy to the same origin, on the same object.
  if (run('workers')) results.workers = await workersSection();
  // 6. the memory tier: hits from memory and from disk against nginx and a minimal Node server.
  if (run('memoryTier')) results.memoryTier = await memoryTierSection();
  // 7. a fleet of three through Redis against nginx instances sharing nothing.
  if (run('fleet'))
    results.fleet = await fleet({ originPort, root, bytes, put, startKeel, startNginx, stop: stopChild });
  // One client, one big object, cold and warm; then the origin limited per connection (bench/_one-reader.ts).
  if (run('oneReader'))
    results.oneReader = await oneReader({
      originPort,
      root,
      bytes,
      put,
      startKeel,
      startNginx,
      stop: stopChild,
    });
  await keelProxy.close();
  await nginxProxy.close();
  // 4. passthrough auth: hits the origin authorises (304) against hits in gateway auth.
  if (run('passthroughHits')) results.passthroughHits = await passthroughHits(originPort, root, children);
} finally {
  stopping = true;
  // Wait for the children to exit: keel may still be writing to the cache directory removed below.
  await Promise.all(children.map(stopChild));
  await stopChild(s3rver);
  await rm(root, { recursive: true, force: true });
}
// Sections not run keep their last recorded figures.
const resultsFile =
  outArg >= 0
    ? path.resolve(process.argv[outArg + 1] as string)
    : path.join(import.meta.dirname, 'results/gateway.json');
const previous = (await readFile(resultsFile, 'utf8').then(
  (t) => JSON.parse(t) as Record<string, unknown>,
  () => ({}),
)) as Record<string, unknown>;
for (const s of SECTIONS) if (!run(s) && previous[s] !== undefined) results[s] = previous[s];
await writeFile(resultsFile, `${JSON.stringify(results, null, 2)}\n`);
console.log(JSON.stringify(results, null, 2));

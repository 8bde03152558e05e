/**
 * What the dashboard costs the gateway: cache-hit throughput (wrk, 16 KiB ranges) with 5
 * dashboard pages open against none, alternating over several rounds (medians, their ratio, the
 * ratio within each round), and the gateway's CPU time per hit in the same runs (less exposed to
 * what else the machine runs);
 * the gateway's CPU while idle with 5 pages and with none; and the size of the page and its
 * assets (as sent gzipped, and uncompressed) and of one snapshot. keel, the origin (s3rver) and
 * the pages (bench/_sse-readers.ts) each run in a process of their own; traffic stays on loopback.
 * Writes bench/results/dashboard.json. KEEL_BENCH_DASHBOARD_SECONDS (5) and _ROUNDS (10) change
 * the run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, createCipheriv } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const SECONDS = Number(process.env.KEEL_BENCH_DASHBOARD_SECONDS ?? 5);
const ROUNDS = Number(process.env.KEEL_BENCH_DASHBOARD_ROUNDS ?? 10);
const PAGES = 5;
const CONNECTIONS = 32;
const RANGE = 16 * 1024;
const OBJECT = 4 * 1024 * 1024;
const IDLE_SECONDS = 10;
const TOKEN = 'bench-dashboard-token-0123456789';
const root = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-dashboard-'));
const children: ChildProcess[] = [];
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
};
const loadBefore = os.loadavg();

function child(
  args: string[],
  name: string,
): { proc: ChildProcess; line: (re: RegExp) => Promise<RegExpExecArray> } {
  const proc = spawn(process.execPath, ['--import', 'tsx', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  let out = '';
  const waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  const seen = (d: Buffer): void => {
    out += d.toString();
    for (const w of [...waiters]) {
      const m = w.re.exec(out);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  proc.stdout?.on('data', seen);
  proc.stderr?.on('data', seen);
  return {
    proc,
    line: (re) =>
      new Promise((resolve, reject) => {
        const m = re.exec(out);
        if (m) return resolve(m);
        waiters.push({ re, resolve });
        proc.once('exit', (code) => reject(new Error(`${name} exited (${code}) before ${re}: ${out}`)));
      }),
  };
}

function stop(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once('exit', () => resolve());
    proc.kill('SIGTERM');
    setTimeout(() => proc.kill('SIGKILL'), 10_000).unref();
  });
}

function request(
  url: string,
  init: { method?: string; body?: Buffer; headers?: Record<string, string> } = {},
) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>(
    (resolve, reject) => {
      const req = http.request(
        url,
        { method: init.method ?? 'GET', headers: init.headers ?? {}, agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(init.body);
    },
  );
}

/** CPU seconds (user + system) the process has used, from /proc. */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? [];
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return ticks / 100; // USER_HZ is 100 on Linux
}

/** One wrk run: hits per second, and the gateway's CPU microseconds per hit during it. */
async function measured(url: string, pid: number): Promise<{ rps: number; cpuUsPerHit: number }> {
  const before = await cpuSeconds(pid);
  const rps = wrk(url);
  const cpu = (await cpuSeconds(pid)) - before;
  return { rps, cpuUsPerHit: (cpu * 1e6) / (rps * SECONDS) };
}

function wrk(url: string): number {
  const script = path.join(root, 'ranges.lua');
  spawnSync('sh', ['-c', `cat > ${script}`], {
    input: `local n = ${OBJECT / RANGE}\nlocal counter = 0\nrequest = function()\n  counter = counter + 1\n  local start = ((counter * 7919) % n) * ${RANGE}\n  return wrk.format("GET", nil, {["Range"] = "bytes=" .. start .. "-" .. (start + ${RANGE} - 1)})\nend\n`,
  });
  const out = spawnSync(
    'wrk',
    ['-t', '1', '-c', String(CONNECTIONS), '-d', `${SECONDS}s`, '-s', script, url],
    {
      encoding: 'utf8',
    },
  ).stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  if (/Non-2xx|Socket errors/.test(out) || !(rps > 0))
    throw new Error(`wrk saw errors against ${url}:\n${out}`);
  return rps;
}

async function withPages<T>(
  admin: string,
  fn: () => Promise<T>,
): Promise<{ result: T; snapshots: number; bytes: number }> {
  const readers = child(
    [path.join(import.meta.dirname, '_sse-readers.ts'), admin, String(PAGES), TOKEN],
    'the pages',
  );
  await readers.line(/READY/);
  const result = await fn();
  const done = readers.line(/SNAPSHOTS (\d+) BYTES (\d+)/);
  readers.proc.kill('SIGTERM');
  const m = await done;
  return { result, snapshots: Number(m[1]), bytes: Number(m[2]) };
}

try {
  const origin = child(
    [path.join(import.meta.dirname, '_s3-origin.ts'), path.join(root, 'origin'), 'demo'],
    'the origin',
  );
  const originPort = Number((await origin.line(/ORIGIN (\d+)/))[1]);
  const key = createHash('sha256').update('hot').digest().subarray(0, 16);
  const body = createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(OBJECT));
  const put = await request(`http://127.0.0.1:${originPort}/demo/hot.bin`, { method: 'PUT', body });
  if (put.status !== 200) throw new Error(`PUT hot.bin: ${put.status}`);

  const keel = child(
    [
      'packages/gateway/src/cli/main.ts',
      'gateway',
      '--upstream',
      `http://127.0.0.1:${originPort}`,
      '--auth',
      'anonymous',
      '--listen',
      '0',
      '--admin',
      '0',
      '--admin-token',
      `bench:${TOKEN}`,
      '--cache-dir',
      path.join(root, 'cache'),
      '--ttl-seconds',
      '3600',
      '--log-level',
      'warn',
      // One process: the dashboard's cost lands on the process that serves the hits.
      '--workers',
      '1',
    ],
    'keel',
  );
  const [, s3, admin] = await keel.line(/S3 endpoint (http:\/\/\S+).*admin (http:\/\/\S+)/);
  if (!s3 || !admin || !keel.proc.pid) throw new Error('keel did not say where it listens');
  const pid = keel.proc.pid;
  const object = `${s3}/demo/hot.bin`;
  // Warm the cache: every slice read once, then it is all hits.
  let cached: string | undefined;
  for (let i = 0; i < 40 && cached !== 'HIT'; i++) {
    const all = await request(object);
    if (all.status !== 200) throw new Error(`reading hot.bin: ${all.status}`);
    cached = String(all.headers['x-keel-cache']);
    if (cached !== 'HIT') await new Promise((r) => setTimeout(r, 250));
  }
  if (cached !== 'HIT') throw new Error(`hot.bin is still not a HIT after 40 reads (${cached})`);
  wrk(object); // warm-up run, not counted

  const none: { rps: number; cpuUsPerHit: number }[] = [];
  const open: { rps: number; cpuUsPerHit: number }[] = [];
  let snapshotsDuringLoad = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const measureOpen = async (): Promise<void> => {
      const r = await withPages(admin, () => measured(object, pid));
      open.push(r.result);
      snapshotsDuringLoad += r.snapshots;
    };
    // Alternate which goes first: the machine's load drifts.
    if (round % 2 === 0) {
      none.push(await measured(object, pid));
      await measureOpen();
    } else {
      await measureOpen();
      none.push(await measured(object, pid));
    }
    console.log(
      `round ${round + 1}: none ${none.at(-1)?.rps.toFixed(0)} req/s (${none.at(-1)?.cpuUsPerHit.toFixed(0)} µs CPU/hit), ` +
        `${PAGES} pages ${open.at(-1)?.rps.toFixed(0)} req/s (${open.at(-1)?.cpuUsPerHit.toFixed(0)} µs CPU/hit)`,
    );
  }
  const rps = (xs: typeof none): number[] => xs.map((x) => x.rps);
  const cpu = (xs: typeof none): number[] => xs.map((x) => x.cpuUsPerHit);
  // Each round's two runs ran back to back: their ratio is less exposed to the machine's drift.
  const pairedRatios = open.map((o, i) => o.rps / (none[i]?.rps ?? NaN));

  // Idle: the gateway's CPU with no traffic, with the pages open and without.
  const idleCpu = async (): Promise<number> => {
    const before = await cpuSeconds(pid);
    await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000));
    return ((await cpuSeconds(pid)) - before) / IDLE_SECONDS;
  };
  const idleNone = await idleCpu();
  const idleOpen = await withPages(admin, idleCpu);

  // The page and its assets as a browser fetches them (gzip), and uncompressed.
  const page = await request(`${admin}/`, { headers: { 'accept-encoding': 'gzip' } });
  const html = (await request(`${admin}/`)).body.toString();
  const assets: Record<string, { gzipBytes: number; bytes: number }> = {
    'index.html': { gzipBytes: page.body.length, bytes: Buffer.byteLength(html) },
  };
  for (const m of html.matchAll(/(?:src|href)="(\/dashboard\/assets\/([^"?]+)[^"]*)"/g)) {
    const gz = await request(`${admin}${m[1]}`, { headers: { 'accept-encoding': 'gzip' } });
    const plain = await request(`${admin}${m[1]}`);
    assets[m[2] ?? ''] = { gzipBytes: gz.body.length, bytes: plain.body.length };
  }
  const snap = await request(`${admin}/dashboard/snapshot`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  const total = Object.values(assets).reduce(
    (a, b) => ({ gzipBytes: a.gzipBytes + b.gzipBytes, bytes: a.bytes + b.bytes }),
    {
      gzipBytes: 0,
      bytes: 0,
    },
  );

  const results = {
    description:
      'keel gateway cache hits (16 KiB ranges, wrk, 32 connections) with 5 dashboard pages open (SSE streams, 1 snapshot/s) against none, alternating rounds; gateway CPU idle; page size',
    machine: { cpus: os.cpus().length, loadAverageBefore: loadBefore, loadAverageAfter: os.loadavg() },
    seconds: SECONDS,
    rounds: ROUNDS,
    hitsPerSecond: {
      noPages: { runs: rps(none), median: median(rps(none)) },
      fivePages: { runs: rps(open), median: median(rps(open)) },
      ratioOfMediansFivePagesOverNone: median(rps(open)) / median(rps(none)),
      pairedRatiosFivePagesOverNone: pairedRatios,
      medianPairedRatio: median(pairedRatios),
      snapshotsReceivedByThePagesDuringLoad: snapshotsDuringLoad,
    },
    gatewayCpuMicrosecondsPerHit: {
      noPages: { runs: cpu(none), median: median(cpu(none)) },
      fivePages: { runs: cpu(open), median: median(cpu(open)) },
      ratioFivePagesOverNone: median(cpu(open)) / median(cpu(none)),
    },
    idleGatewayCpu: {
      noPagesCpuSecondsPerSecond: idleNone,
      fivePagesCpuSecondsPerSecond: idleOpen.result,
      snapshotsReceived: idleOpen.snapshots,
      bytesReceivedPerPagePerSecond: idleOpen.bytes / PAGES / IDLE_SECONDS,
    },
    page: { assets, total, snapshotBytes: snap.body.length },
  };
  await writeFile(
    path.join(import.meta.dirname, 'results', 'dashboard.json'),
    `${JSON.stringify(results, null, 2)}\n`,
  );
  console.log(JSON.stringify(results, null, 2));
} finally {
  for (const c of children.reverse()) await stop(c);
  await rm(root, { recursive: true, force: true });
}

/**
 * Cost of the chaos TCP proxy with no toxics, against a direct loopback connection, in one process:
 * bulk throughput (64 MiB one way) and round trips (2,000 small echo exchanges).
 * Run: node --import tsx bench/chaos.ts → bench/results/chaos.json
 */
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { chaos } from 'keel/chaos';

const BULK_BYTES = 64 * 1024 * 1024;
const ROUND_TRIPS = 2000;
const ROUNDS = 5;

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

/** Sends BULK_BYTES to a sink on connect; resolves with ms until the client saw the close. */
function bulk(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let got = 0;
    const s = net.connect(port, '127.0.0.1');
    s.on('data', (d: Buffer) => (got += d.length));
    s.on('error', reject);
    s.on('close', () => {
      if (got !== BULK_BYTES) reject(new Error(`got ${got} bytes`));
      else resolve(performance.now() - started);
    });
  });
}

/** ROUND_TRIPS one-byte ping-pongs; resolves with ms in total. */
function pingPong(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.setNoDelay(true);
    let left = ROUND_TRIPS;
    let started = 0;
    s.on('connect', () => {
      started = performance.now();
      s.write('x');
    });
    s.on('data', () => {
      if (--left === 0) {
        const ms = performance.now() - started;
        s.destroy();
        resolve(ms);
      } else s.write('x');
    });
    s.on('error', reject);
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

async function main(): Promise<void> {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const source = net.createServer((s) => {
    s.on('error', () => undefined);
    let sent = 0;
    const pump = (): void => {
      while (sent < BULK_BYTES) {
        sent += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    pump();
  });
  const echo = net.createServer((s) => {
    s.setNoDelay(true);
    s.on('error', () => undefined);
    s.pipe(s);
  });
  const sourcePort = await listen(source);
  const echoPort = await listen(echo);
  const bulkProxy = await chaos.proxy({ upstream: `127.0.0.1:${sourcePort}` });
  const echoProxy = await chaos.proxy({ upstream: `127.0.0.1:${echoPort}` });

  const runs = {
    bulkDirect: [] as number[],
    bulkProxy: [] as number[],
    rttDirect: [] as number[],
    rttProxy: [] as number[],
  };
  for (let round = 0; round < ROUNDS; round++) {
    // Paired rounds, alternating order, so drift in machine load hits both sides alike.
    const pairs: [keyof typeof runs, () => Promise<number>][] = [
      ['bulkDirect', () => bulk(sourcePort)],
      ['bulkProxy', () => bulk(bulkProxy.port)],
      ['rttDirect', () => pingPong(echoPort)],
      ['rttProxy', () => pingPong(echoProxy.port)],
    ];
    if (round % 2 === 1) pairs.reverse();
    for (const [key, run] of pairs) runs[key].push(await run());
  }
  await bulkProxy.close();
  await echoProxy.close();
  source.close();
  echo.close();

  const mibPerSec = (ms: number): number => BULK_BYTES / 1024 / 1024 / (ms / 1000);
  const result = {
    bench: 'chaos',
    node: process.version,
    cpus: os.cpus().length,
    loadavg: os.loadavg(),
    rounds: ROUNDS,
    bulkBytes: BULK_BYTES,
    roundTrips: ROUND_TRIPS,
    medians: {
      bulkDirectMiBps: Math.round(mibPerSec(median(runs.bulkDirect))),
      bulkProxyMiBps: Math.round(mibPerSec(median(runs.bulkProxy))),
      rttDirectUs: Math.round((median(runs.rttDirect) * 1000) / ROUND_TRIPS),
      rttProxyUs: Math.round((median(runs.rttProxy) * 1000) / ROUND_TRIPS),
    },
    ratios: {
      proxyThroughputVsDirect: +(median(runs.bulkDirect) / median(runs.bulkProxy)).toFixed(3),
      proxyRoundTripVsDirect: +(median(runs.rttProxy) / median(runs.rttDirect)).toFixed(3),
    },
  };
  await mkdir(new URL('./results/', import.meta.url), { recursive: true });
  await writeFile(new URL('./results/chaos.json', import.meta.url), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();

/**
 * The servers of a run, each a child process on a loopback port the system picks: the s3rver
 * origin (origin.ts) and `keel gateway` in front of it, started from keel's command line as a
 * user would start it.
 */
import type { ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KEEL_CLI_ENTRY, KEEL_ROOT, keelSourcePath } from './keel-source.js';
import { startChild, stopChild, waitForLine } from './processes.js';

/** s3rver's one account: the origin accepts only these credentials. */
export const ORIGIN_CREDENTIALS = { accessKey: 'S3RVER', secretKey: 'S3RVER' } as const;

/** An exception s3rver left unhandled (reported by origin.ts instead of ending the process). */
export interface OriginFault {
  kind: string;
  atMs: number;
  message: string;
  stack: string[];
}

/** A running origin. */
export interface Origin {
  url: string;
  port: number;
  faults: OriginFault[];
  /** Whether the process ended before the run stopped it, and how. */
  exited: () => string | undefined;
  stop: () => Promise<void>;
}

const ORIGIN_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'origin.ts');

// A server's environment: none of the caller's KEEL_* or AWS_* settings, which would change what is
// measured (a KEEL_CONFIG file, another region, other credentials).
function serverEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(KEEL_|AWS_)/.test(k)) env[k] = v;
  return { ...env, ...extra };
}

// Tells whether a server ended before the run stopped it: its tests' failures are then the crash's.
function watchExit(child: ChildProcess): {
  exited: () => string | undefined;
  stop: (graceMs?: number) => Promise<void>;
} {
  let how: string | undefined;
  let stopping = false;
  child.once('exit', (code, signal) => {
    if (!stopping) how = `exited on its own (code ${code}, signal ${signal})`;
  });
  return {
    exited: () => how,
    stop: (graceMs) => {
      stopping = true;
      return stopChild(child, graceMs);
    },
  };
}

/**
 * Starts s3rver in a child process storing into `directory`, and resolves once it listens.
 * @throws when it does not start within 60 s.
 */
export async function startOrigin(directory: string): Promise<Origin> {
  const child = startChild(process.execPath, ['--import', 'tsx', ORIGIN_SCRIPT, directory], {
    cwd: KEEL_ROOT,
    env: serverEnv({}),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { exited, stop } = watchExit(child);
  const faults: OriginFault[] = [];
  let pending = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines)
      if (line.startsWith('ORIGIN-FAULT '))
        faults.push(JSON.parse(line.slice('ORIGIN-FAULT '.length)) as OriginFault);
  });
  child.stderr?.resume();
  const m = await waitForLine(child, /^ORIGIN (\d+)$/, 'the s3rver origin');
  const port = Number(m[1]);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    faults,
    exited,
    stop: () => stop(),
  };
}

/** A running keel gateway. */
export interface Keel {
  url: string;
  host: string;
  port: number;
  adminUrl: string;
  exited: () => string | undefined;
  /** The admin endpoint's Prometheus text (empty when it cannot be read). */
  metrics: () => Promise<string>;
  stop: () => Promise<void>;
}

/** How keel is started. */
export interface KeelOptions {
  auth: 'gateway' | 'anonymous';
  upstream: string;
  /** `--client-keys` in `gateway` mode. */
  clientKeys: { accessKey: string; secretKey: string }[];
  cacheDir: string;
  /** keel's stderr (its JSON log lines) goes here. */
  logFile: string;
  /** More `keel gateway` flags, after the harness's own. */
  args?: string[];
}

/**
 * Starts `keel gateway` from its command line in a child process, with S3 and admin ports picked
 * by the system, and resolves once `/health/ready` answers 200.
 * @throws when it does not get ready within 60 s (its output is in the message).
 */
export async function startKeel(options: KeelOptions): Promise<Keel> {
  const args = [
    '--import',
    'tsx',
    keelSourcePath(KEEL_CLI_ENTRY),
    'gateway',
    '--upstream',
    options.upstream,
    '--listen',
    '127.0.0.1:0',
    '--admin',
    '127.0.0.1:0',
    '--auth',
    options.auth,
    ...(options.auth === 'gateway'
      ? ['--client-keys', options.clientKeys.map((k) => `${k.accessKey}:${k.secretKey}`).join(',')]
      : []),
    '--cache-dir',
    options.cacheDir,
    ...(options.args ?? []),
  ];
  const child = startChild(process.execPath, args, {
    cwd: KEEL_ROOT,
    // The origin's credentials reach keel as an operator's would: from the environment.
    env: serverEnv({
      KEEL_ORIGIN_ACCESS_KEY_ID: ORIGIN_CREDENTIALS.accessKey,
      KEEL_ORIGIN_SECRET_ACCESS_KEY: ORIGIN_CREDENTIALS.secretKey,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { exited, stop } = watchExit(child);
  const log = createWriteStream(options.logFile);
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  const m = await waitForLine(child, /S3 endpoint (http:\/\/\S+) .*; admin (http:\/\/\S+)/, 'keel gateway');
  const url = m[1] as string;
  const adminUrl = m[2] as string;
  await waitReady(adminUrl, child);
  const { hostname, port } = new URL(url);
  return {
    url,
    host: hostname,
    port: Number(port),
    adminUrl,
    exited,
    metrics: async () => {
      const res = await fetch(`${adminUrl}/metrics`).catch(() => undefined);
      return res?.ok ? await res.text() : '';
    },
    stop: async () => {
      // keel drains for up to --drain-seconds (30 s by default) on SIGTERM.
      await stop(40_000);
      await new Promise<void>((resolve) => log.end(resolve));
    },
  };
}

async function waitReady(adminUrl: string, child: ChildProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error('keel gateway exited before it was ready');
    const res = await fetch(`${adminUrl}/health/ready`).catch((err: unknown) => {
      last = String(err);
      return undefined;
    });
    if (res?.status === 200) return;
    if (res) last = `${res.status} ${await res.text()}`;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`keel gateway was not ready within ${timeoutMs / 1000} s: /health/ready said ${last}`);
}

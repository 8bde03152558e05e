import cluster from 'node:cluster';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { keelError } from 'keel';
import type { Command } from 'commander';
import {
  ALERT_RULE_TESTS_FILE,
  ALERT_RULES_FILE,
  resolveGatewayConfig,
  runGateway,
  runPrimary,
  runWorker,
  startDemoOrigin,
  DEMO_OBJECTS,
  type GatewayConfig,
  type RunningGateway,
} from '../index.js';

interface GatewayFlags {
  config?: string;
  upstream?: string;
  listen?: string;
  admin?: string;
  auth?: string;
  authCacheSeconds?: string;
  forceAnonymous?: boolean;
  clientKeys?: string;
  region?: string;
  cacheDir?: string;
  cacheMaxBytes?: string;
  memoryCacheBytes?: string;
  sliceBytes?: string;
  ttlSeconds?: string;
  revalidateTimeoutSeconds?: string;
  revalidateBackoffSeconds?: string;
  revalidateMaxBackoffSeconds?: string;
  baseDomain?: string;
  cleanupIntervalSeconds?: string;
  drainSeconds?: string;
  shutdownDelaySeconds?: string;
  adminToken?: string;
  adminReadToken?: string;
  alerts?: string;
  alertsFile?: string;
  alertsWebhookUrl?: string;
  diskWarningPercent?: string;
  diskCriticalPercent?: string;
  diskCheckIntervalSeconds?: string;
  logLevel?: string;
  originFirstByteTimeoutSeconds?: string;
  originDeadlineSeconds?: string;
  unsignedRequests?: string;
  readAheadSlices?: string;
  writeThrough?: boolean;
  rules?: string;
  stateDir?: string;
  workers?: string;
  coordinator?: string;
  coordinatorPrefix?: string;
  demo?: boolean;
}

/** Registers `keel gateway`: the S3 caching gateway (and `--demo`, a self-contained tour). */
export function registerGatewayCommand(program: Command): void {
  const gateway = program.command('gateway');
  gateway
    .command('rules')
    .description('print the recommended Prometheus alert rules (keel gateway rules > keel.rules.yml)')
    .option('--tests', 'print their promtool unit tests instead')
    .action(async (options: { tests?: boolean }) => {
      process.stdout.write(await readFile(options.tests ? ALERT_RULE_TESTS_FILE : ALERT_RULES_FILE, 'utf8'));
    });
  gateway
    .description('run the self-healing S3 caching gateway in front of an S3 origin')
    .option('--config <file>', 'JSON config file (KEEL_CONFIG)')
    .option('--upstream <url>', 'S3 origin URL (KEEL_UPSTREAM)')
    .option('--listen <[host:]port>', 'S3 endpoint address (KEEL_LISTEN, default 127.0.0.1:8080)')
    .option('--admin <[host:]port>', 'admin endpoints address (KEEL_ADMIN_LISTEN, default 127.0.0.1:9090)')
    .option(
      '--auth <mode>',
      'gateway (clients sign with --client-keys), anonymous, or passthrough (clients sign for the origin, which judges every request; no keys held) (KEEL_AUTH, default gateway)',
    )
    .option(
      '--auth-cache-seconds <n>',
      'passthrough only: trust a read the origin authorised for this long per access key id, bucket and key, without asking; an access key id is not a secret (KEEL_AUTH_CACHE_SECONDS, default 0: off)',
    )
    .option('--force-anonymous', 'allow anonymous mode on a non-loopback address (KEEL_FORCE_ANONYMOUS)')
    .option('--client-keys <pairs>', 'ACCESS_KEY_ID:SECRET,… clients may sign with (KEEL_CLIENT_KEYS)')
    .option('--region <region>', 'region for signing origin requests (KEEL_REGION, default us-east-1)')
    .option('--cache-dir <dir>', 'cache directory (KEEL_CACHE_DIR)')
    .option('--cache-max-bytes <size>', 'cache size limit, e.g. 50GiB (KEEL_CACHE_MAX_BYTES, default 10GiB)')
    .option(
      '--memory-cache-bytes <size>',
      'hot object data kept in memory per process, e.g. 1GiB; 0 turns the memory tier off (KEEL_MEMORY_CACHE_BYTES, default 256MiB)',
    )
    .option('--slice-bytes <size>', 'slice size (KEEL_SLICE_BYTES, default 8MiB)')
    .option('--ttl-seconds <n>', 'revalidate cached objects after this long (KEEL_TTL_SECONDS, default 60)')
    .option(
      '--revalidate-timeout-seconds <n>',
      'serve an expired object STALE when the origin has not confirmed it within this long (KEEL_REVALIDATE_TIMEOUT_SECONDS, default 1)',
    )
    .option(
      '--revalidate-backoff-seconds <n>',
      'after a failed revalidation, serve the object STALE this long before asking the origin again, doubling per failure (KEEL_REVALIDATE_BACKOFF_SECONDS, default 1)',
    )
    .option(
      '--revalidate-max-backoff-seconds <n>',
      'longest wait between revalidations of an object whose origin keeps failing (KEEL_REVALIDATE_MAX_BACKOFF_SECONDS, default 60)',
    )
    .option('--base-domain <domain>', 'virtual-host-style base domain: bucket.<domain> (KEEL_BASE_DOMAIN)')
    .option(
      '--cleanup-interval-seconds <n>',
      'cache cleanup period (KEEL_CLEANUP_INTERVAL_SECONDS, default 3600)',
    )
    .option(
      '--drain-seconds <n>',
      'on SIGTERM, wait this long for requests in flight (KEEL_DRAIN_SECONDS, default 30)',
    )
    .option(
      '--shutdown-delay-seconds <n>',
      'on SIGTERM, fail readiness this long before refusing connections (KEEL_SHUTDOWN_DELAY_SECONDS, default 0; 5 behind a load balancer)',
    )
    .option(
      '--admin-token <[name:]secret>',
      'bearer token for the admin endpoints other than the probes and the dashboard page; secret ≥ 16 characters, the name is logged with each action (KEEL_ADMIN_TOKEN)',
    )
    .option(
      '--admin-read-token <[name:]secret>',
      'a token that may read (status, metrics, the dashboard) but not act, e.g. for a wall screen (KEEL_ADMIN_READ_TOKEN)',
    )
    .option('--alerts <handlers>', 'where alerts go: none or log,file,webhook (KEEL_ALERTS, default log)')
    .option('--alerts-file <file>', 'JSON-lines file of the file alert handler (KEEL_ALERTS_FILE)')
    .option('--alerts-webhook-url <url>', 'URL the webhook alert handler POSTs to (KEEL_ALERTS_WEBHOOK_URL)')
    .option(
      '--disk-warning-percent <n>',
      'cache file system use that warns and starts a cleanup (KEEL_DISK_WARNING_PERCENT, default 80)',
    )
    .option(
      '--disk-critical-percent <n>',
      'cache file system use that is critical and evicts (KEEL_DISK_CRITICAL_PERCENT, default 90)',
    )
    .option(
      '--disk-check-interval-seconds <n>',
      'how often the disk is checked (KEEL_DISK_CHECK_INTERVAL_SECONDS, default 60)',
    )
    .option(
      '--origin-first-byte-timeout-seconds <n>',
      "wait this long for the origin's response headers, per attempt (KEEL_ORIGIN_FIRST_BYTE_TIMEOUT_SECONDS, default 5)",
    )
    .option(
      '--origin-deadline-seconds <n>',
      'longest a request waits for the origin, retries included; then 503 with Retry-After (KEEL_ORIGIN_DEADLINE_SECONDS, default 10)',
    )
    .option(
      '--unsigned-requests <mode>',
      'with --auth gateway, refuse requests without a signature, or forward them unsigned for the origin to judge (KEEL_UNSIGNED_REQUESTS, default refuse)',
    )
    .option(
      '--read-ahead-slices <n>',
      'uncached slices one read fetches from the origin at once, 1 to 64; 1 turns read-ahead off (KEEL_READ_AHEAD_SLICES, default 4)',
    )
    .option(
      '--write-through',
      "cache a PutObject's body as it goes to the origin, committed once the origin accepted it, so the next read is a hit (KEEL_WRITE_THROUGH, default on)",
    )
    .option('--no-write-through', 'forward writes without caching them')
    .option(
      '--rules <file>',
      'cache rules per bucket/key pattern (JSON: TTL, HEAD TTL, no-cache, memory tier, write-through), read again when the file changes (KEEL_RULES; see docs/gateway.md, Cache rules)',
    )
    .option(
      '--state-dir <dir>',
      "this gateway's own state directory (one per gateway, not shared): a start after a crash or kill raises ProcessRestarted, several within 15 min ProcessRestartLoop (KEEL_STATE_DIR; default: not tracked)",
    )
    .option(
      '--log-level <level>',
      'error, warn or info: info adds one JSON line per request (KEEL_LOG_LEVEL, default warn)',
    )
    .option(
      '--workers <n>',
      'processes serving the S3 port, sharing the cache and one admin port; 1 serves from this process (KEEL_WORKERS, default the number of cores)',
    )
    .option(
      '--coordinator <url>',
      'redis://… of the Redis that coordinates gateways on several hosts sharing one cache volume (KEEL_COORDINATOR; see docs/fleet.md)',
    )
    .option(
      '--coordinator-prefix <prefix>',
      "prefix of the fleet's keys in that Redis (KEEL_COORDINATOR_PREFIX, default keel)",
    )
    .option(
      '--demo',
      'start a local s3rver origin with a demo bucket and the gateway on :8080 (anonymous), admin on :9090',
    )
    .action(async ({ demo, ...flags }: GatewayFlags) => {
      await (demo ? startDemo(flags) : startGateway(flags));
    });
}

type Flags = Omit<GatewayFlags, 'demo'>;

/** Where runGateway puts the cache when no --cache-dir is given. */
const DEFAULT_CACHE_DIR = path.join(os.tmpdir(), 'keel-gateway-cache');

/** `keel gateway`: the gateway in front of `--upstream`. */
async function startGateway(flags: Flags): Promise<void> {
  const config = resolveGatewayConfig(flags);
  // A worker forked by the primary below runs this same command line.
  if (cluster.isWorker) {
    await runWorker(config);
    return;
  }
  if (config.workers > 1) {
    const fleet = await runPrimary(config, { handleSignals: true });
    process.stderr.write(
      `keel gateway: S3 endpoint ${fleet.url} (auth ${config.auth}) → ${config.upstream}; cache ${config.cacheDir ?? DEFAULT_CACHE_DIR}; ${config.workers} workers; admin ${fleet.admin.url}\n`,
    );
    return;
  }
  const running = await runGateway(config, { handleSignals: true });
  announce(running, config);
}

/**
 * `keel gateway --demo`: the demo origin in a process of its own, the gateway in front of it,
 * then the demo objects. Every step that can fail runs before the costly one after it: the
 * settings are checked before anything starts, the ports are taken before 211 MiB are generated.
 * A start that fails stops the origin and removes its directory before the error is reported.
 */
async function startDemo(flags: Flags): Promise<void> {
  const say = (message: string): void => {
    process.stderr.write(`keel gateway --demo: ${message}\n`);
  };
  // The origin's address is known once it listens: any valid URL stands in for it meanwhile.
  const demoSettings = {
    auth: flags.auth ?? 'anonymous',
    originAccessKeyId: 'S3RVER',
    originSecretAccessKey: 'S3RVER',
  };
  // The demo is one process, quick to start; `--workers` is for a gateway in front of an origin.
  if ((flags.workers ?? process.env.KEEL_WORKERS ?? '1').trim() !== '1')
    throw keelError(
      'INVALID_CONFIG',
      '--workers (KEEL_WORKERS): the demo runs in one process; run keel gateway --workers N --upstream <url> in front of an origin',
    );
  const config = resolveGatewayConfig({
    ...flags,
    ...demoSettings,
    upstream: 'http://127.0.0.1',
    workers: '1',
  });
  const origin = await startDemoOrigin({ log: say });
  let running: RunningGateway;
  try {
    running = await runGateway(
      { ...config, upstream: origin.url },
      { handleSignals: true, afterShutdown: () => origin.close() },
    );
    say(`generating the demo bucket (${DEMO_OBJECTS.map((o) => o.key.replace('.bin', '')).join(', ')})…`);
    await origin.seed();
  } catch (err) {
    await origin.close();
    throw err;
  }
  const { base, admin } = announce(running, { ...config, upstream: origin.url });
  const big = DEMO_OBJECTS[2].key;
  process.stdout.write(
    [
      '',
      `Demo bucket "demo": ${DEMO_OBJECTS.map((o) => o.key).join(', ')}`,
      `Cache: ${running.gateway.cache?.dir ?? 'none'} (kept on exit; the demo origin's files are removed)`,
      'Try:',
      `  curl -sI ${base}/demo/${DEMO_OBJECTS[1].key}                        # x-keel-cache: MISS, then HIT`,
      `  curl -s -r 0-1048575 ${base}/demo/${big} | wc -c      # a 1 MiB range`,
      `  curl -s ${base}/demo/${big} | sha256sum               # run twice: the second is from the cache`,
      `  aws s3 ls s3://demo --endpoint-url ${base} --no-sign-request`,
      `  aws s3 cp s3://demo/${DEMO_OBJECTS[1].key} /tmp/x --endpoint-url ${base} --no-sign-request`,
      `  curl -s ${admin}/metrics | grep keel_     # Prometheus metrics`,
      `  curl -s ${admin}/status                   # JSON status with the repair counters`,
      `  curl -s ${admin}/health/ready; curl -s -XPOST ${admin}/cache/verify`,
      'Ctrl-C drains and stops.',
      '',
    ].join('\n'),
  );
}

/** Prints where the gateway listens, what it is in front of and where its cache is (stderr). */
function announce(running: RunningGateway, config: GatewayConfig): { base: string; admin: string } {
  const base = running.gateway.url();
  const admin = running.admin.url;
  process.stderr.write(
    `keel gateway: S3 endpoint ${base} (auth ${config.auth}) → ${config.upstream}; cache ${running.gateway.cache?.dir ?? 'none'}; admin ${admin}\n`,
  );
  return { base, admin };
}

import { readFileSync } from 'node:fs';
import os from 'node:os';
import { isIPv4, isIPv6 } from 'node:net';
import { keelError } from 'keel';
import { fleetKeys, parseRedisUrl } from '@keel/fleet';
import { ALERT_HANDLER_NAMES, type AlertHandlerName } from './admin/alerting.js';
import type { ClientKey } from './auth/sigv4-verify.js';
import { CacheRuleList } from './rules/cache-rules.js';

/** The gateway's settings after flags, `KEEL_*` variables and the config file are merged. */
export interface GatewayConfig {
  upstream: string;
  listenHost: string;
  listenPort: number;
  adminHost: string;
  adminPort: number;
  auth: 'gateway' | 'anonymous' | 'passthrough';
  /** In passthrough auth, how long a read the origin authorised is trusted without asking (0: never). */
  authCacheSeconds: number;
  /** Allow anonymous mode on a non-loopback address. */
  forceAnonymous: boolean;
  clientKeys: ClientKey[];
  originAccessKeyId: string | undefined;
  originSecretAccessKey: string | undefined;
  region: string;
  cacheDir: string | undefined;
  cacheMaxBytes: number;
  /** Bytes of hot object data each process keeps in memory in front of the disk cache (0: none). */
  memoryCacheBytes: number;
  sliceBytes: number;
  ttlSeconds: number;
  /** How long hits of an expired object wait for the origin to confirm it before being served STALE. */
  revalidateTimeoutSeconds: number;
  /** After a failed revalidation, how long an object is served STALE before the origin is asked again… */
  revalidateBackoffSeconds: number;
  /** …doubling per failure up to this. */
  revalidateMaxBackoffSeconds: number;
  baseDomain: string | undefined;
  cleanupIntervalSeconds: number;
  /** On SIGTERM, how long requests in flight may finish before their connections are closed. */
  drainSeconds: number;
  /** On SIGTERM, how long readiness fails before the S3 port stops accepting (load balancers notice). */
  shutdownDelaySeconds: number;
  /** Bearer token for the admin endpoints other than the probes (never logged): `name:secret` or a bare secret. */
  adminToken: string | undefined;
  /** A token that may only read (status, metrics, the dashboard), never act: `name:secret` or a bare secret. */
  adminReadToken: string | undefined;
  /** Where alerts go. */
  alerts: AlertHandlerName[];
  alertsFile: string | undefined;
  alertsWebhookUrl: string | undefined;
  /** Used share of the cache's file system (percent) that raises a warning… */
  diskWarningPercent: number;
  /** …and a critical alert, with cleanup and eviction. */
  diskCriticalPercent: number;
  diskCheckIntervalSeconds: number;
  /** Lowest level logged: `info` adds one line per request. */
  logLevel: LogLevel;
  /** Wait this long for the origin's response headers, per attempt (an upload's from the end of its body). */
  originFirstByteTimeoutSeconds: number;
  /** Longest a client request waits for the origin to start answering, retries included. */
  originDeadlineSeconds: number;
  /** In gateway auth, what becomes of a request without any signature: refused, or forwarded unsigned. */
  unsignedRequests: 'refuse' | 'forward';
  /** Uncached slices one read fetches from the origin at once (1: no read-ahead). */
  readAheadSlices: number;
  /** Cache a PutObject's body as it goes to the origin, committed once the origin accepted it. */
  writeThrough: boolean;
  /** The cache rules file (`--rules`), checked here and read again whenever it changes; none: no rules. */
  rulesFile: string | undefined;
  /**
   * This gateway's own state directory (one per gateway process, never shared): with it, a start
   * after a crash or a kill raises `ProcessRestarted` (see @keel/ops' ProcessRestarts); none: not tracked.
   */
  stateDir: string | undefined;
  /** Processes serving the S3 port (node:cluster workers); 1 serves it from this process. */
  workers: number;
  /** `redis://…` of the Redis that coordinates gateways on several hosts (may hold a password: never logged). */
  coordinator: string | undefined;
  /** Prefix of the fleet's keys and channels in that Redis (gateway fleets sharing one Redis use different ones). */
  coordinatorPrefix: string;
}

/** Most workers `--workers` accepts. */
export const MAX_WORKERS = 256;

/** Most slices `--read-ahead-slices` accepts (each one in flight holds a slice in memory). */
export const MAX_READ_AHEAD_SLICES = 64;

/** Log levels of the gateway, most to least severe. */
export const LOG_LEVELS = ['error', 'warn', 'info'] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Each setting: its flag (camelCase, as commander gives it), env var and config-file key. */
const SETTINGS = {
  upstream: 'KEEL_UPSTREAM',
  listen: 'KEEL_LISTEN',
  admin: 'KEEL_ADMIN_LISTEN',
  auth: 'KEEL_AUTH',
  authCacheSeconds: 'KEEL_AUTH_CACHE_SECONDS',
  forceAnonymous: 'KEEL_FORCE_ANONYMOUS',
  clientKeys: 'KEEL_CLIENT_KEYS',
  originAccessKeyId: 'KEEL_ORIGIN_ACCESS_KEY_ID',
  originSecretAccessKey: 'KEEL_ORIGIN_SECRET_ACCESS_KEY',
  region: 'KEEL_REGION',
  cacheDir: 'KEEL_CACHE_DIR',
  cacheMaxBytes: 'KEEL_CACHE_MAX_BYTES',
  memoryCacheBytes: 'KEEL_MEMORY_CACHE_BYTES',
  sliceBytes: 'KEEL_SLICE_BYTES',
  ttlSeconds: 'KEEL_TTL_SECONDS',
  revalidateTimeoutSeconds: 'KEEL_REVALIDATE_TIMEOUT_SECONDS',
  revalidateBackoffSeconds: 'KEEL_REVALIDATE_BACKOFF_SECONDS',
  revalidateMaxBackoffSeconds: 'KEEL_REVALIDATE_MAX_BACKOFF_SECONDS',
  baseDomain: 'KEEL_BASE_DOMAIN',
  cleanupIntervalSeconds: 'KEEL_CLEANUP_INTERVAL_SECONDS',
  drainSeconds: 'KEEL_DRAIN_SECONDS',
  shutdownDelaySeconds: 'KEEL_SHUTDOWN_DELAY_SECONDS',
  adminToken: 'KEEL_ADMIN_TOKEN',
  adminReadToken: 'KEEL_ADMIN_READ_TOKEN',
  alerts: 'KEEL_ALERTS',
  alertsFile: 'KEEL_ALERTS_FILE',
  alertsWebhookUrl: 'KEEL_ALERTS_WEBHOOK_URL',
  diskWarningPercent: 'KEEL_DISK_WARNING_PERCENT',
  diskCriticalPercent: 'KEEL_DISK_CRITICAL_PERCENT',
  diskCheckIntervalSeconds: 'KEEL_DISK_CHECK_INTERVAL_SECONDS',
  logLevel: 'KEEL_LOG_LEVEL',
  originFirstByteTimeoutSeconds: 'KEEL_ORIGIN_FIRST_BYTE_TIMEOUT_SECONDS',
  originDeadlineSeconds: 'KEEL_ORIGIN_DEADLINE_SECONDS',
  unsignedRequests: 'KEEL_UNSIGNED_REQUESTS',
  readAheadSlices: 'KEEL_READ_AHEAD_SLICES',
  writeThrough: 'KEEL_WRITE_THROUGH',
  rules: 'KEEL_RULES',
  stateDir: 'KEEL_STATE_DIR',
  workers: 'KEEL_WORKERS',
  coordinator: 'KEEL_COORDINATOR',
  coordinatorPrefix: 'KEEL_COORDINATOR_PREFIX',
} as const;

type Setting = keyof typeof SETTINGS;
type Raw = Partial<Record<Setting, string | number | boolean | undefined>>;

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

function fail(setting: Setting, message: string): never {
  throw keelError(
    'INVALID_CONFIG',
    `--${setting.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} (${SETTINGS[setting]}): ${message}`,
    { setting },
  );
}

function bytes(setting: Setting, v: string | number | boolean | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(String(v));
  const unit = UNITS[(m?.[2] ?? 'x').toLowerCase()];
  if (!m || unit === undefined) fail(setting, `expected a size such as 10GiB or 8MiB, got "${String(v)}"`);
  const n = Math.floor(Number(m[1]) * unit);
  if (n <= 0) fail(setting, 'must be positive');
  return n;
}

/** The smallest value a numeric setting takes, and whether that value itself is refused. */
interface NumberRule {
  min: number;
  /** Refuse `min` itself: `{ min: 0, exclusive: true }` is a positive number. */
  exclusive?: boolean;
}

const POSITIVE: NumberRule = { min: 0, exclusive: true };

/**
 * A numeric setting (a number, or a string holding one), or `dflt` when it is not given. A blank
 * string is refused rather than read as 0 (`Number('')` is 0), as are booleans and non-finite values.
 */
function num(
  setting: Setting,
  v: string | number | boolean | undefined,
  dflt: number,
  { min, exclusive = false }: NumberRule = { min: 0 },
): number {
  if (v === undefined) return dflt;
  const unit = setting.endsWith('Seconds') ? ' of seconds' : '';
  const expected =
    exclusive && min === 0 ? `a positive number${unit}` : `a number${unit} ${exclusive ? '>' : '≥'} ${min}`;
  if (typeof v === 'string' && v.trim() === '') fail(setting, `expected ${expected}, got a blank value`);
  const n = typeof v === 'boolean' ? NaN : Number(v);
  if (!Number.isFinite(n) || n < min || (exclusive && n === min))
    fail(setting, `expected ${expected}, got "${String(v)}"`);
  return n;
}

/** A yes/no setting: a boolean, or true/false, 1/0, yes/no, on/off in any case; `dflt` when not given. */
function yesNo(setting: Setting, v: string | number | boolean | undefined, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v === 'boolean') return v;
  const s = String(v).trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(s)) return true;
  if (['false', '0', 'no', 'off'].includes(s)) return false;
  return fail(setting, `expected true or false, got "${String(v)}"`);
}

function hostPort(
  setting: Setting,
  v: string | number | boolean | undefined,
  dflt: string,
): { host: string; port: number } {
  const s = String(v ?? dflt);
  const m = /^(?:\[?([^\]]*?)\]?:)?(\d+)$/.exec(s);
  if (!m) fail(setting, `expected [host:]port, got "${s}"`);
  const port = Number(m[2]);
  if (port > 65535) fail(setting, `port ${port} is out of range`);
  return { host: m[1] || '127.0.0.1', port };
}

/**
 * True for an address that only this machine can reach: `localhost`, 127.0.0.0/8, `::1` (also
 * IPv4-mapped, `::ffff:127.x.y.z`). Parsed as an address, not matched as a prefix: a host name
 * such as `127.attacker.example` is not loopback.
 */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const h = host.replace(/^\[|\]$/g, '');
  const v4 = h.toLowerCase().startsWith('::ffff:') ? h.slice(7) : h;
  if (isIPv4(v4)) return v4.split('.')[0] === '127';
  return isIPv6(h) && new URL(`http://[${h}]/`).hostname === '[::1]';
}

/**
 * Merges flags over `KEEL_*` environment variables over the JSON config file (`--config` or
 * `KEEL_CONFIG`) over defaults, and validates the result.
 * @throws KeelError `INVALID_CONFIG` whose message names the flag and variable of the bad setting.
 */
export function resolveGatewayConfig(
  flags: Raw & { config?: string },
  env: NodeJS.ProcessEnv = process.env,
): GatewayConfig {
  let file: Raw = {};
  const configPath = flags.config ?? env.KEEL_CONFIG;
  if (configPath !== undefined) {
    try {
      file = JSON.parse(readFileSync(configPath, 'utf8')) as Raw;
    } catch (err) {
      throw keelError('INVALID_CONFIG', `--config ${configPath}: ${(err as Error).message}`);
    }
    const unknown = Object.keys(file).filter((k) => !(k in SETTINGS));
    if (unknown.length)
      throw keelError(
        'INVALID_CONFIG',
        `--config ${configPath}: unknown settings ${unknown.join(', ')}; known: ${Object.keys(SETTINGS).join(', ')}`,
      );
  }
  const get = (s: Setting): string | number | boolean | undefined => flags[s] ?? env[SETTINGS[s]] ?? file[s];
  const upstream = get('upstream');
  if (upstream === undefined) fail('upstream', 'required: the S3 origin URL, e.g. https://s3.amazonaws.com');
  try {
    const u = new URL(String(upstream));
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      fail('upstream', `must be http or https, got ${u.protocol}`);
  } catch (err) {
    if ((err as { code?: string }).code === 'INVALID_CONFIG') throw err;
    fail('upstream', `not a URL: "${String(upstream)}"`);
  }
  const auth = String(get('auth') ?? 'gateway');
  if (auth !== 'gateway' && auth !== 'anonymous' && auth !== 'passthrough')
    fail('auth', `expected gateway, anonymous or passthrough, got "${auth}"`);
  if (auth === 'passthrough' && new URL(String(upstream)).pathname.replace(/\/$/, '') !== '')
    fail(
      'upstream',
      'passthrough auth forwards the path each client signed as it is: the origin URL cannot have a path of its own',
    );
  const authCacheSeconds = num('authCacheSeconds', get('authCacheSeconds'), 0);
  if (authCacheSeconds > 0 && auth !== 'passthrough')
    fail('authCacheSeconds', 'only applies to --auth passthrough');
  const listen = hostPort('listen', get('listen'), '127.0.0.1:8080');
  const admin = hostPort('admin', get('admin'), '127.0.0.1:9090');
  const forceAnonymous = ['true', '1', 'yes'].includes(String(get('forceAnonymous') ?? false));
  if (auth === 'anonymous' && !isLoopback(listen.host) && !forceAnonymous)
    fail(
      'auth',
      `anonymous mode on ${listen.host} would serve anyone who can reach it; listen on loopback or pass --force-anonymous`,
    );
  const clientKeys: ClientKey[] = String(get('clientKeys') ?? '')
    .split(',')
    .filter((s) => s.trim() !== '')
    .map((pair) => {
      const i = pair.indexOf(':');
      if (i < 1 || i === pair.length - 1)
        fail('clientKeys', 'expected ACCESS_KEY_ID:SECRET pairs separated by commas');
      return { accessKeyId: pair.slice(0, i).trim(), secretAccessKey: pair.slice(i + 1).trim() };
    });
  if (auth === 'gateway' && clientKeys.length === 0)
    fail('clientKeys', 'gateway auth needs at least one client key (or use --auth anonymous on loopback)');
  if (auth === 'passthrough' && clientKeys.length > 0)
    fail(
      'clientKeys',
      'passthrough auth holds no client keys: clients sign for the origin, which checks them',
    );
  if (auth === 'passthrough' && (get('originAccessKeyId') ?? get('originSecretAccessKey')) !== undefined)
    fail(
      get('originAccessKeyId') === undefined ? 'originSecretAccessKey' : 'originAccessKeyId',
      'passthrough auth holds no origin credentials: every request goes to the origin signed by its client',
    );
  // In passthrough auth the gateway signs nothing: AWS_* variables meant for other tools are not picked up.
  const originAccessKeyId =
    auth === 'passthrough' ? undefined : (get('originAccessKeyId') ?? env.AWS_ACCESS_KEY_ID);
  const originSecretAccessKey =
    auth === 'passthrough' ? undefined : (get('originSecretAccessKey') ?? env.AWS_SECRET_ACCESS_KEY);
  if ((originAccessKeyId === undefined) !== (originSecretAccessKey === undefined))
    fail(
      originAccessKeyId === undefined ? 'originAccessKeyId' : 'originSecretAccessKey',
      'origin credentials need both the key id and the secret',
    );
  const sliceBytes = bytes('sliceBytes', get('sliceBytes'), 8 * 1024 ** 2);
  if (sliceBytes < 64 * 1024 || sliceBytes > 1024 ** 3) fail('sliceBytes', 'must be between 64KiB and 1GiB');
  const cacheDir = get('cacheDir');
  const baseDomain = get('baseDomain');
  const adminToken = get('adminToken');
  if (adminToken !== undefined && String(adminToken).length < 16)
    fail('adminToken', 'must be at least 16 characters');
  const adminReadToken = get('adminReadToken');
  if (adminReadToken !== undefined) {
    const secretOf = (t: string): string => /^[A-Za-z0-9_.-]{1,32}:(.*)$/s.exec(t)?.[1] ?? t;
    const secret = secretOf(String(adminReadToken));
    if (secret.length < 16) fail('adminReadToken', 'the secret must be at least 16 characters');
    if (adminToken !== undefined && secret === secretOf(String(adminToken)))
      fail('adminReadToken', 'must differ from --admin-token');
  }
  if (adminToken === undefined && !isLoopback(admin.host))
    fail(
      'admin',
      `the admin endpoints on ${admin.host} would let anyone who can reach them run cleanups and read the status; keep them on loopback or set --admin-token`,
    );
  const alertsRaw = String(get('alerts') ?? 'log').trim();
  const alerts = alertsRaw === 'none' || alertsRaw === '' ? [] : alertsRaw.split(',').map((a) => a.trim());
  for (const a of alerts)
    if (!(ALERT_HANDLER_NAMES as readonly string[]).includes(a))
      fail(
        'alerts',
        `unknown alert handler "${a}": expected none or a list of ${ALERT_HANDLER_NAMES.join(', ')}`,
      );
  const stateDir = get('stateDir');
  if (stateDir !== undefined && (typeof stateDir !== 'string' || stateDir.trim() === ''))
    fail('stateDir', 'expected a directory path');
  const alertsFile = get('alertsFile');
  if (alerts.includes('file') && alertsFile === undefined)
    fail('alertsFile', 'required when --alerts includes file: the JSON-lines file alerts are appended to');
  const alertsWebhookUrl = get('alertsWebhookUrl');
  if (alerts.includes('webhook')) {
    if (alertsWebhookUrl === undefined) fail('alertsWebhookUrl', 'required when --alerts includes webhook');
    let u: URL | undefined;
    try {
      u = new URL(String(alertsWebhookUrl));
    } catch {
      u = undefined;
    }
    // The URL may carry a token: it is never repeated in the message.
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:'))
      fail('alertsWebhookUrl', 'expected an http or https URL');
  }
  const revalidateBackoffSeconds = num(
    'revalidateBackoffSeconds',
    get('revalidateBackoffSeconds'),
    1,
    POSITIVE,
  );
  const revalidateMaxBackoffSeconds = num(
    'revalidateMaxBackoffSeconds',
    get('revalidateMaxBackoffSeconds'),
    Math.max(60, revalidateBackoffSeconds),
    POSITIVE,
  );
  if (revalidateMaxBackoffSeconds < revalidateBackoffSeconds)
    fail(
      'revalidateMaxBackoffSeconds',
      `must be at least --revalidate-backoff-seconds (${revalidateBackoffSeconds}), got ${revalidateMaxBackoffSeconds}`,
    );
  const logLevel = String(get('logLevel') ?? 'warn')
    .trim()
    .toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel))
    fail('logLevel', `expected one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  const unsignedRequests = String(get('unsignedRequests') ?? 'refuse').trim();
  if (unsignedRequests !== 'refuse' && unsignedRequests !== 'forward')
    fail('unsignedRequests', `expected refuse or forward, got "${unsignedRequests}"`);
  const originFirstByteTimeoutSeconds = num(
    'originFirstByteTimeoutSeconds',
    get('originFirstByteTimeoutSeconds'),
    5,
    POSITIVE,
  );
  const originDeadlineSeconds = num('originDeadlineSeconds', get('originDeadlineSeconds'), 10, POSITIVE);
  const readAheadSlices = num('readAheadSlices', get('readAheadSlices'), 4, { min: 1 });
  if (!Number.isInteger(readAheadSlices) || readAheadSlices > MAX_READ_AHEAD_SLICES)
    fail(
      'readAheadSlices',
      `expected a whole number from 1 to ${MAX_READ_AHEAD_SLICES}, got "${String(get('readAheadSlices'))}"`,
    );
  const rulesFile = get('rules');
  if (rulesFile !== undefined) {
    if (typeof rulesFile !== 'string' || rulesFile.trim() === '')
      fail('rules', 'expected the path of a JSON file of cache rules');
    // Checked now, so a bad file stops the start (and every worker) with the rule at fault named.
    let text: string;
    try {
      text = readFileSync(rulesFile, 'utf8');
    } catch (err) {
      fail('rules', `cannot read ${rulesFile}: ${(err as Error).message}`);
    }
    try {
      CacheRuleList.parse(text, rulesFile);
    } catch (err) {
      fail('rules', (err as Error).message);
    }
  }
  const workers = num('workers', get('workers'), os.availableParallelism(), { min: 1 });
  if (!Number.isInteger(workers) || workers > MAX_WORKERS)
    fail('workers', `expected a whole number from 1 to ${MAX_WORKERS}, got "${String(get('workers'))}"`);
  const coordinator = get('coordinator');
  if (coordinator !== undefined) parseRedisUrl(String(coordinator), '--coordinator (KEEL_COORDINATOR)');
  const coordinatorPrefix = String(get('coordinatorPrefix') ?? 'keel');
  try {
    fleetKeys(coordinatorPrefix);
  } catch (err) {
    fail('coordinatorPrefix', (err as Error).message.replace(/^fleet key prefix: /, ''));
  }
  const diskWarningPercent = num('diskWarningPercent', get('diskWarningPercent'), 80, { min: 1 });
  const diskCriticalPercent = num('diskCriticalPercent', get('diskCriticalPercent'), 90, { min: 1 });
  if (diskCriticalPercent > 100)
    fail('diskCriticalPercent', `must be at most 100, got ${diskCriticalPercent}`);
  if (diskWarningPercent >= diskCriticalPercent)
    fail(
      'diskWarningPercent',
      `must be below --disk-critical-percent (${diskCriticalPercent}), got ${diskWarningPercent}`,
    );
  return {
    upstream: String(upstream),
    listenHost: listen.host,
    listenPort: listen.port,
    adminHost: admin.host,
    adminPort: admin.port,
    auth,
    authCacheSeconds,
    forceAnonymous,
    clientKeys,
    originAccessKeyId: originAccessKeyId === undefined ? undefined : String(originAccessKeyId),
    originSecretAccessKey: originSecretAccessKey === undefined ? undefined : String(originSecretAccessKey),
    region: String(get('region') ?? env.AWS_REGION ?? 'us-east-1'),
    cacheDir: cacheDir === undefined ? undefined : String(cacheDir),
    cacheMaxBytes: bytes('cacheMaxBytes', get('cacheMaxBytes'), 10 * 1024 ** 3),
    memoryCacheBytes: /^\s*0+\s*[a-zA-Z]*\s*$/.test(String(get('memoryCacheBytes') ?? '-'))
      ? 0
      : bytes('memoryCacheBytes', get('memoryCacheBytes'), 256 * 1024 ** 2),
    sliceBytes,
    ttlSeconds: num('ttlSeconds', get('ttlSeconds'), 60),
    revalidateTimeoutSeconds: num('revalidateTimeoutSeconds', get('revalidateTimeoutSeconds'), 1, POSITIVE),
    revalidateBackoffSeconds,
    revalidateMaxBackoffSeconds,
    baseDomain: baseDomain === undefined ? undefined : String(baseDomain),
    cleanupIntervalSeconds: num('cleanupIntervalSeconds', get('cleanupIntervalSeconds'), 3600, { min: 1 }),
    drainSeconds: num('drainSeconds', get('drainSeconds'), 30),
    shutdownDelaySeconds: num('shutdownDelaySeconds', get('shutdownDelaySeconds'), 0),
    adminToken: adminToken === undefined ? undefined : String(adminToken),
    adminReadToken: adminReadToken === undefined ? undefined : String(adminReadToken),
    alerts: alerts as AlertHandlerName[],
    alertsFile: alertsFile === undefined ? undefined : String(alertsFile),
    alertsWebhookUrl: alertsWebhookUrl === undefined ? undefined : String(alertsWebhookUrl),
    diskWarningPercent,
    diskCriticalPercent,
    diskCheckIntervalSeconds: num('diskCheckIntervalSeconds', get('diskCheckIntervalSeconds'), 60, {
      min: 1,
    }),
    logLevel: logLevel as LogLevel,
    originFirstByteTimeoutSeconds,
    originDeadlineSeconds,
    unsignedRequests,
    readAheadSlices,
    writeThrough: yesNo('writeThrough', get('writeThrough'), true),
    rulesFile,
    stateDir,
    workers,
    coordinator: coordinator === undefined ? undefined : String(coordinator),
    coordinatorPrefix,
  };
}

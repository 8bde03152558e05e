import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  classify,
  keelError,
  systemClock,
  withCorrelation,
  type CircuitBreakerPolicy,
  type Clock,
} from 'keel';
import { FileLocks, RangeCache, type CacheFs } from 'keel/cache';
import { addCorsHeaders, BucketCorsRules, fetchBucketCors } from './read/cors-rules.js';
import { GatewayMetrics } from './admin/metrics.js';
import {
  invalidateReads,
  revalidationStats,
  serveObject,
  type ReadContext,
  type RequestOutcome,
} from './read/object-read.js';
import type { RevalidatorOptions } from './read/revalidation.js';
import { OriginClient, type OriginCredentials } from './origin/origin-client.js';
import { OriginGuard, type OriginGuardOptions } from './origin/origin-guard.js';
import { shareOriginGuard } from './origin/shared-guard.js';
import { coordinatedLocks } from './coord/coordinated-locks.js';
import { loggableUrl } from './admin/request-log.js';
import { passthrough } from './write/passthrough.js';
import { announcesBody, refuseBody } from './s3/refuse-body.js';
import { S3Errors, sendS3Error, stampRequestId, type S3ErrorSpec } from './s3/s3-error.js';
import { malformedTargetError, parseS3Target, type S3Target } from './s3/s3-request.js';
import type { SliceFill } from './read/slice-fill.js';
import type { Coordinator } from './coord/coordinator.js';
import { verifySigV4, type ClientKey, type VerifiedRequest } from './auth/sigv4-verify.js';
import { servePassthrough, type PassthroughContext } from './auth/passthrough.js';
import { AuthTrust, type AuthorizationResult } from './read/passthrough-read.js';
import { connectHandler } from './s3/forward-proxy.js';
import { WriteThrough } from './write/write-through.js';
import { MultipartThrough } from './write/multipart-through.js';
import { CacheRuleList, CacheRules } from './rules/cache-rules.js';
import { MemoryTier } from './read/memory-tier.js';

/** Options of {@link createGateway}. */
export interface GatewayOptions {
  /** Base URL of the S3 origin. */
  upstream: string;
  /**
   * The other processes serving the same cache (`keel gateway --workers`: the primary
   * coordinates): one origin fetch per slice across them, and a write through one drops the
   * object in all before it answers. Default: this process alone.
   */
  coordinator?: Coordinator | undefined;
  /** Credentials for signing origin requests; unsigned when absent. */
  originCredentials?: OriginCredentials | undefined;
  /** Region used to sign origin requests (default us-east-1). */
  region?: string;
  /** `gateway`: clients sign with {@link GatewayOptions.clientKeys}; `anonymous`: no client auth (default gateway). */
  auth?: 'gateway' | 'anonymous' | 'passthrough';
  /**
   * In `passthrough` auth, trust a read the origin authorised for this long for the same access
   * key id, bucket and key, serving it from the cache without asking (default 0: every read is
   * asked). An access key id is not a secret: see docs/gateway.md, Authentication.
   */
  authCacheMs?: number;
  /**
   * In `gateway` auth, what becomes of a request that carries no signature at all: `refuse`d with
   * 403 AccessDenied (default), or `forward`ed to the origin unsigned (never with the gateway's
   * credentials), so the origin's own anonymous access rules decide as S3 would for a public
   * bucket. Forwarded requests are never answered from the cache. Only forward to an origin that
   * enforces its access rules on unsigned requests: one that does not (s3rver, for one) would
   * answer them all.
   */
  unsignedRequests?: 'refuse' | 'forward';
  clientKeys?: ClientKey[];
  /** Cache directory; no cache (every read BYPASS) when absent. */
  cacheDir?: string | undefined;
  /** Cache size limit in bytes (default 10 GiB). */
  cacheMaxBytes?: number;
  /**
   * Bytes of hot object data this process keeps in memory in front of the disk cache, verified
   * once as they enter (default 256 MiB; 0 turns the memory tier off). Needs `cacheDir`.
   */
  memoryCacheBytes?: number;
  /** Slice size (default 8 MiB). */
  sliceBytes?: number;
  /** Serve cached objects this long before revalidating with If-None-Match (default 60 s). */
  ttlMs?: number;
  /**
   * Cache rules per key pattern (default none): a list, or a function asked on every request for
   * the list in force (a {@link RulesFile}'s `current`, reloaded as its file changes). See
   * docs/gateway.md, Cache rules. With rules, write-through is prepared even when `writeThrough`
   * is false, since a rule may turn it on for some objects.
   */
  rules?: CacheRuleList | (() => CacheRuleList) | undefined;
  /**
   * Revalidation of expired objects: one request per object, shared by its hits, bounded by
   * `timeoutMs` (default 1 s), after which the cached copy is served STALE; a failed revalidation
   * is not tried again for that object before `backoffMs` (default 1 s, doubling to `maxBackoffMs`, 60 s).
   */
  revalidation?: RevalidatorOptions;
  /** Virtual-host-style base domain: `bucket.<baseDomain>` (default none: path-style only). */
  baseDomain?: string | undefined;
  /** Wait this long for the origin's response headers, per attempt (default 5 s; an upload's from its end). */
  firstByteTimeoutMs?: number;
  /**
   * Longest a client request waits for the origin to start answering, retries and their waits
   * included (default 10 s); then it gets 503 with Retry-After (a cached copy is served STALE).
   */
  deadlineMs?: number;
  /** Fail an origin body that stalls longer between chunks (default 30 s). */
  idleTimeoutMs?: number;
  /** Origin connections (default {@link DEFAULT_ORIGIN_CONNECTIONS}). */
  originConnections?: number;
  /**
   * Uncached slices one read fetches from the origin at once, the one being streamed included
   * (default 4; 1 turns read-ahead off). See docs/gateway.md, Read-ahead.
   */
  readAheadSlices?: number;
  /**
   * Write-through (default true): a PutObject's body is staged beside the cache as it goes to the
   * origin, and committed to the cache once the origin accepted it with the body's MD5 as ETag, so
   * the read after the write is a hit. Not in `passthrough` auth. See docs/gateway.md, Write-through.
   */
  writeThrough?: boolean;
  guard?: OriginGuardOptions;
  clock?: Clock;
  /** File system for the cache (fault injection in tests). */
  cacheFs?: CacheFs;
  /** While the cache is bypassed, how often it checks whether the disk is usable again (default 30 s). */
  cacheBypassProbeMs?: number;
  /**
   * Threads that read and verify cached slices (default: the cache's, one per core, at most 4).
   * `keel gateway --workers N` gives each worker its share of the cores.
   */
  cacheVerifyThreads?: number;
  /** Node's process metrics on `/metrics` (default true). */
  defaultMetrics?: boolean;
  /**
   * Send `log` one 'info' line per request (request id, method, URL without presigned secrets,
   * status, outcome). Default: true with a `log` of your own, false with the default sink.
   */
  requestLog?: boolean;
  /** Log sink (default: JSON lines on stderr for warn and error). */
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** Connections to the origin at most, unless {@link GatewayOptions.originConnections} says otherwise. */
export const DEFAULT_ORIGIN_CONNECTIONS = 64;

/** A running gateway. */
export interface Gateway {
  readonly server: http.Server;
  readonly cache: RangeCache | undefined;
  readonly guard: OriginGuard;
  readonly metrics: GatewayMetrics;
  /** The settings that apply to each object: `rules.forObject(bucket, key)` (see {@link GatewayOptions.rules}). */
  readonly rules: CacheRules;
  /** Starts listening; resolves with the bound address. */
  listen(port: number, host?: string): Promise<AddressInfo>;
  /** Base URL once listening. */
  url(): string;
  /** Requests being served. */
  inFlight(): number;
  /** Slice fills running now (one per slice however many readers wait for it). */
  fillsInFlight(): number;
  /** Buckets whose CORS rules are remembered now: only buckets the origin confirmed, at most the guard's `maxBuckets`. */
  corsBuckets(): number;
  /**
   * Calls `listener` with each origin breaker: at once for the service breaker (bucket `''`) and
   * the buckets that have one, then as each bucket gets its own (once the origin has shown it
   * exists); `removed` when a bucket's is forgotten (beyond the guard's `maxBuckets`). Returns a remover.
   */
  onBreaker(
    listener: (bucket: string, breaker: CircuitBreakerPolicy) => void,
    removed?: (bucket: string, breaker: CircuitBreakerPolicy) => void,
  ): () => void;
  /** Resolves once no slice fill and no cache write is in flight (or after `timeoutMs`, default 10 s). */
  idle(timeoutMs?: number): Promise<void>;
  /** Stops accepting, waits for in-flight requests (up to `graceMs`, default 30 s), closes. */
  close(graceMs?: number): Promise<void>;
}

// A random prefix per process and a counter: unique like 8 random bytes, without asking the
// system for randomness on every request (a measurable share of a small cache hit).
const requestIdPrefix = randomBytes(4).toString('hex').toUpperCase();
let requestCount = 0;

function requestId(): string {
  requestCount = (requestCount + 1) % 0x1_0000_0000;
  return `${requestIdPrefix}${requestCount.toString(16).toUpperCase().padStart(8, '0')}`;
}

/**
 * Answers a request refused before its body is wanted (a bad signature, a malformed path). One
 * that sends a body gets the answer at once and its connection closed once the rest is dropped,
 * within refuseBody's bounds: an unauthenticated client cannot make the gateway read without end.
 * One without a body keeps its connection.
 */
function refuse(
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  spec: S3ErrorSpec,
  id: string,
  clock: Clock,
): void {
  if (announcesBody(req)) return refuseBody(req, res, method, spec, id, clock);
  req.resume();
  sendS3Error(res, method, spec, id);
}

const defaultLog: NonNullable<GatewayOptions['log']> = (level, msg, fields) => {
  if (level === 'info') return;
  process.stderr.write(`${JSON.stringify({ level, time: new Date().toISOString(), msg, ...fields })}\n`);
};

/**
 * Creates the S3 caching gateway: opens the cache (an unusable cache directory means bypass mode,
 * not a failure) and returns a server to listen with.
 */
export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const clock = options.clock ?? systemClock;
  const log = options.log ?? defaultLog;
  const originConnections = options.originConnections ?? DEFAULT_ORIGIN_CONNECTIONS;
  const readAheadSlices = options.readAheadSlices ?? 4;
  if (!Number.isInteger(readAheadSlices) || readAheadSlices < 1)
    throw keelError('INVALID_CONFIG', `readAheadSlices must be a whole number ≥ 1, got ${readAheadSlices}`);
  const requestLog = options.requestLog ?? options.log !== undefined;
  const origin = new OriginClient({
    url: options.upstream,
    credentials: options.originCredentials,
    ...(options.region ? { region: options.region } : {}),
    connections: originConnections,
    ...(options.firstByteTimeoutMs ? { firstByteTimeoutMs: options.firstByteTimeoutMs } : {}),
    ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
  });
  const deadlineMs = options.deadlineMs ?? 10_000;
  const guard = new OriginGuard({
    deadlineMs,
    ...options.guard,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  let cache: RangeCache | undefined;
  if (options.cacheDir !== undefined) {
    try {
      cache = await RangeCache.open({
        dir: options.cacheDir,
        // One evictor at a time among the processes the coordinator joins (lock files besides).
        ...(options.coordinator
          ? { locks: coordinatedLocks(new FileLocks(options.cacheDir), options.coordinator) }
          : {}),
        ...(options.cacheMaxBytes ? { maxBytes: options.cacheMaxBytes } : {}),
        ...(options.sliceBytes ? { sliceBytes: options.sliceBytes } : {}),
        ...(options.clock ? { clock: options.clock } : {}),
        ...(options.cacheFs ? { fs: options.cacheFs } : {}),
        ...(options.cacheBypassProbeMs !== undefined ? { bypassProbeMs: options.cacheBypassProbeMs } : {}),
        ...(options.cacheVerifyThreads !== undefined ? { verifyThreads: options.cacheVerifyThreads } : {}),
      });
      cache.on('repair', (e) => log('warn', `cache repair: ${e.message}`, { counter: e.counter }));
      cache.on('bypass', (e) =>
        log(e.active ? 'error' : 'info', `cache bypass ${e.active ? 'on' : 'off'}: ${e.reason}`),
      );
      cache.on('fault', (e) => log('warn', `cache fault: ${e.message}`));
    } catch (err) {
      log(
        'error',
        `cache directory ${options.cacheDir} is unusable; serving every read from the origin (bypass)`,
        {
          error: classify(err).message,
        },
      );
    }
  }
  const memoryCacheBytes = options.memoryCacheBytes ?? 256 * 1024 ** 2;
  if (!Number.isSafeInteger(memoryCacheBytes) || memoryCacheBytes < 0)
    throw keelError('INVALID_CONFIG', `memoryCacheBytes must be a whole number ≥ 0, got ${memoryCacheBytes}`);
  const memory = cache && memoryCacheBytes > 0 ? new MemoryTier({ maxBytes: memoryCacheBytes }) : undefined;
  const metrics = new GatewayMetrics(cache, guard, {
    ...(memory ? { memory } : {}),
    ...(options.defaultMetrics !== undefined ? { defaultMetrics: options.defaultMetrics } : {}),
  });
  // Metrics see each breaker once it exists (after the origin showed its bucket exists), and let
  // go of it when the guard forgets it.
  guard.onBreaker(
    (bucket, breaker) => metrics.bindBreaker(bucket, breaker),
    (bucket) => metrics.unbindBreaker(bucket),
  );
  const keys = new Map((options.clientKeys ?? []).map((k) => [k.accessKeyId, k.secretAccessKey]));
  const authMode = options.auth ?? 'gateway';
  const forwardUnsigned = options.unsignedRequests === 'forward';
  const fills = new Map<string, SliceFill>();
  const coordinator = options.coordinator;
  // Breakers, their probes and the retry budget are the fleet's, not this process's alone.
  const stopSharing = coordinator && shareOriginGuard(guard, coordinator, { clock });
  const givenRules = options.rules;
  const rules = new CacheRules(
    typeof givenRules === 'function' ? givenRules : () => givenRules ?? CacheRuleList.EMPTY,
    {
      ttlMs: options.ttlMs ?? 60_000,
      writeThrough: options.writeThrough !== false && authMode !== 'passthrough',
    },
  );
  const ctx: ReadContext = {
    origin,
    guard,
    cache,
    clock,
    ttlMs: options.ttlMs ?? 60_000,
    rules,
    ...(options.revalidation === undefined ? {} : { revalidation: options.revalidation }),
    sliceBytes: cache?.sliceBytes ?? options.sliceBytes ?? 8 * 1024 * 1024,
    fills,
    fetching: { count: 0 },
    coord: coordinator,
    readAhead: { slices: readAheadSlices, maxFetches: originConnections },
    unwritten: { bytes: 0 },
    heads: new Map(),
    lookedUp: new Set(),
    generations: new Map(),
    metaWrites: new Map(),
    firstByteTimeoutMs: options.firstByteTimeoutMs ?? 5_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
    deadlineMs,
    buffered: { bytes: 0 },
    memory,
    onBytes: (source, n) => metrics.bytes.inc({ source }, n),
    log,
  };
  metrics.bindRevalidations(() => revalidationStats(ctx));
  const puts =
    cache && (options.writeThrough !== false || givenRules !== undefined) && authMode !== 'passthrough'
      ? await WriteThrough.open(ctx, cache)
      : undefined;
  const writeThrough = puts && {
    puts,
    multipart: new MultipartThrough(puts),
    allows: (id: { bucket: string; key: string }) => rules.forObject(id.bucket, id.key).writeThrough,
  };
  // Another worker's write changed an object: forget it here too before that worker answers.
  const stopInvalidations = coordinator?.onInvalidate(async (changed) => {
    invalidateReads(ctx, changed);
    await cache?.invalidate(changed).catch((err: unknown) => {
      log('warn', 'cache invalidate failed', { error: classify(err).message });
    });
  });
  const authCacheMs = options.auth === 'passthrough' ? (options.authCacheMs ?? 0) : 0;
  if (authCacheMs > 0)
    log(
      'warn',
      `passthrough auth trusts a read the origin authorised for ${authCacheMs / 1000} s: within that time anyone naming the same access key id (not a secret) gets the cached object without the origin being asked`,
      { authCacheSeconds: authCacheMs / 1000 },
    );
  const pass: PassthroughContext = {
    ctx,
    origin: new URL(options.upstream),
    baseDomain: options.baseDomain,
    clock,
    trust: authCacheMs > 0 ? new AuthTrust(authCacheMs, () => clock.now()) : undefined,
    onResult: (result, saved) => {
      metrics.authorizations.inc({ result });
      if (saved > 0) metrics.originBytesSaved.inc(saved);
    },
    onInvalidate: (changed) => {
      invalidateReads(ctx, changed);
      if (cache) metrics.invalidations.inc();
      return coordinator?.invalidate(changed);
    },
  };
  // Bucket CORS rules live as long as cached objects; a read waits for them no longer than for a revalidation.
  const { timeoutMs: waitMs, backoffMs, maxBackoffMs } = options.revalidation ?? {};
  const corsRules = new BucketCorsRules({
    fetch: (bucket) => fetchBucketCors(origin, guard, bucket),
    // Kept only for buckets the origin confirmed, within the same bound as their breakers.
    known: (bucket) => guard.ownBreakerOf(bucket) !== undefined,
    maxBuckets: options.guard?.maxBuckets ?? 1_000,
    clock,
    ttlMs: ctx.ttlMs,
    ...(waitMs === undefined ? {} : { waitMs }),
    ...(backoffMs === undefined ? {} : { backoffMs }),
    ...(maxBackoffMs === undefined ? {} : { maxBackoffMs }),
    log,
  });
  let active = 0;
  let draining = false;
  const sockets = new Set<Socket>();

  /** Whether a request carries a SigV4 signature (header or presigned URL), valid or not. */
  const isSigned = (req: IncomingMessage, target: S3Target): boolean =>
    req.headers.authorization !== undefined ||
    target.query.has('X-Amz-Signature') ||
    target.query.has('X-Amz-Credential');

  const settled = (): void => {
    active--;
  };

  /**
   * Serves one request. What can be answered at once (a hit from the memory tier, a refusal) is,
   * without a promise; the rest goes on asynchronously, its log lines and errors carrying the
   * request's id. Either way the request is counted and logged once, when its answer is decided.
   */
  const handle = (req: IncomingMessage, res: ServerResponse, id: string): void => {
    const method = req.method ?? 'GET';
    const started = performance.now();
    let authorization: AuthorizationResult | undefined;
    active++;
    // In flight until the response is flushed (or aborted), not merely handed to the socket.
    res.on('close', settled);
    if (draining) res.setHeader('connection', 'close');
    const done = (outcome: RequestOutcome): void => {
      metrics.requests.inc({ method: method === 'GET' || method === 'HEAD' ? method : 'OTHER', outcome });
      metrics.duration.observe({ outcome }, (performance.now() - started) / 1000);
      // Presigned URLs carry their signature and credential in the query: never logged.
      if (requestLog)
        log('info', 'request', {
          requestId: id,
          method,
          url: loggableUrl(req.url ?? '/'),
          status: res.statusCode,
          outcome,
          ...(authorization === undefined ? {} : { authorization }),
        });
    };
    const failed = (err: unknown): void => {
      const e = classify(err);
      log('error', `request failed: ${e.message}`, { requestId: id, code: e.code });
      // Every answer names its request: the same id in x-request-id, x-amz-request-id, x-amz-id-2,
      // an error document's RequestId and the logs.
      stampRequestId(res, id);
      if (!res.headersSent) res.setHeader('x-keel-cache', 'ERROR');
      sendS3Error(res, method, S3Errors.internal(), id);
      done('ERROR');
    };
    let answer: RequestOutcome | Promise<RequestOutcome>;
    try {
      answer = route(req, res, id, method, (a) => (authorization = a));
    } catch (err) {
      failed(err);
      return;
    }
    if (typeof answer === 'string') done(answer);
    else answer.then(done, failed);
  };

  /**
   * Where a request goes: refused, answered from the cache, or relayed to the origin. Its answer
   * is stamped with the request id: here, or, for an object read, by the read (a hit from memory
   * sends it with the rest of its headers, in one go).
   */
  const route = (
    req: IncomingMessage,
    res: ServerResponse,
    id: string,
    method: string,
    authorized: (a: AuthorizationResult | undefined) => void,
  ): RequestOutcome | Promise<RequestOutcome> => {
    const label = (o: RequestOutcome): void => {
      res.setHeader('x-keel-cache', o);
    };
    if (authMode === 'passthrough') {
      stampRequestId(res, id);
      // The origin judges every request; the gateway holds no key to check one with.
      return servePassthrough(pass, req, res, id).then(({ outcome, authorization }) => {
        authorized(authorization);
        return outcome;
      });
    }
    const rawUrl = req.url ?? '/';
    const target = parseS3Target(rawUrl, req.headers.host, options.baseDomain);
    if ('malformed' in target) {
      stampRequestId(res, id);
      label('ERROR');
      refuse(req, res, method, malformedTargetError(target), id, clock);
      return 'ERROR';
    }
    let verified: VerifiedRequest | undefined;
    // A CORS preflight is never signed (browsers cannot): S3 answers it from the bucket's CORS
    // rules. With unsignedRequests 'forward', an unsigned request is an anonymous one, as for
    // S3: the origin judges it without the gateway's signature, and the cache never answers it.
    const anonymous =
      authMode === 'anonymous' || method === 'OPTIONS' || (forwardUnsigned && !isSigned(req, target));
    if (authMode === 'gateway' && !anonymous) {
      const auth = verifySigV4(method, rawUrl, req.headers, keys, Date.now());
      if (!auth.ok) {
        stampRequestId(res, id);
        label('DENIED');
        refuse(
          req,
          res,
          method,
          { ...auth.error, ...(target.key ? { resource: `/${target.bucket ?? ''}/${target.key}` } : {}) },
          id,
          clock,
        );
        return 'DENIED';
      }
      verified = auth;
    }
    const unsigned = authMode === 'gateway' && anonymous;
    let plainQuery = true;
    let responseOverrides = false;
    for (const k of target.query.keys()) {
      if (k.startsWith('response-')) responseOverrides = true;
      else if (k !== 'versionId' && !k.startsWith('X-Amz-') && k !== 'x-id') plainQuery = false;
    }
    const isObjectRead =
      !unsigned &&
      (method === 'GET' || method === 'HEAD') &&
      target.bucket !== undefined &&
      target.key !== undefined &&
      plainQuery;
    if (isObjectRead && !responseOverrides) {
      const versionId = target.query.get('versionId');
      const query = versionId === null ? '' : `versionId=${encodeURIComponent(versionId)}`;
      const identity = { bucket: target.bucket as string, key: target.key as string, versionId };
      if (req.headers.origin) {
        stampRequestId(res, id);
        return addCorsHeaders(corsRules, req, res, identity.bucket).then(() =>
          serveObject(ctx, req, res, identity, query, id),
        );
      }
      return serveObject(ctx, req, res, identity, query, id);
    }
    stampRequestId(res, id);
    return passthrough(origin, guard, req, res, target, id, {
      cache,
      verified,
      clock,
      log,
      // Unsigned requests (a preflight, an anonymous client) reach the origin unsigned, body-less
      // for a preflight, and do not show the origin which buckets exist on their behalf.
      ...(method === 'OPTIONS' || unsigned ? { unsigned: true } : {}),
      onInvalidate: (changed) => {
        invalidateReads(ctx, changed);
        if (cache) metrics.invalidations.inc();
        // The answer goes out once every other worker dropped the object too.
        return coordinator?.invalidate(changed);
      },
      onCorsChange: (bucket) => corsRules.invalidate(bucket),
      writeThrough,
      onWriteThrough: (changed, result) => {
        metrics.writeThrough.inc({ result: result.cached ? 'cached' : 'not_cached' });
        if (!result.cached)
          log('info', `${changed.bucket}/${changed.key} not written through to the cache: ${result.reason}`, {
            requestId: id,
          });
      },
    });
  };

  const server = http.createServer((req, res) => {
    const id = requestId();
    // Everything the request causes (log lines, errors, alerts) carries its id.
    withCorrelation(id, () => handle(req, res, id));
  });
  server.keepAliveTimeout = 5_000;
  // HTTPS through the gateway as a proxy: tunnels to the origin's host only, nothing cached.
  if (authMode === 'passthrough')
    server.on(
      'connect',
      connectHandler({
        origin: new URL(options.upstream),
        maxTunnels: options.originConnections ?? 64,
        idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
        onTunnel: (result) => metrics.tunnels.inc({ result }),
        log,
      }),
    );
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  return {
    server,
    cache,
    guard,
    metrics,
    rules,
    listen: (port, host = '127.0.0.1') =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve(server.address() as AddressInfo);
        });
      }),
    url: () => {
      const a = server.address() as AddressInfo;
      return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    },
    inFlight: () => active,
    fillsInFlight: () => fills.size,
    corsBuckets: () => corsRules.size,
    onBreaker: (listener, removed) => guard.onBreaker(listener, removed),
    idle: async (timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      while ((fills.size > 0 || ctx.metaWrites.size > 0) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 5));
    },
    close: async (graceMs = 30_000) => {
      draining = true;
      stopInvalidations?.();
      stopSharing?.();
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      // Connections whose response is done close by keep-alive timeout, not by force: closing them
      // while a slow client still has unread bytes makes some clients (undici) drop the response.
      const settle = Math.max(0, Math.min(server.keepAliveTimeout + 1_000, deadline - Date.now()));
      await Promise.race([closed, new Promise((r) => setTimeout(r, settle))]);
      for (const s of sockets) s.destroy();
      await closed;
      // Let slices already fetched reach the cache.
      while ((fills.size > 0 || ctx.metaWrites.size > 0) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 5));
      await origin.close();
      await cache?.close();
    },
  };
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { classify, type CircuitBreakerPolicy } from 'keel';
import { REPAIR_COUNTERS, type VerifyReport } from 'keel/cache';
import {
  quantileBetween,
  RateMeter,
  type AdminCaller,
  type AlertManager,
  type DashboardPanel,
  type DashboardRow,
  type DashboardView,
  type DiskMonitor,
  type HistogramReading,
} from '@keel/ops';
import type { Gateway } from '../gateway.js';
import { breakerLabel } from './metrics.js';

/** Outcomes drawn on the requests chart, in the order of the legend. */
const OUTCOMES = ['HIT', 'MISS', 'PARTIAL', 'STALE', 'BYPASS', 'PASS', 'ERROR', 'DENIED'] as const;

/** Ticks over which the hit ratio and origin latency are computed (10 s at the default 1 s tick). */
const WINDOW_TICKS = 10;

/** Most breakers listed (not closed first); the rest are counted in a note. */
const MAX_BREAKER_ROWS = 50;

/** Most alerts of the history shown. */
const ALERT_HISTORY = 20;

/** Options of {@link gatewayView}. */
export interface GatewayViewOptions {
  disk?: DiskMonitor | undefined;
  alerts?: AlertManager | undefined;
  /** The disk monitor's levels, drawn as watermarks (default 0.8 and 0.9). */
  diskWarningRatio?: number;
  diskCriticalRatio?: number;
  /** A verify running now (the admin route's), for its progress. */
  verify?: VerifyProgress;
}

/** The progress of the cache verify started by `POST /cache/verify`, shared with the view. */
export interface VerifyProgress {
  running: boolean;
  done: number;
  total: number;
  startedAt: number | null;
  by: string | null;
  last: VerifyReport | null;
}

/** A verify progress with nothing run yet. */
export function idleVerify(): VerifyProgress {
  return { running: false, done: 0, total: 0, startedAt: null, by: null, last: null };
}

interface Tick {
  atMs: number;
  outcomes: Record<string, number>;
  firstByte: HistogramReading;
}

function sumBy(
  values: readonly { labels: Record<string, string | number>; value: number }[],
  label: string,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) {
    const k = String(v.labels[label] ?? '');
    out[k] = (out[k] ?? 0) + v.value;
  }
  return out;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res
    .writeHead(status, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(text),
    })
    .end(text);
}

/**
 * The gateway's dashboard view: requests/s by outcome, hit ratio, bytes by source and the egress
 * saved, origin time to first byte p50/p99, requests and slice fills in flight, breakers by bucket with their state and time in state
 * (each with a reset), the retry budget, the six repair counters with their rate, cache size and
 * disk use with the watermarks, bypass, alerts firing and their recent history; actions: cleanup,
 * verify (with its progress), breaker reset. Its route `POST /breakers/reset?bucket=` resets a
 * bucket's origin breaker (`_service` for the service breaker).
 */
export function gatewayView(gateway: Gateway, options: GatewayViewOptions = {}): DashboardView {
  const rates = new RateMeter();
  const ticks: Tick[] = [];
  const breakers = new Map<string, { breaker: CircuitBreakerPolicy; sinceMs: number }>();
  gateway.onBreaker(
    (bucket, breaker) => {
      const entry = { breaker, sinceMs: Date.now() };
      breakers.set(bucket, entry);
      breaker.on('stateChange', () => {
        entry.sinceMs = Date.now();
      });
    },
    (bucket) => breakers.delete(bucket),
  );
  const warning = options.diskWarningRatio ?? 0.8;
  const critical = options.diskCriticalRatio ?? 0.9;

  const resetBreaker = (req: IncomingMessage, res: ServerResponse, caller: AdminCaller): void => {
    req.resume();
    const bucket = new URL(req.url ?? '/', 'http://admin').searchParams.get('bucket') ?? '';
    const key = bucket === '_service' ? '' : bucket;
    const entry = breakers.get(key);
    if (bucket === '' || !entry) {
      json(res, 404, {
        error: `no origin breaker for bucket "${bucket.slice(0, 100)}": give ?bucket=<name> of one listed in /status (gateway.breakers), or _service`,
      });
      return;
    }
    const from = entry.breaker.state;
    if (from === 'isolated') {
      json(res, 409, {
        error: `the breaker of ${breakerLabel(key)} is isolated by hand; release the isolation instead`,
      });
      return;
    }
    entry.breaker.reset();
    json(res, 200, { bucket: breakerLabel(key), from, to: entry.breaker.state, by: caller.name });
  };

  const snapshot = async (): Promise<DashboardPanel[]> => {
    const now = Date.now();
    const m = gateway.metrics;
    const outcomes = sumBy((await m.requests.get()).values, 'outcome');
    const bytes = sumBy((await m.bytes.get()).values, 'source');
    const fb = (await m.originFirstByte.get()).values.filter((v) => v.metricName?.endsWith('_bucket'));
    const firstByte: HistogramReading = {
      le: fb.map((v) => (v.labels.le === '+Inf' ? Infinity : Number(v.labels.le))),
      counts: fb.map((v) => v.value),
    };
    ticks.push({ atMs: now, outcomes, firstByte });
    if (ticks.length > WINDOW_TICKS + 1) ticks.shift();
    const first = ticks.length > 1 ? ticks[0] : undefined;

    const perSecond: Record<string, number | null> = {};
    for (const o of OUTCOMES) perSecond[o] = rates.rate(`req:${o}`, outcomes[o] ?? 0, now);
    const total = Object.values(outcomes).reduce((a, b) => a + b, 0);
    const totalRate = rates.rate('req:all', total, now);
    const hitsIn = (o: Record<string, number>): number => o.HIT ?? 0;
    const readsIn = (o: Record<string, number>): number =>
      (o.HIT ?? 0) + (o.MISS ?? 0) + (o.PARTIAL ?? 0) + (o.STALE ?? 0);
    const windowReads = first ? readsIn(outcomes) - readsIn(first.outcomes) : 0;
    const windowHits = first ? hitsIn(outcomes) - hitsIn(first.outcomes) : 0;
    const allReads = readsIn(outcomes);
    const fromCache = bytes.cache ?? 0;
    const fromOrigin = bytes.origin ?? 0;
    const windowSeconds = first ? Math.round((now - first.atMs) / 1000) : 0;
    const p50 = first ? quantileBetween(first.firstByte, firstByte, 0.5) : null;
    const p99 = first ? quantileBetween(first.firstByte, firstByte, 0.99) : null;

    const panels: DashboardPanel[] = [
      {
        kind: 'stats',
        title: 'Traffic',
        items: [
          {
            label: 'Requests',
            value: totalRate,
            unit: 'perSecond',
            hint: `${total.toLocaleString('en')} since start`,
          },
          {
            label: 'Hit ratio',
            value: windowReads > 0 ? windowHits / windowReads : null,
            unit: 'ratio',
            hint: `last ${windowSeconds} s (reads)`,
          },
          {
            label: 'Hit ratio since start',
            value: allReads > 0 ? hitsIn(outcomes) / allReads : null,
            unit: 'ratio',
            hint: `${allReads.toLocaleString('en')} reads`,
          },
          { label: 'Bytes from cache', value: fromCache, unit: 'bytes', hint: 'egress saved' },
          { label: 'Bytes from origin', value: fromOrigin, unit: 'bytes' },
          {
            label: 'Served from cache',
            value: fromCache + fromOrigin > 0 ? fromCache / (fromCache + fromOrigin) : null,
            unit: 'ratio',
            hint: 'of bytes sent',
          },
          {
            label: 'Origin first byte p50',
            value: p50 === null ? null : p50 * 1000,
            unit: 'ms',
            hint: `last ${windowSeconds} s`,
          },
          {
            label: 'Origin first byte p99',
            value: p99 === null ? null : p99 * 1000,
            unit: 'ms',
            hint: `last ${windowSeconds} s`,
          },
          { label: 'Requests in flight', value: gateway.inFlight(), unit: 'count' },
          {
            label: 'Fills in flight',
            value: gateway.fillsInFlight(),
            unit: 'count',
            hint: 'slices being fetched',
          },
        ],
      },
      { kind: 'chart', id: 'requests', title: 'Requests/s by outcome', unit: 'perSecond', series: perSecond },
      {
        kind: 'chart',
        id: 'bytes',
        title: 'Bytes/s by source',
        unit: 'bytesPerSecond',
        series: {
          cache: rates.rate('bytes:cache', fromCache, now),
          origin: rates.rate('bytes:origin', fromOrigin, now),
        },
      },
      {
        kind: 'chart',
        id: 'origin-latency',
        title: 'Origin first byte (last 10 ticks)',
        unit: 'ms',
        series: { p50: p50 === null ? null : p50 * 1000, p99: p99 === null ? null : p99 * 1000 },
      },
      breakerPanel(breakers),
      retryPanel(gateway),
      ...cachePanels(gateway, rates, now, options, warning, critical),
      ...alertPanels(options.alerts),
    ];
    return panels;
  };

  return {
    id: 'gateway',
    title: 'Gateway',
    snapshot,
    routes: [{ method: 'POST', path: '/breakers/reset', handler: resetBreaker }],
  };
}

function breakerPanel(
  breakers: Map<string, { breaker: CircuitBreakerPolicy; sinceMs: number }>,
): DashboardPanel {
  const order = { open: 0, isolated: 1, halfOpen: 2, closed: 3 } as const;
  const all = [...breakers.entries()]
    // The service breaker is listed once it has been used, as in /status.
    .filter(([bucket, e]) => bucket !== '' || e.breaker.stats().calls > 0)
    .sort((a, b) => order[a[1].breaker.state] - order[b[1].breaker.state] || a[0].localeCompare(b[0]));
  const rows: DashboardRow[] = all.slice(0, MAX_BREAKER_ROWS).map(([bucket, e]) => {
    const state = e.breaker.state;
    const label = breakerLabel(bucket);
    const stats = e.breaker.stats();
    return {
      key: label,
      cells: [
        label,
        {
          value: state === 'halfOpen' ? 'half-open' : state,
          level: state === 'closed' ? 'ok' : state === 'halfOpen' ? 'warn' : 'bad',
        },
        { value: e.sinceMs, unit: 'timestamp' },
        { value: stats.trips, unit: 'count' },
      ],
      actions:
        state === 'closed' || state === 'isolated'
          ? []
          : [
              {
                label: 'Reset',
                name: `Reset the breaker of ${label}`,
                method: 'POST',
                path: `/breakers/reset?bucket=${encodeURIComponent(label)}`,
                confirm: `Close the origin breaker of ${label} now? Requests go to the origin again at once.`,
              },
            ],
    };
  });
  return {
    kind: 'table',
    title: 'Origin breakers by bucket',
    columns: ['Bucket', 'State', 'In this state since', 'Trips'],
    rows,
    empty: 'No origin breaker yet (none has been used).',
    ...(all.length > MAX_BREAKER_ROWS
      ? { note: `${MAX_BREAKER_ROWS} of ${all.length} shown, those not closed first` }
      : {}),
  };
}

function retryPanel(gateway: Gateway): DashboardPanel {
  const b = gateway.guard.budget.stats();
  return {
    kind: 'stats',
    title: 'Retry budget',
    items: [
      {
        label: 'Tokens left',
        value: b.maxTokens > 0 ? b.tokens / b.maxTokens : null,
        unit: 'ratio',
        level: b.tokens < 1 ? 'bad' : b.tokens < b.maxTokens / 4 ? 'warn' : 'ok',
        hint: `${Math.floor(b.tokens)} of ${b.maxTokens}`,
      },
      { label: 'Retries allowed', value: b.retriesAllowed, unit: 'count' },
      {
        label: 'Retries refused',
        value: b.retriesRefused,
        unit: 'count',
        level: b.retriesRefused > 0 ? 'warn' : 'ok',
      },
      { label: 'Gave up (budget spent)', value: gateway.guard.budgetExhausted, unit: 'count' },
    ],
  };
}

function cachePanels(
  gateway: Gateway,
  rates: RateMeter,
  now: number,
  options: GatewayViewOptions,
  warning: number,
  critical: number,
): DashboardPanel[] {
  const cache = gateway.cache;
  if (!cache)
    return [
      {
        kind: 'stats',
        title: 'Cache',
        items: [
          {
            label: 'Cache',
            value: 'none configured: every read goes to the origin',
            unit: 'text',
            level: 'warn',
          },
        ],
      },
    ];
  const s = cache.stats();
  const disk = options.disk?.snapshot()[0];
  const verify = options.verify;
  const items: DashboardPanel & { kind: 'stats' } = {
    kind: 'stats',
    title: 'Cache and disk',
    items: [
      {
        label: 'Cache size',
        value: s.sizeBytes,
        unit: 'bytes',
        hint: `${s.maxBytes > 0 ? ((100 * s.sizeBytes) / s.maxBytes).toFixed(1) : '—'} % of ${(s.maxBytes / 2 ** 30).toFixed(1)} GiB`,
      },
      { label: 'Objects', value: s.objects, unit: 'count', hint: `${s.slices.toLocaleString('en')} slices` },
      {
        label: 'Disk used',
        value: disk ? disk.usedRatio : null,
        unit: 'ratio',
        level: !disk
          ? undefined
          : disk.level === 'critical'
            ? 'bad'
            : disk.level === 'warning'
              ? 'warn'
              : 'ok',
        hint: `warning at ${Math.round(warning * 100)} %, critical at ${Math.round(critical * 100)} %`,
      },
      {
        label: 'Bypass',
        value: s.bypass ? 'on' : 'off',
        unit: 'text',
        level: s.bypass ? 'bad' : 'ok',
        ...(s.bypass ? { hint: s.bypassReason ?? 'cache unusable' } : { hint: 'caching' }),
      },
      { label: 'Evictions', value: s.evictions, unit: 'count' },
      {
        label: 'I/O errors recently',
        value: s.recentIoErrors,
        unit: 'count',
        level: s.recentIoErrors > 0 ? 'warn' : 'ok',
      },
      verify?.running
        ? {
            label: 'Verify',
            value: verify.total > 0 ? verify.done / verify.total : 0,
            unit: 'ratio',
            level: 'warn',
            hint: `running: ${verify.done} of ${verify.total} objects (asked by ${verify.by ?? '?'})`,
          }
        : {
            label: 'Last verify',
            value: verify?.last ? verify.last.checksumFailures + verify.last.missingSlices : null,
            unit: 'count',
            hint: verify?.last
              ? `problems in ${verify.last.objectsScanned} objects, ${verify.last.slicesChecked} slices`
              : 'not run since start',
          },
    ],
    actions: [
      {
        label: 'Run cleanup',
        method: 'POST',
        path: '/cache/cleanup',
        confirm:
          'Run a cache cleanup now? It removes partial writes and orphaned files, and fixes references to missing slices.',
      },
      {
        label: 'Run verify',
        method: 'POST',
        path: '/cache/verify',
        confirm:
          'Verify every cached slice against its checksum now? It reads the whole cache; nothing is changed.',
      },
      {
        label: 'Verify and repair',
        method: 'POST',
        path: '/cache/verify?fix=1',
        confirm:
          'Verify every cached slice and drop the ones that fail? They are fetched from the origin again when read.',
        danger: true,
      },
    ],
  };
  const repairs: DashboardPanel = {
    kind: 'table',
    title: 'Cache repairs',
    columns: ['Repair', 'Total', 'Rate'],
    rows: REPAIR_COUNTERS.map((c) => {
      const value = s.repairs[c];
      const rate = rates.rate(`repair:${c}`, value, now);
      return {
        key: c,
        cells: [
          c.replace(/_total$/, '').replace(/_/g, ' '),
          { value, unit: 'count', level: value > 0 ? 'warn' : 'ok' },
          {
            value: rate === null ? null : rate * 60,
            unit: 'count',
            ...(rate ? { level: 'warn' as const } : {}),
          },
        ],
      };
    }),
    note: 'Rate: per minute, from the last tick.',
  };
  return [items, repairs];
}

function alertPanels(alerts: AlertManager | undefined): DashboardPanel[] {
  if (!alerts) return [];
  const firing = alerts.firing();
  const sev = (s: string): 'warn' | 'bad' | undefined =>
    s === 'critical' || s === 'error' ? 'bad' : s === 'warning' ? 'warn' : undefined;
  return [
    {
      kind: 'table',
      title: 'Alerts firing',
      columns: ['Alert', 'Severity', 'Since', 'Count', 'Summary'],
      rows: firing.slice(0, 50).map((a) => ({
        key: a.fingerprint,
        cells: [
          a.name,
          { value: a.severity, ...(sev(a.severity) ? { level: sev(a.severity) } : {}) },
          { value: Date.parse(a.startsAt), unit: 'timestamp' },
          { value: a.count, unit: 'count' },
          a.summary,
        ],
      })),
      empty: 'No alert is firing.',
    },
    {
      kind: 'log',
      title: 'Alert history',
      entries: alerts
        .history()
        .slice(-ALERT_HISTORY)
        .map((a) => ({
          at: Date.parse(a.status === 'resolved' ? (a.endsAt ?? a.startsAt) : a.startsAt),
          level:
            a.status === 'resolved'
              ? 'info'
              : a.severity === 'critical' || a.severity === 'error'
                ? 'error'
                : 'warn',
          text: `${a.status === 'resolved' ? 'resolved' : a.severity}: ${a.name}: ${a.summary}`,
        })),
      empty: 'No alert since start.',
    },
  ];
}

/** Runs a cache verify for the admin route, keeping its progress for the view. */
export async function verifyWithProgress(
  gateway: Gateway,
  progress: VerifyProgress,
  fix: boolean,
  by: string,
): Promise<VerifyReport> {
  const cache = gateway.cache;
  if (!cache) throw new Error('no cache configured');
  if (progress.running)
    throw Object.assign(new Error(`a verify is running already (asked by ${progress.by ?? '?'})`), {
      status: 409,
    });
  Object.assign(progress, { running: true, done: 0, total: 0, startedAt: Date.now(), by });
  try {
    const report = await cache.verify({
      fix,
      onProgress: (done, total) => {
        progress.done = done;
        progress.total = total;
      },
    });
    progress.last = report;
    return report;
  } catch (err) {
    throw classify(err);
  } finally {
    progress.running = false;
  }
}

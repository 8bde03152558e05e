import type { Logger } from 'pino';
import {
  AlertManager,
  jsonlFileAlertHandler,
  logAlertHandler,
  webhookAlertHandler,
  type AlertHandler,
} from '@keel/ops';
import type { Clock } from 'keel';
import { breakerLabel } from './metrics.js';
import type { Gateway } from '../gateway.js';

/** Where the gateway's alerts can go. */
export const ALERT_HANDLER_NAMES = ['log', 'file', 'webhook'] as const;

/** One of {@link ALERT_HANDLER_NAMES}. */
export type AlertHandlerName = (typeof ALERT_HANDLER_NAMES)[number];

/**
 * The recommended Prometheus alert rules for the gateway (`rules/alerts.rules.yml` in the
 * package; also `@keel/gateway/alerts.rules.yml`), and their promtool unit tests beside them.
 * `keel gateway rules` prints them.
 */
export const ALERT_RULES_FILE = new URL('../../rules/alerts.rules.yml', import.meta.url);
export const ALERT_RULE_TESTS_FILE = new URL('../../rules/alerts.rules.test.yml', import.meta.url);

/** Names of the alerts the gateway raises (the same names as in alerts.rules.yml). */
export const GATEWAY_ALERTS = {
  cacheBypass: 'KeelCacheBypass',
  diskFull: 'KeelCacheDiskFull',
  breakerOpen: 'KeelOriginBreakerOpen',
  retryBudget: 'KeelRetryBudgetExhausted',
} as const;

/** Options of {@link createGatewayAlerts}. */
export interface GatewayAlertOptions {
  handlers: readonly AlertHandlerName[];
  /** JSON-lines file of the `file` handler. */
  file?: string | undefined;
  /** URL the `webhook` handler POSTs `{ alerts }` to. */
  webhookUrl?: string | undefined;
  /** Logger of the `log` handler. */
  logger: Logger;
  clock?: Clock;
}

/**
 * An {@link AlertManager} with the chosen handlers: `log` (a log line per alert), `file` (JSON
 * lines, rotated at 10 MiB), `webhook` (queued and retried). Handler failures are logged.
 * @throws Error naming the setting when `file` or `webhook` lacks its path or URL.
 */
export function createGatewayAlerts(options: GatewayAlertOptions): AlertManager {
  const handlers: AlertHandler[] = [];
  for (const name of new Set(options.handlers)) {
    if (name === 'log') handlers.push(logAlertHandler(options.logger));
    else if (name === 'file') {
      if (!options.file) throw new Error('--alerts-file (KEEL_ALERTS_FILE): required by --alerts file');
      handlers.push(jsonlFileAlertHandler({ path: options.file }));
    } else {
      if (!options.webhookUrl)
        throw new Error('--alerts-webhook-url (KEEL_ALERTS_WEBHOOK_URL): required by --alerts webhook');
      handlers.push(
        webhookAlertHandler({
          url: options.webhookUrl,
          ...(options.clock ? { clock: options.clock } : {}),
        }),
      );
    }
  }
  return new AlertManager({
    handlers,
    ...(options.clock ? { clock: options.clock } : {}),
    onHandlerError: (handler, error) =>
      options.logger.warn({ handler, err: error }, `alert handler ${handler} failed`),
  });
}

/**
 * Raises and resolves the gateway's alerts from what its parts report:
 * - `KeelCacheBypass` (critical) while the cache is bypassed (also when it starts that way);
 * - `KeelCacheDiskFull` (error) on a disk-full write, resolved when the cache is usable again
 *   or the disk monitor reads a normal level;
 * - `KeelOriginBreakerOpen{bucket}` (critical) while a bucket's origin breaker is open;
 * - `KeelRetryBudgetExhausted` (warning) when a retry was refused for want of budget, resolved
 *   at the next retry the budget allows.
 * Returns a function that stops watching.
 */
export function watchGatewayAlerts(gateway: Gateway, alerts: AlertManager): () => void {
  const disposers: (() => void)[] = [];
  const cache = gateway.cache;
  if (cache) {
    const raiseBypass = (reason: string): void => {
      alerts.raise({
        name: GATEWAY_ALERTS.cacheBypass,
        severity: 'critical',
        summary: `the cache at ${cache.dir} is bypassed, every read is served from the origin: ${reason}`,
        labels: { component: 'cache' },
      });
    };
    if (cache.bypassed) raiseBypass(cache.stats().bypassReason ?? 'unusable');
    const onBypass = (e: { active: boolean; reason: string }): void => {
      if (e.active) raiseBypass(e.reason);
      else {
        alerts.resolve(GATEWAY_ALERTS.cacheBypass, { component: 'cache' });
        alerts.resolve(GATEWAY_ALERTS.diskFull, { component: 'cache' });
      }
    };
    const onRepair = (e: { counter: string; message: string }): void => {
      if (e.counter !== 'disk_full_events_total') return;
      alerts.raise({
        name: GATEWAY_ALERTS.diskFull,
        severity: 'error',
        summary: e.message,
        labels: { component: 'cache' },
      });
    };
    cache.on('bypass', onBypass);
    cache.on('repair', onRepair);
    disposers.push(() => {
      cache.off('bypass', onBypass);
      cache.off('repair', onRepair);
    });
  }
  // One listener per breaker the guard holds; a bucket it forgets takes its listener and its alert along.
  const watching = new Map<string, () => void>();
  disposers.push(
    gateway.onBreaker(
      (bucket, breaker) => {
        const labels = { bucket: breakerLabel(bucket) };
        watching.get(bucket)?.();
        watching.set(
          bucket,
          breaker.on('stateChange', (e) => {
            if (e.to === 'open' || e.to === 'isolated')
              alerts.raise({
                name: GATEWAY_ALERTS.breakerOpen,
                severity: 'critical',
                summary: `origin circuit breaker for ${labels.bucket} is ${e.to}: cached copies are served stale, misses get 503 with Retry-After`,
                labels,
              });
            else if (e.to === 'closed') alerts.resolve(GATEWAY_ALERTS.breakerOpen, labels);
          }),
        );
      },
      (bucket) => {
        watching.get(bucket)?.();
        watching.delete(bucket);
        alerts.resolve(GATEWAY_ALERTS.breakerOpen, { bucket: breakerLabel(bucket) });
      },
    ),
    () => {
      for (const unwatch of watching.values()) unwatch();
      watching.clear();
    },
  );
  const retry = gateway.guard.retry;
  disposers.push(
    retry.on('giveUp', (e) => {
      if (e.reason !== 'budget') return;
      alerts.raise({
        name: GATEWAY_ALERTS.retryBudget,
        severity: 'warning',
        summary:
          'origin retry budget spent: failed origin calls are no longer retried, to protect the origin',
        labels: { component: 'origin' },
      });
    }),
    retry.on('retry', () => {
      alerts.resolve(GATEWAY_ALERTS.retryBudget, { component: 'origin' });
    }),
  );
  return () => {
    for (const d of disposers) d();
  };
}

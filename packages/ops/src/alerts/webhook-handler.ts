import type { Clock } from 'keel';
import { retry, exponential, type RetryPolicy, keelError } from 'keel';
import type { Alert, AlertHandler } from './types.js';

/** Options of {@link webhookAlertHandler}. */
export interface WebhookOptions {
  url: string;
  name?: string;
  /** Extra request headers (e.g. an Authorization token for the receiver). */
  headers?: Record<string, string>;
  /** Batches waiting while the receiver is down; the oldest is dropped beyond this. Default 100. */
  maxQueue?: number;
  /** Per-request timeout. Default 5000 ms. */
  timeoutMs?: number;
  /** Retry policy for each batch. Default: 5 attempts, exponential backoff from 500 ms. */
  retryPolicy?: RetryPolicy;
  /** Turns the batch into the request body. Default `{ alerts }`. */
  body?: (alerts: readonly Alert[]) => unknown;
  clock?: Clock;
}

/** A webhook handler with its queue counters. */
export interface WebhookHandler extends AlertHandler {
  /** Batches waiting. */
  readonly queued: number;
  /** Batches dropped because the queue was full or retries ran out. */
  readonly dropped: number;
  /** Batches delivered. */
  readonly delivered: number;
}

/**
 * POSTs alerts as JSON through a keel retry policy. `send` only enqueues, so a receiver that is
 * down never blocks the caller; one worker drains the bounded queue in order.
 */
export function webhookAlertHandler(options: WebhookOptions): WebhookHandler {
  let parsed: URL;
  try {
    parsed = new URL(options.url);
  } catch {
    throw new Error(`alerts.webhook.url: not a URL: ${options.url}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new Error(`alerts.webhook.url: must be http or https, got ${parsed.protocol}`);
  const maxQueue = options.maxQueue ?? 100;
  if (!Number.isInteger(maxQueue) || maxQueue < 1)
    throw new Error('alerts.webhook.maxQueue: must be an integer >= 1');
  const timeoutMs = options.timeoutMs ?? 5000;
  const policy =
    options.retryPolicy ??
    retry({
      maxAttempts: 5,
      backoff: exponential({ initialMs: 500, maxMs: 30_000 }),
      ...(options.clock ? { clock: options.clock } : {}),
    });
  const queue: (readonly Alert[])[] = [];
  let worker: Promise<void> | undefined;
  const counts = { dropped: 0, delivered: 0 };

  async function post(alerts: readonly Alert[]): Promise<void> {
    await policy.execute(async () => {
      let res: Response;
      try {
        res = await fetch(options.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...options.headers },
          body: JSON.stringify(options.body ? options.body(alerts) : { alerts }),
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (err) {
        // fetch reports refused connections, resets and timeouts alike as one TypeError: all are
        // worth another try for a receiver that is restarting.
        throw keelError(
          'ALERT_WEBHOOK_UNREACHABLE',
          `alert webhook ${parsed.host} unreachable`,
          {},
          {
            cause: err,
            kind: 'transient',
            retryable: true,
          },
        );
      }
      await res.arrayBuffer();
      if (!res.ok)
        throw keelError(
          'HTTP_ERROR',
          `alert webhook answered ${String(res.status)}`,
          { status: res.status },
          {
            retryable: res.status >= 500 || res.status === 429 || res.status === 408,
            httpStatus: res.status,
          },
        );
    });
  }

  async function drain(): Promise<void> {
    for (let batch = queue.shift(); batch; batch = queue.shift()) {
      try {
        await post(batch);
        counts.delivered++;
      } catch {
        counts.dropped++;
      }
    }
    worker = undefined;
  }

  return {
    name: options.name ?? 'webhook',
    get queued() {
      return queue.length;
    },
    get dropped() {
      return counts.dropped;
    },
    get delivered() {
      return counts.delivered;
    },
    send(alerts) {
      if (queue.length >= maxQueue) {
        queue.shift();
        counts.dropped++;
      }
      queue.push(alerts);
      worker ??= drain();
    },
    async close() {
      await worker;
    },
  };
}

/**
 * A webhook in the shape of Alertmanager's `POST /api/v2/alerts` (a JSON array of
 * `{ labels, annotations, startsAt, endsAt }`), so alerts reach an existing Alertmanager.
 * `baseUrl` is the Alertmanager address, e.g. `http://127.0.0.1:9093`.
 */
export function alertmanagerHandler(
  baseUrl: string,
  options: Omit<WebhookOptions, 'url' | 'body'> = {},
): WebhookHandler {
  return webhookAlertHandler({
    ...options,
    name: options.name ?? 'alertmanager',
    url: new URL('/api/v2/alerts', baseUrl).toString(),
    body: (alerts) => alerts.map(toAlertmanager),
  });
}

/** One alert in Alertmanager's v2 API shape. */
export function toAlertmanager(alert: Alert): {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt?: string;
} {
  const out: {
    labels: Record<string, string>;
    annotations: Record<string, string>;
    startsAt: string;
    endsAt?: string;
  } = {
    labels: { ...alert.labels, alertname: alert.name, severity: alert.severity },
    annotations: { summary: alert.summary },
    startsAt: alert.startsAt,
  };
  if (alert.endsAt !== undefined) out.endsAt = alert.endsAt;
  return out;
}

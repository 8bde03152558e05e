import { createHash } from 'node:crypto';
import type { Clock, Severity, TimerHandle } from 'keel';
import { classify, correlationId, systemClock } from 'keel';
import type { Metrics } from '../metrics.js';
import { JsonStateFile } from '../state-store.js';
import { sanitiseAlert } from './sanitise.js';
import {
  ALERT_SEVERITIES,
  type Alert,
  type AlertHandler,
  type AlertInput,
  type AlertRoute,
  type AlertSeverity,
} from './types.js';

/** Options of {@link AlertManager}. */
export interface AlertManagerOptions {
  handlers: readonly AlertHandler[];
  /** Routing rules, first match wins unless `continue`. Default: every alert to every handler. */
  routes?: readonly AlertRoute[];
  /** A firing alert raised again within this window is counted, not re-sent. Default 300000 (5 min). */
  dedupWindowMs?: number;
  /** Collect alerts with equal `groupBy` labels this long and send them together. Default 0 (no wait). */
  groupWaitMs?: number;
  /** Label names (plus `name`) that form a group. Default `['name']`. */
  groupBy?: readonly string[];
  /** Notifications allowed per minute; the rest are recorded in history but not sent. Default 60. */
  maxPerMinute?: number;
  /** Alerts kept in history. Default 1000. */
  historySize?: number;
  /** File the history is stored in and reloaded from at {@link AlertManager.start}. Default: memory only. */
  historyFile?: string;
  clock?: Clock;
  /** Told about handler failures (default: ignored; the webhook handler retries on its own). */
  onHandlerError?: (handler: string, error: unknown) => void;
  /** Counts every raise in `keel_alerts_raised_total{name,severity}` (alert names must be a fixed set). */
  metrics?: Metrics;
}

const SEVERITY_OF_ERROR: Readonly<Record<Severity, AlertSeverity>> = {
  low: 'info',
  medium: 'warning',
  high: 'error',
  critical: 'critical',
};

/** The alert severity of an error's severity: low → info, medium → warning, high → error, critical → critical. */
export function alertSeverityOf(severity: Severity): AlertSeverity {
  return SEVERITY_OF_ERROR[severity];
}

interface Persisted {
  version: 1;
  history: Alert[];
}

/** Fingerprint of an alert: a hash of its name and sorted labels. */
export function alertFingerprint(name: string, labels: Record<string, string> = {}): string {
  const sorted = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k] ?? ''}`)
    .join(',');
  return createHash('sha256').update(`${name}{${sorted}}`).digest('hex').slice(0, 16);
}

/**
 * Raises, deduplicates, groups, rate-limits, routes and records alerts. Every alert is sanitised
 * (secrets and e-mail addresses removed) before a handler or the history sees it. Delivery never
 * blocks {@link raise}: handlers are called asynchronously and their failures are contained.
 */
export class AlertManager {
  private readonly handlers = new Map<string, AlertHandler>();
  private readonly active = new Map<string, Alert>();
  private readonly lastSent = new Map<string, number>();
  private historyList: Alert[] = [];
  private readonly groups = new Map<string, { alerts: Alert[]; timer: TimerHandle }>();
  private readonly sentTimes: number[] = [];
  private readonly clock: Clock;
  private readonly store: JsonStateFile<Persisted> | undefined;
  private readonly inflight = new Set<Promise<void>>();
  /** Notifications dropped by the rate limit since start. */
  suppressed = 0;

  constructor(private readonly options: AlertManagerOptions) {
    this.clock = options.clock ?? systemClock;
    for (const h of options.handlers) {
      if (this.handlers.has(h.name)) throw new Error(`alerts.handlers: duplicate handler name "${h.name}"`);
      this.handlers.set(h.name, h);
    }
    for (const [i, route] of (options.routes ?? []).entries()) {
      for (const name of route.handlers)
        if (!this.handlers.has(name))
          throw new Error(`alerts.routes[${String(i)}].handlers: unknown handler "${name}"`);
      for (const s of route.severities ?? [])
        if (!ALERT_SEVERITIES.includes(s))
          throw new Error(`alerts.routes[${String(i)}].severities: unknown "${s}"`);
    }
    const positive = (key: keyof AlertManagerOptions, min: number): void => {
      const v = options[key];
      if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < min))
        throw new Error(`alerts.${key}: must be a number >= ${String(min)}, got ${JSON.stringify(v)}`);
    };
    positive('dedupWindowMs', 0);
    positive('groupWaitMs', 0);
    positive('maxPerMinute', 1);
    positive('historySize', 1);
    this.store = options.historyFile ? new JsonStateFile<Persisted>(options.historyFile) : undefined;
    this.raised = options.metrics?.counter(
      'keel_alerts_raised_total',
      'Alerts raised (duplicates within the dedup window included), by name and severity.',
      ['name', 'severity'],
    );
  }

  private readonly raised: { inc(labels: { name: string; severity: string }): void } | undefined;

  /** Checks the history file is writable and reloads the history (firing alerts become active again). */
  async start(): Promise<void> {
    if (!this.store) return;
    await this.store.assertWritable('alerts.historyFile');
    const saved = await this.store.load();
    if (saved?.version !== 1 || !Array.isArray(saved.history)) return;
    this.historyList = saved.history.slice(-this.historySize);
    for (const a of this.historyList) {
      if (a.status === 'firing') this.active.set(a.fingerprint, a);
      else this.active.delete(a.fingerprint);
    }
  }

  /**
   * Raises an alert. Returns the sanitised alert, or `undefined` when it was a duplicate of a
   * firing alert inside the dedup window (its count grows).
   */
  raise(input: AlertInput): Alert | undefined {
    const error = input.error === undefined ? undefined : classify(input.error);
    const severity = input.severity ?? alertSeverityOf(error?.severity ?? 'medium');
    this.raised?.inc({ name: input.name, severity });
    // The id of the work that caused it: the error's, else the one it was raised under.
    const cause = error?.correlationId ?? correlationId();
    const details: Record<string, unknown> = { ...input.details };
    if (cause !== undefined) details.correlationId = cause;
    if (error !== undefined)
      details.error = {
        code: error.code,
        message: error.message,
        severity: error.severity,
        hints: error.hints,
        ...(error.correlationId === undefined ? {} : { correlationId: error.correlationId }),
      };
    const labels = input.labels ?? {};
    const fingerprint = input.fingerprint ?? alertFingerprint(input.name, labels);
    const now = this.clock.now();
    const existing = this.active.get(fingerprint);
    const window = this.options.dedupWindowMs ?? 300_000;
    if (existing && now - (this.lastSent.get(fingerprint) ?? 0) < window) {
      // Alerts already handed to handlers or history are never mutated.
      this.active.set(fingerprint, { ...existing, count: existing.count + 1 });
      return undefined;
    }
    const alert = sanitiseAlert({
      name: input.name,
      severity,
      summary: input.summary,
      labels,
      details,
      fingerprint,
      status: 'firing',
      startsAt: existing?.startsAt ?? new Date(now).toISOString(),
      count: (existing?.count ?? 0) + 1,
    });
    this.active.set(fingerprint, alert);
    this.lastSent.set(fingerprint, now);
    this.record(alert);
    this.enqueue(alert);
    return alert;
  }

  /** Resolves a firing alert (by name + labels, or fingerprint) and sends a resolve notification. */
  resolve(nameOrFingerprint: string, labels?: Record<string, string>): Alert | undefined {
    const fingerprint = this.active.has(nameOrFingerprint)
      ? nameOrFingerprint
      : alertFingerprint(nameOrFingerprint, labels ?? {});
    const firing = this.active.get(fingerprint);
    if (!firing) return undefined;
    this.active.delete(fingerprint);
    this.lastSent.delete(fingerprint);
    const resolved: Alert = {
      ...firing,
      status: 'resolved',
      endsAt: new Date(this.clock.now()).toISOString(),
    };
    this.record(resolved);
    this.enqueue(resolved);
    return resolved;
  }

  /** Alerts currently firing. */
  firing(): Alert[] {
    return [...this.active.values()];
  }

  /** The bounded history, oldest first. */
  history(): Alert[] {
    return [...this.historyList];
  }

  /** Sends grouped alerts now and waits for deliveries and the history file. */
  async flush(): Promise<void> {
    for (const key of [...this.groups.keys()]) this.releaseGroup(key);
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
    await this.store?.flush();
  }

  /** Flushes, then closes every handler. */
  async close(): Promise<void> {
    await this.flush();
    for (const h of this.handlers.values()) await h.close?.();
  }

  private get historySize(): number {
    return this.options.historySize ?? 1000;
  }

  private record(alert: Alert): void {
    this.historyList.push(alert);
    if (this.historyList.length > this.historySize)
      this.historyList.splice(0, this.historyList.length - this.historySize);
    this.persist();
  }

  private persist(): void {
    if (!this.store) return;
    this.track(this.store.save({ version: 1, history: this.historyList }));
  }

  private enqueue(alert: Alert): void {
    const wait = this.options.groupWaitMs ?? 0;
    if (wait === 0) {
      this.deliver([alert]);
      return;
    }
    const key = [alert.name, ...(this.options.groupBy ?? []).map((l) => alert.labels[l] ?? '')].join(
      '\u0000',
    );
    const group = this.groups.get(key);
    if (group) {
      group.alerts.push(alert);
      return;
    }
    const timer = this.clock.setTimer(wait, () => {
      this.releaseGroup(key);
    });
    this.groups.set(key, { alerts: [alert], timer });
  }

  private releaseGroup(key: string): void {
    const group = this.groups.get(key);
    if (!group) return;
    this.groups.delete(key);
    group.timer.cancel();
    this.deliver(group.alerts);
  }

  private allowed(): boolean {
    const now = this.clock.now();
    while (this.sentTimes.length > 0 && now - (this.sentTimes[0] ?? 0) >= 60_000) this.sentTimes.shift();
    if (this.sentTimes.length >= (this.options.maxPerMinute ?? 60)) return false;
    this.sentTimes.push(now);
    return true;
  }

  private deliver(alerts: Alert[]): void {
    if (!this.allowed()) {
      this.suppressed += alerts.length;
      return;
    }
    const targets = new Map<string, Alert[]>();
    for (const alert of alerts)
      for (const name of this.route(alert))
        (targets.get(name) ?? targets.set(name, []).get(name))?.push(alert);
    for (const [name, list] of targets) {
      const handler = this.handlers.get(name);
      if (!handler) continue;
      this.track(
        Promise.resolve()
          .then(() => handler.send(list))
          .catch((err: unknown) => this.options.onHandlerError?.(name, err)),
      );
    }
  }

  private route(alert: Alert): string[] {
    const routes = this.options.routes;
    if (!routes || routes.length === 0) return [...this.handlers.keys()];
    const out = new Set<string>();
    for (const r of routes) {
      if (r.severities && !r.severities.includes(alert.severity)) continue;
      if (r.labels && !Object.entries(r.labels).every(([k, v]) => alert.labels[k] === v)) continue;
      for (const h of r.handlers) out.add(h);
      if (!r.continue) break;
    }
    return [...out];
  }

  private track(p: Promise<void>): void {
    const tracked = p.catch(() => undefined).finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }
}

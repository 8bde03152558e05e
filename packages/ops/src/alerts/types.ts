/** How bad an alert is. */
export type AlertSeverity = 'info' | 'warning' | 'error' | 'critical';

/** Severities from least to most severe. */
export const ALERT_SEVERITIES: readonly AlertSeverity[] = ['info', 'warning', 'error', 'critical'];

/** What a caller raises: a severity, or an error to take it from, or both. */
export type AlertInput = AlertInputBase &
  (
    | { severity: AlertSeverity; error?: unknown }
    | {
        severity?: AlertSeverity;
        /**
         * The failure behind the alert. Its severity becomes the alert's (low → info, medium →
         * warning, high → error, critical → critical) unless `severity` is given, and its code,
         * message, recovery hints and correlation id go into `details.error`.
         */
        error: unknown;
      }
  );

/** The fields every {@link AlertInput} has. */
export interface AlertInputBase {
  /** Short stable name, e.g. `DiskSpaceLow`, `RecoveryFailed`. */
  name: string;
  /** One human sentence: what happened, to what, what is being done. */
  summary: string;
  /** Few, bounded labels (component, path …); used for routing, grouping and the fingerprint. */
  labels?: Record<string, string>;
  /**
   * Extra data (redacted before it goes anywhere). The manager adds `correlationId`: the
   * error's, else the one the alert was raised under (`withCorrelation`), when there is one.
   */
  details?: Record<string, unknown>;
  /** Overrides the fingerprint (default: name + sorted labels). */
  fingerprint?: string;
}

/** An alert as handlers and the history see it (always sanitised). */
export interface Alert {
  name: string;
  severity: AlertSeverity;
  summary: string;
  labels: Record<string, string>;
  details: Record<string, unknown>;
  fingerprint: string;
  status: 'firing' | 'resolved';
  /** ISO-8601 time it started firing. */
  startsAt: string;
  /** ISO-8601 time it was resolved. */
  endsAt?: string;
  /** How many times it was raised while deduplicated. */
  count: number;
}

/** Where alerts go. `send` may reject; the manager records the failure and carries on. */
export interface AlertHandler {
  readonly name: string;
  send(alerts: readonly Alert[]): Promise<void> | void;
  /** Delivers what is queued and releases resources. */
  close?(): Promise<void>;
}

/** A routing rule: alerts that match go to the named handlers. */
export interface AlertRoute {
  /** Severities this route takes; default all. */
  severities?: readonly AlertSeverity[];
  /** Labels that must all be equal; default none. */
  labels?: Record<string, string>;
  /** Handler names. */
  handlers: readonly string[];
  /** Keep matching later routes after this one. Default false. */
  continue?: boolean;
}

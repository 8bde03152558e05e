import { redact, redactString, REDACTED } from 'keel';
import type { Alert } from './types.js';

const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g;

/** Removes secrets (see `redactString`) and e-mail addresses from text. */
export function sanitiseText(text: string): string {
  return redactString(text).replace(EMAIL, REDACTED);
}

function deep(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return sanitiseText(value);
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => deep(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = deep(v, depth + 1);
  return out;
}

/** An alert with every secret and e-mail address removed from its summary, labels and details. */
export function sanitiseAlert(alert: Alert): Alert {
  const details = deep(redact(alert.details), 0) as Record<string, unknown>;
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(redact(alert.labels))) labels[k] = sanitiseText(v);
  return { ...alert, name: sanitiseText(alert.name), summary: sanitiseText(alert.summary), labels, details };
}

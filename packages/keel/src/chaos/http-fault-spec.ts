import { keelError } from '../errors/index.js';
import type { HttpFaultAction, HttpFaultRule } from './http-faults.js';

function bad(spec: string, message: string): never {
  throw keelError('INVALID_INPUT', `HTTP fault ${JSON.stringify(spec)}: ${message}`, {}, { stack: false });
}

function number(spec: string, key: string, value: string, integer: boolean): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n)))
    bad(
      spec,
      `${key} must be a non-negative ${integer ? 'integer' : 'number'}, got ${JSON.stringify(value)}`,
    );
  return n;
}

/**
 * Parses a one-line HTTP fault rule, as `keel chaos http --fault` takes it: comma-separated
 * `key=value` pairs with exactly one action.
 *
 * - actions: `status=503` (with optional `retry-after=<s>`), `delay=<ms>`, `cut=<bytes>`, `corrupt=<bytes>`
 * - selection: `method=GET|HEAD`, `path=/bucket/` (a prefix) or `path=~^/bucket/.*\.bin$` (a RegExp),
 *   `probability=0.2`; `name=<name>`
 *
 * Example: `status=503,retry-after=2,method=GET,path=/bucket/,probability=0.2`.
 * @throws KeelError `INVALID_INPUT` naming the part of the spec that is wrong.
 */
export function parseHttpFaultSpec(spec: string): HttpFaultRule {
  const fields = new Map<string, string>();
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) bad(spec, `expected key=value, got ${JSON.stringify(part)}`);
    const key = part.slice(0, eq).trim().toLowerCase();
    if (fields.has(key)) bad(spec, `${key} given twice`);
    fields.set(key, part.slice(eq + 1).trim());
  }
  const actionKeys = ['status', 'delay', 'cut', 'corrupt'].filter((k) => fields.has(k));
  if (actionKeys.length !== 1)
    bad(spec, 'needs exactly one action: status=<code>, delay=<ms>, cut=<bytes> or corrupt=<bytes>');
  const known = new Set([
    'status',
    'retry-after',
    'delay',
    'cut',
    'corrupt',
    'method',
    'path',
    'probability',
    'name',
  ]);
  for (const key of fields.keys()) if (!known.has(key)) bad(spec, `unknown key ${JSON.stringify(key)}`);

  const get = (key: string): string | undefined => fields.get(key);
  let action: HttpFaultAction;
  const status = get('status');
  const delay = get('delay');
  const cut = get('cut');
  const corrupt = get('corrupt');
  if (status !== undefined) {
    const retryAfter = get('retry-after');
    action = {
      type: 'status',
      status: number(spec, 'status', status, true),
      ...(retryAfter === undefined
        ? {}
        : { retryAfterSeconds: number(spec, 'retry-after', retryAfter, true) }),
    };
  } else if (delay !== undefined) action = { type: 'delay', ms: number(spec, 'delay', delay, false) };
  else if (cut !== undefined) action = { type: 'cut', afterBytes: number(spec, 'cut', cut, true) };
  else action = { type: 'corrupt', bytes: number(spec, 'corrupt', corrupt ?? '', true) };
  if (get('retry-after') !== undefined && action.type !== 'status')
    bad(spec, 'retry-after goes with status=');

  const rule: HttpFaultRule = { action };
  const name = get('name');
  if (name !== undefined) rule.name = name;
  const method = get('method');
  if (method !== undefined) rule.method = method.split('|').map((m) => m.trim().toUpperCase());
  const path = get('path');
  if (path !== undefined) {
    if (path.startsWith('~')) {
      try {
        rule.path = new RegExp(path.slice(1));
      } catch {
        bad(spec, `path ${JSON.stringify(path)} is not a valid RegExp`);
      }
    } else rule.path = path;
  }
  const probability = get('probability');
  if (probability !== undefined) rule.probability = number(spec, 'probability', probability, false);
  return rule;
}

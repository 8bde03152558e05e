/** What replaces a secret. */
export const REDACTED = '[REDACTED]';

/** Object keys whose values are always secrets, whatever they look like. */
const SECRET_KEY =
  /^(?:authorization|proxy-authorization|x-amz-security-token|x-amz-signature|x-amz-credential|cookie|set-cookie|pass|pwd)$|password|passwd|passphrase|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|signature|credential|session[-_]?key/i;

// Each pattern keeps what makes the text readable (the name of the thing) and drops the value.
const STRING_PATTERNS: readonly [RegExp, string][] = [
  // SigV4 Authorization header values, with or without the header name.
  [/AWS4-HMAC-SHA256\s+[^\r\n"'}]*/g, `AWS4-HMAC-SHA256 ${REDACTED}`],
  // Legacy "AWS AKID:signature" header values.
  [/\bAWS\s+[A-Z0-9]{16,128}:[A-Za-z0-9/+=]+/g, `AWS ${REDACTED}`],
  // Authorization / Proxy-Authorization header lines and JSON-ish pairs.
  [/((?:proxy-)?authorization["']?\s*[:=]\s*["']?)[^"'\r\n,}]+/gi, `$1${REDACTED}`],
  // Bearer and Basic credentials anywhere.
  [/\b(Bearer|Basic)\s+[A-Za-z0-9\-._~+/]+=*/g, `$1 ${REDACTED}`],
  // Presigned URL parameters.
  [/((?:X-Amz-(?:Signature|Credential|Security-Token))=)[^&\s"'#]+/gi, `$1${REDACTED}`],
  // JSON Web Tokens.
  [/\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g, REDACTED],
  // AWS access key ids.
  [/\b(?:AKIA|ASIA|AIDA|AROA|ANPA|AGPA)[A-Z0-9]{16}\b/g, REDACTED],
  // key=value and "key": "value" for secret-looking keys.
  [
    /\b((?:aws_)?(?:secret(?:_access)?_?key|secretAccessKey|password|passwd|passphrase|pwd|secret|token|access_token|refresh_token|id_token|session_token|sessionToken|api[_-]?key|apikey|signature|sig|private[_-]?key|client_secret)["']?\s*[:=]\s*["']?)[^\s"'&,;}]+/gi,
    `$1${REDACTED}`,
  ],
  // Passwords in URLs: scheme://user:password@host
  [/(\b[a-z][a-z0-9+.-]*:\/\/[^:/?#\s@"']*:)[^@/?#\s"']+@/gi, `$1${REDACTED}@`],
];

/** Replaces secrets in free text: auth headers, signatures, tokens, keys, URL passwords. */
export function redactString(text: string): string {
  let out = text;
  for (const [pattern, replacement] of STRING_PATTERNS) {
    pattern.lastIndex = 0;
    out = out.replace(pattern, replacement);
  }
  return out;
}

/** True when a property named `key` holds a secret. */
export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

const MAX_DEPTH = 12;

/**
 * A copy of `value` with every secret replaced by `[REDACTED]`: values under secret-looking keys,
 * and secret-looking text in any string. Handles cycles (`[Circular]`), Errors (name, message,
 * code, cause), Maps, Sets, Headers-like objects and deep nesting (cut at depth 12). Never throws.
 */
export function redact<T>(value: T): T {
  return redactValue(value, new WeakSet(), 0) as T;
}

function redactValue(value: unknown, seen: WeakSet<object>, depth: number): unknown {
  if (typeof value === 'string') return redactString(value);
  if (value === null || typeof value !== 'object') {
    // JSON has no bigint, symbol or function: keep their text so a redacted value always serialises.
    if (typeof value === 'bigint') return value.toString();
    if (typeof value === 'symbol') return value.toString();
    if (typeof value === 'function') return `[function ${value.name || 'anonymous'}]`;
    return value;
  }
  if (seen.has(value)) return '[Circular]';
  if (depth >= MAX_DEPTH) return '[Truncated]';
  seen.add(value);
  try {
    if (value instanceof Error) return redactError(value, seen, depth);
    if (Array.isArray(value)) return value.map((v) => redactValue(v, seen, depth + 1));
    if (value instanceof Date) return value;
    if (ArrayBuffer.isView(value)) return `[${value.constructor.name} ${value.byteLength} bytes]`;
    if (value instanceof Map) {
      const out: Record<string, unknown> = {};
      for (const [k, v] of value as Map<unknown, unknown>) redactEntry(out, String(k), v, seen, depth);
      return out;
    }
    if (value instanceof Set) return [...(value as Set<unknown>)].map((v) => redactValue(v, seen, depth + 1));
    if (isHeadersLike(value)) {
      const out: Record<string, unknown> = {};
      value.forEach((v, k) => {
        redactEntry(out, k, v, seen, depth);
      });
      return out;
    }
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      let v: unknown;
      try {
        v = (value as Record<string, unknown>)[key];
      } catch {
        v = '[Unreadable]';
      }
      redactEntry(out, key, v, seen, depth);
    }
    return out;
  } catch {
    return '[Unserializable]';
  } finally {
    seen.delete(value);
  }
}

function redactEntry(
  out: Record<string, unknown>,
  key: string,
  v: unknown,
  seen: WeakSet<object>,
  depth: number,
): void {
  // Numbers and booleans under a secret-looking key (a count of budget "tokens") are not secrets.
  const secret =
    isSecretKey(key) && v !== undefined && v !== null && typeof v !== 'number' && typeof v !== 'boolean';
  out[redactString(key)] = secret ? REDACTED : redactValue(v, seen, depth + 1);
}

function redactError(err: Error, seen: WeakSet<object>, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = {
    name: err.name,
    message: redactString(typeof err.message === 'string' ? err.message : ''),
  };
  const extra = err as Error & { code?: unknown; cause?: unknown };
  if (extra.code !== undefined) out.code = redactValue(extra.code, seen, depth + 1);
  if (extra.cause !== undefined) out.cause = redactValue(extra.cause, seen, depth + 1);
  for (const key of Object.keys(err)) {
    if (key in out || key === 'stack') continue;
    redactEntry(out, key, (err as unknown as Record<string, unknown>)[key], seen, depth);
  }
  return out;
}

function isHeadersLike(v: object): v is { forEach(cb: (value: string, key: string) => void): void } {
  return (
    typeof (v as { forEach?: unknown }).forEach === 'function' &&
    typeof (v as { get?: unknown }).get === 'function' &&
    typeof (v as { has?: unknown }).has === 'function'
  );
}

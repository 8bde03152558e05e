import { XMLParser } from 'fast-xml-parser';
import { keelError } from 'keel';

/** One rule of a bucket's CORS configuration (a `CORSRule` of GetBucketCors). */
export interface CorsRule {
  /** The rule's `ID`, when it has one. */
  id?: string;
  /** Origins allowed, each with at most one `*` wildcard; `*` alone allows any origin. */
  allowedOrigins: string[];
  /** Methods allowed: GET, PUT, POST, DELETE, HEAD. */
  allowedMethods: string[];
  /** Headers a preflight may ask for (not used for actual requests). */
  allowedHeaders: string[];
  /** Response headers a browser may let scripts read (`Access-Control-Expose-Headers`). */
  exposeHeaders: string[];
  /** How long a browser may cache a preflight (`Access-Control-Max-Age`). */
  maxAgeSeconds?: number;
}

/** The methods S3 accepts in `AllowedMethod`. */
const METHODS = new Set(['GET', 'PUT', 'POST', 'DELETE', 'HEAD']);

/** What S3 sends in `Vary` with every successful CORS evaluation. */
const VARY = 'Origin, Access-Control-Request-Headers, Access-Control-Request-Method';

const LISTS = new Set(['CORSRule', 'AllowedOrigin', 'AllowedMethod', 'AllowedHeader', 'ExposeHeader']);

const xml = new XMLParser({
  ignoreAttributes: true,
  removeNSPrefix: true,
  parseTagValue: false,
  trimValues: true,
  processEntities: true,
  isArray: (name) => LISTS.has(name),
});

function invalid(message: string): never {
  throw keelError('INVALID_INPUT', `bucket CORS configuration: ${message}`, {}, { stack: false });
}

function strings(value: unknown, element: string, rule: number): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string'))
    invalid(`${element} of rule ${rule} must hold text`);
  return value;
}

/**
 * Parses a bucket CORS configuration (the body of GetBucketCors or PutBucketCors:
 * `<CORSConfiguration><CORSRule>…</CORSRule>…</CORSConfiguration>`), keeping the rules in order.
 * @throws KeelError `INVALID_INPUT` for a document that is not a CORS configuration, a rule
 * without AllowedOrigin or AllowedMethod, an unsupported method, an origin with more than one
 * `*`, or a MaxAgeSeconds that is not a whole number.
 */
export function parseCorsConfiguration(text: string): CorsRule[] {
  let doc: unknown;
  try {
    // Lenient: what the origin sends is S3's own document, not checked for well-formedness here.
    doc = xml.parse(text);
  } catch (err) {
    invalid(`not XML (${err instanceof Error ? err.message : String(err)})`);
  }
  const root = (doc as { CORSConfiguration?: unknown } | undefined)?.CORSConfiguration;
  if (root === undefined) invalid('no CORSConfiguration element');
  // `<CORSConfiguration/>` parses as an empty string: a configuration without rules.
  const rawRules = typeof root === 'object' && root !== null ? (root as { CORSRule?: unknown }).CORSRule : [];
  if (rawRules === undefined) return [];
  if (!Array.isArray(rawRules)) invalid('CORSRule must be an element');
  return (rawRules as unknown[]).map((raw, i): CorsRule => {
    const n = i + 1;
    if (typeof raw !== 'object' || raw === null) invalid(`rule ${n} is empty`);
    const r = raw as Record<string, unknown>;
    const allowedOrigins = strings(r.AllowedOrigin, 'AllowedOrigin', n);
    const allowedMethods = strings(r.AllowedMethod, 'AllowedMethod', n);
    if (allowedOrigins.length === 0) invalid(`rule ${n} has no AllowedOrigin`);
    if (allowedMethods.length === 0) invalid(`rule ${n} has no AllowedMethod`);
    for (const m of allowedMethods)
      if (!METHODS.has(m))
        invalid(`rule ${n} allows ${m}; AllowedMethod is one of GET, PUT, POST, DELETE, HEAD`);
    for (const o of allowedOrigins)
      if (o.split('*').length > 2) invalid(`AllowedOrigin "${o}" of rule ${n} has more than one wildcard`);
    const rule: CorsRule = {
      allowedOrigins,
      allowedMethods,
      allowedHeaders: strings(r.AllowedHeader, 'AllowedHeader', n),
      exposeHeaders: strings(r.ExposeHeader, 'ExposeHeader', n),
    };
    if (typeof r.ID === 'string' && r.ID !== '') rule.id = r.ID;
    if (r.MaxAgeSeconds !== undefined) {
      if (typeof r.MaxAgeSeconds !== 'string' || !/^-?\d+$/.test(r.MaxAgeSeconds))
        invalid(`MaxAgeSeconds of rule ${n} must be a whole number`);
      rule.maxAgeSeconds = Number(r.MaxAgeSeconds);
    }
    return rule;
  });
}

/** True when `origin` matches `pattern` (at most one `*`, standing for any run of characters). */
export function originMatches(pattern: string, origin: string): boolean {
  const star = pattern.indexOf('*');
  if (star < 0) return pattern === origin;
  const prefix = pattern.slice(0, star);
  const suffix = pattern.slice(star + 1);
  return (
    origin.length >= prefix.length + suffix.length && origin.startsWith(prefix) && origin.endsWith(suffix)
  );
}

/** The rule that allows a request, and which of its origins matched. */
export interface CorsMatch {
  rule: CorsRule;
  /** The rule's AllowedOrigin that matched (`*` means any origin). */
  allowedOrigin: string;
}

/**
 * The first rule that allows `method` from `origin`, as S3 evaluates an actual (not preflight)
 * request: its Origin must match one of the rule's AllowedOrigin and its method must be one of
 * the rule's AllowedMethod. AllowedHeader only concerns preflights.
 */
export function matchCorsRule(
  rules: readonly CorsRule[],
  origin: string,
  method: string,
): CorsMatch | undefined {
  for (const rule of rules) {
    if (!rule.allowedMethods.includes(method)) continue;
    const allowedOrigin = rule.allowedOrigins.find((o) => originMatches(o, origin));
    if (allowedOrigin !== undefined) return { rule, allowedOrigin };
  }
  return undefined;
}

/**
 * The CORS response headers S3 adds to the answer of a GET or HEAD carrying `Origin`, or
 * `undefined` when no rule allows it (S3 then adds none, not even `Vary`):
 * `Access-Control-Allow-Origin` (`*` when the origin matched `*`, otherwise the request's
 * origin), `Access-Control-Allow-Methods` (the rule's methods), `Access-Control-Expose-Headers`
 * and `Access-Control-Max-Age` when the rule has them, `Access-Control-Allow-Credentials: true`
 * unless the origin is `*`, and `Vary: Origin, Access-Control-Request-Headers, Access-Control-Request-Method`.
 */
export function corsHeaders(
  rules: readonly CorsRule[],
  origin: string,
  method: string,
): Record<string, string> | undefined {
  const match = matchCorsRule(rules, origin, method);
  if (!match) return undefined;
  const { rule } = match;
  const any = match.allowedOrigin === '*';
  return {
    'access-control-allow-origin': any ? '*' : origin,
    'access-control-allow-methods': rule.allowedMethods.join(', '),
    ...(rule.exposeHeaders.length > 0
      ? { 'access-control-expose-headers': rule.exposeHeaders.join(', ') }
      : {}),
    ...(rule.maxAgeSeconds === undefined ? {} : { 'access-control-max-age': String(rule.maxAgeSeconds) }),
    ...(any ? {} : { 'access-control-allow-credentials': 'true' }),
    vary: VARY,
  };
}

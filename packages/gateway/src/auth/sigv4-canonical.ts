/** Header values as the signer holds them (plain strings) or as node:http parsed them. */
export type CanonicalHeaderSource = Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * The canonical request of SigV4, built from parts already in canonical form; the one builder
 * behind both signing (origin requests) and verifying (client requests).
 * @param path the canonical URI: RFC 3986 encoded, not encoded twice (S3's rule)
 * @param query the query as `key=value` pairs, each side RFC 3986 encoded (a bare key as `key=`),
 *   the signature parameter already left out; the array is sorted in place
 * @param headers the request's headers by lower-case name; several values of one header are
 *   joined with `,`
 * @param signedHeaders the lower-case names to sign, sorted
 * @param signedHeaderList `signedHeaders` joined with `;` (pass it when it is already built)
 */
export function buildCanonicalRequest(
  method: string,
  path: string,
  query: string[],
  headers: CanonicalHeaderSource,
  signedHeaders: readonly string[],
  payloadHash: string,
  signedHeaderList = signedHeaders.join(';'),
): string {
  let canonicalHeaders = '';
  for (const name of signedHeaders) {
    const v = headers[name];
    const value = v === undefined ? '' : typeof v === 'string' ? v : v.join(',');
    canonicalHeaders += `${name}:${foldHeaderValue(value)}\n`;
  }
  const canonicalQuery = query.sort(compareQueryPairs).join('&');
  return `${method}\n${path}\n${canonicalQuery}\n${canonicalHeaders}\n${signedHeaderList}\n${payloadHash}`;
}

/**
 * A header value as SigV4 signs it: runs of spaces, tabs and line breaks become one space, and a
 * leading and a trailing space go (the same rule as `@smithy/signature-v4`; other whitespace, such
 * as a no-break space, is kept).
 */
function foldHeaderValue(value: string): string {
  const folded = value.replace(/[ \t\r\n]+/g, ' ');
  const start = folded.charCodeAt(0) === 32 ? 1 : 0;
  const end =
    folded.length > start && folded.charCodeAt(folded.length - 1) === 32 ? folded.length - 1 : folded.length;
  return start === 0 && end === folded.length ? folded : folded.slice(start, end);
}

/** Orders `key=value` pairs by key, then by value (keys are encoded, so hold no `=`). */
function compareQueryPairs(a: string, b: string): number {
  const ka = a.slice(0, a.indexOf('='));
  const kb = b.slice(0, b.indexOf('='));
  if (ka !== kb) return ka < kb ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

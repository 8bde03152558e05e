/** Outcome of the conditional request headers. */
export type ConditionOutcome = 'proceed' | 'not-modified' | 'precondition-failed';

/** The request headers that make a read conditional. */
export interface ConditionHeaders {
  'if-match'?: string | undefined;
  'if-none-match'?: string | undefined;
  'if-modified-since'?: string | undefined;
  'if-unmodified-since'?: string | undefined;
}

function etagList(header: string): string[] {
  return header.split(',').map((t) => t.trim().replace(/^W\//, ''));
}

function matches(header: string, etag: string): boolean {
  const list = etagList(header);
  return list.includes('*') || list.includes(etag) || list.includes(`"${etag.replace(/"/g, '')}"`);
}

function seconds(date: string | undefined): number | undefined {
  if (date === undefined) return undefined;
  const t = Date.parse(date);
  return Number.isNaN(t) ? undefined : Math.floor(t / 1000);
}

/**
 * Evaluates If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since in S3's order:
 * If-Match decides alone when present (If-Unmodified-Since is then ignored); If-None-Match decides
 * alone when present (If-Modified-Since is then ignored). Dates that do not parse are ignored.
 */
export function evaluateConditions(
  headers: ConditionHeaders,
  object: { etag: string; lastModified?: string | undefined },
): ConditionOutcome {
  if (
    headers['if-match'] === undefined &&
    headers['if-none-match'] === undefined &&
    headers['if-modified-since'] === undefined &&
    headers['if-unmodified-since'] === undefined
  )
    return 'proceed';
  const lastModified = seconds(object.lastModified);
  const ifMatch = headers['if-match'];
  if (ifMatch !== undefined) {
    if (!matches(ifMatch, object.etag)) return 'precondition-failed';
  } else {
    const since = seconds(headers['if-unmodified-since']);
    if (since !== undefined && lastModified !== undefined && lastModified > since)
      return 'precondition-failed';
  }
  const ifNoneMatch = headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    if (matches(ifNoneMatch, object.etag)) return 'not-modified';
  } else {
    const since = seconds(headers['if-modified-since']);
    if (since !== undefined && lastModified !== undefined && lastModified <= since) return 'not-modified';
  }
  return 'proceed';
}

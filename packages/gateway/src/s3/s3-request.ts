import type { S3ErrorSpec } from './s3-error.js';

/** What an incoming S3 request addresses: a bucket, an object, or the service. */
export interface S3Target {
  bucket: string | undefined;
  /** Decoded object key; undefined for bucket and service requests. */
  key: string | undefined;
  style: 'path' | 'virtual-host';
  /** Query parameters, decoded. */
  query: URLSearchParams;
  /** The raw query string as the client sent it, without `?` ('' when none). */
  rawQuery: string;
}

/** A request path that no S3 would accept. */
export interface MalformedTarget {
  malformed: true;
  /** The S3 error code it is answered with (S3's own for the case). */
  code: 'InvalidURI' | 'InvalidBucketName';
  message: string;
}

/** The S3 error (400) a malformed request path is answered with. */
export function malformedTargetError(target: MalformedTarget): S3ErrorSpec {
  return { status: 400, code: target.code, message: target.message };
}

/**
 * Bucket names S3 could have: letters, digits, `.`, `-` and `_` (legacy us-east-1 names had
 * capitals and underscores, up to 255 characters), beginning and ending with a letter or a digit,
 * no `..`. So `.`, `..` and every dot-segment are refused before anything is forwarded. Names of
 * one or two characters, which S3 refuses too, are left to the origin: some S3-compatible stores
 * take them.
 */
const BUCKET_NAME = /^(?!.*\.\.)[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?$/;

/** True when every `%` of `s` starts a valid escape and the escapes decode (as UTF-8). */
function decodable(s: string): boolean {
  if (!s.includes('%')) return true;
  try {
    decodeURIComponent(s.replace(/\+/g, ' '));
    return true;
  } catch {
    return false;
  }
}

/**
 * Splits a request URL into bucket, key and query, path-style (`/bucket/key`) or
 * virtual-host-style (`bucket.<baseDomain>/key`). Keys are percent-decoded once, as S3 does.
 * Returns a {@link MalformedTarget} for undecodable paths or impossible bucket names.
 */
export function parseS3Target(
  rawUrl: string,
  host: string | undefined,
  baseDomain: string | undefined,
): S3Target | MalformedTarget {
  const q = rawUrl.indexOf('?');
  const rawPath = q === -1 ? rawUrl : rawUrl.slice(0, q);
  const rawQuery = q === -1 ? '' : rawUrl.slice(q + 1);
  if (!rawPath.startsWith('/'))
    return {
      malformed: true,
      code: 'InvalidURI',
      message: "Couldn't parse the specified URI: the path must start with /.",
    };
  // URLSearchParams takes a malformed escape as it is; the signature check and the origin would
  // not, so it is refused here, before either.
  if (!decodable(rawQuery))
    return {
      malformed: true,
      code: 'InvalidURI',
      message: "Couldn't parse the specified URI: bad escape in the query string.",
    };
  const query = new URLSearchParams(rawQuery);
  const hostName = baseDomain ? (host ?? '').replace(/:\d+$/, '').toLowerCase() : '';
  let bucket: string | undefined;
  let rawKey: string | undefined;
  let style: S3Target['style'] = 'path';
  if (baseDomain && hostName.endsWith(`.${baseDomain.toLowerCase()}`)) {
    style = 'virtual-host';
    bucket = hostName.slice(0, -(baseDomain.length + 1));
    rawKey = rawPath.length > 1 ? rawPath.slice(1) : undefined;
  } else {
    const rest = rawPath.slice(1);
    const slash = rest.indexOf('/');
    if (rest === '') bucket = undefined;
    else if (slash === -1) bucket = rest;
    else {
      bucket = rest.slice(0, slash);
      rawKey = rest.slice(slash + 1) === '' ? undefined : rest.slice(slash + 1);
    }
  }
  if (bucket !== undefined) {
    try {
      bucket = decodeURIComponent(bucket);
    } catch {
      return {
        malformed: true,
        code: 'InvalidURI',
        message: "Couldn't parse the specified URI: bad bucket encoding.",
      };
    }
    if (!BUCKET_NAME.test(bucket))
      return { malformed: true, code: 'InvalidBucketName', message: 'The specified bucket is not valid.' };
  }
  let key: string | undefined;
  if (rawKey !== undefined) {
    try {
      key = decodeURIComponent(rawKey);
    } catch {
      return {
        malformed: true,
        code: 'InvalidURI',
        message: "Couldn't parse the specified URI: bad key encoding.",
      };
    }
  }
  return { bucket, key, style, query, rawQuery };
}

/** Encodes `s` as SigV4 and S3 paths want: every byte except the RFC 3986 unreserved ones. */
export function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Encodes an object key for a path-style URL (every byte except unreserved and `/`). */
export function encodeKey(key: string): string {
  return rfc3986(key).replace(/%2F/g, '/');
}

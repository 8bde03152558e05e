import { isSecretKey, REDACTED, redactString } from 'keel';

function decodedName(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    return raw;
  }
}

/**
 * A request URL as it may appear in a log line: the values of secret query parameters (a
 * presigned URL's `X-Amz-Signature`, `X-Amz-Credential` and `X-Amz-Security-Token`, legacy
 * `Signature` and `AWSAccessKeyId`, anything named like a token, key or password) become
 * `[REDACTED]`; the path and the other parameters are kept, so the line still says what was asked.
 */
export function loggableUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return redactString(url);
  const params = url
    .slice(q + 1)
    .split('&')
    .map((param) => {
      const eq = param.indexOf('=');
      const name = eq < 0 ? param : param.slice(0, eq);
      return eq >= 0 && isSecretKey(decodedName(name)) ? `${name}=${REDACTED}` : param;
    });
  // The text patterns catch what a parameter name did not give away (e.g. a token in the path).
  return redactString(`${url.slice(0, q)}?${params.join('&')}`);
}

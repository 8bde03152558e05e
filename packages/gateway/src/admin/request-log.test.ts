import { describe, expect, it } from 'vitest';
import { loggableUrl } from './request-log.js';

describe('loggableUrl', () => {
  it.each([
    ['/b/key.bin', '/b/key.bin'],
    ['/b/key.bin?versionId=3&partNumber=2', '/b/key.bin?versionId=3&partNumber=2'],
    [
      '/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=CLIENTKEY%2F20261128%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-SignedHeaders=host&X-Amz-Signature=abc123',
      '/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=[REDACTED]&X-Amz-SignedHeaders=host&X-Amz-Signature=[REDACTED]',
    ],
    ['/b/k?x-amz-security-token=tok&list-type=2', '/b/k?x-amz-security-token=[REDACTED]&list-type=2'],
    // Legacy (SigV2) presigned URLs.
    [
      '/b/k?AWSAccessKeyId=CLIENTKEY&Expires=1700000000&Signature=c2lnbmF0dXJl%3D',
      '/b/k?AWSAccessKeyId=[REDACTED]&Expires=1700000000&Signature=[REDACTED]',
    ],
    // A percent-encoded parameter name is still recognised.
    ['/b/k?X%2DAmz%2DSignature=abc', '/b/k?X%2DAmz%2DSignature=[REDACTED]'],
    ['/b/k?flag&X-Amz-Signature=', '/b/k?flag&X-Amz-Signature=[REDACTED]'],
  ])('logs %s as %s', (url, logged) => {
    expect(loggableUrl(url)).toBe(logged);
  });
});

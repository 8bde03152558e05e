import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import { SigV4HeaderSigner } from './sigv4-sign.js';
import { verifySigV4 } from './sigv4-verify.js';

const creds = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };

async function smithy(
  credentials: typeof creds & { sessionToken?: string },
  method: string,
  path: string,
  query: Record<string, string | readonly string[]>,
  headers: Record<string, string>,
  date: Date,
): Promise<Record<string, string>> {
  const signer = new SignatureV4({
    credentials,
    region: 'eu-west-1',
    service: 's3',
    sha256: Sha256,
    uriEscapePath: false,
  });
  const signed = await signer.sign(
    new HttpRequest({
      method,
      protocol: 'http:',
      hostname: '127.0.0.1',
      port: 9000,
      path,
      query: Object.fromEntries(
        Object.entries(query).map(([k, v]) => [k, typeof v === 'string' ? v : [...v]]),
      ),
      headers,
    }),
    { signingDate: date },
  );
  return signed.headers;
}

describe('SigV4HeaderSigner', () => {
  const date = new Date('2026-11-28T07:15:42.123Z');
  it.each([
    ['GET', '/b/key.bin', [], {}, { range: 'bytes=0-8388607' }],
    ['HEAD', '/b/dir/with%20space%2Bplus.bin', [], {}, { 'if-none-match': '"abc"' }],
    ['GET', '/b/k', ['versionId=3%2F4', 'acl'], { versionId: '3/4', acl: '' }, { 'if-match': '"x"' }],
    [
      'PUT',
      '/b/k',
      ['uploadId=u1', 'partNumber=2'],
      { uploadId: 'u1', partNumber: '2' },
      {
        'content-length': '5',
        'x-amz-meta-a': ' two  spaces ',
        'user-agent': 'curl',
        connection: 'keep-alive',
      },
    ],
    ['GET', '/', ['list-type=2', 'prefix=a%20b'], { 'list-type': '2', prefix: 'a b' }, {}],
    [
      'GET',
      '/b/k',
      ['b=2', 'a=1', 'a-b=0', 'a=0', 'X-Amz-Signature=ab'],
      { b: '2', a: ['1', '0'], 'a-b': '0', 'X-Amz-Signature': 'ab' },
      { 'x-amz-meta-folded': '\ttabs\t\tand\r\nbreaks  ', 'x-amz-meta-nbsp': 'no\u00a0break' },
    ],
  ] as const)('signs %s %s like the AWS SDK signer', async (method, path, pairs, query, extra) => {
    const headers: Record<string, string> = {
      ...extra,
      host: '127.0.0.1:9000',
      'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
    };
    const want = await smithy(creds, method, path, { ...query }, { ...headers }, date);
    // The headers as they go on the wire: a value's UTF-8 bytes, one string character per byte, as
    // node:http reads them and undici writes them (the SDK signs the UTF-8 of its strings).
    const mine = Object.fromEntries(
      Object.entries(headers).map(([k, v]) => [k, Buffer.from(v, 'utf8').toString('latin1')]),
    );
    new SigV4HeaderSigner(creds, 'eu-west-1').sign(method, path, [...pairs], mine, date);
    expect(mine['x-amz-date']).toBe(want['x-amz-date']);
    expect(mine.authorization).toBe(want.authorization);
  });

  it('signs the session token', async () => {
    const withToken = { ...creds, sessionToken: 'token/with+chars' };
    const headers = { host: 'h', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' };
    const want = await smithy(withToken, 'GET', '/b/k', {}, { ...headers }, date);
    const mine: Record<string, string> = { ...headers };
    new SigV4HeaderSigner(withToken, 'eu-west-1').sign('GET', '/b/k', [], mine, date);
    expect(mine['x-amz-security-token']).toBe('token/with+chars');
    expect(mine.authorization).toBe(want.authorization);
  });

  it('uses a new signing key when the day changes', async () => {
    const signer = new SigV4HeaderSigner(creds, 'eu-west-1');
    const next = new Date('2026-11-29T00:00:01Z');
    signer.sign('GET', '/b/k', [], { host: 'h', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' }, date);
    const mine: Record<string, string> = { host: 'h', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' };
    signer.sign('GET', '/b/k', [], mine, next);
    const want = await smithy(
      creds,
      'GET',
      '/b/k',
      {},
      { host: 'h', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
      next,
    );
    expect(mine.authorization).toBe(want.authorization);
  });

  it('signs what the gateway verifies: bare query key, folded header whitespace, session token', () => {
    const withToken = { ...creds, sessionToken: 'token/with+chars' };
    const headers: Record<string, string> = {
      host: 'h:9000',
      'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
      'x-amz-meta-a': ' two  spaces\tand a tab ',
      'x-amz-meta-nbsp': 'no\u00a0break',
    };
    new SigV4HeaderSigner(withToken, 'eu-west-1').sign(
      'GET',
      '/b/with%20space',
      ['acl', 'prefix=a%2Bb'],
      headers,
      date,
    );
    expect(headers.authorization).toContain('x-amz-meta-a;x-amz-meta-nbsp;x-amz-security-token');
    const keys = new Map([[creds.accessKeyId, creds.secretAccessKey]]);
    const url = '/b/with%20space?prefix=a%2Bb&acl';
    expect(verifySigV4('GET', url, headers, keys, date.getTime()).ok).toBe(true);
    // Changing what the folding keeps (the words) breaks the signature; changing only whitespace does not.
    const respaced = { ...headers, 'x-amz-meta-a': 'two spaces and a tab' };
    expect(verifySigV4('GET', url, respaced, keys, date.getTime()).ok).toBe(true);
    const reworded = { ...headers, 'x-amz-meta-a': 'two spaces and one tab' };
    expect(verifySigV4('GET', url, reworded, keys, date.getTime()).ok).toBe(false);
  });
});

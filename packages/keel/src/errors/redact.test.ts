import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { classify, keelError, redact, redactString, REDACTED } from './index.js';

const SECRET_FORMS: readonly ((s: string) => string)[] = [
  (s) =>
    `Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/s3/aws4_request, Signature=${s}`,
  (s) => `Bearer ${s}`,
  (s) => `https://bucket.s3.amazonaws.com/key?X-Amz-Signature=${s}&X-Amz-Expires=60`,
  (s) => `password=${s}`,
  (s) => `{"secretAccessKey": "${s}"}`,
  (s) => `postgres://admin:${s}@db.internal:5432/app`,
  (s) => `token: ${s}`,
];

// Secrets long and distinctive enough that they cannot occur by accident in the rest of the output.
const secretArb = fc.stringMatching(/^[A-Za-z0-9]{24,40}$/).map((s) => `S3CR${s}`);

describe('redactString', () => {
  it.each([
    ['Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/x, Signature=abcdef', 'abcdef'],
    ['authorization=Basic dXNlcjpwYXNz', 'dXNlcjpwYXNz'],
    ['Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig', 'eyJhbGciOiJIUzI1NiJ9'],
    ['key AKIAIOSFODNN7EXAMPLE leaked', 'AKIAIOSFODNN7EXAMPLE'],
    ['aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'wJalrXUtnFEMI'],
    ['?X-Amz-Credential=AKID%2F2026&X-Amz-Signature=f00d&X-Amz-Security-Token=tok', 'f00d'],
    ['redis://:hunter2@127.0.0.1:6379', 'hunter2'],
    ['"password":"hunter2"', 'hunter2'],
    ['api_key=abc123xyz', 'abc123xyz'],
  ])('removes the secret from %s', (input, secret) => {
    const out = redactString(input);
    expect(out).not.toContain(secret);
    expect(out).toContain(REDACTED);
  });

  it('leaves ordinary text alone', () => {
    const text = 'could not write slice 3 of bucket/key to /var/cache/keel: disk full (ENOSPC)';
    expect(redactString(text)).toBe(text);
  });
});

describe('redact', () => {
  it('redacts values under secret keys, keeps counts and other values', () => {
    const out = redact({
      headers: { Authorization: 'x', 'x-amz-security-token': 'y', 'content-type': 'text/plain' },
      credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'zzz' },
      tokens: 500,
      bypass: true,
    });
    expect(out).toEqual({
      headers: { Authorization: REDACTED, 'x-amz-security-token': REDACTED, 'content-type': 'text/plain' },
      credentials: REDACTED,
      tokens: 500,
      bypass: true,
    });
  });

  it('survives cycles, Maps, Sets, Headers, Errors and buffers', () => {
    const loop: Record<string, unknown> = { password: 'p' };
    loop.loop = loop;
    const out = redact({
      loop,
      map: new Map([['token', 'abc']]),
      set: new Set(['Bearer abcdef']),
      headers: new Headers({ authorization: 'Bearer qwerty' }),
      error: Object.assign(new Error('password=hunter2'), { code: 'E' }),
      buf: Buffer.from('secret bytes'),
    });
    const text = JSON.stringify(out);
    for (const s of ['hunter2', 'qwerty', 'abcdef', 'secret bytes', '"p"']) expect(text).not.toContain(s);
    expect(text).toContain('[Circular]');
  });

  it('property: secrets planted at any depth never survive redaction', () => {
    const planted = fc.tuple(secretArb, fc.nat({ max: SECRET_FORMS.length - 1 })).map(([s, i]) => ({
      secret: s,
      text: (SECRET_FORMS[i] as (x: string) => string)(s),
    }));
    const tree = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        fc.string(),
        fc.integer(),
        fc.constant(null),
        fc.array(tie('node'), { maxLength: 3 }),
        fc.dictionary(fc.string({ maxLength: 8 }), tie('node'), { maxKeys: 3 }),
      ),
    })).node;
    fc.assert(
      fc.property(
        tree,
        fc.array(planted, { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat(), { minLength: 4, maxLength: 4 }),
        (base, secrets, seeds) => {
          // Plant each secret somewhere: as a value under a secret key, or inside free text, nested deep.
          let value: unknown = base;
          secrets.forEach((p, i) => {
            const how = (seeds[i] ?? 0) % 4;
            if (how === 0) value = { wrapper: [value, { note: p.text }] };
            else if (how === 1) value = { password: p.secret, inner: value };
            else if (how === 2) value = [value, new Error(p.text)];
            else value = { a: { b: { c: { d: { message: p.text, next: value } } } } };
          });
          const out = JSON.stringify(redact(value));
          for (const p of secrets) expect(out).not.toContain(p.secret);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('property: KeelError JSON and problem details never carry a secret from details or cause', () => {
    fc.assert(
      fc.property(secretArb, fc.nat({ max: SECRET_FORMS.length - 1 }), (secret, i) => {
        const text = (SECRET_FORMS[i] as (x: string) => string)(secret);
        const err = keelError(
          'UNKNOWN',
          `failed: ${text}`,
          { request: { headers: { authorization: secret } }, note: text },
          {
            cause: new Error(text, { cause: { deeper: text } }),
          },
        );
        expect(JSON.stringify(err.toJSON())).not.toContain(secret);
        expect(JSON.stringify(err.toProblem())).not.toContain(secret);
        expect(JSON.stringify(classify(new Error(text)).toJSON())).not.toContain(secret);
      }),
      { numRuns: 200 },
    );
  });
});

describe('classify never throws', () => {
  it('property: any value gives a KeelError', () => {
    fc.assert(
      fc.property(
        fc.anything({
          withBigInt: true,
          withDate: true,
          withMap: true,
          withSet: true,
          withTypedArray: true,
          withNullPrototype: true,
        }),
        (v) => {
          const err = classify(v);
          expect(typeof err.code).toBe('string');
          expect(() => JSON.stringify(err.toJSON())).not.toThrow();
          expect(() => err.fingerprint).not.toThrow();
        },
      ),
      { numRuns: 500 },
    );
  });

  it('property: objects with error-like fields of any type give a KeelError', () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            code: fc.anything(),
            status: fc.anything(),
            name: fc.anything(),
            message: fc.anything(),
            cause: fc.anything(),
            headers: fc.anything(),
          },
          { requiredKeys: [] },
        ),
        (v) => {
          expect(classify(v).isKeelError).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });
});

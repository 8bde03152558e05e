import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isKeelError } from 'keel';
import { corsHeaders, matchCorsRule, originMatches, parseCorsConfiguration, type CorsRule } from './cors.js';

const CONFIG = `<?xml version="1.0" encoding="UTF-8"?>
<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <CORSRule>
    <ID>app</ID>
    <AllowedOrigin>https://app.example</AllowedOrigin>
    <AllowedMethod>GET</AllowedMethod>
    <AllowedMethod>HEAD</AllowedMethod>
    <AllowedHeader>*</AllowedHeader>
    <ExposeHeader>ETag</ExposeHeader>
    <ExposeHeader>x-amz-meta-owner</ExposeHeader>
    <MaxAgeSeconds>600</MaxAgeSeconds>
  </CORSRule>
  <CORSRule>
    <AllowedOrigin>http://*.example.org</AllowedOrigin>
    <AllowedMethod>GET</AllowedMethod>
  </CORSRule>
  <CORSRule>
    <AllowedOrigin>https://app.example</AllowedOrigin>
    <AllowedMethod>PUT</AllowedMethod>
    <MaxAgeSeconds>1</MaxAgeSeconds>
  </CORSRule>
  <CORSRule>
    <AllowedOrigin>*</AllowedOrigin>
    <AllowedMethod>HEAD</AllowedMethod>
    <MaxAgeSeconds>3000</MaxAgeSeconds>
  </CORSRule>
</CORSConfiguration>`;

const VARY = 'Origin, Access-Control-Request-Headers, Access-Control-Request-Method';

describe('parseCorsConfiguration', () => {
  it('reads every element of every rule, in order', () => {
    const rules = parseCorsConfiguration(CONFIG);
    expect(rules).toEqual<CorsRule[]>([
      {
        id: 'app',
        allowedOrigins: ['https://app.example'],
        allowedMethods: ['GET', 'HEAD'],
        allowedHeaders: ['*'],
        exposeHeaders: ['ETag', 'x-amz-meta-owner'],
        maxAgeSeconds: 600,
      },
      {
        allowedOrigins: ['http://*.example.org'],
        allowedMethods: ['GET'],
        allowedHeaders: [],
        exposeHeaders: [],
      },
      {
        allowedOrigins: ['https://app.example'],
        allowedMethods: ['PUT'],
        allowedHeaders: [],
        exposeHeaders: [],
        maxAgeSeconds: 1,
      },
      {
        allowedOrigins: ['*'],
        allowedMethods: ['HEAD'],
        allowedHeaders: [],
        exposeHeaders: [],
        maxAgeSeconds: 3000,
      },
    ]);
  });

  it('decodes XML entities in origins', () => {
    const [rule] = parseCorsConfiguration(
      '<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example/?x=1&amp;y=2</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>',
    );
    expect(rule?.allowedOrigins).toEqual(['https://a.example/?x=1&y=2']);
  });

  it('reads a configuration without rules as none', () => {
    expect(parseCorsConfiguration('<CORSConfiguration/>')).toEqual([]);
    expect(parseCorsConfiguration('<CORSConfiguration></CORSConfiguration>')).toEqual([]);
  });

  const rule = (inner: string): string =>
    `<CORSConfiguration><CORSRule>${inner}</CORSRule></CORSConfiguration>`;
  it.each([
    ['not XML', 'this is not <xml', /not XML/],
    ['another document', '<Error><Code>AccessDenied</Code></Error>', /no CORSConfiguration/],
    [
      'a rule without AllowedOrigin',
      rule('<AllowedMethod>GET</AllowedMethod>'),
      /rule 1 has no AllowedOrigin/,
    ],
    ['a rule without AllowedMethod', rule('<AllowedOrigin>*</AllowedOrigin>'), /rule 1 has no AllowedMethod/],
    [
      'an unsupported method',
      rule('<AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>'),
      /allows PATCH/,
    ],
    [
      'an origin with two wildcards',
      rule('<AllowedOrigin>https://*.*.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod>'),
      /more than one wildcard/,
    ],
    [
      'a MaxAgeSeconds that is not a number',
      rule(
        '<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>soon</MaxAgeSeconds>',
      ),
      /MaxAgeSeconds of rule 1/,
    ],
  ])('refuses %s with INVALID_INPUT naming the problem', (_name, xml, message) => {
    let thrown: unknown;
    try {
      parseCorsConfiguration(xml);
    } catch (err) {
      thrown = err;
    }
    expect(isKeelError(thrown) && thrown.code).toBe('INVALID_INPUT');
    expect((thrown as Error).message).toMatch(message);
  });
});

describe('originMatches', () => {
  it.each([
    ['https://app.example', 'https://app.example', true],
    ['https://app.example', 'https://app.example:8443', false],
    ['https://app.example', 'http://app.example', false],
    ['https://app.example', 'HTTPS://APP.EXAMPLE', false],
    ['http://*.example.org', 'http://cdn.example.org', true],
    ['http://*.example.org', 'http://a.b.example.org', true],
    ['http://*.example.org', 'http://example.org', false],
    ['http://*.example.org', 'https://cdn.example.org', false],
    ['*', 'null', true],
    ['*', 'https://anything.example', true],
    ['https://*', 'https://x', true],
    ['https://*', 'http://x', false],
    ['*.example', 'https://app.example', true],
    ['ab*ba', 'aba', false],
  ])('%s against %s: %s', (pattern, origin, expected) => {
    expect(originMatches(pattern, origin)).toBe(expected);
  });

  it('a pattern without a wildcard matches only itself; with one, any text in its place', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), (prefix, middle, suffix) => {
        fc.pre(!prefix.includes('*') && !suffix.includes('*'));
        expect(originMatches(`${prefix}*${suffix}`, prefix + middle + suffix)).toBe(true);
        expect(originMatches(prefix + suffix, prefix + middle + suffix)).toBe(middle === '');
      }),
    );
  });
});

describe('CORS evaluation of a GET or HEAD', () => {
  const rules = parseCorsConfiguration(CONFIG);

  it.each<[string, string, string, Record<string, string>]>([
    [
      'a matching origin with its own origin, the rule’s methods, exposed headers, max age, credentials and Vary',
      'https://app.example',
      'GET',
      {
        'access-control-allow-origin': 'https://app.example',
        'access-control-allow-methods': 'GET, HEAD',
        'access-control-expose-headers': 'ETag, x-amz-meta-owner',
        'access-control-max-age': '600',
        'access-control-allow-credentials': 'true',
      },
    ],
    [
      'an origin matched by a wildcard pattern with the request’s origin, without the absent max age',
      'http://cdn.example.org',
      'GET',
      {
        'access-control-allow-origin': 'http://cdn.example.org',
        'access-control-allow-methods': 'GET',
        'access-control-allow-credentials': 'true',
      },
    ],
    [
      'an origin matched by * with *, and without Access-Control-Allow-Credentials',
      'http://cdn.example.org',
      'HEAD',
      {
        'access-control-allow-origin': '*',
        'access-control-allow-methods': 'HEAD',
        'access-control-max-age': '3000',
      },
    ],
  ])('answers %s', (_, origin, method, headers) => {
    expect(corsHeaders(rules, origin, method)).toEqual({ ...headers, vary: VARY });
  });

  it('uses the first rule that allows both the origin and the method', () => {
    expect(matchCorsRule(rules, 'https://app.example', 'GET')?.rule.id).toBe('app');
    // The PUT rule for the same origin comes later and does not change a GET's answer.
    expect(corsHeaders(rules, 'https://app.example', 'GET')?.['access-control-max-age']).toBe('600');
    expect(matchCorsRule(rules, 'https://app.example', 'PUT')?.rule.maxAgeSeconds).toBe(1);
    // HEAD from the wildcard-subdomain origin skips rule 2 (GET only) and lands on rule 4 (*).
    expect(matchCorsRule(rules, 'http://cdn.example.org', 'HEAD')?.allowedOrigin).toBe('*');
  });

  it('adds nothing, not even Vary, when no rule allows the origin and method', () => {
    expect(corsHeaders(rules, 'https://evil.example', 'GET')).toBeUndefined();
    expect(corsHeaders(rules, 'https://APP.example', 'GET')).toBeUndefined();
    expect(corsHeaders([], 'https://app.example', 'GET')).toBeUndefined();
  });
});

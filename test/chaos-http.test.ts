import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chaos, parseHttpFaultSpec, type HttpFaultProxy, type HttpFaultRule } from 'keel/chaos';

const body = randomBytes(64 * 1024);
let origin: http.Server;
let proxy: HttpFaultProxy;

beforeAll(async () => {
  origin = http.createServer((req, res) => {
    req.resume();
    res
      .writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': body.length,
        etag: '"v1"',
      })
      .end(body);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  proxy = await chaos.httpProxy({ upstream: `127.0.0.1:${(origin.address() as { port: number }).port}` });
});
afterAll(async () => {
  await proxy.close();
  await new Promise((r) => origin.close(r));
});

async function get(
  path: string,
  method = 'GET',
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; error?: string; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = http.request(`${proxy.url}${path}`, { method, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(parts),
          ms: performance.now() - started,
        }),
      );
      res.on('error', (err) =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(parts),
          error: err.message,
          ms: 0,
        }),
      );
      res.on('aborted', () => undefined);
    });
    req.on('error', (err) =>
      resolve({ status: 0, headers: {}, body: Buffer.alloc(0), error: err.message, ms: 0 }),
    );
    req.end();
  });
}

describe('HTTP fault proxy', () => {
  it('passes requests through unchanged without rules', async () => {
    const r = await get('/bucket/key');
    expect(r.status).toBe(200);
    expect(r.body.equals(body)).toBe(true);
    expect(r.headers.etag).toBe('"v1"');
  });

  it.each([500, 503, 429, 403])(
    'answers %i for matching requests, with Retry-After on 503/429',
    async (status) => {
      const name = proxy.add({ path: '/bucket/', method: 'GET', action: { type: 'status', status } });
      try {
        const r = await get('/bucket/key');
        expect(r.status).toBe(status);
        if (status === 503 || status === 429) expect(r.headers['retry-after']).toBe('1');
        expect((await get('/other/key')).status).toBe(200);
        expect((await get('/bucket/key', 'HEAD')).status).toBe(200);
      } finally {
        proxy.remove(name);
      }
    },
  );

  it('cuts a body after N bytes', async () => {
    const name = proxy.add({ action: { type: 'cut', afterBytes: 1000 } });
    try {
      const r = await get('/k');
      expect(r.body.length).toBe(1000);
      expect(r.body.equals(body.subarray(0, 1000))).toBe(true);
    } finally {
      proxy.remove(name);
    }
  });

  it('corrupts bytes while keeping the length', async () => {
    const name = proxy.add({ action: { type: 'corrupt', bytes: 3 } });
    try {
      const r = await get('/k');
      expect(r.body.length).toBe(body.length);
      let differing = 0;
      for (let i = 0; i < body.length; i++) if (r.body[i] !== body[i]) differing++;
      expect(differing).toBe(3);
    } finally {
      proxy.remove(name);
    }
  });

  it('delays headers', async () => {
    const fast = await get('/k');
    const name = proxy.add({ action: { type: 'delay', ms: 150 } });
    try {
      const slow = await get('/k');
      expect(slow.ms - fast.ms).toBeGreaterThanOrEqual(130);
    } finally {
      proxy.remove(name);
    }
  });

  it('applies a rule to the chosen share of requests', async () => {
    const values = [0.1, 0.9, 0.1, 0.9];
    const p = await chaos.httpProxy({
      upstream: `http://127.0.0.1:${(origin.address() as { port: number }).port}`,
      random: () => values.shift() ?? 1,
      rules: [{ probability: 0.5, action: { type: 'status', status: 500 } }],
    });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await new Promise<number>((resolve) =>
          http.get(`${p.url}/k`, { agent: false }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          }),
        );
        statuses.push(r);
      }
      expect(statuses).toEqual([500, 200, 500, 200]);
    } finally {
      await p.close();
    }
  });

  it('rejects malformed rules', () => {
    expect(() => proxy.add({ action: { type: 'status', status: 999 } })).toThrow(/status must be 100-599/);
    expect(() => proxy.add({ action: { type: 'explode' } as never })).toThrow(/unknown action type/);
    expect(() => proxy.add({ probability: 3, action: { type: 'delay', ms: 1 } })).toThrow(/probability/);
    expect(() => proxy.add({ method: 7 as never, action: { type: 'delay', ms: 1 } })).toThrow(
      /method must be/,
    );
    expect(() => proxy.add({ path: {} as never, action: { type: 'delay', ms: 1 } })).toThrow(/path must be/);
  });

  it('refuses a listen address in use with CONFLICT', async () => {
    await expect(
      chaos.httpProxy({ upstream: '127.0.0.1:1', listen: `127.0.0.1:${proxy.port}` }),
    ).rejects.toMatchObject({
      code: 'CONFLICT',
      message: expect.stringMatching(/already in use/) as unknown,
    });
  });
});

describe('parseHttpFaultSpec', () => {
  const ok: [string, HttpFaultRule][] = [
    ['status=500', { action: { type: 'status', status: 500 } }],
    [
      'status=503,retry-after=2,method=GET|head,path=/bucket/,probability=0.2,name=flaky',
      {
        name: 'flaky',
        method: ['GET', 'HEAD'],
        path: '/bucket/',
        probability: 0.2,
        action: { type: 'status', status: 503, retryAfterSeconds: 2 },
      },
    ],
    ['delay=250', { action: { type: 'delay', ms: 250 } }],
    ['cut=1000,path=~\\.bin$', { path: /\.bin$/, action: { type: 'cut', afterBytes: 1000 } }],
    ['corrupt=3', { action: { type: 'corrupt', bytes: 3 } }],
  ];
  it.each(ok)('parses %s', (spec, rule) => {
    expect(parseHttpFaultSpec(spec)).toEqual(rule);
  });

  const bad: [string, RegExp][] = [
    ['', /key=value/],
    ['status', /key=value/],
    ['method=GET', /exactly one action/],
    ['status=503,delay=10', /exactly one action/],
    ['status=abc', /status must be a non-negative integer/],
    ['cut=-1', /cut must be/],
    ['delay=10,retry-after=1', /retry-after goes with status/],
    ['status=500,colour=red', /unknown key "colour"/],
    ['status=500,status=503', /status given twice/],
    ['status=500,path=~(', /not a valid RegExp/],
  ];
  it.each(bad)('rejects %j', (spec, message) => {
    expect(() => parseHttpFaultSpec(spec)).toThrow(message);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Toxiproxy } from 'toxiproxy-node-client';
import { ChaosControlServer, TOXIPROXY_API_VERSION } from 'keel/chaos';
import { receive, startUpstream } from './chaos-support.js';

let api: ChaosControlServer;
let upstream: Awaited<ReturnType<typeof startUpstream>>;

beforeAll(async () => {
  api = await ChaosControlServer.start({ listen: '127.0.0.1:0' });
  upstream = await startUpstream({ payload: Buffer.from('0123456789') });
});
afterAll(async () => {
  await api.close();
  await upstream.close();
});

function apiAddress(): string {
  return new URL(api.url).host;
}

async function call(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${api.url}${path}`, {
    method,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    // empty answers (204)
  }
  return { status: res.status, json };
}

describe('Toxiproxy-compatible control API', () => {
  it('drives proxies and toxics through toxiproxy-node-client unchanged', async () => {
    const client = new Toxiproxy(api.url);
    expect(JSON.parse(await client.getVersion())).toEqual({ version: TOXIPROXY_API_VERSION });
    const proxy = await client.createProxy({
      name: 'origin',
      listen: '127.0.0.1:0',
      upstream: `127.0.0.1:${upstream.port}`,
    });
    expect(proxy.enabled).toBe(true);
    const port = Number(proxy.listen.split(':').pop());
    expect((await receive(port)).bytes.toString()).toBe('0123456789');

    const toxic = await proxy.addToxic({
      name: 'cut',
      type: 'limit_data',
      stream: 'downstream',
      toxicity: 1,
      attributes: { bytes: 4 } as never,
    });
    expect(toxic.toJson()).toEqual({
      name: 'cut',
      type: 'limit_data',
      stream: 'downstream',
      toxicity: 1,
      attributes: { bytes: 4 },
    });
    expect((await receive(port)).bytes.toString()).toBe('0123');

    const updated = await toxic.update({ attributes: { bytes: 6 } } as never);
    expect(updated.attributes).toEqual({ bytes: 6 });
    expect((await receive(port)).bytes.toString()).toBe('012345');
    expect((await proxy.getToxic('cut')).attributes).toEqual({ bytes: 6 });

    await toxic.remove();
    expect((await receive(port)).bytes.toString()).toBe('0123456789');

    const disabled = await proxy.update({ enabled: false } as never);
    expect(disabled.enabled).toBe(false);
    expect((await receive(port)).error?.code).toBe('ECONNREFUSED');
    await client.reset();
    expect((await client.get('origin')).enabled).toBe(true);

    const all = await client.getAll();
    expect(Object.keys(all)).toEqual(['origin']);
    const populated = await client.populate([
      { name: 'origin', listen: proxy.listen, upstream: proxy.upstream },
      { name: 'second', listen: '127.0.0.1:0', upstream: `127.0.0.1:${upstream.port}` },
    ]);
    expect(Object.keys(populated).sort()).toEqual(['origin', 'second']);
    await populated.second?.remove();
    await expect(client.get('second')).rejects.toThrow(/404/);
  });

  it('answers bad input with Toxiproxy status codes and JSON errors, and keeps running', async () => {
    const name = 'errs';
    expect((await call('POST', '/proxies', { name, upstream: `127.0.0.1:${upstream.port}` })).status).toBe(
      201,
    );
    const cases: [string, string, unknown, number, RegExp][] = [
      ['POST', '/proxies', { name, upstream: `127.0.0.1:${upstream.port}` }, 409, /already exists/],
      ['POST', '/proxies', { upstream: `127.0.0.1:${upstream.port}` }, 400, /name/],
      ['POST', '/proxies', { name: 'x', upstream: 42 }, 400, /upstream/],
      ['POST', '/proxies', { name: 'x', upstream: 'no-such-host.invalid:1' }, 400, /does not resolve/],
      ['POST', '/proxies', '{not json', 400, /JSON/],
      ['GET', '/proxies/nope', undefined, 404, /proxy not found/],
      ['GET', `/proxies/${name}/toxics/nope`, undefined, 404, /toxic not found/],
      ['POST', `/proxies/${name}/toxics`, { type: 'explode' }, 400, /unknown toxic type/],
      [
        'POST',
        `/proxies/${name}/toxics`,
        { type: 'latency', attributes: { latency: 'slow' } },
        400,
        /non-negative number/,
      ],
      ['PATCH', `/proxies/${name}`, { enabled: 'yes' }, 400, /enabled/],
      ['POST', '/proxies', { name: 'busy', listen: apiAddress(), upstream: '127.0.0.1:1' }, 409, /in use/],
      ['PATCH', `/proxies/${name}`, { listen: apiAddress() }, 409, /in use/],
      ['PATCH', `/proxies/${name}/toxics/nope`, { toxicity: 0.5 }, 404, /toxic not found/],
      ['POST', '/populate', [{ name: 'p1', upstream: '127.0.0.1:1' }, { name: 'p2' }], 400, /upstream/],
    ];
    for (const [method, path, body, status, message] of cases) {
      const res = await call(method, path, body);
      expect(res.status, `${method} ${path}`).toBe(status);
      expect(res.json).toMatchObject({ status });
      expect((res.json as { error: string }).error).toMatch(message);
    }
    // After the bad requests, the proxy still runs on its port and forwards.
    const shown = (await call('GET', `/proxies/${name}`)).json as { listen: string; enabled: boolean };
    expect(shown.enabled).toBe(true);
    expect((await receive(Number(shown.listen.split(':').pop()))).bytes.toString()).toBe('0123456789');
    expect(Object.keys((await call('GET', '/proxies')).json as object)).not.toContain('p1');
    expect(
      (await call('POST', `/proxies/${name}/toxics`, { type: 'latency', attributes: { latency: 5 } })).status,
    ).toBe(200);
    const dup = await call('POST', `/proxies/${name}/toxics`, {
      type: 'latency',
      attributes: { latency: 5 },
    });
    expect(dup.status).toBe(409);
    const listed = await call('GET', `/proxies/${name}/toxics`);
    expect(listed.json).toEqual([
      {
        name: 'latency_downstream',
        type: 'latency',
        stream: 'downstream',
        toxicity: 1,
        attributes: { latency: 5, jitter: 0 },
      },
    ]);
    expect((await call('DELETE', `/proxies/${name}/toxics/latency_downstream`)).status).toBe(204);
    expect((await call('DELETE', `/proxies/${name}`)).status).toBe(204);
    expect(await call('GET', '/version')).toEqual({ status: 200, json: { version: TOXIPROXY_API_VERSION } });
    expect((await call('GET', '/nowhere')).status).toBe(404);
  });
});

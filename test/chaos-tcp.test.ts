import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { chaos, type ChaosProxy } from 'keel/chaos';
import { isKeelError } from 'keel';
import { receive, startUpstream } from './chaos-support.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function setup(
  mode: Parameters<typeof startUpstream>[0],
): Promise<{ proxy: ChaosProxy; upstreamPort: number }> {
  const upstream = await startUpstream(mode);
  const proxy = await chaos.proxy({ upstream: `127.0.0.1:${upstream.port}` });
  cleanups.push(
    () => upstream.close(),
    () => proxy.close(),
  );
  return { proxy, upstreamPort: upstream.port };
}

describe('chaos TCP proxy', () => {
  it('forwards bytes both ways unchanged without toxics', async () => {
    const { proxy } = await setup({ echo: true });
    const data = randomBytes(256 * 1024);
    const got = await new Promise<Buffer>((resolve) => {
      const parts: Buffer[] = [];
      const s = net.connect(proxy.port, '127.0.0.1', () => s.write(data));
      s.on('data', (d: Buffer) => {
        parts.push(d);
        if (Buffer.concat(parts).length >= data.length) s.end();
      });
      s.on('close', () => resolve(Buffer.concat(parts)));
    });
    expect(got.equals(data)).toBe(true);
    expect(proxy.stats()).toEqual({
      bytesUpstream: data.length,
      bytesDownstream: data.length,
      connections: 1,
    });
  });

  it('latency delays the first byte by about the configured time', async () => {
    const { proxy, upstreamPort } = await setup({ payload: Buffer.from('hello') });
    const direct = await receive(upstreamPort);
    proxy.add({ type: 'latency', attributes: { latency: 150 } });
    const delayed = await receive(proxy.port);
    expect(delayed.bytes.toString()).toBe('hello');
    const added = delayed.firstByteMs - direct.firstByteMs;
    expect(added).toBeGreaterThanOrEqual(140);
    expect(added).toBeLessThan(400);
  });

  it('limit_data delivers exactly the byte limit, then closes', async () => {
    const payload = randomBytes(100_000);
    const { proxy } = await setup({ payload });
    proxy.add({ type: 'limit_data', attributes: { bytes: 12_345 } });
    const got = await receive(proxy.port);
    expect(got.bytes.length).toBe(12_345);
    expect(got.bytes.equals(payload.subarray(0, 12_345))).toBe(true);
  });

  it('reset_peer is seen as ECONNRESET by the client', async () => {
    const { proxy } = await setup({ echo: true });
    proxy.add({ type: 'reset_peer', attributes: { timeout: 50 } });
    const got = await receive(proxy.port, Buffer.from('ping'));
    expect(got.error?.code).toBe('ECONNRESET');
    expect(got.closedMs).toBeGreaterThanOrEqual(40);
  });

  it('bandwidth limits throughput to within 20% of the rate', async () => {
    const payload = randomBytes(200_000);
    const { proxy } = await setup({ payload });
    proxy.add({ type: 'bandwidth', attributes: { rate: 400 } }); // 400 KB/s → 0.5 s
    const got = await receive(proxy.port);
    expect(got.bytes.equals(payload)).toBe(true);
    // KB/s over the whole transfer, connect to close (the proxy paces in 100 ms steps).
    const rate = got.bytes.length / 1000 / (got.closedMs / 1000);
    console.log('bandwidth toxic: measured KB/s at rate 400 =', rate.toFixed(1));
    expect(rate).toBeGreaterThan(400 * 0.8);
    expect(rate).toBeLessThan(400 * 1.2);
  });

  it('timeout stops all data and closes after the timeout', async () => {
    const { proxy } = await setup({ payload: Buffer.from('never seen') });
    proxy.add({ type: 'timeout', attributes: { timeout: 120 } });
    const got = await receive(proxy.port);
    expect(got.bytes.length).toBe(0);
    expect(got.closedMs).toBeGreaterThanOrEqual(110);
  });

  it('timeout 0 holds the connection until the toxic is removed', async () => {
    let echoed!: () => void;
    const echoedBack = new Promise<void>((r) => (echoed = r));
    const { proxy } = await setup({ echo: true, onEcho: () => echoed() });
    proxy.add({ type: 'timeout', name: 'hold', attributes: { timeout: 0 } });
    const socket = net.connect(proxy.port, '127.0.0.1');
    const received: Buffer[] = [];
    let arrived = (): void => undefined;
    socket.on('data', (d: Buffer) => {
      received.push(d);
      arrived();
    });
    await new Promise((r) => socket.once('connect', r));
    socket.write('dropped');
    await echoedBack; // the echo is on its way back through the held downstream
    await new Promise((r) => setTimeout(r, 100));
    // An I/O poll runs before the next immediate: the proxy has read (and dropped) the echo.
    await new Promise((r) => setImmediate(r));
    expect(received.length).toBe(0);
    expect(socket.destroyed).toBe(false);
    proxy.remove('hold');
    const through = new Promise<void>((r) => {
      arrived = () => {
        if (Buffer.concat(received).length >= 'through'.length) r();
      };
    });
    socket.write('through');
    await through;
    expect(Buffer.concat(received).toString()).toBe('through');
    socket.destroy();
  });

  it('a reset_peer toxic removed before it fires leaves open connections alone', async () => {
    const { proxy } = await setup({ echo: true });
    proxy.add({ type: 'reset_peer', name: 'rst', attributes: { timeout: 80 } });
    const socket = net.connect(proxy.port, '127.0.0.1');
    const closed = new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      let error: NodeJS.ErrnoException | undefined;
      socket.on('error', (err) => (error = err));
      socket.on('close', () => resolve(error));
    });
    await new Promise((r) => socket.once('connect', r));
    expect(proxy.remove('rst')).toBe(true);
    await new Promise((r) => setTimeout(r, 150));
    expect(socket.destroyed).toBe(false);
    const echoed = new Promise<string>((resolve) =>
      socket.once('data', (d: Buffer) => resolve(d.toString())),
    );
    socket.write('still here');
    expect(await echoed).toBe('still here');
    socket.end();
    expect(await closed).toBeUndefined();
  });

  it('updating a timeout toxic counts its new time from the update', async () => {
    const { proxy } = await setup({ echo: true });
    proxy.add({ type: 'timeout', name: 't', attributes: { timeout: 100 } });
    const got = receive(proxy.port, Buffer.from('held'));
    await new Promise((r) => setTimeout(r, 50));
    proxy.update('t', { attributes: { timeout: 200 } }); // the old 100 ms no longer applies
    const result = await got;
    expect(result.bytes.length).toBe(0);
    expect(result.closedMs).toBeGreaterThanOrEqual(240);
    expect(proxy.toxic('t')?.attributes).toEqual({ timeout: 200 });
  });

  it('slicer cuts data into small chunks with delays', async () => {
    const payload = randomBytes(4000);
    const { proxy } = await setup({ payload });
    proxy.add({ type: 'slicer', attributes: { average_size: 100, size_variation: 20, delay: 2000 } });
    const got = await receive(proxy.port);
    expect(got.bytes.equals(payload)).toBe(true);
    expect(got.chunks).toBeGreaterThan(20);
  });

  it('slow_open holds the first byte after connect', async () => {
    const { proxy } = await setup({ payload: Buffer.from('x') });
    proxy.add({ type: 'slow_open', attributes: { delay: 150 } });
    const got = await receive(proxy.port);
    expect(got.firstByteMs).toBeGreaterThanOrEqual(140);
  });

  it('slow_close delays the close', async () => {
    const { proxy, upstreamPort } = await setup({ payload: Buffer.from('bye') });
    const direct = await receive(upstreamPort);
    proxy.add({ type: 'slow_close', attributes: { delay: 150 } });
    const got = await receive(proxy.port);
    expect(got.bytes.toString()).toBe('bye');
    expect(got.closedMs - direct.closedMs).toBeGreaterThanOrEqual(130);
  });

  it('toxicity 0 leaves connections alone; upstream toxics act on client → server bytes', async () => {
    const seen: Buffer[] = [];
    const sink = net.createServer((s) => {
      s.on('data', (d: Buffer) => seen.push(d));
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const proxy = await chaos.proxy({ upstream: `127.0.0.1:${(sink.address() as net.AddressInfo).port}` });
    cleanups.push(
      () => new Promise((r) => sink.close(() => r())),
      () => proxy.close(),
    );
    proxy.add({
      type: 'limit_data',
      name: 'never',
      stream: 'upstream',
      toxicity: 0,
      attributes: { bytes: 1 },
    });
    proxy.add({ type: 'limit_data', name: 'up', stream: 'upstream', attributes: { bytes: 3 } });
    await receive(proxy.port, Buffer.from('abcdef'));
    expect(Buffer.concat(seen).toString()).toBe('abc');
  });

  it('disable refuses and cuts connections; enable accepts again on the same port', async () => {
    const { proxy } = await setup({ echo: true });
    const port = proxy.port;
    const open = net.connect(port, '127.0.0.1');
    await new Promise((r) => open.once('connect', r));
    const closed = new Promise((r) => open.once('close', r));
    await proxy.disable();
    await closed;
    const refused = await receive(port);
    expect(refused.error?.code).toBe('ECONNREFUSED');
    await proxy.enable();
    expect(proxy.port).toBe(port);
    const ok = await receive(port, Buffer.from('again'), true);
    expect(ok.bytes.toString()).toBe('again');
  }, 10_000);

  it('rejects bad toxics and addresses with clear errors', async () => {
    const { proxy } = await setup({ echo: true });
    const attempts: [() => unknown, RegExp][] = [
      [() => proxy.add({ type: 'explode' as never }), /unknown toxic type "explode"/],
      [() => proxy.add({ type: 'latency', attributes: {} }), /needs attributes.latency/],
      [() => proxy.add({ type: 'latency', attributes: { latency: -5 } }), /non-negative number/],
      [() => proxy.add({ type: 'latency', toxicity: 2, attributes: { latency: 1 } }), /toxicity/],
      [
        () => proxy.add({ type: 'latency', stream: 'sideways' as never, attributes: { latency: 1 } }),
        /stream/,
      ],
    ];
    for (const [attempt, message] of attempts) {
      let caught: unknown;
      try {
        attempt();
      } catch (err) {
        caught = err;
      }
      expect(isKeelError(caught) && caught.code).toBe('INVALID_INPUT');
      expect((caught as Error).message).toMatch(message);
    }
    proxy.add({ type: 'latency', attributes: { latency: 1 } });
    expect(() => proxy.add({ type: 'latency', attributes: { latency: 1 } })).toThrow(/already exists/);
    await expect(chaos.proxy({ upstream: 'no-such-host.invalid:80' })).rejects.toThrow(/does not resolve/);
    await expect(chaos.proxy({ upstream: '127.0.0.1:99999' })).rejects.toThrow(/port of 1-65535/);
    await expect(chaos.proxy({ upstream: `127.0.0.1:1`, listen: proxy.listen })).rejects.toMatchObject({
      code: 'CONFLICT',
    });
  });
});

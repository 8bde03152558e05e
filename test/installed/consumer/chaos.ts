/** `keel/chaos` as installed: bytes through the TCP fault proxy, then a disabled proxy refusing. */
import assert from 'node:assert/strict';
import net from 'node:net';
import { chaos, faultyFs } from 'keel/chaos';

const echo = net.createServer((socket) => socket.pipe(socket));
await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
const port = (echo.address() as net.AddressInfo).port;
const proxy = await chaos.proxy({ upstream: `127.0.0.1:${port}` });
try {
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(proxy.port, '127.0.0.1', () => socket.end('hello'));
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString()));
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
  });
  assert.equal(answer, 'hello');
  await proxy.disable();
  const refused = await new Promise<string>((resolve) => {
    const socket = net.connect(proxy.port, '127.0.0.1');
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
  });
  assert.equal(refused, 'ECONNREFUSED');
} finally {
  await proxy.close();
  await new Promise<void>((resolve) => echo.close(() => resolve()));
}

const fs = faultyFs({ faults: [{ code: 'ENOSPC', ops: ['writeFile'] }] });
await assert.rejects(fs.writeFile('/nonexistent-dir/x', 'x'), { code: 'ENOSPC' });
console.log('keel/chaos: ok');

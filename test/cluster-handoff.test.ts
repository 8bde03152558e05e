import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';

/*
 * node:cluster's round robin: the primary accepts a connection, hands it to a worker and closes
 * its own copy only once the worker acknowledges it. A worker killed in between left the
 * connection open for ever (a client of `keel gateway --workers` that never got an answer).
 */

let primary: ChildProcess | undefined;
afterEach(() => {
  primary?.stdin?.end();
  primary?.kill('SIGKILL');
  primary = undefined;
});

async function start(
  guard: boolean,
): Promise<{ port: number; pids: number[]; lines: AsyncIterator<string> }> {
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(import.meta.dirname, 'fixtures/cluster-handoff.ts'),
      guard ? 'guard' : 'plain',
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  primary = proc;
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
  const first = await lines.next();
  return { ...(JSON.parse(first.value as string) as { port: number; pids: number[] }), lines };
}

/** Sends one HTTP request on a new connection; resolves with what happened within `waitMs`. */
function request(port: number, waitMs: number): Promise<'answered' | 'closed' | 'no answer'> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('no answer');
    }, waitMs);
    socket.on('data', (d: Buffer) => (data += d.toString()));
    const done = (): void => {
      clearTimeout(timer);
      resolve(data.startsWith('HTTP/1.1 200') ? 'answered' : 'closed');
    };
    socket.on('close', done);
    socket.on('error', () => undefined);
  });
}

async function connectionHandedToADyingWorker(guard: boolean): Promise<string> {
  const { port, pids, lines } = await start(guard);
  const blocked = pids[0] as number;
  primary?.stdin?.write(`block ${blocked}\n`);
  expect((await lines.next()).value).toBe(`blocked ${blocked}`);
  // Round robin: of two new connections, one goes to the blocked worker (which never takes it)
  // and one to the other, which answers.
  const outcomes = [request(port, 60_000), request(port, 60_000)];
  const answered = await Promise.race(outcomes);
  expect(answered).toBe('answered');
  await new Promise((r) => setTimeout(r, 300));
  process.kill(blocked, 'SIGKILL');
  const stuck = await Promise.race([
    Promise.all(outcomes).then((all) => all.sort().join(',')),
    new Promise<string>((r) => setTimeout(() => r('still waiting'), 3_000)),
  ]);
  expect(await request(port, 5_000)).toBe('answered'); // the other worker serves on
  return stuck;
}

describe('a connection handed to a worker that dies before taking it', () => {
  it('is closed once the worker exits, so its client sees an error instead of waiting for ever', async () => {
    expect(await connectionHandedToADyingWorker(true)).toBe('answered,closed');
  }, 30_000);

  it('is left open by node:cluster alone (what the guard is for)', async () => {
    expect(await connectionHandedToADyingWorker(false)).toBe('still waiting');
  }, 30_000);
});

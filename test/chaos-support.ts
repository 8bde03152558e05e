import net from 'node:net';

/**
 * A TCP server for chaos tests: echoes (calling `onEcho` with each chunk once its echo is written),
 * or sends `payload` on connect and closes.
 */
export async function startUpstream(
  mode: { echo: true; onEcho?: (chunk: Buffer) => void } | { payload: Buffer },
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    if ('echo' in mode) {
      socket.pipe(socket);
      // Listens after the pipe, so the chunk has been written back when this runs.
      const { onEcho } = mode;
      if (onEcho) socket.on('data', onEcho);
    } else socket.end(mode.payload);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface Received {
  bytes: Buffer;
  chunks: number;
  firstByteMs: number;
  closedMs: number;
  error: NodeJS.ErrnoException | undefined;
}

/** Connects to `port`, optionally writes `send` (then half-closes when `end`), and collects everything until the socket closes. */
export function receive(port: number, send?: Buffer, end = false): Promise<Received> {
  return new Promise((resolve) => {
    const started = performance.now();
    const parts: Buffer[] = [];
    let firstByteMs = -1;
    let error: NodeJS.ErrnoException | undefined;
    const socket = net.connect(port, '127.0.0.1', () => {
      if (send) socket.write(send);
      if (end) socket.end();
    });
    socket.on('data', (d: Buffer) => {
      if (firstByteMs < 0) firstByteMs = performance.now() - started;
      parts.push(d);
    });
    socket.on('error', (err) => {
      error = err;
    });
    socket.on('close', () => {
      resolve({
        bytes: Buffer.concat(parts),
        chunks: parts.length,
        firstByteMs,
        closedMs: performance.now() - started,
        error,
      });
    });
  });
}

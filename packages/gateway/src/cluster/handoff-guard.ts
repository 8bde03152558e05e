import type { Worker } from 'node:cluster';

/** A connection handle the primary accepted (a libuv TCP handle), as node:cluster passes it on. */
interface ConnectionHandle {
  close(): void;
}

/** node:cluster's own message handing a worker a connection (round-robin scheduling). */
function newConnSeq(message: unknown, handle: unknown): number | undefined {
  if (typeof message !== 'object' || message === null) return undefined;
  const m = message as { cmd?: unknown; act?: unknown; seq?: unknown };
  if (m.cmd !== 'NODE_CLUSTER' || m.act !== 'newconn' || typeof m.seq !== 'number') return undefined;
  if (typeof (handle as Partial<ConnectionHandle> | undefined)?.close !== 'function') return undefined;
  return m.seq;
}

/**
 * Closes the connections the primary handed to `worker` that it never took, once it exits.
 *
 * With round-robin scheduling (node:cluster's default on Linux) the primary accepts each
 * connection, sends it to a worker over the IPC channel and closes its own copy only when the
 * worker acknowledges it. A worker that dies in between never does: node keeps that connection
 * open in the primary for ever, and its client waits for an answer that cannot come (the request
 * that hung when a worker was SIGKILLed under load). This notes each connection sent to the
 * worker until the worker acknowledged it, and closes those left when it exits, so their clients
 * see the connection close (an error they can retry) instead of waiting.
 *
 * It reads node:cluster's internal messages (`{ cmd: 'NODE_CLUSTER', act: 'newconn', seq }` out,
 * `{ ack: seq }` back), unchanged since node 0.12; when they change, it notes nothing and the
 * behaviour is node's own.
 */
export function closeUntakenConnectionsOnExit(worker: Worker): void {
  const proc = worker.process;
  const pending = new Map<number, ConnectionHandle>();
  const send = proc.send.bind(proc) as (...args: unknown[]) => boolean;
  proc.send = (...args: unknown[]): boolean => {
    const seq = newConnSeq(args[0], args[1]);
    if (seq !== undefined) pending.set(seq, args[1] as ConnectionHandle);
    return send(...args);
  };
  proc.on('internalMessage', (m: unknown) => {
    const ack = (m as { cmd?: unknown; ack?: unknown } | null)?.ack;
    if ((m as { cmd?: unknown } | null)?.cmd === 'NODE_CLUSTER' && typeof ack === 'number')
      pending.delete(ack);
  });
  proc.once('exit', () => {
    for (const handle of pending.values()) {
      try {
        handle.close();
      } catch {
        // Already closed: nothing is left open.
      }
    }
    pending.clear();
  });
}

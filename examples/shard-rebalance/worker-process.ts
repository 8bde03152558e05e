import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Nodes } from './cluster.js';

/** A {@link ../worker.ts} process and what it printed so far. */
export interface WorkerProcess {
  child: ChildProcess;
  output: { text: string };
  /** Resolves with the exit code once the process ended. */
  exited: Promise<number | null>;
}

/**
 * Starts `worker.ts` on the group `id` in the store at `store`; with `hangAt`, its operation of
 * that sequence number hangs until its signal aborts. Its standard error goes to this process's.
 */
export function startWorker(store: string, id: string, nodes: Nodes, hangAt?: number): WorkerProcess {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(import.meta.dirname, 'worker.ts'),
      store,
      id,
      JSON.stringify(nodes),
      ...(hangAt === undefined ? [] : [String(hangAt)]),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const output = { text: '' };
  child.stdout?.on('data', (chunk: Buffer) => {
    output.text += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { child, output, exited };
}

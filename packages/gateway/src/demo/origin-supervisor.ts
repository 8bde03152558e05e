import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exponential, keelError, type Backoff } from 'keel';

/** An origin process kept running: started again on the same port whenever it dies. */
export interface SupervisedOrigin {
  /** `http://127.0.0.1:<port>`, the same across restarts. */
  url: string;
  /** The process serving now; undefined while it is being started again. */
  pid(): number | undefined;
  /** Stops supervising and ends the process (it removes its directory as it goes). */
  close(): Promise<void>;
}

/** The child's entry: `.ts` beside this file when run from source (tsx), `.js` in dist/. */
const ENTRY = fileURLToPath(
  new URL(`./origin-process${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url),
);

/** Between restarts: 100 ms doubling to 5 s, back to 100 ms once a process listens again. */
const RESTART_BACKOFF: Backoff = exponential({ initialMs: 100, maxMs: 5_000, jitter: 'equal' });

/** How long a process may take to listen (loading s3rver through tsx on a busy machine included). */
const START_TIMEOUT_MS = 30_000;

/** How long a process may take to end after its parent disconnected, before it is killed. */
const STOP_TIMEOUT_MS = 5_000;

/**
 * Node's flags for the child: this process's own, so it runs with the same loader (tsx from
 * source; none from dist/). A parent that loaded this file through another loader (a test runner)
 * gets tsx added for the `.ts` entry.
 */
function childExecArgv(): string[] {
  const own = process.execArgv;
  return ENTRY.endsWith('.ts') && !own.some((a) => a.includes('tsx')) ? [...own, '--import', 'tsx'] : own;
}

function startProcess(directory: string, port: number): ChildProcess {
  return fork(ENTRY, [directory, String(port)], {
    execArgv: childExecArgv(),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

/**
 * Resolves with the port `child` listens on; rejects if it ends (or cannot start) before. A child
 * that has not listened within {@link START_TIMEOUT_MS} is killed.
 */
function listening(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, START_TIMEOUT_MS);
    const done = (): void => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    const onMessage = (m: unknown): void => {
      const port = (m as { listening?: unknown } | null)?.listening;
      if (typeof port !== 'number') return;
      done();
      resolve(port);
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      done();
      reject(
        keelError(
          'SERVICE_UNAVAILABLE',
          timedOut
            ? `the demo origin (pid ${child.pid ?? '?'}) did not listen within ${START_TIMEOUT_MS / 1000} s and was killed`
            : `the demo origin (pid ${child.pid ?? '?'}) ${ended(code, signal)} before it listened`,
        ),
      );
    };
    const onError = (err: Error): void => {
      done();
      reject(err);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

function ended(code: number | null, signal: NodeJS.Signals | null): string {
  return code !== null ? `exited with code ${code}` : `was killed by ${signal ?? 'a signal'}`;
}

/**
 * Runs the demo origin (origin-process.ts) in a child process storing into `directory`, and
 * starts it again on the same port whenever it dies, after a backoff (see
 * {@link RESTART_BACKOFF}), so the gateway's upstream stays valid and a client request that
 * crashes s3rver costs that request only.
 * @param log told of every restart.
 * @throws when the first process does not listen (its own message is on stderr).
 */
export async function superviseOrigin(
  directory: string,
  log: (message: string) => void,
): Promise<SupervisedOrigin> {
  const first = startProcess(directory, 0);
  const port = await listening(first).catch((err: unknown) => {
    first.kill('SIGKILL');
    throw err;
  });
  let current: ChildProcess | undefined;
  let closing: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let backoff = RESTART_BACKOFF;

  const run = (c: ChildProcess): void => {
    current = c;
    let lost = false;
    const onLost = (why: string): void => {
      if (lost) return;
      lost = true;
      if (current === c) current = undefined;
      if (closing) return;
      const step = backoff.next();
      backoff = step.next;
      log(
        `the demo origin (pid ${c.pid ?? '?'}) ${why}; starting it again on port ${port} in ${step.delayMs} ms`,
      );
      timer = setTimeout(restart, step.delayMs);
    };
    c.once('exit', (code, signal) => onLost(ended(code, signal)));
    c.once('error', (err) => onLost(`failed: ${err.message}`));
  };
  const restart = (): void => {
    timer = undefined;
    if (closing) return;
    const c = startProcess(directory, port);
    run(c);
    listening(c).then(
      () => {
        backoff = RESTART_BACKOFF;
        log(`the demo origin is back on port ${port} (pid ${c.pid ?? '?'})`);
      },
      () => undefined, // its end is what run() acts on
    );
  };
  run(first);

  const stop = async (): Promise<void> => {
    clearTimeout(timer);
    const c = current;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    const kill = setTimeout(() => c.kill('SIGKILL'), STOP_TIMEOUT_MS);
    if (c.connected) c.disconnect();
    else c.kill('SIGKILL');
    await exited;
    clearTimeout(kill);
  };
  return {
    url: `http://127.0.0.1:${port}`,
    pid: () => current?.pid,
    close: () => (closing ??= stop()),
  };
}

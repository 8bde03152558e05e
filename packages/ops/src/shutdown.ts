import type { Server, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Clock } from 'keel';
import { systemClock } from 'keel';
import type { HealthRegistry } from './health.js';

/** Where signals come from (`process` by default; a test passes an EventEmitter). */
export interface SignalSource {
  on(signal: NodeJS.Signals, listener: () => void): unknown;
  off(signal: NodeJS.Signals, listener: () => void): unknown;
}

/** Options of {@link GracefulShutdown}. */
export interface GracefulShutdownOptions {
  /** Readiness is failed here at once. */
  health?: HealthRegistry;
  /** Wait after failing readiness so load balancers stop sending traffic. Default 5000 ms. */
  delayMs?: number;
  /** Time in-flight requests get to finish; then their connections are closed. Default 30000 ms. */
  drainTimeoutMs?: number;
  /** Default timeout of each shutdown hook. Default 10000 ms. */
  hookTimeoutMs?: number;
  /** Default `['SIGTERM', 'SIGINT']`. */
  signals?: readonly NodeJS.Signals[];
  signalSource?: SignalSource;
  /** Default `process.exit`. */
  exit?: (code: number) => void;
  clock?: Clock;
  /**
   * Told about each step (default: nothing), with its level: `warn` for what went wrong (a second
   * signal, a drain that timed out, a failed hook, a shutdown that exits 1), `info` for the steps
   * of a normal shutdown.
   */
  log?: (message: string, fields: Record<string, unknown>, level: 'info' | 'warn') => void;
}

/** How a shutdown ended. */
export interface ShutdownResult {
  exitCode: 0 | 1;
  drainTimedOut: boolean;
  failedHooks: string[];
}

interface Hook {
  name: string;
  fn: () => Promise<void> | void;
  timeoutMs: number;
}

interface Tracked {
  server: Server;
  sockets: Map<Socket, number>;
}

function positive(name: string, v: number | undefined, def: number): number {
  const r = v ?? def;
  if (!Number.isFinite(r) || r < 0)
    throw new Error(`shutdown.${name}: must be a number >= 0, got ${String(v)}`);
  return r;
}

/**
 * Graceful shutdown: on SIGTERM/SIGINT readiness fails at once; after `delayMs` the servers stop
 * accepting; idle keep-alive connections close at once and busy ones as soon as their request
 * ends, the rest after `drainTimeoutMs`; then the hooks run in reverse order of registration,
 * each with its own timeout; the process exits 0, or 1 if a hook failed or the drain timed out.
 * A second signal exits (1) at once.
 */
export class GracefulShutdown {
  private readonly tracked: Tracked[] = [];
  private readonly hooks: Hook[] = [];
  private readonly clock: Clock;
  private readonly delayMs: number;
  private readonly drainTimeoutMs: number;
  private readonly hookTimeoutMs: number;
  private readonly exit: (code: number) => void;
  private running: Promise<ShutdownResult> | undefined;
  private uninstall: (() => void) | undefined;
  private draining = false;

  constructor(private readonly options: GracefulShutdownOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.delayMs = positive('delayMs', options.delayMs, 5000);
    this.drainTimeoutMs = positive('drainTimeoutMs', options.drainTimeoutMs, 30_000);
    this.hookTimeoutMs = positive('hookTimeoutMs', options.hookTimeoutMs, 10_000);
    this.exit = options.exit ?? ((code) => process.exit(code));
  }

  /** True once a shutdown started. */
  get shuttingDown(): boolean {
    return this.running !== undefined;
  }

  /** Tracks a server's connections and requests so it can be drained. Call before it listens. */
  addServer(server: Server): void {
    const t: Tracked = { server, sockets: new Map() };
    server.on('connection', (socket: Socket) => {
      t.sockets.set(socket, 0);
      socket.once('close', () => t.sockets.delete(socket));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const socket = req.socket;
      t.sockets.set(socket, (t.sockets.get(socket) ?? 0) + 1);
      if (this.draining) res.setHeader('connection', 'close');
      res.once('close', () => {
        const left = (t.sockets.get(socket) ?? 1) - 1;
        if (!t.sockets.has(socket)) return;
        t.sockets.set(socket, left);
        if (this.draining && left === 0) socket.destroySoon();
      });
    });
    this.tracked.push(t);
  }

  /** Registers a hook run at shutdown (reverse order of registration). Returns a remover. */
  addHook(name: string, fn: () => Promise<void> | void, options: { timeoutMs?: number } = {}): () => void {
    const hook: Hook = {
      name,
      fn,
      timeoutMs: positive(`hooks.${name}.timeoutMs`, options.timeoutMs, this.hookTimeoutMs),
    };
    this.hooks.push(hook);
    return () => {
      const i = this.hooks.indexOf(hook);
      if (i >= 0) this.hooks.splice(i, 1);
    };
  }

  /** Listens for the signals. Returns a function that stops listening. */
  install(): () => void {
    const source = this.options.signalSource ?? process;
    const signals = this.options.signals ?? ['SIGTERM', 'SIGINT'];
    const onSignal = (): void => {
      if (this.running) {
        this.log('warn', 'second signal: exiting at once');
        this.exit(1);
        return;
      }
      void this.shutdown('signal');
    };
    for (const s of signals) source.on(s, onSignal);
    this.uninstall = () => {
      for (const s of signals) source.off(s, onSignal);
    };
    return this.uninstall;
  }

  /** Runs the shutdown sequence (once; later calls share it) and calls `exit` with the code. */
  shutdown(reason = 'requested'): Promise<ShutdownResult> {
    this.running ??= this.sequence(reason);
    return this.running;
  }

  private log(level: 'info' | 'warn', message: string, fields: Record<string, unknown> = {}): void {
    this.options.log?.(message, fields, level);
  }

  private async sequence(reason: string): Promise<ShutdownResult> {
    this.log('info', 'shutdown started', { reason });
    this.options.health?.markShuttingDown();
    if (this.delayMs > 0) await this.clock.sleep(this.delayMs);
    const drainTimedOut = !(await this.drain());
    const failedHooks: string[] = [];
    for (const hook of [...this.hooks].reverse()) {
      const ok = await this.runHook(hook);
      if (!ok) failedHooks.push(hook.name);
    }
    const exitCode = drainTimedOut || failedHooks.length > 0 ? 1 : 0;
    this.log(exitCode === 0 ? 'info' : 'warn', 'shutdown finished', { exitCode, drainTimedOut, failedHooks });
    this.uninstall?.();
    this.exit(exitCode);
    return { exitCode, drainTimedOut, failedHooks };
  }

  /** Resolves true when every connection closed in time. */
  private async drain(): Promise<boolean> {
    this.draining = true;
    if (this.tracked.length === 0) return true;
    const closed = Promise.all(
      this.tracked.map(
        (t) =>
          new Promise<void>((resolve) => {
            if (!t.server.listening) {
              resolve();
              return;
            }
            t.server.close(() => {
              resolve();
            });
            for (const [socket, active] of t.sockets) if (active === 0) socket.destroy();
          }),
      ),
    ).then(() => true);
    let timer: { cancel(): void } | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = this.clock.setTimer(this.drainTimeoutMs, () => {
        resolve(false);
      });
    });
    const ok = await Promise.race([closed, timedOut]);
    timer?.cancel();
    if (!ok) {
      this.log('warn', 'drain timed out: closing remaining connections', {
        connections: this.tracked.reduce((n, t) => n + t.sockets.size, 0),
      });
      for (const t of this.tracked) for (const socket of t.sockets.keys()) socket.destroy();
    }
    return ok;
  }

  private async runHook(hook: Hook): Promise<boolean> {
    let timer: { cancel(): void } | undefined;
    const timedOut = new Promise<Error>((resolve) => {
      timer = this.clock.setTimer(hook.timeoutMs, () => {
        resolve(new Error(`timed out after ${String(hook.timeoutMs)} ms`));
      });
    });
    try {
      const outcome = await Promise.race([
        Promise.resolve()
          .then(hook.fn)
          .then(() => undefined),
        timedOut,
      ]);
      if (outcome) {
        this.log('warn', 'shutdown hook failed', { hook: hook.name, error: outcome.message });
        return false;
      }
      return true;
    } catch (err) {
      this.log('warn', 'shutdown hook failed', {
        hook: hook.name,
        error: err instanceof Error ? err.message : String(err),
      });
      return false;
    } finally {
      timer?.cancel();
    }
  }
}

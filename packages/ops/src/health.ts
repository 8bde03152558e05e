import type { Clock } from 'keel';
import { systemClock, redactString } from 'keel';

/** A check's or a report's status (draft-inadarei-api-health-check). */
export type HealthStatus = 'pass' | 'warn' | 'fail';

/** Which question a check answers: can the process make progress, should it get traffic, has it started. */
export type Probe = 'liveness' | 'readiness' | 'startup';

/** What a check function returns; a bare status is accepted too. Throwing means `fail`. */
export interface CheckOutcome {
  status: HealthStatus;
  observedValue?: unknown;
  observedUnit?: string;
  /** Why it is not `pass` (dropped when the status is `pass`). */
  output?: string;
}

/** A health check. */
export interface HealthCheck {
  /** Key in the report, `component:measurement` (e.g. `postgres:connections`). */
  name: string;
  /** e.g. `datastore`, `system`, `component`. Default `component`. */
  componentType?: string;
  /** A failing critical check fails the report; a non-critical one only makes it `warn`. Default true. */
  critical?: boolean;
  /** Time after which a running check counts as failed. Default 5000 ms. */
  timeoutMs?: number;
  /** Run in the background every `intervalMs` and answer from the last result; absent: run on demand. */
  intervalMs?: number;
  /** Probes the check belongs to. Default `['readiness']`. */
  probes?: readonly Probe[];
  /** The check itself; `signal` aborts at the timeout. */
  run(signal: AbortSignal): Promise<CheckOutcome | HealthStatus> | CheckOutcome | HealthStatus;
}

/** One entry of a report's `checks` object. */
export interface CheckEntry {
  componentType: string;
  observedValue?: unknown;
  observedUnit?: string;
  status: HealthStatus;
  /** ISO-8601 time the result was taken. */
  time: string;
  output?: string;
}

/** An `application/health+json` document. */
export interface HealthReport {
  status: HealthStatus;
  serviceId?: string;
  version?: string;
  description?: string;
  checks: Record<string, CheckEntry[]>;
}

/** Media type of health answers. */
export const HEALTH_CONTENT_TYPE = 'application/health+json';

/** Options of {@link HealthRegistry}. */
export interface HealthRegistryOptions {
  clock?: Clock;
  serviceId?: string;
  version?: string;
  description?: string;
}

interface Entry {
  check: HealthCheck;
  running: Promise<CheckEntry> | undefined;
  last: CheckEntry | undefined;
  timer: { cancel(): void } | undefined;
}

/** HTTP status for a report: 200 for pass and warn, 503 for fail. */
export function httpStatusOfHealth(status: HealthStatus): number {
  return status === 'fail' ? 503 : 200;
}

const RANK: Record<HealthStatus, number> = { pass: 0, warn: 1, fail: 2 };

/**
 * The registry of health checks behind `/livez`, `/readyz` and `/healthz`. A check runs with its
 * own timeout and never piles up: while one run is in flight, callers share it instead of starting
 * another. Readiness also fails while the process is starting or shutting down.
 */
export class HealthRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<(name: string, entry: CheckEntry) => void>();
  private readonly clock: Clock;
  private started = false;
  private shuttingDown = false;
  private polling = false;

  constructor(private readonly options: HealthRegistryOptions = {}) {
    this.clock = options.clock ?? systemClock;
  }

  /** Adds a check; returns a function that removes it. Throws on a duplicate or malformed name. */
  register(check: HealthCheck): () => void {
    if (!/^[^:\s]+:[^:\s]+$/.test(check.name))
      throw new Error(`health check name "${check.name}": must be "component:measurement"`);
    if (this.entries.has(check.name)) throw new Error(`health check "${check.name}" is already registered`);
    if (check.timeoutMs !== undefined && !(check.timeoutMs > 0))
      throw new Error(`health check ${check.name}: timeoutMs must be > 0`);
    const entry: Entry = { check, running: undefined, last: undefined, timer: undefined };
    this.entries.set(check.name, entry);
    if (this.polling) this.schedule(entry, 0);
    return () => {
      entry.timer?.cancel();
      this.entries.delete(check.name);
    };
  }

  /** Calls `listener` with every check result (auto-recovery and alerts listen here). */
  onResult(listener: (name: string, entry: CheckEntry) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Marks start-up done: the startup probe passes from now on. */
  markStarted(): void {
    this.started = true;
  }

  /** Makes readiness fail at once (graceful shutdown calls this first). */
  markShuttingDown(): void {
    this.shuttingDown = true;
  }

  /** True once {@link markShuttingDown} was called. */
  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** Starts the background loops of checks that have an `intervalMs`. */
  start(): void {
    if (this.polling) return;
    this.polling = true;
    for (const entry of this.entries.values()) this.schedule(entry, 0);
  }

  /** Stops the background loops. */
  stop(): void {
    this.polling = false;
    for (const entry of this.entries.values()) {
      entry.timer?.cancel();
      entry.timer = undefined;
    }
  }

  /** The last result of each check (nothing runs). */
  latest(): Record<string, CheckEntry | undefined> {
    const out: Record<string, CheckEntry | undefined> = {};
    for (const [name, entry] of this.entries) out[name] = entry.last;
    return out;
  }

  /** Runs one check now (or joins its run in flight). */
  runCheck(name: string): Promise<CheckEntry> {
    const entry = this.entries.get(name);
    if (!entry) return Promise.reject(new Error(`no health check named "${name}"`));
    return this.run(entry);
  }

  /**
   * Answers a probe (`all` for `/healthz`). On-demand checks run now; interval checks answer from
   * their last result (or run once if they have none yet).
   */
  async report(probe: Probe | 'all' = 'all'): Promise<HealthReport> {
    const selected = [...this.entries.values()].filter(
      (e) => probe === 'all' || (e.check.probes ?? ['readiness']).includes(probe),
    );
    const results = await Promise.all(
      selected.map((e) =>
        e.check.intervalMs !== undefined && e.last ? Promise.resolve(e.last) : this.run(e),
      ),
    );
    let status: HealthStatus = 'pass';
    const checks: Record<string, CheckEntry[]> = {};
    results.forEach((result, i) => {
      const check = (selected[i] as Entry).check;
      (checks[check.name] ??= []).push(result);
      const effective: HealthStatus =
        result.status === 'fail' && check.critical === false ? 'warn' : result.status;
      if (RANK[effective] > RANK[status]) status = effective;
    });
    const time = new Date(this.clock.now()).toISOString();
    if ((probe === 'readiness' || probe === 'all') && this.shuttingDown) {
      status = 'fail';
      checks['process:shutdown'] = [
        { componentType: 'system', status: 'fail', time, output: 'shutting down' },
      ];
    }
    if ((probe === 'readiness' || probe === 'startup') && !this.started) {
      status = 'fail';
      checks['process:startup'] = [{ componentType: 'system', status: 'fail', time, output: 'starting' }];
    }
    const report: HealthReport = { status, checks };
    if (this.options.serviceId !== undefined) report.serviceId = this.options.serviceId;
    if (this.options.version !== undefined) report.version = this.options.version;
    if (this.options.description !== undefined) report.description = this.options.description;
    return report;
  }

  private schedule(entry: Entry, delayMs: number): void {
    const interval = entry.check.intervalMs;
    if (interval === undefined || !this.polling) return;
    entry.timer = this.clock.setTimer(delayMs, () => {
      entry.timer = undefined;
      void this.run(entry).finally(() => {
        if (this.entries.get(entry.check.name) === entry) this.schedule(entry, interval);
      });
    });
  }

  private run(entry: Entry): Promise<CheckEntry> {
    if (entry.running) return entry.running;
    const running = this.execute(entry.check).then((result) => {
      entry.last = result;
      entry.running = undefined;
      for (const listener of this.listeners) {
        try {
          listener(entry.check.name, result);
        } catch {
          // A listener's failure must not change the health answer.
        }
      }
      return result;
    });
    entry.running = running;
    return running;
  }

  private async execute(check: HealthCheck): Promise<CheckEntry> {
    const timeoutMs = check.timeoutMs ?? 5000;
    const controller = new AbortController();
    let timer: { cancel(): void } | undefined;
    const timedOut = new Promise<CheckOutcome>((resolve) => {
      timer = this.clock.setTimer(timeoutMs, () => {
        controller.abort(new Error(`timed out after ${String(timeoutMs)} ms`));
        resolve({ status: 'fail', output: `check timed out after ${String(timeoutMs)} ms` });
      });
    });
    let outcome: CheckOutcome;
    try {
      const ran = Promise.resolve()
        .then(() => check.run(controller.signal))
        .then((r): CheckOutcome => (typeof r === 'string' ? { status: r } : r));
      outcome = await Promise.race([ran, timedOut]);
    } catch (err) {
      outcome = { status: 'fail', output: err instanceof Error ? err.message : String(err) };
    } finally {
      timer?.cancel();
    }
    const entry: CheckEntry = {
      componentType: check.componentType ?? 'component',
      status: outcome.status,
      time: new Date(this.clock.now()).toISOString(),
    };
    if (outcome.observedValue !== undefined) entry.observedValue = outcome.observedValue;
    if (outcome.observedUnit !== undefined) entry.observedUnit = outcome.observedUnit;
    if (outcome.status !== 'pass' && outcome.output !== undefined)
      entry.output = redactString(outcome.output);
    return entry;
  }
}

import type { AdminCaller } from '../admin-server.js';
import { actionParams, sendFailure, sendJson } from './http-json.js';
import { RateMeter } from './rates.js';
import type { DashboardPanel, DashboardRow, DashboardView } from './view.js';

/** What the queue view reads of a queue: @keel/queue's `Queue` has it (ops does not import it). */
export interface DashboardQueue {
  stats(): Promise<{
    pending: number;
    active: number;
    dead: number;
    oldestPendingAgeMs: number | null;
    paused: boolean;
    completedTotal: number;
    failedTotal: number;
    deadLetteredTotal: number;
    spooled: number;
  }>;
  list(state: 'pending', limit: number): Promise<readonly { partitionKey: string | null }[]>;
  deadLetters(limit: number): Promise<
    readonly {
      id: number;
      partitionKey: string | null;
      attempts: number;
      finishedAt: number | null;
      errors: readonly unknown[];
    }[]
  >;
  redrive(ids?: readonly number[]): Promise<number>;
  readonly storeAvailable: boolean;
}

/** Options of {@link queueView}. */
export interface QueueViewOptions {
  /** The queue's name on the page and in its route (`a-z 0-9 -`, default `queue`). */
  name?: string;
  /** Pending items read to count the depth per partition (default 1000). */
  scanItems?: number;
  /** Dead letters listed (default 20). */
  deadLetters?: number;
  /** Told about each redrive (who asked, how many): e.g. your logger. */
  log?: (message: string, fields: Record<string, unknown>) => void;
}

/** The last error of a dead letter as a line of text. */
function lastError(errors: readonly unknown[]): string {
  const e = errors[errors.length - 1];
  if (e === undefined) return '—';
  if (typeof e === 'string') return e;
  if (typeof e === 'object' && e !== null) {
    const o = e as { code?: unknown; message?: unknown };
    const msg = typeof o.message === 'string' ? o.message : JSON.stringify(e);
    return typeof o.code === 'string' ? `${o.code}: ${msg}` : msg;
  }
  return JSON.stringify(e);
}

/**
 * The dashboard view of a persistent queue: depth, active, dead letters, oldest item's age,
 * throughput (completed, failed, dead-lettered per second), the depth per partition (of the first
 * `scanItems` pending items), the dead letters with their last error; actions: redrive all, or
 * one. Its route `POST /queues/<name>/redrive` (`?id=` for one) exists without the page.
 */
export function queueView(queue: DashboardQueue, options: QueueViewOptions = {}): DashboardView {
  const name = options.name ?? 'queue';
  if (!/^[a-z0-9-]{1,30}$/.test(name)) throw new Error(`queueView.name: "${name}" must be 1-30 of a-z 0-9 -`);
  const scan = options.scanItems ?? 1000;
  const shown = options.deadLetters ?? 20;
  const route = `/queues/${name}/redrive`;
  const rates = new RateMeter();

  const redrive = async (
    req: Parameters<NonNullable<DashboardView['routes']>[number]['handler']>[0],
    res: Parameters<NonNullable<DashboardView['routes']>[number]['handler']>[1],
    caller: AdminCaller,
  ): Promise<void> => {
    const params = actionParams(req, res);
    if (!params) return;
    const idText = params.get('id');
    const id = idText === null ? undefined : Number(idText);
    if (id !== undefined && !(Number.isSafeInteger(id) && id > 0)) {
      sendJson(res, 400, {
        error: `id: "${(idText ?? '').slice(0, 40)}" is not a dead letter's id (a positive integer)`,
      });
      return;
    }
    try {
      const moved = await queue.redrive(id === undefined ? undefined : [id]);
      options.log?.(`queue ${name}: ${moved} dead letter(s) redriven by ${caller.name}`, {
        queue: name,
        moved,
        by: caller.name,
      });
      sendJson(res, 200, { queue: name, redriven: moved, by: caller.name });
    } catch (err) {
      sendFailure(res, `redrive of queue ${name} failed`, err);
    }
  };

  const snapshot = async (): Promise<DashboardPanel[]> => {
    const now = Date.now();
    const s = await queue.stats();
    const pending = await queue.list('pending', scan);
    const byPartition = new Map<string, number>();
    for (const item of pending) {
      const k = item.partitionKey ?? '(none)';
      byPartition.set(k, (byPartition.get(k) ?? 0) + 1);
    }
    const partitions = [...byPartition.entries()].sort((a, b) => b[1] - a[1]);
    const dead = await queue.deadLetters(shown);
    const completed = rates.rate('completed', s.completedTotal, now);
    const failed = rates.rate('failed', s.failedTotal, now);
    const deadRate = rates.rate('dead', s.deadLetteredTotal, now);
    const deadRows: DashboardRow[] = dead.map((d) => ({
      key: String(d.id),
      cells: [
        String(d.id),
        d.partitionKey ?? '—',
        { value: d.attempts, unit: 'count' },
        { value: d.finishedAt, unit: 'timestamp' },
        lastError(d.errors),
      ],
      actions: [
        {
          label: 'Redrive',
          name: `Redrive dead letter ${d.id} of queue ${name}`,
          method: 'POST',
          path: `${route}?id=${d.id}`,
          confirm: `Put dead letter ${d.id} back in queue ${name} to be tried again?`,
        },
      ],
    }));
    return [
      {
        kind: 'stats',
        title: `Queue ${name}`,
        items: [
          { label: 'Pending', value: s.pending, unit: 'count' },
          { label: 'Active', value: s.active, unit: 'count' },
          { label: 'Dead letters', value: s.dead, unit: 'count', level: s.dead > 0 ? 'warn' : 'ok' },
          { label: 'Oldest pending', value: s.oldestPendingAgeMs, unit: 'ms', hint: 'age' },
          { label: 'Completed', value: completed, unit: 'perSecond' },
          { label: 'Failed', value: failed, unit: 'perSecond', level: failed ? 'warn' : undefined },
          {
            label: 'Claiming',
            value: s.paused ? 'paused' : 'running',
            unit: 'text',
            level: s.paused ? 'warn' : 'ok',
          },
          {
            label: 'Store',
            value: queue.storeAvailable ? 'reachable' : 'unreachable',
            unit: 'text',
            level: queue.storeAvailable ? 'ok' : 'bad',
          },
          { label: 'Spooled', value: s.spooled, unit: 'count', hint: 'waiting for the store' },
        ],
        actions:
          s.dead > 0
            ? [
                {
                  label: 'Redrive all dead letters',
                  name: `Redrive all dead letters of queue ${name}`,
                  method: 'POST',
                  path: route,
                  confirm: `Put all ${s.dead} dead letter(s) of queue ${name} back to be tried again?`,
                },
              ]
            : [],
      },
      {
        kind: 'chart',
        id: 'throughput',
        title: `Queue ${name}: items/s`,
        unit: 'perSecond',
        series: { completed, failed, 'dead-lettered': deadRate },
      },
      {
        kind: 'table',
        title: `Queue ${name}: depth per partition`,
        columns: ['Partition', 'Pending'],
        rows: partitions.slice(0, 20).map(([k, n]) => ({ key: k, cells: [k, { value: n, unit: 'count' }] })),
        empty: 'Nothing pending.',
        ...(pending.length >= scan || partitions.length > 20
          ? {
              note: `${Math.min(20, partitions.length)} partitions shown${pending.length >= scan ? `, counted in the first ${scan} pending items` : ''}`,
            }
          : {}),
      },
      {
        kind: 'table',
        title: `Queue ${name}: dead letters`,
        columns: ['Id', 'Partition', 'Attempts', 'Died', 'Last error'],
        rows: deadRows,
        empty: 'No dead letters.',
        ...(s.dead > dead.length ? { note: `${dead.length} of ${s.dead} shown` } : {}),
      },
    ];
  };

  return {
    id: `queue-${name}`,
    title: `Queue ${name}`,
    snapshot,
    routes: [{ method: 'POST', path: route, handler: redrive }],
  };
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { keelError } from 'keel';
import type { AdminCaller } from '../admin-server.js';
import { actionParams, sendFailure, sendJson } from './http-json.js';
import type { DashboardAction, DashboardPanel, DashboardRow, DashboardView } from './view.js';

interface GroupLike {
  id: string;
  name: string;
  status: string;
  updatedAt: number;
  progressAt: number | null;
  lastError: { code: string; message: string } | null;
}

/**
 * What the groups view uses of a group manager: @keel/groups' `GroupManager` has it (ops does not
 * import it). `repository` gives bounded lists and counts.
 */
export interface DashboardGroups {
  readonly repository: {
    listGroups(filter?: { statuses?: readonly string[]; limit?: number }): Promise<GroupLike[]>;
    countByStatus(): Promise<Partial<Record<string, number>>>;
    getOperations(groupId: string): Promise<readonly { status: string }[]>;
    getLogs(
      groupId: string,
    ): Promise<readonly { at: number; level: 'info' | 'warn' | 'error'; message: string }[]>;
  };
  get(id: string): Promise<GroupLike | undefined>;
  stuck(): Promise<readonly { id: string }[]>;
  pause(id: string): Promise<void>;
  resume(id: string, options?: { run?: boolean }): Promise<{ status: string }>;
  stop(id: string, options?: { mode?: 'graceful' | 'rollback' }): Promise<{ status: string }>;
}

/** Options of {@link groupsView}. */
export interface GroupsViewOptions {
  /** Groups listed (default 20): the active ones, then the failed, most recent first. */
  rows?: number;
  /** Entries of the operations log shown (default 30). */
  logEntries?: number;
  /**
   * Where a resumed group runs: `here` (default: this process drives it, in the background) or
   * `pending` (back to pending for whichever worker runs pending groups).
   */
  resumeRuns?: 'here' | 'pending';
  /** Told about each action (who asked, which group): e.g. your logger. */
  log?: (message: string, fields: Record<string, unknown>) => void;
}

const LISTED = ['running', 'stopping', 'rolling_back', 'paused', 'pending', 'failed', 'rollback_failed'];
const STATUS_ORDER = [
  'running',
  'paused',
  'stopping',
  'rolling_back',
  'pending',
  'failed',
  'rollback_failed',
  'completed',
  'stopped',
  'rolled_back',
];

function level(status: string, stuck: boolean): 'ok' | 'warn' | 'bad' | undefined {
  if (stuck || status === 'failed' || status === 'rollback_failed') return 'bad';
  if (status === 'paused' || status === 'stopping' || status === 'rolling_back') return 'warn';
  if (status === 'running' || status === 'completed') return 'ok';
  return undefined;
}

/**
 * The dashboard view of operation groups: how many in each status and how many are stuck; the
 * active and failed groups with a progress bar, last progress and last error; the operations log
 * of the group that moved last; actions: pause, resume, stop (graceful, or with rollback). Its
 * routes exist without the page: `POST /groups/pause?id=`, `/groups/resume?id=`,
 * `/groups/stop?id=&mode=graceful|rollback`, and `GET /groups/log?id=` (a group's log as JSON).
 */
export function groupsView(groups: DashboardGroups, options: GroupsViewOptions = {}): DashboardView {
  const rowsShown = options.rows ?? 20;
  const logShown = options.logEntries ?? 30;
  const resumeRuns = options.resumeRuns ?? 'here';

  /** Runs `act` on the group named by `?id=`, answering 404 for an unknown id and the error's status on failure. */
  const action =
    (what: string, act: (id: string, params: URLSearchParams, caller: AdminCaller) => Promise<unknown>) =>
    async (req: IncomingMessage, res: ServerResponse, caller: AdminCaller): Promise<void> => {
      const params = actionParams(req, res);
      if (!params) return;
      const id = params.get('id') ?? '';
      const group = id === '' ? undefined : await groups.get(id);
      if (!group) {
        sendJson(res, 404, { error: `${what}: no group with id "${id.slice(0, 80)}" (give ?id=<group id>)` });
        return;
      }
      try {
        const result = await act(id, params, caller);
        options.log?.(`group ${group.name} (${id}): ${what} by ${caller.name}`, {
          group: id,
          action: what,
          by: caller.name,
        });
        sendJson(res, 200, { id, name: group.name, action: what, by: caller.name, ...(result as object) });
      } catch (err) {
        sendFailure(res, `${what} of group ${group.name} (${id}) failed`, err);
      }
    };

  const routes: NonNullable<DashboardView['routes']> = [
    {
      method: 'POST',
      path: '/groups/pause',
      handler: action('pause', async (id) => {
        await groups.pause(id);
        return { status: (await groups.get(id))?.status };
      }),
    },
    {
      method: 'POST',
      path: '/groups/resume',
      handler: action('resume', async (id) => {
        if (resumeRuns === 'pending') return groups.resume(id, { run: false });
        const status = (await groups.get(id))?.status;
        if (status !== 'paused')
          throw keelError(
            'GROUP_INVALID_TRANSITION',
            `group ${id} is ${status ?? 'gone'}: only a paused group can be resumed`,
            { groupId: id },
            { kind: 'client', httpStatus: 409, stack: false },
          );
        // Driven here in the background: the answer does not wait for the group to finish.
        groups.resume(id).catch((err: unknown) => {
          options.log?.(
            `group ${id}: resumed run failed: ${err instanceof Error ? err.message : String(err)}`,
            {
              group: id,
            },
          );
        });
        return { status: 'running' };
      }),
    },
    {
      method: 'POST',
      path: '/groups/stop',
      handler: action('stop', async (id, params) => {
        const mode = params.get('mode') ?? 'graceful';
        if (mode !== 'graceful' && mode !== 'rollback')
          throw keelError(
            'INVALID_INPUT',
            `mode must be graceful or rollback, got "${mode.slice(0, 40)}"`,
            {},
            { kind: 'client', httpStatus: 400, stack: false },
          );
        const stopping = groups.stop(id, { mode });
        // A rollback of a paused group runs here: answer once it started, not once it ended.
        const result = await Promise.race([stopping, new Promise((r) => setTimeout(r, 200, undefined))]);
        stopping.catch(() => undefined);
        return {
          mode,
          status: (result as { status?: string } | undefined)?.status ?? (await groups.get(id))?.status,
        };
      }),
    },
    {
      method: 'GET',
      path: '/groups/log',
      handler: async (req, res) => {
        const id = new URL(req.url ?? '/', 'http://admin').searchParams.get('id') ?? '';
        if (id.length > 200 || !(await groups.get(id))) {
          sendJson(res, 404, { error: `no group with id "${id.slice(0, 80)}"` });
          return;
        }
        sendJson(res, 200, await groups.repository.getLogs(id));
      },
    },
  ];

  const snapshot = async (): Promise<DashboardPanel[]> => {
    const counts = await groups.repository.countByStatus();
    const stuck = new Set((await groups.stuck()).map((g) => g.id));
    const listed = (await groups.repository.listGroups({ statuses: LISTED, limit: 500 }))
      .sort(
        (a, b) =>
          STATUS_ORDER.indexOf(a.status) - STATUS_ORDER.indexOf(b.status) || b.updatedAt - a.updatedAt,
      )
      .slice(0, rowsShown);
    const rows: DashboardRow[] = [];
    for (const g of listed) {
      const ops = await groups.repository.getOperations(g.id);
      const done = ops.filter((o) => o.status === 'done' || o.status === 'rolled_back').length;
      const isStuck = stuck.has(g.id);
      rows.push({
        key: g.id,
        cells: [
          g.name,
          { value: isStuck ? `${g.status} (stuck)` : g.status, level: level(g.status, isStuck) },
          { value: `${done} / ${ops.length}`, progress: ops.length > 0 ? done / ops.length : 0 },
          { value: g.progressAt ?? g.updatedAt, unit: 'timestamp' },
          g.lastError ? `${g.lastError.code}: ${g.lastError.message}` : '—',
        ],
        actions: actionsFor(g),
      });
    }
    const latest = listed.slice().sort((a, b) => b.updatedAt - a.updatedAt)[0];
    const log = latest ? (await groups.repository.getLogs(latest.id)).slice(-logShown) : [];
    const count = (s: string): number => counts[s] ?? 0;
    return [
      {
        kind: 'stats',
        title: 'Operation groups',
        items: [
          { label: 'Running', value: count('running'), unit: 'count' },
          {
            label: 'Paused',
            value: count('paused'),
            unit: 'count',
            level: count('paused') > 0 ? 'warn' : undefined,
          },
          { label: 'Stuck', value: stuck.size, unit: 'count', level: stuck.size > 0 ? 'bad' : 'ok' },
          {
            label: 'Failed',
            value: count('failed') + count('rollback_failed'),
            unit: 'count',
            level: count('failed') + count('rollback_failed') > 0 ? 'bad' : 'ok',
          },
          { label: 'Pending', value: count('pending'), unit: 'count' },
          { label: 'Completed', value: count('completed'), unit: 'count' },
        ],
      },
      {
        kind: 'table',
        title: 'Groups (active and failed)',
        columns: ['Group', 'Status', 'Progress', 'Last progress', 'Last error'],
        rows,
        empty: 'No active or failed group.',
      },
      {
        kind: 'log',
        title: latest ? `Operations log of ${latest.name} (${latest.id})` : 'Operations log',
        entries: log.map((e) => ({ at: e.at, level: e.level, text: e.message })),
        empty: 'No group to show.',
      },
    ];
  };

  return { id: 'groups', title: 'Operation groups', snapshot, routes };
}

function actionsFor(g: GroupLike): DashboardAction[] {
  const id = encodeURIComponent(g.id);
  const stop: DashboardAction[] = [
    {
      label: 'Stop',
      name: `Stop group ${g.name} gracefully`,
      method: 'POST',
      path: `/groups/stop?id=${id}&mode=graceful`,
      confirm: `Stop group ${g.name} once its current operation finishes? What was done stays done.`,
    },
    {
      label: 'Stop and roll back',
      name: `Stop group ${g.name} and roll it back`,
      method: 'POST',
      path: `/groups/stop?id=${id}&mode=rollback`,
      confirm: `Stop group ${g.name} now and roll back what it did? Operations in flight are cancelled.`,
      danger: true,
    },
  ];
  if (g.status === 'running')
    return [
      {
        label: 'Pause',
        name: `Pause group ${g.name}`,
        method: 'POST',
        path: `/groups/pause?id=${id}`,
        confirm: `Pause group ${g.name} after its current operation?`,
      },
      ...stop,
    ];
  if (g.status === 'paused')
    return [
      {
        label: 'Resume',
        name: `Resume group ${g.name}`,
        method: 'POST',
        path: `/groups/resume?id=${id}`,
        confirm: `Resume group ${g.name}?`,
      },
      ...stop,
    ];
  return [];
}

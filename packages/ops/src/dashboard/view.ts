import type { AdminRoute } from '../admin-server.js';

/** How the page formats a figure: `bytes` as MiB, `ratio` as %, `timestamp` as "3 min ago" … */
export type DashboardUnit =
  'count' | 'bytes' | 'bytesPerSecond' | 'perSecond' | 'ratio' | 'ms' | 'seconds' | 'timestamp' | 'text';

/** How a figure is coloured: `ok`, `warn` (look soon), `bad` (look now); none: neutral. */
export type DashboardLevel = 'ok' | 'warn' | 'bad';

/** One figure of a {@link StatsPanel}. */
export interface DashboardStat {
  label: string;
  /** null: not known (shown as "—", never as 0). */
  value: number | string | null;
  unit?: DashboardUnit;
  level?: DashboardLevel | undefined;
  /** A short line under the figure (e.g. "of 10 GiB", "since start"). */
  hint?: string;
}

/** A button: an admin API call (it exists without the page), confirmed on the page first. */
export interface DashboardAction {
  /** The button's text, e.g. "Run cleanup". */
  label: string;
  /** Accessible name when the label alone is ambiguous (e.g. "Pause group nightly-sync"). */
  name?: string;
  method: 'POST';
  /** Path on the admin server, with its query string (e.g. `/groups/pause?id=…`). */
  path: string;
  /** What the confirmation asks, e.g. "Remove temporary and orphaned files from the cache?". */
  confirm: string;
  /** Shown in red: it undoes work or drops data. */
  danger?: boolean;
}

/** Figures side by side. */
export interface StatsPanel {
  kind: 'stats';
  title: string;
  items: DashboardStat[];
  actions?: DashboardAction[];
}

/**
 * A time chart: the page keeps a point per tick for each series (the server keeps the last
 * `historyPoints` and sends them to a page that connects), drawn with uPlot.
 */
export interface ChartPanel {
  kind: 'chart';
  /** Unique within its view (the key of the chart's history). */
  id: string;
  title: string;
  unit: DashboardUnit;
  /** This tick's value of each series; null where there is none (a gap). */
  series: Record<string, number | null>;
}

/** A table cell: text, or a formatted figure, with a progress bar when `progress` (0..1) is set. */
export type DashboardCell =
  | string
  | {
      value: number | string | null;
      unit?: DashboardUnit;
      level?: DashboardLevel | undefined;
      progress?: number;
    };

/** One row: `key` identifies it from one tick to the next. */
export interface DashboardRow {
  key: string;
  cells: DashboardCell[];
  actions?: DashboardAction[];
}

/** A table, e.g. breakers by bucket, groups, dead letters. */
export interface TablePanel {
  kind: 'table';
  title: string;
  columns: string[];
  rows: DashboardRow[];
  /** Shown when there are no rows (e.g. "No dead letters"). */
  empty?: string;
  /** A line under the table (e.g. "first 50 of 1,204 shown"). */
  note?: string;
  actions?: DashboardAction[];
}

/** Lines of a log (an alert history, a group's operations log), newest last. */
export interface LogPanel {
  kind: 'log';
  title: string;
  entries: { at: number; level: 'info' | 'warn' | 'error'; text: string }[];
  empty?: string;
}

/** What a view shows: figures, charts, tables and logs. */
export type DashboardPanel = StatsPanel | ChartPanel | TablePanel | LogPanel;

/** An admin route that a view's actions call; registered on the admin server with the view. */
export interface DashboardRoute {
  method: 'POST' | 'GET';
  path: string;
  handler: AdminRoute;
}

/**
 * A view of the dashboard, contributed by the module that owns what it shows (the gateway, a
 * queue, a group manager): the page imports none of them, it draws panels.
 */
export interface DashboardView {
  /** Short identifier: 1–40 of `a-z 0-9 -`. */
  id: string;
  title: string;
  /**
   * This tick's panels: called once per tick (not per page) while a page is open; the result is
   * serialised once and sent to every page.
   */
  snapshot(): DashboardPanel[] | Promise<DashboardPanel[]>;
  /** The admin routes of its actions: added to the admin server with the view, page or not. */
  routes?: readonly DashboardRoute[];
}

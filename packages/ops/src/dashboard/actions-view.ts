import type { AdminServer } from '../admin-server.js';
import type { DashboardView } from './view.js';

/** Most actions the view lists (newest first). */
const SHOWN = 20;

/**
 * A view of the admin server's recent actions: who asked (the token's name), what, the status
 * answered and when, refused ones included. Add it last, so it shows under the others.
 */
export function actionsView(admin: AdminServer): DashboardView {
  return {
    id: 'admin-actions',
    title: 'Admin actions',
    snapshot: () => {
      const actions = admin.recentActions().slice(-SHOWN).reverse();
      return [
        {
          kind: 'table',
          title: 'Recent actions (who asked, what, how it ended)',
          columns: ['When', 'Who', 'Action', 'Status', 'Took'],
          rows: actions.map((a, i) => ({
            key: `${a.at}-${i}`,
            cells: [
              { value: a.at, unit: 'timestamp' },
              a.caller,
              `${a.method} ${a.path}${a.query ? `?${a.query}` : ''}`,
              { value: a.status, level: a.status < 300 ? 'ok' : a.status < 500 ? 'warn' : 'bad' },
              { value: a.durationMs, unit: 'ms' },
            ],
          })),
          empty: 'No action since the server started.',
        },
      ];
    },
  };
}

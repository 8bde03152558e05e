import type { DashboardPanel, DashboardSnapshot } from '@keel/ops';
import type { WorkerSlot } from './primary.js';

/** What the fleet's rows show of each worker's own `/status`. */
interface WorkerFigures {
  inFlight: number | null;
  hits: number | null;
  misses: number | null;
  breakersOpen: number | null;
}

/** How long the workers' `/status` answers are reused (one round of requests per second at most). */
const STATUS_TTL_MS = 1000;

/** How long the primary waits for one worker's `/status` for the dashboard. */
const STATUS_TIMEOUT_MS = 2000;

/**
 * The "Fleet" view the primary adds to the dashboard of `keel gateway --workers N`: one row per
 * worker (its slot, pid, state, since when, restarts, last exit, and from its own `/status`
 * requests in flight, cache hits and misses, open breakers). The page's other views are the
 * answering worker's.
 */
export class FleetView {
  private figures = new Map<number, WorkerFigures>();
  private fetchedAt = 0;
  private fetching: Promise<void> | undefined;

  constructor(private readonly slots: readonly WorkerSlot[]) {}

  /** The snapshot (JSON text, as a worker sent it) with the fleet's view first. */
  inject(snapshotText: string, authorization: string | undefined): string {
    this.refresh(authorization);
    const snapshot = JSON.parse(snapshotText) as DashboardSnapshot;
    snapshot.views.unshift({
      id: 'fleet',
      title: `Fleet (${this.slots.length} workers)`,
      panels: this.panels(),
    });
    return JSON.stringify(snapshot);
  }

  private panels(): DashboardPanel[] {
    const ready = this.slots.filter((s) => s.state === 'ready').length;
    return [
      {
        kind: 'table',
        title: 'Workers',
        columns: [
          'Worker',
          'PID',
          'State',
          'Since',
          'Restarts',
          'In flight',
          'Cache hits',
          'Misses',
          'Open breakers',
          'Last exit',
        ],
        rows: this.slots.map((s) => {
          const f = this.figures.get(s.slot);
          return {
            key: String(s.slot),
            cells: [
              `#${s.slot}`,
              s.pid === undefined ? '—' : String(s.pid),
              { value: s.state, level: s.state === 'ready' ? 'ok' : s.state === 'exited' ? 'bad' : 'warn' },
              { value: s.startedAt, unit: 'timestamp' },
              { value: s.restarts, unit: 'count', level: s.restarts > 0 ? 'warn' : 'ok' },
              { value: f?.inFlight ?? null, unit: 'count' },
              { value: f?.hits ?? null, unit: 'count' },
              { value: f?.misses ?? null, unit: 'count' },
              {
                value: f?.breakersOpen ?? null,
                unit: 'count',
                level: (f?.breakersOpen ?? 0) > 0 ? 'bad' : undefined,
              },
              s.lastExit
                ? `${s.lastExit.signal ?? `code ${String(s.lastExit.code)}`} at ${new Date(s.lastExit.at).toISOString()}`
                : '—',
            ],
          };
        }),
        note: `${ready} of ${this.slots.length} ready; the other views are one worker's`,
      },
    ];
  }

  /** Asks every ready worker for its `/status` again, once the last answers are a second old. */
  private refresh(authorization: string | undefined): void {
    if (this.fetching || Date.now() - this.fetchedAt < STATUS_TTL_MS) return;
    this.fetching = this.fetchAll(authorization).finally(() => {
      this.fetchedAt = Date.now();
      this.fetching = undefined;
    });
  }

  private async fetchAll(authorization: string | undefined): Promise<void> {
    const next = new Map<number, WorkerFigures>();
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.state !== 'ready' || !s.admin) return;
        try {
          const r = await fetch(`${s.admin}/status`, {
            signal: AbortSignal.timeout(STATUS_TIMEOUT_MS),
            headers: authorization ? { authorization } : {},
          });
          if (!r.ok) return;
          const st = (await r.json()) as {
            gateway?: { inFlight?: number; breakers?: Record<string, string> };
            cache?: { hits?: number; misses?: number } | null;
          };
          next.set(s.slot, {
            inFlight: st.gateway?.inFlight ?? null,
            hits: st.cache?.hits ?? null,
            misses: st.cache?.misses ?? null,
            breakersOpen: Object.values(st.gateway?.breakers ?? {}).filter(
              (b) => b === 'open' || b === 'isolated',
            ).length,
          });
        } catch {
          // A worker that does not answer in time shows "—" until it does.
        }
      }),
    );
    this.figures = next;
  }
}

/**
 * Copies a worker's dashboard event stream to `write`, with the fleet's view added to each
 * snapshot; other events pass as they are.
 */
export async function relayWithFleet(
  body: ReadableStream<Uint8Array>,
  view: FleetView,
  authorization: string | undefined,
  write: (text: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const m = /^event: snapshot\ndata: (.*)$/s.exec(block);
      write(m ? `event: snapshot\ndata: ${view.inject(m[1] ?? '', authorization)}\n\n` : `${block}\n\n`);
    }
  }
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { redact } from 'keel';
import type { AdminServer } from '../admin-server.js';
import { ASSET_NAMES, loadAssets, type Asset } from './assets.js';
import type { DashboardPanel, DashboardView } from './view.js';

/** Options of {@link Dashboard}. */
export interface DashboardOptions {
  /** The page's title (default `keel`). */
  title?: string;
  /** Time between two snapshots sent to open pages (default 1000 ms, at least 100). */
  intervalMs?: number;
  /** Points of each chart kept for a page that connects (default 120: two minutes at 1 s). */
  historyPoints?: number;
  /** Pages open at once (default 16); one more is answered 503. */
  maxStreams?: number;
}

/** One tick as sent to the pages. */
export interface DashboardSnapshot {
  /** Epoch ms. */
  t: number;
  title: string;
  /** Whether the admin server wants a token (the page asks for one). */
  authRequired: boolean;
  views: { id: string; title: string; panels: DashboardPanel[] }[];
}

interface Stream {
  res: ServerResponse;
  /** Skips ticks while the page reads slower than we send (the socket's buffer is full). */
  blocked: boolean;
}

const VIEW_ID = /^[a-z0-9-]{1,40}$/;

/**
 * The operations dashboard of an {@link AdminServer}: `GET /` and `GET /dashboard` serve one page
 * (static files from the package, cached by hash), `GET /dashboard/events` streams a snapshot of
 * every view per tick as Server-Sent Events (one stream per page, one snapshot per tick whatever
 * the number of pages, nothing computed while no page is open), `GET /dashboard/snapshot` answers
 * the same snapshot as JSON. The page and its files are open (they hold no data); the stream and
 * the snapshot need a token like `/status`; the views' actions are the admin routes they add.
 *
 * Modules contribute views ({@link DashboardView}): the gateway, a queue, a group manager.
 */
export class Dashboard {
  private readonly views = new Map<string, DashboardView>();
  private readonly streams = new Set<Stream>();
  private readonly history = new Map<string, { t: number; series: Record<string, number | null> }[]>();
  private readonly intervalMs: number;
  private readonly historyPoints: number;
  private readonly maxStreams: number;
  private readonly title: string;
  private assets: Promise<Map<string, Asset>> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private last: { snapshot: DashboardSnapshot; text: string } | undefined;
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly admin: AdminServer,
    options: DashboardOptions = {},
  ) {
    this.intervalMs = options.intervalMs ?? 1000;
    this.historyPoints = options.historyPoints ?? 120;
    this.maxStreams = options.maxStreams ?? 16;
    this.title = options.title ?? 'keel';
    if (!(Number.isFinite(this.intervalMs) && this.intervalMs >= 100))
      throw new Error(`dashboard.intervalMs: must be a number >= 100, got ${String(options.intervalMs)}`);
    if (!(Number.isInteger(this.historyPoints) && this.historyPoints >= 1 && this.historyPoints <= 10_000))
      throw new Error(
        `dashboard.historyPoints: must be an integer in 1..10000, got ${String(options.historyPoints)}`,
      );
    if (!(Number.isInteger(this.maxStreams) && this.maxStreams >= 1))
      throw new Error(`dashboard.maxStreams: must be an integer >= 1, got ${String(options.maxStreams)}`);
    const page = (req: IncomingMessage, res: ServerResponse): Promise<void> =>
      this.serve(req, res, 'index.html');
    for (const path of ['/', '/dashboard']) {
      admin.addRoute('GET', path, page, { open: true });
      admin.addRoute('HEAD', path, page, { open: true });
    }
    for (const name of ASSET_NAMES)
      admin.addRoute('GET', `/dashboard/assets/${name}`, (req, res) => this.serve(req, res, name), {
        open: true,
      });
    admin.addRoute('GET', '/dashboard/events', (req, res) => this.stream(req, res));
    admin.addRoute('GET', '/dashboard/snapshot', async (_req, res) => {
      const body = (await this.current()).text;
      res
        .writeHead(200, {
          'content-type': 'application/json',
          'cache-control': 'no-store',
          'content-length': Buffer.byteLength(body),
        })
        .end(body);
    });
    admin.onClose(() => {
      this.close();
    });
  }

  /**
   * Adds a view and the admin routes of its actions (they answer whether a page is open or not).
   * Returns a function that removes both.
   * @throws Error when the id is not `a-z 0-9 -` or already taken.
   */
  addView(view: DashboardView): () => void {
    if (!VIEW_ID.test(view.id)) throw new Error(`dashboard view id "${view.id}": must be 1-40 of a-z 0-9 -`);
    if (this.views.has(view.id)) throw new Error(`dashboard view id "${view.id}": already added`);
    this.views.set(view.id, view);
    const removers = (view.routes ?? []).map((r) => this.admin.addRoute(r.method, r.path, r.handler));
    return () => {
      this.views.delete(view.id);
      for (const remove of removers) remove();
      for (const key of [...this.history.keys()]) if (key.startsWith(`${view.id}/`)) this.history.delete(key);
    };
  }

  /** Pages connected now. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Ends every stream and stops ticking (the admin server does this when it closes). */
  close(): void {
    this.stopTimer();
    for (const s of this.streams) s.res.end();
    this.streams.clear();
  }

  /** Every view's panels now (computed once per tick, shared by every page). */
  async snapshot(): Promise<DashboardSnapshot> {
    return (await this.current()).snapshot;
  }

  private async current(): Promise<{ snapshot: DashboardSnapshot; text: string }> {
    if (this.last && Date.now() - this.last.snapshot.t < this.intervalMs) return this.last;
    await this.tick();
    if (!this.last) throw new Error('dashboard: no snapshot');
    return this.last;
  }

  private tick(): Promise<void> {
    // One snapshot at a time: a slow view never piles up ticks.
    this.ticking ??= this.take().finally(() => {
      this.ticking = undefined;
    });
    return this.ticking;
  }

  private async take(): Promise<void> {
    const t = Date.now();
    const views: DashboardSnapshot['views'] = [];
    for (const view of this.views.values()) {
      let panels: DashboardPanel[];
      try {
        panels = await view.snapshot();
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        panels = [
          {
            kind: 'stats',
            title: 'Unavailable',
            items: [{ label: 'error', value: message, unit: 'text', level: 'bad' }],
          },
        ];
      }
      for (const p of panels) if (p.kind === 'chart') this.remember(`${view.id}/${p.id}`, t, p.series);
      views.push({ id: view.id, title: view.title, panels });
    }
    const snapshot: DashboardSnapshot = {
      t,
      title: this.title,
      authRequired: this.admin.requiresToken,
      views,
    };
    // Views are redacted like /status: no secret reaches a page.
    this.last = { snapshot, text: JSON.stringify(redact(snapshot)) };
  }

  private remember(key: string, t: number, series: Record<string, number | null>): void {
    let points = this.history.get(key);
    if (!points) this.history.set(key, (points = []));
    points.push({ t, series });
    if (points.length > this.historyPoints) points.splice(0, points.length - this.historyPoints);
  }

  private async broadcast(): Promise<void> {
    await this.tick();
    if (!this.last) return;
    const frame = `event: snapshot\ndata: ${this.last.text}\n\n`;
    for (const s of this.streams) this.write(s, frame);
  }

  private write(s: Stream, frame: string): void {
    if (s.blocked) return;
    if (!s.res.write(frame)) {
      s.blocked = true;
      s.res.once('drain', () => {
        s.blocked = false;
      });
    }
  }

  private async stream(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.streams.size >= this.maxStreams) {
      const body = JSON.stringify({
        error: `too many dashboard pages open (${this.maxStreams}); close one or raise maxStreams`,
      });
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' }).end(body);
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    const s: Stream = { res, blocked: false };
    this.streams.add(s);
    const gone = (): void => {
      this.streams.delete(s);
      if (this.streams.size === 0) this.stopTimer();
    };
    req.on('close', gone);
    res.on('close', gone);
    const { text } = await this.current();
    const history = JSON.stringify({ charts: Object.fromEntries(this.history) });
    this.write(s, `retry: 2000\n\nevent: history\ndata: ${history}\n\nevent: snapshot\ndata: ${text}\n\n`);
    this.timer ??= setInterval(() => void this.broadcast(), this.intervalMs).unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async serve(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    this.assets ??= loadAssets(this.admin.requiresToken);
    const asset = (await this.assets).get(name);
    if (!asset) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    const etag = `"${asset.hash}"`;
    // The page revalidates every time; its files are named by hash, so they never change under a URL.
    const headers: Record<string, string> = {
      'content-type': asset.type,
      etag,
      'cache-control': name === 'index.html' ? 'no-cache' : 'public, max-age=31536000, immutable',
      vary: 'accept-encoding',
      'x-content-type-options': 'nosniff',
    };
    if (name === 'index.html') {
      headers['content-security-policy'] =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
      headers['referrer-policy'] = 'no-referrer';
    }
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, headers).end();
      return;
    }
    const gzip = /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');
    const body = gzip ? asset.gzip : asset.body;
    if (gzip) headers['content-encoding'] = 'gzip';
    headers['content-length'] = String(body.length);
    res.writeHead(200, headers).end(req.method === 'HEAD' ? undefined : body);
  }
}

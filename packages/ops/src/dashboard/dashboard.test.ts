import { afterEach, describe, expect, it } from 'vitest';
import { AdminServer, parseAdminToken, type AdminAction } from '../admin-server.js';
import { HealthRegistry } from '../health.js';
import { Dashboard } from './dashboard.js';
import { quantileBetween, RateMeter } from './rates.js';
import type { DashboardView } from './view.js';

const ADMIN = 'admin-secret-0123456789';
const READ = 'reader-secret-0123456789';
const servers: AdminServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function start(options: { tokens?: boolean; intervalMs?: number; maxStreams?: number } = {}) {
  const actions: AdminAction[] = [];
  const admin = new AdminServer({
    health: new HealthRegistry(),
    ...(options.tokens === false
      ? {}
      : {
          tokens: [
            { name: 'alice', secret: ADMIN },
            { name: 'wall', secret: READ, scope: 'read' as const },
          ],
        }),
    onAction: (a) => actions.push(a),
  });
  servers.push(admin);
  const dashboard = new Dashboard(admin, {
    intervalMs: options.intervalMs ?? 100,
    ...(options.maxStreams ? { maxStreams: options.maxStreams } : {}),
  });
  let snapshots = 0;
  let pressed = 0;
  const view: DashboardView = {
    id: 'demo',
    title: 'Demo',
    snapshot: () => {
      snapshots++;
      return [
        {
          kind: 'stats',
          title: 'Figures',
          items: [{ label: 'auth', value: 'Bearer abcdefghijklmnopqrstuvwxyz' }],
        },
        { kind: 'chart', id: 'n', title: 'N', unit: 'count', series: { n: snapshots } },
      ];
    },
    routes: [
      {
        method: 'POST',
        path: '/demo/press',
        handler: (_req, res, caller) => {
          pressed++;
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ by: caller.name }));
        },
      },
    ],
  };
  dashboard.addView(view);
  await admin.listen();
  return { admin, dashboard, actions, snapshots: () => snapshots, pressed: () => pressed };
}

/** Reads a stream's events until `count` arrived, then cancels it. */
async function events(res: Response, count: number): Promise<{ event: string; data: unknown }[]> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const out: { event: string; data: unknown }[] = [];
  while (out.length < count) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.+)$/m.exec(block)?.[1];
      const data = /^data: (.+)$/m.exec(block)?.[1];
      if (event && data) out.push({ event, data: JSON.parse(data) });
    }
  }
  await reader.cancel();
  return out;
}

const auth = (secret: string) => ({ authorization: `Bearer ${secret}` });

describe('Dashboard', () => {
  it('serves the page without a token, with caching by ETag and hashed, immutable assets', async () => {
    const { admin } = await start();
    const res = await fetch(`${admin.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await res.text();
    expect(html).toContain('<meta name="keel-auth" content="token" />');
    const assets = [...html.matchAll(/(?:src|href)="(\/dashboard\/assets\/[^"]+)"/g)].map((m) => m[1] ?? '');
    expect(assets).toHaveLength(4);
    for (const a of assets) {
      const r = await fetch(`${admin.url}${a}`);
      expect(r.status).toBe(200);
      expect(r.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect(r.headers.get('content-encoding')).toBe('gzip');
      expect(a).toMatch(/\?v=[0-9a-f]{16}$/);
      await r.arrayBuffer();
    }
    const etag = res.headers.get('etag') ?? '';
    expect((await fetch(`${admin.url}/dashboard`, { headers: { 'if-none-match': etag } })).status).toBe(304);
    expect((await fetch(`${admin.url}/dashboard/assets/nope.js`)).status).toBe(401); // not a file: not open
  });

  it('streams a history and a snapshot per tick to a page with a token, and refuses one without', async () => {
    const { admin } = await start();
    expect((await fetch(`${admin.url}/dashboard/events`)).status).toBe(401);
    expect((await fetch(`${admin.url}/dashboard/snapshot`)).status).toBe(401);
    const res = await fetch(`${admin.url}/dashboard/events`, { headers: auth(READ) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const got = await events(res, 3);
    expect(got.map((e) => e.event)).toEqual(['history', 'snapshot', 'snapshot']);
    const snap = got[1]?.data as {
      authRequired: boolean;
      views: { id: string; panels: { kind: string; items?: { value: unknown }[] }[] }[];
    };
    expect(snap.authRequired).toBe(true);
    expect(snap.views[0]?.id).toBe('demo');
    // Redacted like /status: no secret reaches a page.
    expect(JSON.stringify(snap)).not.toContain('abcdefghijklmnopqrstuvwxyz');
  });

  it('takes one snapshot per tick however many pages are open, and none while no page is', async () => {
    const { admin, snapshots } = await start({ intervalMs: 200 });
    const pages = await Promise.all(
      [1, 2, 3, 4].map(() => fetch(`${admin.url}/dashboard/events`, { headers: auth(READ) })),
    );
    const before = snapshots();
    const got = await Promise.all(pages.map((p) => events(p, 5)));
    for (const g of got) expect(g.filter((e) => e.event === 'snapshot').length).toBe(4);
    // Four pages over about three ticks: a few snapshots, not four per tick.
    expect(snapshots() - before).toBeLessThanOrEqual(5);
    await new Promise((r) => setTimeout(r, 100));
    const idle = snapshots();
    await new Promise((r) => setTimeout(r, 600));
    expect(snapshots()).toBe(idle);
  });

  it('answers 503 beyond maxStreams and ends streams when the admin server closes', async () => {
    const { admin, dashboard } = await start({ maxStreams: 1 });
    const first = await fetch(`${admin.url}/dashboard/events`, { headers: auth(READ) });
    expect(first.status).toBe(200);
    const second = await fetch(`${admin.url}/dashboard/events`, { headers: auth(READ) });
    expect(second.status).toBe(503);
    expect(await second.text()).toContain('too many dashboard pages open (1)');
    expect(dashboard.streamCount).toBe(1);
    await admin.close(); // would hang with a stream left open
    servers.splice(0);
    await first.body?.cancel();
  });

  it("runs a view's action with an admin token only, and logs who asked", async () => {
    const { admin, actions, pressed } = await start();
    const press = (headers: Record<string, string>) =>
      fetch(`${admin.url}/demo/press`, { method: 'POST', headers });
    expect((await press({})).status).toBe(401);
    const refused = await press(auth(READ));
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: string }).error).toContain('the token "wall" may only read');
    expect(pressed()).toBe(0);
    const ok = await press(auth(ADMIN));
    expect(await ok.json()).toEqual({ by: 'alice' });
    expect(pressed()).toBe(1);
    expect(actions.map((a) => [a.caller, a.path, a.status])).toEqual([
      ['unknown', '/demo/press', 401],
      ['wall', '/demo/press', 403],
      ['alice', '/demo/press', 200],
    ]);
    expect(JSON.stringify(admin.recentActions())).not.toContain(ADMIN);
  });

  it('without tokens, everything is open and actions are logged as anonymous', async () => {
    const { admin, actions } = await start({ tokens: false });
    expect(await (await fetch(`${admin.url}/`)).text()).toContain('content="none"');
    expect((await fetch(`${admin.url}/demo/press`, { method: 'POST' })).status).toBe(200);
    expect(actions[0]?.caller).toBe('anonymous');
  });

  it('validates its options, view ids and tokens', async () => {
    const { admin, dashboard } = await start();
    expect(() => dashboard.addView({ id: 'demo', title: 'again', snapshot: () => [] })).toThrow(
      /already added/,
    );
    expect(() => dashboard.addView({ id: 'Bad Id', title: 'x', snapshot: () => [] })).toThrow(/a-z 0-9/);
    expect(() => new Dashboard(admin, { intervalMs: 5 })).toThrow(/dashboard\.intervalMs/);
    expect(parseAdminToken('ops-bob:0123456789abcdef')).toEqual({
      name: 'ops-bob',
      secret: '0123456789abcdef',
      scope: 'admin',
    });
    expect(parseAdminToken('0123456789abcdefgh')).toEqual({
      name: 'admin',
      secret: '0123456789abcdefgh',
      scope: 'admin',
    });
    expect(() => parseAdminToken('bob:short-secret', '--admin-token')).toThrow(
      '--admin-token: the secret must be at least 16 characters (token "bob")',
    );
    const health = new HealthRegistry();
    expect(
      () =>
        new AdminServer({
          health,
          tokens: [
            { name: 'a', secret: ADMIN },
            { name: 'a', secret: READ },
          ],
        }),
    ).toThrow(/two tokens are named "a"/);
    expect(() => new AdminServer({ health, tokens: [{ name: 'a b', secret: ADMIN }] })).toThrow(/name "a b"/);
  });
});

describe('RateMeter and quantileBetween', () => {
  it('gives per-second rates from one reading to the next', () => {
    const m = new RateMeter();
    expect(m.rate('x', 10, 1000)).toBeNull();
    expect(m.rate('x', 30, 3000)).toBe(10);
    expect(m.rate('x', 5, 4000)).toBe(5); // a reset counter starts over
    expect(m.rate('x', 5, 4000)).toBeNull(); // no time passed
  });

  it.each([
    [0.5, [0, 100, 100, 100], 0.0075], // all in (0.005, 0.01]: halfway
    [0.99, [0, 50, 100, 100], 0.0492], // rank 99 is the 49th of 50 in (0.01, 0.05]
    [1, [0, 50, 100, 100], 0.05],
  ])('interpolates the %s quantile within its bucket', (q, counts, want) => {
    const le = [0.005, 0.01, 0.05, Infinity];
    const got = quantileBetween({ le, counts: [0, 0, 0, 0] }, { le, counts }, q);
    expect(got).toBeCloseTo(want, 6);
  });

  it('answers null without observations and the last finite bound in +Inf', () => {
    const r = { le: [1, Infinity], counts: [0, 0] };
    expect(quantileBetween(undefined, r, 0.5)).toBeNull();
    expect(quantileBetween(undefined, { le: [1, Infinity], counts: [0, 4] }, 0.5)).toBe(1);
  });
});

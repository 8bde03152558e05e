import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChaosProxy } from 'keel/chaos';
import type { DashboardSnapshot, LogPanel, StatsPanel, TablePanel } from '@keel/ops';
import { startRunHarness, type RunHarness } from './gateway-run-support.js';

const SECRET = 'alice-secret-0123456789';
let harness: RunHarness;

beforeAll(async () => {
  harness = await startRunHarness({ name: 'dash', proxy: true });
});
afterAll(async () => {
  await harness.close();
});

const auth = { authorization: `Bearer ${SECRET}` };

describe("the gateway's dashboard data and actions", () => {
  it('logs each action with the name of the token that asked, never the secret', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        done();
      },
    });
    const r = await harness.start(
      { adminToken: `ops-alice:${SECRET}`, logLevel: 'warn' },
      { logDestination: sink },
    );
    expect((await fetch(`${r.admin.url}/cache/cleanup`, { method: 'POST' })).status).toBe(401);
    expect((await fetch(`${r.admin.url}/cache/cleanup`, { method: 'POST', headers: auth })).status).toBe(200);
    const logged = lines.map((l) => JSON.parse(l) as { msg: string; caller?: string; status?: number });
    // At log level warn, the action still reaches the log: who changed what matters afterwards.
    expect(logged.filter((l) => l.msg.startsWith('admin action')).map((l) => l.msg)).toEqual([
      'admin action POST /cache/cleanup by unknown: 401',
      'admin action POST /cache/cleanup by ops-alice: 200',
    ]);
    expect(lines.join('\n')).not.toContain(SECRET);
  });

  it('--admin-read-token reads the status and the dashboard but is refused actions, and the refusal is logged', async () => {
    const wall = 'wall-secret-0123456789';
    const r = await harness.start({ adminToken: `ops-alice:${SECRET}`, adminReadToken: `wallboard:${wall}` });
    const read = { authorization: `Bearer ${wall}` };
    expect((await fetch(`${r.admin.url}/status`, { headers: read })).status).toBe(200);
    expect((await fetch(`${r.admin.url}/dashboard/snapshot`, { headers: read })).status).toBe(200);
    const refused = await fetch(`${r.admin.url}/cache/cleanup`, { method: 'POST', headers: read });
    expect(refused.status).toBe(403);
    expect(r.admin.recentActions().at(-1)).toMatchObject({ caller: 'wallboard', status: 403 });
    expect((await fetch(`${r.admin.url}/cache/cleanup`, { method: 'POST', headers: auth })).status).toBe(200);
  });

  it('resets an open bucket breaker through POST /breakers/reset, and says which names exist', async () => {
    const proxy = harness.proxy as ChaosProxy;
    const r = await harness.start(
      { adminToken: SECRET },
      { guard: { breakerFailures: 2, breakerHalfOpenAfterMs: 60_000, retryAttempts: 1 } },
    );
    expect(await harness.readOk(r, 'a.bin')).toBe('MISS');
    await proxy.disable();
    try {
      for (let i = 0; i < 3; i++) await harness.read(r, `missing-${i}.bin`);
    } finally {
      await proxy.enable();
    }
    expect(r.gateway.guard.breakerStates().b).toBe('open');
    const snap = (await (
      await fetch(`${r.admin.url}/dashboard/snapshot`, { headers: auth })
    ).json()) as DashboardSnapshot;
    const gateway = snap.views.find((v) => v.id === 'gateway');
    const breakers = gateway?.panels.find((p) => p.title === 'Origin breakers by bucket') as TablePanel;
    const row = breakers.rows.find((x) => x.key === 'b');
    expect(row?.cells[1]).toEqual({ value: 'open', level: 'bad' });
    expect(row?.actions?.[0]?.path).toBe('/breakers/reset?bucket=b');
    // The open breaker's alert is firing and in the history.
    const firing = gateway?.panels.find((p) => p.title === 'Alerts firing') as TablePanel;
    expect(firing.rows.map((x) => x.cells[0])).toContain('KeelOriginBreakerOpen');
    const history = gateway?.panels.find((p) => p.title === 'Alert history') as LogPanel;
    expect(history.entries.at(-1)?.text).toMatch(/^(warning|error|critical): KeelOriginBreakerOpen: /);

    const unknown = await fetch(`${r.admin.url}/breakers/reset?bucket=nope`, {
      method: 'POST',
      headers: auth,
    });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: string }).error).toContain(
      'no origin breaker for bucket "nope"',
    );
    const reset = await fetch(`${r.admin.url}/breakers/reset?bucket=b`, { method: 'POST', headers: auth });
    expect(await reset.json()).toEqual({ bucket: 'b', from: 'open', to: 'closed', by: 'admin' });
    expect(r.gateway.guard.breakerStates().b).toBe('closed');
    expect(await harness.readOk(r, 'c.bin')).toBe('MISS');
  });

  it('shows the traffic figures and a verify run with who asked', async () => {
    const r = await harness.start({ adminToken: SECRET });
    expect(await harness.readOk(r, 'a.bin')).toBe('MISS');
    await r.gateway.idle();
    expect(await harness.readOk(r, 'a.bin')).toBe('HIT');
    const verify = await fetch(`${r.admin.url}/cache/verify`, { method: 'POST', headers: auth });
    expect(verify.status).toBe(200);
    const snap = (await (
      await fetch(`${r.admin.url}/dashboard/snapshot`, { headers: auth })
    ).json()) as DashboardSnapshot;
    const panels = snap.views.find((v) => v.id === 'gateway')?.panels ?? [];
    const stat = (title: string, label: string) =>
      (panels.find((p) => p.title === title) as StatsPanel).items.find((i) => i.label === label);
    expect(stat('Traffic', 'Hit ratio since start')?.value).toBe(0.5);
    expect(stat('Traffic', 'Bytes from cache')?.value).toBe(300_000);
    expect(stat('Traffic', 'Bytes from origin')?.value).toBe(300_000);
    expect(stat('Cache and disk', 'Last verify')).toMatchObject({
      value: 0,
      hint: 'problems in 1 objects, 5 slices',
    });
    const actions = snap.views.find((v) => v.id === 'admin-actions')?.panels[0] as TablePanel;
    expect(actions.rows[0]?.cells.slice(1, 3)).toEqual(['admin', 'POST /cache/verify']);
  });
});

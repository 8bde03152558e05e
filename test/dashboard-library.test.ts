import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { constant } from 'keel';
import { ExecutorRegistry, GroupManager, type GroupRepository } from '@keel/groups';
import type { Queue } from '@keel/queue';
import {
  actionsView,
  AdminServer,
  Dashboard,
  groupsView,
  HealthRegistry,
  queueView,
  type DashboardSnapshot,
  type StatsPanel,
  type TablePanel,
} from '@keel/ops';
import { chromiumAvailable, launchBrowser, type Browser } from './browser-support.js';
import { sqliteFixture, type StoreFixture } from './groups-support.js';
import { sqliteQueueFixture, until, type QueueFixture } from './queue-support.js';

const SECRET = 'bob-secret-0123456789';
const auth = { authorization: `Bearer ${SECRET}` };
const IMG = path.join(import.meta.dirname, '..', 'docs', 'img');

let queues: QueueFixture;
let stores: StoreFixture;
let queue: Queue<string>;
let repo: GroupRepository;
let manager: GroupManager;
let admin: AdminServer;
let gate: () => void = () => undefined;
const held = new Promise<void>((resolve) => {
  gate = resolve;
});

beforeAll(async () => {
  queues = await sqliteQueueFixture();
  queue = await queues.open<string>();
  // One item fails for good (a dead letter); the worker then stops, so the rest stays pending.
  await queue.enqueue('bad', { maxAttempts: 1, partitionKey: 'eu' });
  queue.process(
    (job) =>
      job.payload === 'bad'
        ? Promise.reject(new Error('upstream said 422: invalid invoice'))
        : Promise.resolve(),
    { pollMs: 10 },
  );
  await until(async () => (await queue.stats()).dead === 1, 'the dead letter');
  queue.pause();
  for (const [p, n] of [
    ['eu', 3],
    ['us', 2],
  ] as const)
    for (let i = 0; i < n; i++) await queue.enqueue(`${p}-${i}`, { partitionKey: p });

  stores = await sqliteFixture();
  repo = await stores.open();
  const executors = new ExecutorRegistry();
  executors.register<string, string>('copy', {
    forward: async (payload) => {
      if (payload === 'first') await held;
    },
    rollback: () => Promise.resolve(),
  });
  manager = new GroupManager({
    repository: repo,
    executors,
    owner: 'test',
    retry: { maxAttempts: 1, backoff: constant(0) },
  });

  admin = new AdminServer({ health: new HealthRegistry(), tokens: [{ name: 'ops-bob', secret: SECRET }] });
  const dashboard = new Dashboard(admin, { title: 'billing service' });
  dashboard.addView(queueView(queue, { name: 'invoices' }));
  dashboard.addView(groupsView(manager));
  dashboard.addView(actionsView(admin));
  await admin.listen();
});

afterAll(async () => {
  gate();
  await admin.close();
  await manager.close();
  await queues.dispose();
  await stores.dispose();
});

async function snapshot(): Promise<DashboardSnapshot> {
  return (await (
    await fetch(`${admin.url}/dashboard/snapshot`, { headers: auth })
  ).json()) as DashboardSnapshot;
}

describe('library views: a queue and operation groups', () => {
  it('shows the queue depth per partition and its dead letters with their last error; redrive is an admin call', async () => {
    const view = (await snapshot()).views.find((v) => v.id === 'queue-invoices');
    const stats = view?.panels[0] as StatsPanel;
    expect(stats.items.find((i) => i.label === 'Pending')?.value).toBe(5);
    expect(stats.items.find((i) => i.label === 'Dead letters')?.value).toBe(1);
    const partitions = view?.panels.find((p) => p.title.endsWith('depth per partition')) as TablePanel;
    expect(partitions.rows.map((r) => r.cells)).toEqual([
      ['eu', { value: 3, unit: 'count' }],
      ['us', { value: 2, unit: 'count' }],
    ]);
    const dead = view?.panels.find((p) => p.title.endsWith('dead letters')) as TablePanel;
    expect(dead.rows[0]?.cells[4]).toContain('upstream said 422: invalid invoice');
    expect(
      (await fetch(`${admin.url}/queues/invoices/redrive?id=abc`, { method: 'POST', headers: auth })).status,
    ).toBe(400);
    expect((await fetch(`${admin.url}/queues/invoices/redrive`, { method: 'POST' })).status).toBe(401);
    expect(admin.recentActions().map((a) => [a.caller, a.path, a.status])).toEqual([
      ['ops-bob', '/queues/invoices/redrive', 400],
      ['unknown', '/queues/invoices/redrive', 401],
    ]);
  });

  it('resumes and stops groups through their routes, with clear refusals', async () => {
    const post = (path: string) => fetch(`${admin.url}${path}`, { method: 'POST', headers: auth });
    const error = async (res: Response) => ((await res.json()) as { error: string }).error;
    const id = await manager.create({
      name: 'weekly',
      steps: [{ executor: 'copy', target: 'w', forward: 'w', rollback: 'w' }],
    });
    const unknown = await post('/groups/pause?id=nope');
    expect(unknown.status).toBe(404);
    expect(await error(unknown)).toBe('pause: no group with id "nope" (give ?id=<group id>)');
    const notPaused = await post(`/groups/resume?id=${id}`);
    expect(notPaused.status).toBe(409);
    expect(await error(notPaused)).toBe(
      `resume of group weekly (${id}) failed: group ${id} is pending: only a paused group can be resumed`,
    );
    const badMode = await post(`/groups/stop?id=${id}&mode=sideways`);
    expect(badMode.status).toBe(400);
    expect(await error(badMode)).toContain('mode must be graceful or rollback, got "sideways"');
    const stopped = await post(`/groups/stop?id=${id}&mode=graceful`);
    expect(await stopped.json()).toMatchObject({
      id,
      action: 'stop',
      mode: 'graceful',
      status: 'stopped',
      by: 'ops-bob',
    });
    expect((await repo.getGroup(id))?.status).toBe('stopped');
    const final = await post(`/groups/pause?id=${id}`);
    expect(final.status).toBe(409);
    expect(await error(final)).toContain('cannot go from stopped to paused');
    const log = await fetch(`${admin.url}/groups/log?id=${id}`, { headers: auth });
    expect(((await log.json()) as { message: string }[]).map((e) => e.message)).toContain(
      'created with 1 operations',
    );
  });

  it.skipIf(!chromiumAvailable())(
    'pauses a running group from the page (checked in the store) and redrives the dead letters',
    async () => {
      const browser: Browser = await launchBrowser();
      try {
        const id = await manager.create({
          name: 'nightly-sync',
          steps: [
            { executor: 'copy', target: 'a', forward: 'first', rollback: 'a' },
            { executor: 'copy', target: 'b', forward: 'second', rollback: 'b' },
            { executor: 'copy', target: 'c', forward: 'third', rollback: 'c' },
          ],
        });
        const run = manager.run(id);
        const { page, errors } = await browser.page();
        await page.goto(`${admin.url}/`);
        await page.getByLabel('Admin token').fill(SECRET);
        await page.getByRole('button', { name: 'Connect' }).click();
        const row = page.locator(`tr[data-row="${id}"]`);
        await expect.poll(() => row.innerText()).toMatch(/nightly-sync\s+running\s+0 \/ 3/);
        await page.screenshot({ path: path.join(IMG, 'dashboard-library.png'), fullPage: true });

        await page.getByRole('button', { name: 'Pause group nightly-sync' }).click();
        await page.locator('#confirm-ok').click();
        await page.locator('#result-title', { hasText: 'Pause group nightly-sync: done' }).waitFor();
        expect((await repo.getGroup(id))?.status).toBe('paused'); // in the store
        gate(); // the operation in flight finishes; the group stays paused
        await expect(run).resolves.toEqual({ id, status: 'paused' });
        await expect.poll(() => row.innerText()).toMatch(/nightly-sync\s+paused\s+1 \/ 3/);
        await page.getByRole('button', { name: 'Resume group nightly-sync' }).waitFor();

        await page.getByRole('button', { name: 'Redrive all dead letters of queue invoices' }).click();
        await page.locator('#confirm-ok').click();
        await page.locator('#result-title', { hasText: 'dead letters of queue invoices: done' }).waitFor();
        expect(await page.locator('#result-body').innerText()).toContain('"redriven": 1');
        expect((await queue.stats()).dead).toBe(0);
        expect(
          admin
            .recentActions()
            .map((a) => [a.caller, a.path, a.status])
            .slice(-2),
        ).toEqual([
          ['ops-bob', '/groups/pause', 200],
          ['ops-bob', '/queues/invoices/redrive', 200],
        ]);
        expect(errors).toEqual([]);
        await page.close();
      } finally {
        await browser.close();
      }
    },
  );
});

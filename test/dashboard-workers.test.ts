import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startS3Origin, type S3Origin } from './s3-origin.js';
import type { DashboardSnapshot, TablePanel } from '@keel/ops';
import { startFleet } from './gateway-workers-support.js';

const SECRET = 'fleet-secret-0123456789';
let origin: S3Origin;
let dir: string;

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-dash-workers-'));
});
afterAll(async () => {
  await origin.close();
  await rm(dir, { recursive: true, force: true });
});

describe('the dashboard behind keel gateway --workers', () => {
  it('takes a named token on the primary, streams the live snapshots through it with a row per worker', async () => {
    const fleet = await startFleet(origin.url, path.join(dir, 'cache'), 2, [
      '--admin-token',
      `ops-carol:${SECRET}`,
    ]);
    try {
      const auth = { authorization: `Bearer ${SECRET}` };
      expect((await fetch(`${fleet.admin}/status`)).status).toBe(401);
      expect((await fetch(`${fleet.admin}/status`, { headers: auth })).status).toBe(200);
      const page = await fetch(`${fleet.admin}/`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('<meta name="keel-auth" content="token" />');
      // Two snapshots a second apart arrive while the stream stays open: it is streamed, not buffered.
      const res = await fetch(`${fleet.admin}/dashboard/events`, { headers: auth });
      expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      let text = '';
      while (text.split('event: snapshot').length - 1 < 2) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      await reader.cancel();
      expect(text.split('event: snapshot').length - 1).toBeGreaterThanOrEqual(2);
      // The primary adds a row per worker, with figures from each worker's own /status.
      const fleetRows = async () => {
        const snap = (await (
          await fetch(`${fleet.admin}/dashboard/snapshot`, { headers: auth })
        ).json()) as DashboardSnapshot;
        expect(snap.views[0]?.id).toBe('fleet');
        expect(snap.views.map((v) => v.id)).toContain('gateway');
        return (snap.views[0]?.panels[0] as TablePanel).rows;
      };
      await expect
        .poll(async () =>
          (await fleetRows()).map((r) => [r.key, r.cells[2], (r.cells[5] as { value: unknown }).value]),
        )
        .toEqual([
          ['1', { value: 'ready', level: 'ok' }, 0],
          ['2', { value: 'ready', level: 'ok' }, 0],
        ]);
      expect(text).toContain('"id":"fleet"'); // in the stream too
      // An action through the primary is logged by the worker with the token's name.
      expect((await fetch(`${fleet.admin}/cache/cleanup`, { method: 'POST', headers: auth })).status).toBe(
        200,
      );
      await expect.poll(() => fleet.stderr()).toContain('admin action POST /cache/cleanup by ops-carol: 200');
      expect(fleet.stderr()).not.toContain(SECRET);
    } finally {
      fleet.proc.kill('SIGTERM');
      await fleet.exited;
    }
  });
});

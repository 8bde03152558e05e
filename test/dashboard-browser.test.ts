import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChaosProxy } from 'keel/chaos';
import { startAdminServer, type RunningGateway } from '@keel/gateway';
import type { AdminServer } from '@keel/ops';
import type { Page } from 'playwright-core';
import { chromiumAvailable, launchBrowser, type Browser } from './browser-support.js';
import { startRunHarness, until, type RunHarness } from './gateway-run-support.js';

const ALICE = 'ops-alice:alice-secret-0123456789';
const WALL = 'wallboard-secret-0123456789';
const IMG = path.join(import.meta.dirname, '..', 'docs', 'img');

const run = chromiumAvailable();
let harness: RunHarness;
let proxy: ChaosProxy;
let browser: Browser;

beforeAll(async () => {
  if (!run) return;
  harness = await startRunHarness({ name: 'dashboard', proxy: true });
  proxy = harness.proxy as ChaosProxy;
  browser = await launchBrowser();
});

afterAll(async () => {
  if (!run) return;
  await browser.close();
  await harness.close();
});

/** Opens the dashboard and gives it `token` through its form (it never goes in the URL). */
async function open(url: string, token: string, viewport?: { width: number; height: number }) {
  const { page, errors } = await browser.page(viewport);
  await page.goto(`${url}/`);
  await page
    .getByLabel('Admin token')
    .fill(token.includes(':') ? token.slice(token.indexOf(':') + 1) : token);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.locator('[data-stat="Requests"]').waitFor();
  expect(page.url()).toBe(`${url}/`);
  return { page, errors };
}

const stat = (page: Page, label: string): Promise<string> =>
  page.locator(`[data-stat="${label}"]`).innerText();

/** Clicks `button`, confirms, and answers the result the page shows once the call ended. */
async function confirm(page: Page, button: string): Promise<string> {
  if (await page.locator('#result').isVisible())
    await page.getByRole('button', { name: 'Close the result' }).click();
  await page.getByRole('button', { name: button, exact: true }).first().click();
  await page.locator('#confirm-ok').click();
  await page.locator('#result-title', { hasText: /: (done|refused|failed)/ }).waitFor();
  return `${await page.locator('#result-title').innerText()}\n${await page.locator('#result-body').innerText()}`;
}

describe.skipIf(!run)('the dashboard in chromium', () => {
  it('loads without console errors, shows the gateway figures, and follows traffic within 2 s (SSE)', async () => {
    const r = await harness.start({ adminToken: ALICE });
    const { page, errors } = await open(r.admin.url, ALICE);
    expect(await page.locator('h2', { hasText: 'Gateway' }).count()).toBe(1);
    expect(await stat(page, 'Hit ratio')).toBe('—');
    expect(await stat(page, 'Bytes from cache')).toBe('0 B');
    await page.locator('.uplot').first().waitFor();

    expect(await harness.readOk(r, 'a.bin')).toBe('MISS');
    await r.gateway.idle();
    for (let i = 0; i < 5; i++) expect(await harness.readOk(r, 'a.bin')).toBe('HIT');
    // Within 2 s of the traffic (a tick is 1 s): the counters, the hit ratio and the chart.
    const within2s = { timeout: 2000, interval: 50 };
    await expect.poll(() => stat(page, 'Bytes from cache'), within2s).toBe('1.43 MiB'); // 5 × 300,000 bytes
    await expect.poll(() => stat(page, 'Hit ratio'), within2s).toBe('83.3 %'); // 5 HIT of 6 reads
    const chart = page.locator('[data-panel="gateway/chart/requests"] .body');
    await expect
      .poll(async () => (await chart.getAttribute('aria-label')) ?? '', within2s)
      .toMatch(/HIT [1-9]/);

    // A few seconds of mixed traffic, so the screenshots show lines rather than points.
    for (let i = 0; i < 5; i++) {
      await Promise.all(['a.bin', 'c.bin', 'd.bin', 'a.bin', 'a.bin'].map((k) => harness.read(r, k)));
      await harness.read(r, `absent-${i}.bin`);
      await new Promise((resolve) => setTimeout(resolve, 700));
    }
    await page.screenshot({ path: path.join(IMG, 'dashboard-laptop.png'), fullPage: true });
    const phone = await open(r.admin.url, ALICE, { width: 390, height: 844 });
    await expect.poll(() => stat(phone.page, 'Bytes from cache')).not.toBe('0 B');
    await phone.page.screenshot({ path: path.join(IMG, 'dashboard-phone.png'), fullPage: true });
    const width = await phone.page.evaluate<number>('document.documentElement.scrollWidth');
    expect(width).toBeLessThanOrEqual(390); // nothing wider than a phone
    await phone.page.close();
    expect(errors).toEqual([]);
    expect(phone.errors).toEqual([]);
    await page.close();
  });

  it('shows a bucket breaker open while the origin fails, and closed once it recovers', async () => {
    const r = await harness.start(
      { adminToken: ALICE },
      { guard: { breakerFailures: 2, breakerHalfOpenAfterMs: 2500, retryAttempts: 1 } },
    );
    expect(await harness.readOk(r, 'c.bin')).toBe('MISS'); // bucket b now has a breaker of its own
    const { page, errors } = await open(r.admin.url, ALICE);
    const state = page
      .locator('[data-panel="gateway/table/Origin breakers by bucket"] tr[data-row="b"] td')
      .nth(1);
    await expect.poll(() => state.innerText()).toBe('closed');
    await proxy.disable();
    for (let i = 0; i < 3; i++) await harness.read(r, `missing-${i}.bin`);
    expect(r.gateway.guard.breakerStates().b).toBe('open');
    await expect.poll(() => state.innerText()).toBe('open');
    await proxy.enable();
    await until(() => r.gateway.guard.breakerStates().b !== 'open', 'half-open after 2.5 s');
    expect(await harness.readOk(r, 'd.bin')).toBe('MISS');
    expect(r.gateway.guard.breakerStates().b).toBe('closed');
    await expect.poll(() => state.innerText()).toBe('closed');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('refuses actions without the admin token and says why; with it, runs cleanup and logs who asked', async () => {
    const r = await harness.start();
    let admin: AdminServer | undefined;
    try {
      admin = await startAdminServer(r.gateway, {
        port: 0,
        health: r.health,
        token: ALICE,
        tokens: [{ name: 'wallboard', secret: WALL, scope: 'read' }],
      });
      const url = admin.url;
      // No token at all: nothing shown, the page says why.
      const bare = await browser.page();
      await bare.page.goto(`${url}/`);
      await expect.poll(() => bare.page.locator('#token-reason').innerText()).toContain('needs its token');
      expect(await bare.page.locator('[data-stat]').count()).toBe(0);
      await bare.page.close();

      // A read-only token: figures yes, actions refused with the reason.
      const { page, errors } = await open(url, WALL);
      let result = await confirm(page, 'Run cleanup');
      expect(result).toContain('refused');
      expect(result).toContain('"wallboard" may only read');
      expect(admin.recentActions().at(-1)).toMatchObject({
        caller: 'wallboard',
        path: '/cache/cleanup',
        status: 403,
      });

      // The admin token: cleanup runs, its report is shown, the action is logged with the name.
      await page.getByRole('button', { name: 'Forget token' }).click();
      await page.getByLabel('Admin token').fill(ALICE.slice(ALICE.indexOf(':') + 1));
      await page.getByRole('button', { name: 'Connect' }).click();
      await page.locator('[data-stat="Requests"]').waitFor();
      result = await confirm(page, 'Run cleanup');
      expect(result).toContain('Run cleanup: done');
      expect(result).toMatch(/"orphanedFiles": \d+/);
      expect(admin.recentActions().at(-1)).toMatchObject({
        caller: 'ops-alice',
        path: '/cache/cleanup',
        status: 200,
      });
      await expect
        .poll(() =>
          page
            .locator(
              '[data-panel="admin-actions/table/Recent actions (who asked, what, how it ended)"] tbody tr',
            )
            .first()
            .innerText(),
        )
        .toMatch(/ops-alice\s+POST \/cache\/cleanup\s+200/);
      // The browser logs the refused call (403) itself; nothing else went wrong.
      expect(errors).toEqual([
        'Failed to load resource: the server responded with a status of 403 (Forbidden)',
      ]);
      await page.close();
    } finally {
      await admin?.close();
    }
  });
});

export type { RunningGateway };

import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createGateway } from '../src/gateway/index.js';

const RULES = path.join(import.meta.dirname, '../src/gateway/alerts.rules.yml');
const hasPromtool = spawnSync('promtool', ['--version']).status === 0;
if (!hasPromtool) {
  const msg = 'promtool not found (Debian package `prometheus`): the alert rules are not checked';
  if (process.env.CI) throw new Error(msg);
  console.warn(`SKIPPING gateway alert rule check: ${msg}`);
}

describe('gateway alert rules', () => {
  it.skipIf(!hasPromtool)('pass promtool check rules', () => {
    const out = execFileSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(out).toContain('SUCCESS: 7 rules found');
  });

  it('alert on every metric the issue asks for, by names the gateway exports', async () => {
    const text = readFileSync(RULES, 'utf8');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-alerts-'));
    const gateway = await createGateway({
      upstream: 'http://127.0.0.1:9',
      auth: 'anonymous',
      cacheDir: dir,
      log: () => undefined,
    });
    const exported = await gateway.metrics.registry.metrics();
    await gateway.close(0);
    await rm(dir, { recursive: true, force: true });
    for (const metric of [
      'keel_cache_corruption_metadata_total',
      'keel_cache_disk_full_events_total',
      'keel_cache_inconsistency_fixed_total',
      'keel_cache_orphaned_files_cleaned_total',
      'keel_gateway_breakers',
      'keel_gateway_retry_budget_exhausted_total',
      'keel_gateway_cache_bypass',
    ]) {
      expect(text).toContain(metric);
      expect(exported).toContain(`# TYPE ${metric} `);
    }
  });
});

import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { resolveGatewayConfig, runGateway } from '@keel/gateway';
import { originClient } from './gateway-protocol-support.js';
import { startS3Origin, TEST_CREDENTIALS } from './s3-origin.js';

const RULES = path.join(import.meta.dirname, '../packages/gateway/rules/alerts.rules.yml');
const RULE_TESTS = path.join(import.meta.dirname, '../packages/gateway/rules/alerts.rules.test.yml');
const DOCS = path.join(import.meta.dirname, '../docs');

/** The metric names (`keel_…`, not a prefix such as `keel_cache_`) a guide mentions, starting with `prefix`. */
function documentedMetrics(guide: string, prefix = 'keel_'): string[] {
  const text = readFileSync(path.join(DOCS, guide), 'utf8');
  const names = text.match(/\bkeel_[a-z0-9_]*[a-z0-9]\b/g) ?? [];
  return [...new Set(names)].filter((n) => n.startsWith(prefix));
}

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;
if (!hasPromtool) {
  const msg = 'promtool not found (Debian package `prometheus`): the alert rules are not checked';
  if (process.env.CI) throw new Error(msg);
  console.warn(`SKIPPING gateway alert rule check: ${msg}`);
}

describe('gateway alert rules', () => {
  it.skipIf(!hasPromtool)('pass promtool check rules', () => {
    const out = execFileSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(out).toContain('SUCCESS: 11 rules found');
  });

  it.skipIf(!hasPromtool)('fire on the series they are meant for (promtool test rules)', () => {
    const run = spawnSync('promtool', ['test', 'rules', RULE_TESTS], { encoding: 'utf8' });
    expect(run.stdout + run.stderr).toContain('SUCCESS');
    expect(run.status).toBe(0);
  });

  it('name only metrics a running gateway exports on /metrics after traffic', async () => {
    const names = [...new Set(readFileSync(RULES, 'utf8').match(/\bkeel_[a-z0-9_]+/g) ?? [])];
    expect(names.length).toBeGreaterThanOrEqual(7);
    for (const issueAsks of [
      'keel_cache_corruption_metadata_total',
      'keel_cache_disk_full_events_total',
      'keel_cache_inconsistency_fixed_total',
      'keel_cache_orphaned_files_cleaned_total',
      'keel_gateway_breakers',
      'keel_gateway_retry_budget_exhausted_total',
      'keel_gateway_cache_bypass',
      'keel_disk_used_ratio',
      'keel_cache_io_errors_total',
      'keel_gateway_rules_invalid',
      'keel_gateway_coordinator_up',
    ])
      expect(names).toContain(issueAsks);

    const origin = await startS3Origin(['b']);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-gw-alerts-'));
    const s3 = originClient(origin);
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: randomBytes(100_000) }));
    s3.destroy();
    const running = await runGateway(
      resolveGatewayConfig(
        {
          upstream: origin.url,
          auth: 'anonymous',
          listen: '0',
          admin: '0',
          cacheDir: dir,
          // With a state directory, as the docs describe keel_process_restarts_total.
          stateDir: `${dir}-state`,
          originAccessKeyId: TEST_CREDENTIALS.accessKeyId,
          originSecretAccessKey: TEST_CREDENTIALS.secretAccessKey,
        },
        {},
      ),
      { log: () => undefined, logger: pino({ level: 'silent' }) },
    );
    try {
      for (let i = 0; i < 2; i++) {
        await (await fetch(`${running.gateway.url()}/b/k`)).arrayBuffer();
        await running.gateway.idle();
      }
      // An OpenMetrics scrape first: it must not rename what the text exposition shows after it.
      const om = await fetch(`${running.admin.url}/metrics`, {
        headers: { accept: 'application/openmetrics-text; version=1.0.0' },
      });
      expect(om.headers.get('content-type')).toContain('application/openmetrics-text');
      expect(await om.text()).toMatch(/^keel_gateway_requests_total\{method="GET",outcome="HIT"\} 1$/m);
      const exported = await (await fetch(`${running.admin.url}/metrics`)).text();
      expect(exported).toMatch(/^keel_gateway_requests_total\{method="GET",outcome="HIT"\} 1$/m);
      for (const name of names) expect(exported, name).toMatch(new RegExp(`^${name}(\\{[^}]*\\})? \\d`, 'm'));
      // The guides claim only what /metrics shows: every keel_ metric docs/gateway.md names, and
      // every keel_cache_ one docs/cache.md and docs/ops.md name (ops.md's others are a library's).
      const documented = [
        ...documentedMetrics('gateway.md'),
        ...documentedMetrics('cache.md', 'keel_cache_'),
        ...documentedMetrics('ops.md', 'keel_cache_'),
      ];
      expect(documented).toEqual(
        expect.arrayContaining(['keel_cache_hits_total', 'keel_cache_io_errors_total']),
      );
      const shown = new Set([...exported.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
      // Only a --workers primary has these (one process here); test/gateway-workers.test.ts reads
      // them from a fleet's /metrics.
      const fleetOnly = new Set(['keel_gateway_workers', 'keel_gateway_worker_restarts_total']);
      expect(documented.filter((name) => !shown.has(name) && !fleetOnly.has(name))).toEqual([]);
    } finally {
      await running.shutdown();
      await origin.close();
      await rm(dir, { recursive: true, force: true });
      await rm(`${dir}-state`, { recursive: true, force: true });
    }
  });
});

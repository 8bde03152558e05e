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
const hasPromtool = spawnSync('promtool', ['--version']).status === 0;
if (!hasPromtool) {
  const msg = 'promtool not found (Debian package `prometheus`): the alert rules are not checked';
  if (process.env.CI) throw new Error(msg);
  console.warn(`SKIPPING gateway alert rule check: ${msg}`);
}

describe('gateway alert rules', () => {
  it.skipIf(!hasPromtool)('pass promtool check rules', () => {
    const out = execFileSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(out).toContain('SUCCESS: 8 rules found');
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
      const exported = await (await fetch(`${running.admin.url}/metrics`)).text();
      expect(exported).toMatch(/^keel_gateway_requests_total\{method="GET",outcome="HIT"\} 1$/m);
      for (const name of names) expect(exported, name).toMatch(new RegExp(`^${name}(\\{[^}]*\\})? \\d`, 'm'));
    } finally {
      await running.shutdown();
      await origin.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

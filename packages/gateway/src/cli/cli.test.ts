import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

function keel(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'packages/gateway/src/cli/main.ts', ...args], {
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('keel CLI', () => {
  it('prints help', () => {
    const r = keel('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Usage: keel');
  });

  it('prints its version', () => {
    const r = keel('--version');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
  });

  it('prints the alert rules it ships (keel gateway rules), and with --tests their promtool tests, which pass on what it printed', () => {
    const rules = keel('gateway', 'rules');
    const tests = keel('gateway', 'rules', '--tests');
    expect([rules.status, tests.status]).toEqual([0, 0]);
    const shipped = (name: string): string =>
      readFileSync(new URL(`../../rules/${name}`, import.meta.url), 'utf8');
    expect(rules.stdout).toBe(shipped('alerts.rules.yml'));
    expect(tests.stdout).toBe(shipped('alerts.rules.test.yml'));
    expect(tests.stdout).toContain('rule_files:');
    if (spawnSync('promtool', ['--version']).status !== 0) return; // checked with promtool in CI (test/gateway-alerts.test.ts)
    // As a user would: keel gateway rules > alerts.rules.yml; keel gateway rules --tests > …
    const dir = mkdtempSync(path.join(os.tmpdir(), 'keel-cli-rules-'));
    try {
      writeFileSync(path.join(dir, 'alerts.rules.yml'), rules.stdout);
      writeFileSync(path.join(dir, 'alerts.rules.test.yml'), tests.stdout);
      const run = spawnSync('promtool', ['test', 'rules', 'alerts.rules.test.yml'], {
        cwd: dir,
        encoding: 'utf8',
      });
      expect(run.stdout + run.stderr).toContain('SUCCESS');
      expect(run.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects an unknown command with a clear message and a non-zero exit', () => {
    const r = keel('frobnicate');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/unknown command|too many arguments/);
  });
});

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { resolveGatewayConfig } from '@keel/gateway';
import { freePort } from './redis-support.js';

const base = { upstream: 'http://127.0.0.1:9000', auth: 'anonymous' };

function keel(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, ['--import', 'tsx', 'packages/gateway/src/cli/main.ts', ...args], {
    encoding: 'utf8',
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KEEL_COORDINATOR'))),
  });
}

describe('--coordinator (KEEL_COORDINATOR)', () => {
  it('is off by default; takes a redis:// URL from the flag, the variable or the config file', () => {
    expect(resolveGatewayConfig(base, {})).toMatchObject({
      coordinator: undefined,
      coordinatorPrefix: 'keel',
    });
    expect(resolveGatewayConfig({ ...base, coordinator: 'redis://10.0.0.5:6379/1' }, {}).coordinator).toBe(
      'redis://10.0.0.5:6379/1',
    );
    expect(
      resolveGatewayConfig(base, {
        KEEL_COORDINATOR: 'rediss://:pw@r.internal',
        KEEL_COORDINATOR_PREFIX: 'edge-eu',
      }),
    ).toMatchObject({ coordinator: 'rediss://:pw@r.internal', coordinatorPrefix: 'edge-eu' });
  });

  it.each([
    [
      'http://:hunter22@127.0.0.1:6379',
      /--coordinator \(KEEL_COORDINATOR\): expected a redis:\/\/ or rediss:\/\/ URL/,
    ],
    [
      'redis://:hunter22@127.0.0.1:6379/db',
      /--coordinator \(KEEL_COORDINATOR\): the path is a database number/,
    ],
    ['hunter22', /--coordinator \(KEEL_COORDINATOR\): .*not a URL/],
  ])('refuses %s naming the setting, never the password', (url, message) => {
    let error: Error | undefined;
    try {
      resolveGatewayConfig({ ...base, coordinator: url }, {});
    } catch (err) {
      error = err as Error;
    }
    expect(error?.message).toMatch(message);
    expect(error?.message).not.toContain('hunter22');
    expect((error as { code?: string } | undefined)?.code).toBe('INVALID_CONFIG');
  });

  it('refuses a prefix with spaces or too long', () => {
    expect(() => resolveGatewayConfig({ ...base, coordinatorPrefix: 'a b' }, {})).toThrow(
      /--coordinator-prefix \(KEEL_COORDINATOR_PREFIX\): expected 1 to 64 letters/,
    );
    expect(() => resolveGatewayConfig({ ...base, coordinatorPrefix: 'x'.repeat(65) }, {})).toThrow(
      /KEEL_COORDINATOR_PREFIX/,
    );
  });
});

describe('keel fleet status', () => {
  it('asks for --coordinator when it has none', () => {
    const run = keel('fleet', 'status');
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('--coordinator (KEEL_COORDINATOR): required');
  });

  it('says which Redis it could not reach, without its password', async () => {
    const port = await freePort();
    const run = keel('fleet', 'status', '--coordinator', `redis://:hunter22@127.0.0.1:${port}`);
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain(`could not reach the fleet's Redis at redis://:`);
    expect(run.stderr).toContain(`@127.0.0.1:${port}`);
    expect(run.stderr).toContain('ECONNREFUSED');
    expect(run.stderr).not.toContain('hunter22');
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { GroupStatus } from '@keel/store';
import { diagnoseRecord, failureClass, strategyFor } from './diagnose.js';
import { assertTransition, canTransition, TRANSITIONS } from './status.js';

const STATUSES = Object.keys(TRANSITIONS) as GroupStatus[];

describe('group status transitions', () => {
  it.each([
    ['pending', 'running', true],
    ['running', 'paused', true],
    ['paused', 'running', true],
    ['running', 'stopping', true],
    ['stopping', 'stopped', true],
    ['running', 'rolling_back', true],
    ['rolling_back', 'rolled_back', true],
    ['rollback_failed', 'rolling_back', true],
    ['failed', 'running', true],
    ['completed', 'running', false],
    ['rolled_back', 'rolling_back', false],
    ['stopped', 'running', false],
    ['pending', 'completed', false],
    ['paused', 'completed', false],
  ] as const)('%s → %s allowed: %s', (from, to, allowed) => {
    expect(canTransition(from, to)).toBe(allowed);
  });

  it('names the allowed targets when refusing', () => {
    expect(() => {
      assertTransition('g1', 'completed', 'running');
    }).toThrow(/group g1 cannot go from completed to running; allowed from completed: rolling_back/);
  });

  it('every status can reach a final status, and rolled_back is final', () => {
    const final = new Set<GroupStatus>(['rolled_back', 'completed', 'stopped']);
    fc.assert(
      fc.property(fc.constantFrom(...STATUSES), (start) => {
        const seen = new Set<GroupStatus>([start]);
        const queue = [start];
        while (queue.length > 0) {
          const s = queue.shift() as GroupStatus;
          for (const next of TRANSITIONS[s]) {
            if (seen.has(next)) continue;
            seen.add(next);
            queue.push(next);
          }
        }
        return [...seen].some((s) => final.has(s));
      }),
    );
    expect(TRANSITIONS.rolled_back).toEqual([]);
  });
});

describe('diagnosis', () => {
  const err = (code: string, kind = 'permanent') => ({ code, kind, message: code, retryable: false });

  it.each([
    ['CONNECTION_REFUSED', 'network', 'retry-with-backoff'],
    ['NETWORK_RESET', 'network', 'retry-with-backoff'],
    ['TIMEOUT', 'timeout', 'retry-with-backoff'],
    ['DISK_FULL', 'resource', 'check-and-retry'],
    ['TOO_MANY_OPEN_FILES', 'resource', 'check-and-retry'],
    ['CONFLICT', 'state', 'reset-and-retry'],
    ['GROUP_LEASE_LOST', 'state', 'reset-and-retry'],
    ['INVALID_INPUT', 'logic', 'manual'],
    ['GROUP_UNKNOWN_EXECUTOR', 'logic', 'manual'],
  ] as const)('%s is a %s failure → %s', (code, kind, strategy) => {
    expect(failureClass(err(code))).toBe(kind);
    expect(strategyFor(failureClass(err(code)))).toBe(strategy);
  });

  it('treats an unknown transient code as a network failure', () => {
    expect(failureClass(err('SOMETHING_NEW', 'transient'))).toBe('network');
  });

  const base = {
    id: 'g',
    name: 'g',
    onFailure: 'rollback' as const,
    stopMode: null,
    createdAt: 0,
    startedAt: 0,
    updatedAt: 1000,
    finishedAt: null,
    leaseOwner: 'w',
    leaseExpiresAt: 5000,
    lastError: null,
    recoverAttempts: 0,
    progressAt: 1000,
    onStuck: 'retry' as const,
    operationTimeoutMs: null,
    correlationId: null,
  };

  it('a running group is stuck only once its lease has expired', () => {
    expect(diagnoseRecord({ ...base, status: 'running' }, 4999)).toMatchObject({
      stuck: false,
      strategy: 'none',
    });
    expect(diagnoseRecord({ ...base, status: 'running' }, 5000)).toMatchObject({
      stuck: 'lease-expired',
      strategy: 'reset-and-retry',
      sinceLastActivityMs: 4000,
    });
  });

  it('a stuck rollback continues the rollback; a paused group is never stuck', () => {
    expect(diagnoseRecord({ ...base, status: 'rolling_back' }, 9999).strategy).toBe('continue-rollback');
    expect(diagnoseRecord({ ...base, status: 'paused', leaseExpiresAt: null }, 9999).stuck).toBe(false);
    expect(diagnoseRecord({ ...base, status: 'stopping', stopMode: 'graceful' }, 9999).strategy).toBe(
      'finish-stop',
    );
    expect(diagnoseRecord({ ...base, status: 'stopping', stopMode: 'rollback' }, 9999).strategy).toBe(
      'continue-rollback',
    );
  });

  it('a group whose live worker renews its lease is stuck after stuckAfterMs without progress', () => {
    const live = { ...base, status: 'running' as const, leaseExpiresAt: 10_000_000 };
    expect(diagnoseRecord(live, 1000 + 600_000).stuck).toBe(false);
    expect(diagnoseRecord(live, 1000 + 600_001)).toMatchObject({
      stuck: 'no-progress',
      errorKind: 'timeout',
      strategy: 'retry-with-backoff',
      sinceLastProgressMs: 600_001,
    });
    // heartbeats move updatedAt, not progressAt: still stuck
    expect(diagnoseRecord({ ...live, updatedAt: 600_000 }, 1000 + 600_001).stuck).toBe('no-progress');
    expect(diagnoseRecord(live, 1000 + 5_001, 5_000).stuck).toBe('no-progress');
    expect(diagnoseRecord(live, 1000 + 600_001).summary).toMatch(
      /holds the lease, but it made no progress for 600001 ms/,
    );
  });

  it.each([
    ['retry', 'no-progress', 'retry-with-backoff'],
    ['rollback', 'no-progress', 'roll-back'],
    ['manual', 'no-progress', 'manual'],
    ['retry', 'lease-expired', 'reset-and-retry'],
    ['rollback', 'lease-expired', 'roll-back'],
    ['manual', 'lease-expired', 'manual'],
  ] as const)(
    'a stuck running group with onStuck %s (%s) is recovered by %s',
    (onStuck, reason, strategy) => {
      const group = {
        ...base,
        status: 'running' as const,
        onStuck,
        leaseExpiresAt: reason === 'lease-expired' ? 5000 : 10_000_000,
      };
      expect(diagnoseRecord(group, 1_000_000)).toMatchObject({ stuck: reason, strategy });
    },
  );

  it('cluster failures are checked before they are retried', () => {
    for (const code of ['NO_QUORUM', 'NOT_LEADER', 'CLUSTER_UNHEALTHY', 'NODE_UNAVAILABLE'])
      expect(failureClass(err(code, 'transient'))).toBe('cluster');
    expect(strategyFor('cluster')).toBe('check-cluster-and-retry');
  });
});

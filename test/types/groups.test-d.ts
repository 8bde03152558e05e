/** What TypeScript infers from @keel/groups: executors' payload types and the manager's answers. */
import {
  ExecutorRegistry,
  type Executor,
  type ExecutorContext,
  type GroupManager,
  type GroupStatus,
  type RunOutcome,
} from '@keel/groups';
import { describe, expectTypeOf, test } from 'vitest';

interface CreateTable {
  db: string;
  table: string;
}

describe('group executors', () => {
  test("an executor's forward and rollback payload types are inferred from its functions", () => {
    const executor = {
      forward: async (p: CreateTable, ctx: ExecutorContext) => {
        expectTypeOf(ctx.attempt).toEqualTypeOf<number>();
        await Promise.resolve(p.table);
      },
      rollback: async (p: { db: string; drop: string }) => {
        await Promise.resolve(p.drop);
      },
    };
    expectTypeOf(executor).toExtend<Executor<CreateTable, { db: string; drop: string }>>();
    expectTypeOf(new ExecutorRegistry().register('sql', executor)).toEqualTypeOf<ExecutorRegistry>();
  });

  test('the context gives the group, the operation and a signal', () => {
    new ExecutorRegistry().register('noop', {
      forward: async (_payload: unknown, ctx) => {
        expectTypeOf(ctx).toEqualTypeOf<ExecutorContext>();
        expectTypeOf(ctx.groupId).toEqualTypeOf<string>();
        expectTypeOf(ctx.seq).toEqualTypeOf<number>();
        expectTypeOf(ctx.target).toEqualTypeOf<string>();
        expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>();
        await Promise.resolve();
      },
    });
  });

  test('an executor must answer with a promise, and rollback is optional', () => {
    new ExecutorRegistry().register('forward-only', { forward: async (_p: CreateTable) => undefined });
    // @ts-expect-error forward must return a promise
    new ExecutorRegistry().register('sync', { forward: (_p: CreateTable) => undefined });
    // @ts-expect-error forward is required
    new ExecutorRegistry().register('empty', { rollback: async () => undefined });
  });

  test('registrations chain', () => {
    const registry = new ExecutorRegistry()
      .register('a', { forward: async (_p: string) => undefined })
      .register('b', { forward: async (_p: number) => undefined });
    expectTypeOf(registry.names()).toEqualTypeOf<string[]>();
  });
});

describe('group manager', () => {
  test('create gives the id, and run, pause and rollback say how the group ended', () => {
    type Manager = GroupManager;
    expectTypeOf<Manager['create']>().returns.resolves.toEqualTypeOf<string>();
    expectTypeOf<Manager['run']>().returns.resolves.toEqualTypeOf<RunOutcome>();
    expectTypeOf<RunOutcome['status']>().toEqualTypeOf<GroupStatus>();
  });
});

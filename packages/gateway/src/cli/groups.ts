import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { keelError } from 'keel';
import {
  DEFAULT_STUCK_AFTER_MS,
  ExecutorRegistry,
  GroupFailedError,
  GroupManager,
  openGroupRepository,
  stuckReason,
  TRANSITIONS,
  type GroupRepository,
  type GroupStatus,
  type OperationProgress,
  type StopMode,
  type StoreAccess,
} from '@keel/groups';
import { duration } from './queue.js';

interface GroupsOptions {
  store?: string;
  json?: boolean;
  executors?: string;
  stuckAfter?: string;
}

const STATUSES = Object.keys(TRANSITIONS) as GroupStatus[];

/**
 * Loads the user's executors: a module exporting `registerExecutors(registry)` (or a default
 * function of the same shape), so this process can run and roll back stored operations.
 */
async function loadExecutors(modulePath: string | undefined): Promise<ExecutorRegistry> {
  const registry = new ExecutorRegistry();
  if (modulePath === undefined) return registry;
  const mod = (await import(pathToFileURL(path.resolve(modulePath)).href)) as Record<string, unknown>;
  const register = mod.registerExecutors ?? mod.default;
  if (typeof register !== 'function') {
    throw keelError(
      'INVALID_CONFIG',
      `--executors ${modulePath}: the module must export registerExecutors(registry) or a default function`,
    );
  }
  await (register as (r: ExecutorRegistry) => unknown)(registry);
  return registry;
}

/**
 * Opens the store a command works on. Commands never create a store or add tables to a file that
 * is not one (`access`): list and show only read, the others change an existing store.
 */
async function withManager<T>(
  options: GroupsOptions,
  access: Exclude<StoreAccess, 'create'>,
  fn: (manager: GroupManager, repo: GroupRepository) => Promise<T>,
): Promise<T> {
  const url = options.store ?? process.env.KEEL_GROUPS_STORE;
  if (url === undefined || url === '') {
    throw keelError(
      'INVALID_CONFIG',
      'no store given: pass --store <sqlite file | postgres://…> or set KEEL_GROUPS_STORE',
    );
  }
  const stuckAfterMs = duration('--stuck-after', options.stuckAfter, DEFAULT_STUCK_AFTER_MS);
  const executors = await loadExecutors(options.executors);
  // A person at a terminal wants the error now, not after waiting for the server.
  const repository = await openGroupRepository(url, { access, startup: false });
  try {
    return await fn(new GroupManager({ repository, executors, stuckAfterMs }), repository);
  } finally {
    await repository.close();
  }
}

function out(options: GroupsOptions, value: unknown, lines: readonly string[]): void {
  process.stdout.write(
    options.json === true ? `${JSON.stringify(value, null, 2)}\n` : `${lines.join('\n')}\n`,
  );
}

const iso = (ms: number | null): string => (ms === null ? '-' : new Date(ms).toISOString());

const progressText = (p: OperationProgress): string =>
  [
    p.done === undefined
      ? undefined
      : `${String(p.done)}${p.total === undefined ? '' : `/${String(p.total)}`}`,
    p.message,
    `at ${iso(p.at)}`,
  ]
    .filter((x) => x !== undefined)
    .join(' ');

function needExecutors(options: GroupsOptions, what: string): void {
  if (options.executors === undefined) {
    throw keelError(
      'INVALID_CONFIG',
      `${what} runs executors in this process: pass --executors <module> exporting registerExecutors(registry)`,
    );
  }
}

/** `keel groups list|show|pause|resume|stop|rollback|recover|cleanup --store URL`. */
export function registerGroupsCommand(program: Command): void {
  const groups = program.command('groups').description('inspect and control operation groups in a store');
  const common = (c: Command): Command =>
    c
      .option('--store <url>', 'SQLite file or postgres:// URL (default $KEEL_GROUPS_STORE)')
      .option('--json', 'print machine-readable JSON')
      .option(
        '--stuck-after <duration>',
        'an active group without progress for this long is stuck (e.g. 10m, 1h)',
        '10m',
      );
  const withExecutors = (c: Command): Command =>
    common(c).option('--executors <module>', 'module exporting registerExecutors(registry)');

  common(groups.command('list').description('groups with status and progress'))
    .option('--status <list>', `comma-separated statuses (${STATUSES.join(', ')})`)
    .action(async (options: GroupsOptions & { status?: string }) => {
      const statuses = options.status?.split(',').map((s) => s.trim()) as GroupStatus[] | undefined;
      for (const s of statuses ?? []) {
        if (!STATUSES.includes(s))
          throw keelError('INVALID_INPUT', `--status: unknown status "${s}"; one of ${STATUSES.join(', ')}`);
      }
      await withManager(options, 'read-only', async (manager) => {
        const list = await manager.list(statuses);
        const rows = await Promise.all(
          list.map(async (g) => ({
            ...(await manager.progress(g.id)),
            stuck: stuckReason(g, manager.clock.now(), manager.stuckAfterMs),
          })),
        );
        out(
          options,
          rows,
          rows.length === 0
            ? ['no groups']
            : rows.map(
                (p) =>
                  `${p.id}  ${p.status.padEnd(15)} ${String(p.done)}/${String(p.total)}  ${p.name}  last progress ${iso(p.lastProgressAt)}` +
                  (p.stuck === false ? '' : `  STUCK (${p.stuck})`),
              ),
        );
      });
    });

  common(
    groups.command('show <id>').description('a group: progress, diagnosis, operations and recent log'),
  ).action(async (id: string, options: GroupsOptions) => {
    await withManager(options, 'read-only', async (manager) => {
      const progress = await manager.progress(id);
      const diagnosis = await manager.diagnose(id);
      const operations = await manager.operations(id);
      const logs = (await manager.logs(id)).slice(-20);
      out(options, { progress, diagnosis, operations, logs }, [
        `${progress.id}  ${progress.name}`,
        `status: ${progress.status}  ${String(progress.done)}/${String(progress.total)} done`,
        `started: ${iso(progress.startedAt)}  last activity: ${iso(progress.lastActivityAt)}  last progress: ${iso(progress.lastProgressAt)}  finished: ${iso(progress.finishedAt)}`,
        `diagnosis: ${diagnosis.summary}`,
        'operations:',
        ...operations.map(
          (o) =>
            `  ${String(o.seq).padStart(3)} step ${String(o.step)} ${o.status.padEnd(15)} ${o.executor} ${o.target}` +
            (o.error === null ? '' : `  ${o.error.code}: ${o.error.message}`) +
            (o.status === 'running' && o.progress !== null ? `  progress ${progressText(o.progress)}` : ''),
        ),
        'log:',
        ...logs.map((l) => `  ${iso(l.at)} ${l.level} ${l.message}`),
      ]);
    });
  });

  common(groups.command('pause <id>').description('pause after the current operation')).action(
    async (id: string, options: GroupsOptions) => {
      await withManager(options, 'existing', async (manager) => {
        await manager.pause(id);
        out(options, { id, status: 'paused' }, [`${id}: paused`]);
      });
    },
  );

  withExecutors(
    groups
      .command('resume <id>')
      .description('resume a paused group (runs it here with --executors, else marks it pending)'),
  ).action(async (id: string, options: GroupsOptions) => {
    await withManager(options, 'existing', async (manager) => {
      const outcome = await manager.resume(id, { run: options.executors !== undefined });
      out(options, outcome, [`${id}: ${outcome.status}`]);
    });
  });

  withExecutors(
    groups
      .command('stop <id>')
      .description('stop a group: graceful (finish the current operation) or rollback'),
  )
    .option('--mode <mode>', 'graceful or rollback', 'graceful')
    .action(async (id: string, options: GroupsOptions & { mode: string }) => {
      if (options.mode !== 'graceful' && options.mode !== 'rollback') {
        throw keelError('INVALID_INPUT', `--mode must be graceful or rollback, got "${options.mode}"`);
      }
      const mode: StopMode = options.mode;
      await withManager(options, 'existing', async (manager) => {
        const outcome = await manager.stop(id, { mode, drive: options.executors !== undefined });
        out(options, outcome, [`${id}: ${outcome.status}`]);
      });
    });

  withExecutors(
    groups
      .command('rollback <id>')
      .description('roll back a completed, stopped, failed or partly rolled-back group here'),
  ).action(async (id: string, options: GroupsOptions) => {
    needExecutors(options, 'rollback');
    await withManager(options, 'existing', async (manager) => {
      const { status } = await manager.progress(id);
      // A rollback already under way (or a rollback stop nobody carried out) is continued here.
      const outcome =
        status === 'rolling_back' || status === 'stopping'
          ? await manager.tryDrive(id)
          : await manager.rollback(id).catch((err: unknown) => {
              if (err instanceof GroupFailedError) return { id, status: err.status };
              throw err;
            });
      out(options, outcome, [`${id}: ${outcome.status}`]);
      if (outcome.status !== 'rolled_back') process.exitCode = 1;
    });
  });

  withExecutors(
    groups
      .command('recover')
      .description('diagnose stuck and failed groups; with --executors, run their recovery'),
  )
    .option('--max-attempts <n>', 'recovery attempts per group', '3')
    .action(async (options: GroupsOptions & { maxAttempts: string }) => {
      const maxAttempts = Number(options.maxAttempts);
      if (!Number.isSafeInteger(maxAttempts) || maxAttempts < 1) {
        throw keelError(
          'INVALID_INPUT',
          `--max-attempts must be a positive integer, got "${options.maxAttempts}"`,
        );
      }
      await withManager(options, 'existing', async (manager) => {
        if (options.executors === undefined) {
          const candidates = [
            ...(await manager.stuck()),
            ...(await manager.list(['failed', 'rollback_failed'])),
          ];
          const diagnoses = await Promise.all(candidates.map((g) => manager.diagnose(g.id)));
          out(options, { dryRun: true, diagnoses }, [
            diagnoses.length === 0 ? 'nothing to recover' : 'would recover (pass --executors to do it):',
            ...diagnoses.map((d) => `  ${d.summary}`),
          ]);
          if (diagnoses.length > 0) process.exitCode = 1;
          return;
        }
        const report = await manager.recover({ maxAttempts });
        out(options, report, [
          `examined ${String(report.examined)} group(s)`,
          ...report.actions.map((a) =>
            a.action === 'skipped'
              ? `  ${a.id}: skipped (${a.reason})`
              : `  ${a.id}: ${a.action} via ${a.strategy} → ${a.status}`,
          ),
        ]);
        if (report.actions.some((a) => a.action !== 'recovered')) process.exitCode = 1;
      });
    });

  common(
    groups
      .command('cleanup')
      .description(
        'delete finished groups and old logs by age (failed 24 h, completed 7 days, logs 30 days)',
      ),
  ).action(async (options: GroupsOptions) => {
    await withManager(options, 'existing', async (manager) => {
      const report = await manager.cleanup();
      out(options, report, [
        `groups deleted: ${JSON.stringify(report.groupsDeleted)}`,
        `log lines deleted: ${String(report.logsDeleted)}`,
      ]);
    });
  });
}

/**
 * Child processes and temporary directories of a harness run, and their cleanup: everything
 * started here is stopped and removed when the run ends, fails, or is interrupted (Ctrl-C,
 * SIGTERM), so a run leaves no server listening and no directory behind.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const children = new Set<ChildProcess>();
const directories = new Set<string>();
let keepDirectories = false;
let handlersInstalled = false;

/** Keep the temporary directories for inspection instead of removing them (`--keep`). */
export function keepTemporaryDirectories(keep: boolean): void {
  keepDirectories = keep;
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

// Last resort on the way out: 'exit' handlers cannot wait, so whatever is still running is killed
// outright and the directories removed synchronously.
function cleanupNow(): void {
  for (const child of children) if (alive(child)) child.kill('SIGKILL');
  if (!keepDirectories) for (const dir of directories) rmSync(dir, { recursive: true, force: true });
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupNow);
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.on(signal, () => {
      process.stderr.write(`\ncompat: ${signal}: stopping the servers and removing temporary files\n`);
      void cleanupAll().finally(() => process.exit(130));
    });
}

/** Creates a temporary directory that the run removes when it ends. */
export async function temporaryDirectory(prefix: string): Promise<string> {
  installHandlers();
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  directories.add(dir);
  return dir;
}

/** Starts a child process that the run stops when it ends. */
export function startChild(command: string, args: string[], options: SpawnOptions): ChildProcess {
  installHandlers();
  const child = spawn(command, args, { ...options, detached: false });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/**
 * Stops a child: SIGTERM, then SIGKILL if it has not exited within `graceMs` (default 5 s).
 * Resolves once it has exited.
 */
export async function stopChild(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (!alive(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Stops every child still running and removes every temporary directory (unless kept). */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c)));
  if (keepDirectories) {
    for (const dir of directories) process.stderr.write(`compat: kept ${dir}\n`);
    return;
  }
  await Promise.all([...directories].map((d) => rm(d, { recursive: true, force: true })));
  directories.clear();
}

/**
 * Waits until a line of the child's output (stdout and stderr) matches `pattern`, and resolves
 * with the match.
 * @throws when the child exits first or `timeoutMs` passes (the message carries its last output).
 */
export function waitForLine(
  child: ChildProcess,
  pattern: RegExp,
  what: string,
  timeoutMs = 60_000,
): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    let pending = '';
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      seen = (seen + text).slice(-4_000);
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const m = pattern.exec(line);
        if (m) {
          done();
          resolve(m);
          return;
        }
      }
    };
    const onExit = (code: number | null, signal: string | null): void => {
      done();
      reject(
        new Error(
          `${what} exited (code ${code}, signal ${signal}) before it was ready; its output:\n${seen}`,
        ),
      );
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what} was not ready within ${timeoutMs / 1000} s; its output:\n${seen}`));
    }, timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

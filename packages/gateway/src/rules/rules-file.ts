import { watch, type FSWatcher } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { classify, keelError, systemClock, type Clock, type KeelError, type TimerHandle } from 'keel';
import { CacheRuleList } from './cache-rules.js';

/** A rules file larger than this is refused (a thousand rules fit in a small fraction of it). */
export const MAX_RULES_FILE_BYTES = 1024 * 1024;

/** What a reload of the rules file did: applied its rules, or kept the previous ones because it is invalid. */
export type RulesReload =
  { result: 'applied'; rules: number } | { result: 'invalid'; error: KeelError; keptRules: number };

/** Options of {@link RulesFile.open}. */
export interface RulesFileOptions {
  /** The rules file (JSON; see cache-rules.ts for its format). */
  path: string;
  clock?: Clock;
  /**
   * How often the file is also checked with `stat` (default 500 ms), for file systems whose
   * change events do not arrive (network and some container mounts).
   */
  pollMs?: number;
  /** Wait after a change before reading the file (default 50 ms): editors save in several steps. */
  debounceMs?: number;
  /** Called after each reload of a changed file (not at the first read). */
  onReload?: (reload: RulesReload) => void;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * The cache rules in a file, read again whenever the file changes: its directory is watched (so
 * an editor that saves by writing a new file and renaming it over the old one is seen too) and
 * the file is also checked with `stat` every `pollMs`; changes are read once they settle for
 * `debounceMs`. A change takes effect within `debounceMs` of the event, at most `pollMs +
 * debounceMs` without one. A file that became invalid (or unreadable, or was removed) keeps the
 * rules last applied; the next valid version is applied.
 */
export class RulesFile {
  private list: CacheRuleList;
  private watcher: FSWatcher | undefined;
  private pollTimer: TimerHandle | undefined;
  private debounceTimer: TimerHandle | undefined;
  /** The file's identity and times when last read (or found missing). */
  private seen: string;
  /** The text last read, applied or not: the same text saved again changes nothing. */
  private lastText: string;
  private reading: Promise<void> | undefined;
  private readAgain = false;
  private closed = false;
  private invalidNow = false;
  private readonly clock: Clock;
  private readonly pollMs: number;
  private readonly debounceMs: number;

  private constructor(
    private readonly options: RulesFileOptions,
    first: { list: CacheRuleList; text: string; seen: string },
  ) {
    this.list = first.list;
    this.lastText = first.text;
    this.seen = first.seen;
    this.clock = options.clock ?? systemClock;
    this.pollMs = options.pollMs ?? 500;
    this.debounceMs = options.debounceMs ?? 50;
  }

  /**
   * Reads and validates the file, then watches it.
   * @throws KeelError `INVALID_CONFIG` when it cannot be read or is invalid (naming the rule and field).
   */
  static async open(options: RulesFileOptions): Promise<RulesFile> {
    const read = await readRules(options.path);
    if ('error' in read) throw read.error;
    const file = new RulesFile(options, read);
    file.watch();
    return file;
  }

  /** The rules in force now. */
  current(): CacheRuleList {
    return this.list;
  }

  /** Whether the file's last version could not be applied (the rules before it are in force). */
  get invalid(): boolean {
    return this.invalidNow;
  }

  /** Stops watching. */
  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    this.pollTimer?.cancel();
    this.debounceTimer?.cancel();
  }

  private watch(): void {
    const dir = path.dirname(this.options.path);
    const name = path.basename(this.options.path);
    try {
      this.watcher = watch(dir, { persistent: false }, (_event, filename) => {
        if (filename === null || filename === name) this.changed();
      });
      this.watcher.on('error', (err) => {
        this.options.log?.(
          'warn',
          `cannot watch ${dir} for changes of the cache rules: ${classify(err).message}; checking every ${this.pollMs} ms`,
        );
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (err) {
      this.options.log?.(
        'warn',
        `cannot watch ${dir} for changes of the cache rules: ${classify(err).message}; checking every ${this.pollMs} ms`,
      );
    }
    this.poll();
  }

  private poll(): void {
    this.pollTimer = this.clock.setTimer(this.pollMs, () => {
      void signature(this.options.path).then((now) => {
        if (this.closed) return;
        if (now !== this.seen) {
          // Noted now, or each poll would put the read off again while it waits to settle.
          this.seen = now;
          this.changed();
        }
        this.poll();
      });
    });
  }

  /** Something changed: read the file once it has been quiet for `debounceMs`. */
  private changed(): void {
    if (this.closed) return;
    this.debounceTimer?.cancel();
    this.debounceTimer = this.clock.setTimer(this.debounceMs, () => {
      this.debounceTimer = undefined;
      if (this.reading) {
        this.readAgain = true;
        return;
      }
      this.reading = this.reload().finally(() => {
        this.reading = undefined;
        if (this.readAgain && !this.closed) {
          this.readAgain = false;
          this.changed();
        }
      });
    });
  }

  private async reload(): Promise<void> {
    const read = await readRules(this.options.path);
    if (this.closed) return;
    this.seen = read.seen;
    if (read.text !== undefined && read.text === this.lastText) return;
    this.lastText = read.text ?? '';
    if ('error' in read) {
      this.invalidNow = true;
      const keptRules = this.list.rules.length;
      this.options.log?.(
        'error',
        `${read.error.message}; keeping the ${keptRules} rule(s) in force until the file is fixed`,
        { code: read.error.code },
      );
      this.options.onReload?.({ result: 'invalid', error: read.error, keptRules });
      return;
    }
    this.list = read.list;
    this.invalidNow = false;
    this.options.log?.(
      'info',
      `cache rules ${this.options.path} reloaded: ${read.list.rules.length} rule(s)`,
    );
    this.options.onReload?.({ result: 'applied', rules: read.list.rules.length });
  }
}

type Read =
  | { list: CacheRuleList; text: string; seen: string }
  | { error: KeelError; text: string | undefined; seen: string };

/** Reads and parses the rules file; never throws. */
async function readRules(file: string): Promise<Read> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    return { error: unreadable(file, err), text: undefined, seen: 'missing' };
  }
  try {
    const st = await handle.stat();
    const seen = signatureOf(st);
    if (!st.isFile())
      return { error: unreadable(file, new Error('not a regular file')), text: undefined, seen };
    if (st.size > MAX_RULES_FILE_BYTES)
      return {
        error: unreadable(file, new Error(`${st.size} bytes, more than the ${MAX_RULES_FILE_BYTES} allowed`)),
        text: undefined,
        seen,
      };
    const text = await handle.readFile('utf8');
    try {
      return { list: CacheRuleList.parse(text, file), text, seen };
    } catch (err) {
      return { error: classify(err), text, seen };
    }
  } catch (err) {
    return { error: unreadable(file, err), text: undefined, seen: 'unreadable' };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

function unreadable(file: string, err: unknown): KeelError {
  const cause = classify(err);
  return keelError(
    'INVALID_CONFIG',
    `cache rules ${file}: cannot read it: ${cause.message}`,
    { source: file, cause: cause.code },
    { stack: false },
  );
}

/** What tells one version of the file from the next without reading it. */
async function signature(file: string): Promise<string> {
  try {
    return signatureOf(await stat(file));
  } catch {
    return 'missing';
  }
}

function signatureOf(st: { ino: number; size: number; mtimeMs: number; ctimeMs: number }): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

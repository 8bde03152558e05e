/**
 * The TypeScript examples of README.md and docs/*.md, as test/docs-examples.test.ts checks them.
 *
 * Every ```ts (or ```typescript) block is an example: a module of its own, type-checked with the
 * repository's compiler settings. An HTML comment right before the block (blank lines between
 * are allowed) says more about it:
 *
 *     <!-- example: run postgres
 *     import pg from 'pg';
 *     declare const url: URL;
 *     -->
 *
 * The words after `example:` are flags; the lines after the first, up to `-->`, are setup that the
 * reader does not see, put before the block's code (declarations of what the example takes as
 * given, imports that the surrounding text already showed). Flags:
 * - `run`: the example is also run (node with tsx, from a temporary directory of its own, removed
 *   after it, with TMPDIR a temporary directory too) and must exit 0 by itself within the test's
 *   time limit: it closes what it opens.
 * - `continues`: the block goes on from the previous example of the same file (same module).
 * - `postgres`, `redis`: running it needs that server (127.0.0.1:5432, database `test`, tables in a
 *   schema of the run's own; 127.0.0.1:6379).
 * - `sqlite`: it runs on a SQLite store; with `postgres` as well, it runs twice, once on each. Its
 *   environment's `EXAMPLE_STORE_URL` says where the store is (a file in its directory, or the
 *   PostgreSQL URL).
 *
 * A comment `<!-- example: after` right after a block (blank lines between are allowed), its
 * lines up to `-->`, is code put after the block's: checks of what the example did, and the closing
 * of what the hidden setup opened. A `continues` example goes on from the previous block without
 * it.
 */

/** One example, as found in a markdown file. */
export interface DocExample {
  /** The markdown file, relative to the repository root (`docs/policies.md`). */
  doc: string;
  /** Line of the opening fence, 1-based. */
  line: number;
  /** The block's code. */
  code: string;
  /** The hidden setup from the marker comment ('' without one). */
  setup: string;
  /** Line in the markdown file of the setup's first line (0 without setup). */
  setupLine: number;
  /** The hidden code after the block, from an `example: after` comment ('' without one). */
  after: string;
  /** Line in the markdown file of that code's first line (0 without it). */
  afterLine: number;
  run: boolean;
  continues: boolean;
  /** Runs on SQLite (and, with `postgres` in `needs` as well, once on each store). */
  sqlite: boolean;
  needs: ('postgres' | 'redis')[];
}

/** Where a line of a generated example file came from. */
export interface SourceLine {
  doc: string;
  /** 1-based line in the markdown file. */
  line: number;
}

/** An example as a file to check (and maybe run): its code, and where each of its lines came from. */
export interface ExampleModule {
  example: DocExample;
  /** A file name for it: `policies.md-69.ts`. */
  name: string;
  text: string;
  lines: SourceLine[];
}

const FLAGS = new Set(['run', 'continues', 'postgres', 'redis', 'sqlite']);
/** The first word of a comment that holds code for after the block above it. */
const AFTER = 'after';
const FENCE = /^(\s*)(`{3,}|~{3,})\s*(ts|typescript)(?:\s.*)?$/;
const ANY_FENCE = /^(\s*)(`{3,}|~{3,})/;
const MARKER = /^\s*<!--\s*example:(.*)$/;

/** The examples of one markdown file. Throws on an unknown flag or a marker that is not closed. */
export function extractExamples(doc: string, markdown: string): DocExample[] {
  const lines = markdown.split('\n');
  const examples: DocExample[] = [];
  let pending: { flags: string[]; setup: string[]; setupLine: number; line: number } | undefined;
  // The example an `after` comment may still follow (only blank lines since its block).
  let last: DocExample | undefined;
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i] ?? '';
    const marker = MARKER.exec(text);
    if (marker !== null) {
      const first = marker[1] ?? '';
      const closedHere = first.includes('-->');
      const flags = first.replace('-->', '').trim().split(/\s+/).filter(Boolean);
      const isAfter = flags[0] === AFTER;
      if (isAfter && flags.length > 1) {
        throw new Error(`${doc}:${i + 1}: an "${AFTER}" comment takes no flags`);
      }
      for (const flag of isAfter ? [] : flags) {
        if (!FLAGS.has(flag)) {
          throw new Error(
            `${doc}:${i + 1}: unknown example flag "${flag}" (known: ${[...FLAGS].join(', ')}, or ${AFTER})`,
          );
        }
      }
      const setup: string[] = [];
      const start = i;
      if (!closedHere) {
        for (i++; i < lines.length && !(lines[i] ?? '').includes('-->'); i++) setup.push(lines[i] ?? '');
        if (i >= lines.length) throw new Error(`${doc}:${start + 1}: example marker not closed with -->`);
      }
      if (isAfter) {
        if (last === undefined || pending !== undefined) {
          throw new Error(`${doc}:${start + 1}: "example: ${AFTER}" not right after a ts block`);
        }
        if (setup.length === 0) throw new Error(`${doc}:${start + 1}: "example: ${AFTER}" without code`);
        if (last.afterLine !== 0) throw new Error(`${doc}:${start + 1}: a second "example: ${AFTER}"`);
        last.after = setup.join('\n');
        last.afterLine = start + 2;
        last = undefined;
        continue;
      }
      last = undefined;
      pending = { flags, setup, setupLine: setup.length > 0 ? start + 2 : 0, line: start + 1 };
      continue;
    }
    const fence = ANY_FENCE.exec(text);
    if (fence === null) {
      if (text.trim() !== '') last = undefined;
      if (text.trim() !== '' && pending !== undefined) {
        throw new Error(`${doc}:${pending.line}: example marker not followed by a ts block`);
      }
      continue;
    }
    last = undefined;
    const [, indent = '', ticks = '```'] = fence;
    const body: string[] = [];
    const open = i;
    for (i++; i < lines.length; i++) {
      const l = lines[i] ?? '';
      if (l.trim().startsWith(ticks) && l.trim().replace(/[`~]/g, '') === '') break;
      body.push(l.startsWith(indent) ? l.slice(indent.length) : l);
    }
    if (FENCE.test(text)) {
      const flags = pending?.flags ?? [];
      last = {
        doc,
        line: open + 1,
        code: body.join('\n'),
        setup: pending?.setup.join('\n') ?? '',
        setupLine: pending?.setupLine ?? 0,
        after: '',
        afterLine: 0,
        run: flags.includes('run'),
        continues: flags.includes('continues'),
        sqlite: flags.includes('sqlite'),
        needs: flags.filter((f): f is 'postgres' | 'redis' => f === 'postgres' || f === 'redis'),
      };
      examples.push(last);
    } else if (pending !== undefined) {
      throw new Error(`${doc}:${pending.line}: example marker before a block that is not ts`);
    }
    pending = undefined;
  }
  if (pending !== undefined)
    throw new Error(`${doc}:${pending.line}: example marker not followed by a ts block`);
  return examples;
}

/**
 * The examples of one file as modules: setup, then the code (after the previous module's setup and
 * code for a `continues` example), then the code of its `after` comment. Each ends with `export {}`
 * so that it is a module of its own.
 */
export function exampleModules(examples: readonly DocExample[]): ExampleModule[] {
  const modules: ExampleModule[] = [];
  // What a continuing example goes on from: the previous one without its `after` code.
  let previous: { text: string[]; lines: SourceLine[] } | undefined;
  for (const example of examples) {
    if (example.continues && previous === undefined) {
      throw new Error(`${example.doc}:${example.line}: "continues" on the first example of the file`);
    }
    const text: string[] = [];
    const lines: SourceLine[] = [];
    const add = (code: string, firstLine: number): void => {
      code.split('\n').forEach((l, i) => {
        text.push(l);
        lines.push({ doc: example.doc, line: firstLine + i });
      });
    };
    if (example.continues && previous !== undefined) {
      text.push(...previous.text);
      lines.push(...previous.lines);
    }
    if (example.setup !== '') add(example.setup, example.setupLine);
    add(example.code, example.line + 1);
    previous = { text: [...text], lines: [...lines] };
    if (example.after !== '') add(example.after, example.afterLine);
    text.push('export {};');
    lines.push({ doc: example.doc, line: example.line });
    const name = `${example.doc.replace(/^.*\//, '')}-${example.line}.ts`;
    modules.push({ example, name, text: text.join('\n'), lines });
  }
  return modules;
}

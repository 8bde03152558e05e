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
 * - `run`: the example is also run (node with tsx, from a temporary directory) and must exit 0 by
 *   itself within the test's time limit: it closes what it opens.
 * - `continues`: the block goes on from the previous example of the same file (same module).
 * - `postgres`, `redis`: running it needs that server (127.0.0.1:5432, database `test`; 127.0.0.1:6379).
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
  run: boolean;
  continues: boolean;
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

const FLAGS = new Set(['run', 'continues', 'postgres', 'redis']);
const FENCE = /^(\s*)(`{3,}|~{3,})\s*(ts|typescript)(?:\s.*)?$/;
const ANY_FENCE = /^(\s*)(`{3,}|~{3,})/;
const MARKER = /^\s*<!--\s*example:(.*)$/;

/** The examples of one markdown file. Throws on an unknown flag or a marker that is not closed. */
export function extractExamples(doc: string, markdown: string): DocExample[] {
  const lines = markdown.split('\n');
  const examples: DocExample[] = [];
  let pending: { flags: string[]; setup: string[]; setupLine: number; line: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i] ?? '';
    const marker = MARKER.exec(text);
    if (marker !== null) {
      const first = marker[1] ?? '';
      const closedHere = first.includes('-->');
      const flags = first.replace('-->', '').trim().split(/\s+/).filter(Boolean);
      for (const flag of flags) {
        if (!FLAGS.has(flag)) {
          throw new Error(
            `${doc}:${i + 1}: unknown example flag "${flag}" (known: ${[...FLAGS].join(', ')})`,
          );
        }
      }
      const setup: string[] = [];
      const start = i;
      if (!closedHere) {
        for (i++; i < lines.length && !(lines[i] ?? '').includes('-->'); i++) setup.push(lines[i] ?? '');
        if (i >= lines.length) throw new Error(`${doc}:${start + 1}: example marker not closed with -->`);
      }
      pending = { flags, setup, setupLine: setup.length > 0 ? start + 2 : 0, line: start + 1 };
      continue;
    }
    const fence = ANY_FENCE.exec(text);
    if (fence === null) {
      if (text.trim() !== '' && pending !== undefined) {
        throw new Error(`${doc}:${pending.line}: example marker not followed by a ts block`);
      }
      continue;
    }
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
      examples.push({
        doc,
        line: open + 1,
        code: body.join('\n'),
        setup: pending?.setup.join('\n') ?? '',
        setupLine: pending?.setupLine ?? 0,
        run: flags.includes('run'),
        continues: flags.includes('continues'),
        needs: flags.filter((f): f is 'postgres' | 'redis' => f === 'postgres' || f === 'redis'),
      });
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
 * The examples of one file as modules: setup, then the code (after the previous module's text
 * for a `continues` example). Each ends with `export {}` so that it is a module of its own.
 */
export function exampleModules(examples: readonly DocExample[]): ExampleModule[] {
  const modules: ExampleModule[] = [];
  for (const example of examples) {
    const previous = modules.at(-1);
    if (example.continues && previous === undefined) {
      throw new Error(`${example.doc}:${example.line}: "continues" on the first example of the file`);
    }
    const text: string[] = [];
    const lines: SourceLine[] = [];
    if (example.continues && previous !== undefined) {
      const body = previous.text.split('\n').slice(0, -1); // without its `export {}`
      text.push(...body);
      lines.push(...previous.lines.slice(0, body.length));
    }
    if (example.setup !== '') {
      example.setup.split('\n').forEach((l, i) => {
        text.push(l);
        lines.push({ doc: example.doc, line: example.setupLine + i });
      });
    }
    example.code.split('\n').forEach((l, i) => {
      text.push(l);
      lines.push({ doc: example.doc, line: example.line + 1 + i });
    });
    text.push('export {};');
    lines.push({ doc: example.doc, line: example.line });
    const name = `${example.doc.replace(/^.*\//, '')}-${example.line}.ts`;
    modules.push({ example, name, text: text.join('\n'), lines });
  }
  return modules;
}

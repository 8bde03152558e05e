/**
 * Docs that run: every TypeScript example in README.md and docs/*.md compiles, and the ones marked
 * `run` run (the convention is in test/docs-examples.ts and docs/packages.md). The examples are
 * written into a temporary directory inside the repository, so the workspace packages resolve
 * through the root tsconfig's `paths` as they do for the tests.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import pg from 'pg';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exampleModules, extractExamples, type DocExample, type ExampleModule } from './docs-examples.js';
import { PG_URL, postgresAvailable } from './pg-support.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const TSCONFIG = path.join(ROOT, 'tsconfig.json');

async function markdownFiles(): Promise<string[]> {
  const docs = (await readdir(path.join(ROOT, 'docs'))).filter((f) => f.endsWith('.md')).sort();
  return ['README.md', ...docs.map((f) => `docs/${f}`)];
}

const modules: ExampleModule[] = [];
for (const doc of await markdownFiles()) {
  modules.push(...exampleModules(extractExamples(doc, await readFile(path.join(ROOT, doc), 'utf8'))));
}

let dir = '';
const diagnostics = new Map<string, string[]>();

/** `docs/x.md:12: message` for a diagnostic in an example file, `file:line: message` elsewhere. */
function describeDiagnostic(d: ts.Diagnostic, byFile: Map<string, ExampleModule>): string {
  const message = ts.flattenDiagnosticMessageText(d.messageText, '\n');
  if (d.file === undefined || d.start === undefined) return message;
  const { line } = d.file.getLineAndCharacterOfPosition(d.start);
  const m = byFile.get(path.resolve(d.file.fileName));
  const at = m?.lines[line];
  return at === undefined
    ? `${path.relative(ROOT, d.file.fileName)}:${line + 1}: ${message}`
    : `${at.doc}:${at.line}: ${message}`;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(ROOT, '.docs-examples-'));
  await mkdir(path.join(dir, 'tmp'));
  const byFile = new Map<string, ExampleModule>();
  for (const m of modules) {
    await writeFile(path.join(dir, m.name), m.text);
    byFile.set(path.join(dir, m.name), m);
  }
  const config = ts.getParsedCommandLineOfConfigFile(
    TSCONFIG,
    { noEmit: true },
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      },
    },
  );
  if (config === undefined) throw new Error(`could not read ${TSCONFIG}`);
  // The repository's own declarations of untyped packages (s3rver's, say) hold for the examples too.
  const ambient = config.fileNames.filter((f) => f.endsWith('.d.ts'));
  const program = ts.createProgram([...byFile.keys(), ...ambient], config.options);
  // Only the examples are checked (the packages' own sources are the type check's business), so
  // the checker looks at no more of the packages than the examples use.
  const general = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()];
  diagnostics.set(
    '',
    general.map((d) => describeDiagnostic(d, byFile)),
  );
  for (const file of byFile.keys()) {
    const source = program.getSourceFile(file);
    if (source === undefined) throw new Error(`the program lost ${file}`);
    const found = [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)];
    diagnostics.set(
      file,
      found.map((d) => describeDiagnostic(d, byFile)),
    );
  }
}, 120_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** One run of an example: the store it runs on, and the servers it needs. */
interface ExampleRun {
  store: 'sqlite' | 'postgres' | undefined;
  needs: DocExample['needs'];
}

/** The runs of an example: one, or one per store for an example marked both `sqlite` and `postgres`. */
function runsOf(example: DocExample): ExampleRun[] {
  const onPostgres = example.needs.includes('postgres');
  if (!example.sqlite) return [{ store: onPostgres ? 'postgres' : undefined, needs: example.needs }];
  const sqlite: ExampleRun = { store: 'sqlite', needs: example.needs.filter((n) => n !== 'postgres') };
  return onPostgres ? [sqlite, { store: 'postgres', needs: example.needs }] : [sqlite];
}

/** Runs `sql` on the test database. */
async function pgQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/**
 * Runs an example with node and tsx from a directory of its own, removed after it; its TMPDIR is
 * one the examples share (so tsx's cache serves them all), removed with the examples. On
 * PostgreSQL its tables go to a schema of its own (the search_path of every connection it makes,
 * through PGOPTIONS), dropped after it. Resolves with its exit and output.
 */
async function runExample(
  m: ExampleModule,
  run: ExampleRun,
  timeoutMs: number,
): Promise<{ code: number | null; output: string }> {
  const cwd = await mkdtemp(path.join(dir, `${m.name}.run-`));
  const schema = run.store === 'postgres' ? `docs_example_${randomUUID().slice(0, 8)}` : undefined;
  try {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      TSX_TSCONFIG_PATH: TSCONFIG,
      TMPDIR: path.join(dir, 'tmp'),
      PGHOST: '127.0.0.1',
      PGPORT: '5432',
      PGUSER: 'postgres',
      PGDATABASE: 'test',
    };
    if (run.store === 'sqlite') env.EXAMPLE_STORE_URL = path.join(cwd, 'store.db');
    if (schema !== undefined) {
      await pgQuery(`CREATE SCHEMA ${schema}`);
      env.PGOPTIONS = `-c search_path=${schema}`;
      env.EXAMPLE_STORE_URL = PG_URL;
    }
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(dir, m.name)], {
      cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      output += `\n[killed: still running after ${timeoutMs} ms; an example marked run must close what it opens]`;
      child.kill('SIGKILL');
    }, timeoutMs);
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    clearTimeout(timer);
    return { code, output };
  } finally {
    await rm(cwd, { recursive: true, force: true });
    if (schema !== undefined) await pgQuery(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  }
}

function redisAvailable(): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: 6379 });
    socket.setTimeout(2000);
    const fail = (err: unknown) => {
      socket.destroy();
      if (process.env.CI) {
        reject(new Error(`Redis is required in CI but 127.0.0.1:6379 failed: ${String(err)}`));
        return;
      }
      console.warn(`\n*** SKIPPING docs examples that need Redis: 127.0.0.1:6379 (${String(err)}) ***\n`);
      resolve(false);
    };
    socket.once('connect', () => {
      socket.end();
      resolve(true);
    });
    socket.once('error', fail);
    socket.once('timeout', () => fail(new Error('no answer within 2 s')));
  });
}

/** Whether each server answers, asked once per run. */
const services = {
  postgres: once(() => postgresAvailable('docs examples that need PostgreSQL')),
  redis: once(redisAvailable),
};

function once<T>(f: () => Promise<T>): () => Promise<T> {
  let answer: Promise<T> | undefined;
  return () => (answer ??= f());
}

describe('extracting examples from markdown', () => {
  const doc = [
    'Text.',
    '```ts',
    'const a = 1;',
    '```',
    '<!-- example: run postgres',
    'declare const url: URL;',
    '-->',
    '',
    '```typescript',
    'await fetch(url);',
    '```',
    '```sh',
    'npm test',
    '```',
    '<!-- example: continues -->',
    '```ts',
    'console.log(a);',
    '```',
  ].join('\n');

  it('finds ts blocks with their flags and hidden setup, and skips other languages', () => {
    expect(extractExamples('d.md', doc)).toEqual([
      {
        doc: 'd.md',
        line: 2,
        code: 'const a = 1;',
        setup: '',
        setupLine: 0,
        after: '',
        afterLine: 0,
        run: false,
        continues: false,
        sqlite: false,
        needs: [],
      },
      {
        doc: 'd.md',
        line: 9,
        code: 'await fetch(url);',
        setup: 'declare const url: URL;',
        setupLine: 6,
        after: '',
        afterLine: 0,
        run: true,
        continues: false,
        sqlite: false,
        needs: ['postgres'],
      },
      {
        doc: 'd.md',
        line: 16,
        code: 'console.log(a);',
        setup: '',
        setupLine: 0,
        after: '',
        afterLine: 0,
        run: false,
        continues: true,
        sqlite: false,
        needs: [],
      },
    ]);
  });

  it('makes modules whose lines lead back to the markdown, a continuing one after the previous', () => {
    const [, second, third] = exampleModules(extractExamples('d.md', doc));
    expect(second?.text).toBe('declare const url: URL;\nawait fetch(url);\nexport {};');
    expect(second?.lines.slice(0, 2)).toEqual([
      { doc: 'd.md', line: 6 },
      { doc: 'd.md', line: 10 },
    ]);
    expect(third?.text).toBe('declare const url: URL;\nawait fetch(url);\nconsole.log(a);\nexport {};');
    expect(third?.lines[2]).toEqual({ doc: 'd.md', line: 17 });
  });

  const withAfter = [
    '<!-- example: run sqlite postgres',
    'const dir = process.cwd();',
    '-->',
    '```ts',
    'const q = open(dir);',
    '```',
    '',
    '<!-- example: after',
    'await q.close();',
    '-->',
    '<!-- example: continues -->',
    '```ts',
    'q.use();',
    '```',
  ].join('\n');

  it('takes the code of an "after" comment for after the block, and a continuing block goes on without it', () => {
    const [first, second] = extractExamples('d.md', withAfter);
    expect(first).toMatchObject({
      after: 'await q.close();',
      afterLine: 9,
      sqlite: true,
      needs: ['postgres'],
    });
    expect(second).toMatchObject({ after: '', afterLine: 0, continues: true });
    const [one, two] = exampleModules(extractExamples('d.md', withAfter));
    expect(one?.text).toBe('const dir = process.cwd();\nconst q = open(dir);\nawait q.close();\nexport {};');
    expect(one?.lines[2]).toEqual({ doc: 'd.md', line: 9 });
    expect(two?.text).toBe('const dir = process.cwd();\nconst q = open(dir);\nq.use();\nexport {};');
    expect(two?.lines[2]).toEqual({ doc: 'd.md', line: 13 });
  });

  it('refuses an "after" comment that does not follow a ts block, a second one, and one with flags or no code', () => {
    expect(() => extractExamples('d.md', 'Text.\n<!-- example: after\nx();\n-->')).toThrow(
      'd.md:2: "example: after" not right after a ts block',
    );
    expect(() => extractExamples('d.md', '```ts\n```\nText.\n<!-- example: after\nx();\n-->')).toThrow(
      'd.md:4: "example: after" not right after a ts block',
    );
    expect(() =>
      extractExamples('d.md', '```ts\n```\n<!-- example: after\nx();\n-->\n<!-- example: after\ny();\n-->'),
    ).toThrow('d.md:6: "example: after" not right after a ts block');
    expect(() => extractExamples('d.md', '```ts\n```\n<!-- example: after run\nx();\n-->')).toThrow(
      'd.md:3: an "after" comment takes no flags',
    );
    expect(() => extractExamples('d.md', '```ts\n```\n<!-- example: after -->')).toThrow(
      'd.md:3: "example: after" without code',
    );
  });

  it('refuses an unknown flag, an unclosed marker and a marker without a ts block', () => {
    expect(() => extractExamples('d.md', '<!-- example: runs -->\n```ts\n```')).toThrow(
      'd.md:1: unknown example flag "runs"',
    );
    expect(() => extractExamples('d.md', '<!-- example: run\nconst x = 1;\n```ts\n```')).toThrow(
      'd.md:1: example marker not closed',
    );
    expect(() => extractExamples('d.md', '<!-- example: run -->\nText.\n```ts\n```')).toThrow(
      'd.md:1: example marker not followed by a ts block',
    );
    expect(() => extractExamples('d.md', '<!-- example: run -->\n```sh\nls\n```')).toThrow(
      'd.md:1: example marker before a block that is not ts',
    );
  });
});

describe('docs examples', () => {
  it('every markdown file with examples is found, and examples are found in them', () => {
    expect(modules.length).toBeGreaterThan(0);
    expect(new Set(modules.map((m) => m.example.doc))).toContain('docs/policies.md');
  });

  it('the type check reported nothing outside the examples (compiler options, missing files)', () => {
    expect(diagnostics.get('') ?? []).toEqual([]);
  });

  const labelled = modules.map((m) => [`${m.example.doc}:${m.example.line}`, m] as const);
  it.each(labelled)('%s compiles', (_label, m) => {
    expect(diagnostics.get(path.join(dir, m.name)) ?? []).toEqual([]);
  });
});

// The runs go in parallel (vitest's maxConcurrency at a time): they spend most of their time
// waiting (for a server, a shutdown's delay), not computing.
describe('docs examples that run', () => {
  for (const m of modules.filter((e) => e.example.run)) {
    for (const run of runsOf(m.example)) {
      const on =
        run.store === undefined ? '' : { sqlite: ' on SQLite', postgres: ' on PostgreSQL' }[run.store];
      it.concurrent(`${m.example.doc}:${m.example.line} runs${on} and exits 0`, async ({ expect }) => {
        for (const need of run.needs) if (!(await services[need]())) return;
        const { code, output } = await runExample(m, run, 25_000);
        expect(code, `the example exited with ${String(code)}; its output:\n${output}`).toBe(0);
      });
    }
  }
});

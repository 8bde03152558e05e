/**
 * keel as users install it. Builds and packs every workspace package, checks the tarballs (no test
 * files, publint, arethetypeswrong), installs them into a fresh project outside the repository the
 * way a user does (`npm install <tarball>`; third-party dependencies from the registry), and then:
 * - a project with only `keel` has no other runtime package (`npm ls --omit=dev --all`);
 * - the consumers in ./consumer, one per entry point, type-check (TypeScript, nodenext, strict,
 *   the installed declarations checked too) and run;
 * - `keel gateway --demo` from the installed bin starts, answers one ranged GET as its origin does,
 *   serves the dashboard's page and its files from the installed @keel/ops,
 *   and exits 0 on SIGTERM.
 * Everything it creates (the project, the tarballs, the demo's files, a PostgreSQL schema) is
 * removed at the end, and the demo process is killed if it is still running.
 *
 * Run: `npm run test:installed` (CI runs it from .ci/run). PostgreSQL (KEEL_TEST_PG_URL, default
 * the local `test` database) is used by the @keel/store consumer, and Redis (KEEL_TEST_REDIS_URL,
 * default the local one) by the @keel/fleet consumer, when they answer; without one, that part is
 * skipped with a loud message, and the run fails instead when CI is set.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { REDIS_URL, redisReachable } from '../redis-support.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const CONSUMERS = path.join(import.meta.dirname, 'consumer');
const BIN = path.join(ROOT, 'node_modules', '.bin');
/** Consumers that need nothing but `keel`; the rest need the @keel packages. */
const CORE_CONSUMERS = ['keel.ts', 'cache.ts', 'chaos.ts'];
/** The `*.test.*` files a tarball may hold: the promtool tests shipped beside the alert rules. */
const SHIPPED_TEST_FILES = new Set(['rules/alerts.rules.test.yml', 'rules/recovery.rules.test.yml']);
/** How long the demo may take to start (it generates its objects first). */
const DEMO_START_MS = 180_000;

const started = performance.now();
const step = (what: string): void =>
  console.log(`[${((performance.now() - started) / 1000).toFixed(1).padStart(6)} s] ${what}`);

/** Commands running now, ended if the script is interrupted. */
const running = new Set<ChildProcess>();

/** Runs a command; resolves with its stdout, or rejects with everything it printed. */
function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; allowFailure?: boolean },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      running.delete(child);
      if (code === 0 || options.allowFailure === true) resolve({ code, stdout, stderr });
      else
        reject(
          new Error(`${command} ${args.join(' ')} (in ${options.cwd}) exited ${code}\n${stdout}\n${stderr}`),
        );
    });
  });
}

interface PackedFile {
  path: string;
  size: number;
}
interface Packed {
  name: string;
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: PackedFile[];
}

const PACKAGE_DIRS = ['keel', 'ops', 'transfer', 'store', 'queue', 'groups', 'fleet', 'gateway'];

/** What a tarball may hold: the build, its sources (for the source maps), the bin, the rules, the dashboard's page. */
function misplaced(p: Packed): string[] {
  const problems: string[] = [];
  for (const { path: file } of p.files) {
    if (/(^|\/)[^/]*\.test\.[^/]*$/.test(file) && !SHIPPED_TEST_FILES.has(file))
      problems.push(`test file ${file}`);
    else if (file.endsWith('.tsbuildinfo')) problems.push(`build info ${file}`);
    else if (!/^(dist|src|bin|rules|dashboard)\/|^(package\.json|README[^/]*|LICENSE[^/]*)$/.test(file))
      problems.push(`unexpected file ${file}`);
  }
  return problems.map((m) => `${p.name}: ${m}`);
}

async function packAll(dest: string): Promise<Packed[]> {
  const packed: Packed[] = [];
  for (const dir of PACKAGE_DIRS) {
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dest], {
      cwd: path.join(ROOT, 'packages', dir),
    });
    const [info] = JSON.parse(stdout) as Packed[];
    if (info === undefined) throw new Error(`npm pack of packages/${dir} said nothing`);
    packed.push(info);
  }
  return packed;
}

/** publint and arethetypeswrong on every package, two packages at a time. */
async function lint(packed: Packed[], dest: string): Promise<void> {
  const queue = [...packed.entries()];
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) await lintOne(...next, dest);
  };
  await Promise.all([worker(), worker()]);
}

async function lintOne(i: number, p: Packed, dest: string): Promise<void> {
  await run(path.join(BIN, 'publint'), ['--strict', path.join(ROOT, 'packages', PACKAGE_DIRS[i] ?? '')], {
    cwd: ROOT,
  });
  // ESM only by design: the esm-only profile leaves out CommonJS `require` and node10 resolution.
  // The rules file is an export but not a module.
  const attw = ['--profile', 'esm-only', '--exclude-entrypoints', './alerts.rules.yml', '-f', 'ascii'];
  await run(path.join(BIN, 'attw'), [path.join(dest, p.filename), ...attw], { cwd: ROOT });
}

interface LsNode {
  version?: string;
  dependencies?: Record<string, LsNode>;
}

/**
 * Every installed package in an `npm ls --json` tree, as `name@version`. An optional peer that is
 * not installed (keel's `@node-rs/crc32`) is listed without a version, and is not counted.
 */
function flatten(deps: Record<string, LsNode> | undefined, into = new Set<string>()): Set<string> {
  for (const [name, node] of Object.entries(deps ?? {})) {
    if (node.version !== undefined) into.add(`${name}@${node.version}`);
    flatten(node.dependencies, into);
  }
  return into;
}

/**
 * Every copy of a keel package the project's lock file lists (nested ones included) that did not
 * come from our tarballs: a package of the same name on the registry must not stand in for ours.
 */
async function notFromTarballs(project: string): Promise<string[]> {
  const lock = JSON.parse(await readFile(path.join(project, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { resolved?: string }>;
  };
  return Object.entries(lock.packages)
    .filter(([where]) => /(^|\/)node_modules\/(keel|@keel\/[^/]+)$/.test(where))
    .filter(([, entry]) => !(entry.resolved ?? '').startsWith('file:'))
    .map(([where, entry]) => `${where} from ${entry.resolved ?? 'nowhere'}`);
}

/** How many packages a project holds (`npm ls --all`, which fails on a missing or invalid one), and their size. */
async function footprint(project: string): Promise<string> {
  const { tree } = await npmLs(project, ['--all']);
  const { stdout } = await run('du', ['-sk', 'node_modules'], { cwd: project });
  const mb = Number(stdout.split(/\s/)[0]) / 1024;
  return `${flatten(tree.dependencies).size} packages, ${mb.toFixed(1)} MB of node_modules`;
}

async function npmLs(cwd: string, args: string[]): Promise<{ tree: LsNode; text: string }> {
  const json = await run('npm', ['ls', '--json', ...args], { cwd });
  const text = await run('npm', ['ls', ...args], { cwd });
  return { tree: JSON.parse(json.stdout) as LsNode, text: text.stdout.trim() };
}

async function typecheckAndRun(project: string, consumers: string[], env: NodeJS.ProcessEnv): Promise<void> {
  for (const file of consumers) await copyFile(path.join(CONSUMERS, file), path.join(project, file));
  await copyFile(path.join(CONSUMERS, 'tsconfig.json'), path.join(project, 'tsconfig.json'));
  await run(path.join(project, 'node_modules', '.bin', 'tsc'), ['-p', '.'], { cwd: project });
  for (const file of consumers) {
    const { stdout } = await run(process.execPath, [path.join('dist', file.replace(/\.ts$/, '.js'))], {
      cwd: project,
      env,
    });
    step(stdout.trim());
  }
}

/** PostgreSQL for the store consumer: a schema of its own, or undefined (skipped loudly) without a server. */
async function postgres(): Promise<{ url: string; schema: string; drop(): Promise<void> } | undefined> {
  const url = process.env.KEEL_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const schema = `keel_installed_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query(`CREATE SCHEMA ${schema}`);
  } catch (err) {
    await client.end().catch(() => undefined);
    if (process.env.CI) throw new Error(`PostgreSQL is required in CI but ${url} failed: ${String(err)}`);
    console.warn(
      `\n*** SKIPPING the PostgreSQL part of @keel/store: ${url} is not reachable (${String(err)}) ***\n`,
    );
    return undefined;
  }
  return {
    url,
    schema,
    drop: async () => {
      try {
        await client.query(`DROP SCHEMA ${schema} CASCADE`);
      } finally {
        await client.end();
      }
    },
  };
}

interface Demo {
  proc: ChildProcess;
  output(): string;
  closed: Promise<number | null>;
}

function startDemo(project: string, tmp: string): Demo {
  const proc = spawn(
    path.join(project, 'node_modules', '.bin', 'keel'),
    ['gateway', '--demo', '--listen', '0', '--admin', '0'],
    { cwd: project, env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const closed = new Promise<number | null>((resolve) => proc.once('close', (code) => resolve(code)));
  return { proc, output: () => out, closed };
}

async function demoRangedGet(demo: Demo): Promise<void> {
  let exited = false;
  void demo.closed.then(() => (exited = true));
  const deadline = performance.now() + DEMO_START_MS;
  let addresses: RegExpExecArray | null = null;
  while (addresses === null) {
    addresses = /S3 endpoint (http:\/\/\S+) .*→ (http:\/\/\S+);/.exec(demo.output());
    if (addresses !== null && !demo.output().includes('Ctrl-C')) addresses = null;
    if (exited) throw new Error(`keel gateway --demo exited before it was ready:\n${demo.output()}`);
    if (performance.now() > deadline)
      throw new Error(
        `keel gateway --demo was not ready within ${DEMO_START_MS / 1000} s:\n${demo.output()}`,
      );
    await new Promise((r) => setTimeout(r, 200));
  }
  const [, gateway = '', origin = ''] = addresses;
  const range = { range: 'bytes=100-299' };
  const through = await fetch(`${gateway}/demo/1KiB.bin`, { headers: range });
  const direct = await fetch(`${origin}/demo/1KiB.bin`, { headers: range });
  const [a, b] = [Buffer.from(await through.arrayBuffer()), Buffer.from(await direct.arrayBuffer())];
  if (
    through.status !== 206 ||
    through.headers.get('content-range') !== 'bytes 100-299/1024' ||
    a.length !== 200
  )
    throw new Error(
      `the demo answered ${through.status} ${through.headers.get('content-range') ?? ''} with ${a.length} bytes`,
    );
  if (!a.equals(b)) throw new Error('the demo gateway and its origin answered different bytes for one range');
  step(`keel gateway --demo: GET ${gateway}/demo/1KiB.bin (${range.range}) → 206, 200 bytes, as the origin`);
  // The dashboard's page and its files (ours and uPlot's) come from the installed @keel/ops.
  const admin = /admin (http:\/\/\S+)/.exec(demo.output())?.[1];
  if (!admin) throw new Error(`keel gateway --demo did not say its admin address:\n${demo.output()}`);
  const page = await fetch(`${admin}/`);
  const html = await page.text();
  const files = [...html.matchAll(/(?:src|href)="(\/dashboard\/assets\/[^"]+)"/g)].map((m) => m[1] ?? '');
  if (page.status !== 200 || files.length !== 4)
    throw new Error(`the dashboard page answered ${page.status} with ${files.length} files:\n${html}`);
  for (const f of files) {
    const r = await fetch(`${admin}${f}`);
    if (r.status !== 200 || (await r.arrayBuffer()).byteLength === 0)
      throw new Error(`the dashboard file ${f} answered ${r.status}`);
  }
  step(`keel gateway --demo: the dashboard at ${admin}/ with its ${files.length} files`);
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'keel-installed-'));
  const tarballs = path.join(work, 'tarballs');
  const project = path.join(work, 'project');
  const demoTmp = path.join(work, 'demo-tmp');
  let demo: Demo | undefined;
  let pgFixture: Awaited<ReturnType<typeof postgres>>;
  const cleanUp = async (): Promise<void> => {
    if (demo !== undefined && demo.proc.exitCode === null && demo.proc.signalCode === null) {
      demo.proc.kill('SIGKILL');
      await demo.closed;
    }
    await pgFixture
      ?.drop()
      .catch((err: unknown) => console.warn(`could not drop the schema: ${String(err)}`));
    pgFixture = undefined;
    await rm(work, { recursive: true, force: true });
  };
  const interrupted = (signal: NodeJS.Signals): void => {
    console.error(`${signal}: stopping, removing ${work}`);
    for (const child of running) child.kill('SIGTERM');
    void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    step('npm run build');
    await run('npm', ['run', 'build'], { cwd: ROOT });

    await mkdir(tarballs);
    const packed = await packAll(tarballs);
    const problems = packed.flatMap(misplaced);
    if (problems.length > 0) throw new Error(`tarballs hold what they should not:\n${problems.join('\n')}`);
    for (const p of packed)
      step(
        `packed ${p.name}: ${(p.size / 1024).toFixed(1)} kB (${(p.unpackedSize / 1024).toFixed(1)} kB unpacked), ${p.entryCount} files`,
      );
    await lint(packed, tarballs);
    step('publint --strict and arethetypeswrong (esm-only): no problems');

    await mkdir(project);
    // better-sqlite3 (under @keel/store) builds its native addon in an install script.
    await writeFile(
      path.join(project, 'package.json'),
      JSON.stringify(
        {
          name: 'keel-installed-consumer',
          private: true,
          type: 'module',
          allowScripts: { 'better-sqlite3': true },
        },
        null,
        2,
      ),
    );
    const tarball = (name: string): string =>
      path.join(tarballs, packed.find((p) => p.name === name)?.filename ?? '');
    const npmInstall = ['install', '--no-audit', '--no-fund', '--prefer-offline'];

    step('npm install keel (only)');
    await run('npm', [...npmInstall, tarball('keel')], { cwd: project });
    const core = await npmLs(project, ['--omit=dev', '--all']);
    const corePackages = [...flatten(core.tree.dependencies)];
    console.log(core.text);
    const onDisk = (await readdir(path.join(project, 'node_modules'))).filter((n) => !n.startsWith('.'));
    if (corePackages.length !== 1 || !corePackages[0]?.startsWith('keel@') || onDisk.join() !== 'keel')
      throw new Error(
        `a project with only keel has other runtime packages: ${corePackages.join(', ')}; node_modules: ${onDisk.join(', ')}`,
      );
    step(
      'a project with only keel: npm ls --omit=dev --all shows keel alone, and node_modules holds keel alone',
    );

    const root = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as {
      devDependencies: Record<string, string>;
    };
    const dev = ['typescript', '@types/node'].map((n) => `${n}@${root.devDependencies[n] ?? 'latest'}`);
    step(`npm install -D ${dev.join(' ')}`);
    await run('npm', [...npmInstall, '--save-dev', ...dev], { cwd: project });
    step(`keel with ${dev.join(' and ')}: ${await footprint(project)}`);
    await typecheckAndRun(project, CORE_CONSUMERS, {});

    const rest = packed.filter((p) => p.name !== 'keel').map((p) => tarball(p.name));
    step(
      `npm install ${packed
        .filter((p) => p.name !== 'keel')
        .map((p) => p.name)
        .join(' ')}`,
    );
    await run('npm', [...npmInstall, ...rest], { cwd: project });
    const foreign = await notFromTarballs(project);
    if (foreign.length > 0) throw new Error(`keel packages not from the tarballs:\n${foreign.join('\n')}`);
    step(`everything installed (typescript and @types/node included): ${await footprint(project)}`);

    pgFixture = await postgres();
    // The fleet consumer's keys go under a prefix of its own; without Redis that part is skipped loudly.
    const redisUrl = (await redisReachable()) ? REDIS_URL : undefined;
    const consumers = (await readdir(CONSUMERS)).filter((f) => f.endsWith('.ts')).sort();
    await typecheckAndRun(
      project,
      consumers.filter((f) => !CORE_CONSUMERS.includes(f)),
      {
        ...(pgFixture === undefined
          ? {}
          : { KEEL_INSTALLED_PG_URL: pgFixture.url, KEEL_INSTALLED_PG_SCHEMA: pgFixture.schema }),
        ...(redisUrl === undefined ? {} : { KEEL_INSTALLED_REDIS_URL: redisUrl }),
      },
    );

    const rules = await run(path.join(project, 'node_modules', '.bin', 'keel'), ['gateway', 'rules'], {
      cwd: project,
    });
    const shipped = await readFile(
      path.join(project, 'node_modules', '@keel', 'gateway', 'rules', 'alerts.rules.yml'),
      'utf8',
    );
    if (rules.stdout !== shipped)
      throw new Error('keel gateway rules did not print the shipped alerts.rules.yml');
    step('keel gateway rules: prints the shipped alerts.rules.yml');

    await mkdir(demoTmp);
    demo = startDemo(project, demoTmp);
    await demoRangedGet(demo);
    demo.proc.kill('SIGTERM');
    const code = await Promise.race([
      demo.closed,
      new Promise<'late'>((r) => setTimeout(() => r('late'), 60_000).unref()),
    ]);
    if (code !== 0)
      throw new Error(`keel gateway --demo exited ${String(code)} on SIGTERM:\n${demo.output()}`);
    step('keel gateway --demo: SIGTERM, exit 0');
  } finally {
    await cleanUp();
  }
  step('done: every package works as installed');
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
